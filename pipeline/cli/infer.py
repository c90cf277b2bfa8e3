"""`segpipe infer`: run a checkpoint over a converted dataset (torch is imported only when it runs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS

# Kept in sync with segpipe.inference.class_tables.CLASS_TABLE_NAMES by a test (no torch import for `--help`).
CLASS_TABLE_CHOICES: tuple[str, ...] = ("coco", "voc")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def _resize_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    from segpipe.inference.resolution import ResolutionError, parse_resize

    try:
        return parse_resize(value)
    except ResolutionError as err:
        raise click.BadParameter(str(err).split(": ", 1)[1]) from err


def _device_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Checked before anything runs; the device itself is opened only inside inference."""
    from segpipe.inference.devices import DeviceError, parse_device

    try:
        return parse_device(value)
    except DeviceError as err:
        raise click.BadParameter(err.reason) from err


# Kept in sync with segpipe.inference.models.MODEL_NAMES by a test; listed here so `--help` does not import torch.
MODEL_CHOICES: tuple[str, ...] = (
    "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large", "unet", "torchscript",
)


@click.command("infer")
@click.option("--model", "model_name", required=True, type=click.Choice(MODEL_CHOICES), help="Architecture (built with weights=None; nothing is downloaded).")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="state_dict checkpoint (or TorchScript file for --model torchscript).")
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Dataset dir written by `segpipe convert`.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Predictions dir (results.json, semantic/, inference_report.csv, meta.json).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Model outputs (instance: including background).")
@click.option("--classes", default=None, help="Output class names in order: comma-separated, or a file with one per line.")
@click.option("--class-table", type=click.Choice(CLASS_TABLE_CHOICES), default=None,
              help="Built-in output classes of torchvision's weights: coco (Mask R-CNN, 91 slots), voc (DeepLabV3/FCN/LRASPP, 21).")
@click.option("--class-map", default=None, metavar="MAP",
              help="Model class -> dataset class: 'cat=pet,dog=pet,person=' (empty target drops it), or a file with one a line.")
@click.option("--device", default="auto", show_default=True, callback=_device_option, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per forward pass; halved automatically on CUDA out-of-memory. On the CPU Mask R-CNN is "
                   "called once per image (faster there).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True, help="bf16/fp16 run under autocast.")
@click.option("--score-threshold", type=click.FloatRange(min=0.0, max=1.0), default=0.05, show_default=True)
@click.option("--resize", "resize", default=None, metavar="SHORT_SIDE|native", callback=_resize_option,
              help="Short side the model sees, in pixels, or 'native' [default: native for semantic models, 800/1333 for Mask R-CNN].")
@click.option("--size-bucket", type=click.IntRange(min=1, max=1024), default=None, metavar="PIXELS",
              help="Semantic models: round each side (after --resize) to a multiple of PIXELS, so that more images share a batch.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the backbone (slow start; pays off on long GPU runs).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow checkpoints that need arbitrary pickled code, and TorchScript files too (both run code!).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader decode workers [default: on CUDA min(4, usable cores - 1); on the CPU 0].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or lines (the summary still prints).")
def infer(model_name: str, checkpoint: Path, dataset: Path, out: Path, num_classes: int | None, classes: str | None,
          class_table: str | None, class_map: str | None, device: str, batch_size: int, precision: str, score_threshold: float,
          resize: int | str | None, size_bucket: int | None, compile_: bool, trust_checkpoint: bool, workers: int | None,
          quiet: bool = False) -> None:
    """Run a checkpoint over DATASET and write predictions that `segpipe evaluate` scores.

    Semantic models write semantic/<stem>.png (dataset class indices) and results.json (one instance per
    connected component); Mask R-CNN writes results.json (COCO results, RLE masks). Interrupted runs resume
    from the last finished shard; a rerun retries every image skipped before. Exit code 3 when some images
    were skipped (see inference_report.csv). Progress (images done, images/s, ETA) goes to stderr: a bar on a
    terminal, a plain line every 10 s otherwise (SEGPIPE_PROGRESS_INTERVAL); -q silences it.
    """
    from segpipe.inference.checkpoints import OPTIONS, InferenceError, UntrustedCheckpointWarning
    from segpipe.inference.class_maps import CLASS_OPTIONS
    from segpipe.inference.data import parse_class_names
    from segpipe.inference.engine import run_inference
    from segpipe.out_manifest import INFER, check_output_folder
    from segpipe.plan.progress import ImageProgress

    check_output_folder(out, command=INFER)  # another command's folder: refused before the model loads
    progress = ImageProgress(quiet=quiet, label=f"infer {checkpoint.name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrustedCheckpointWarning)
        try:
            summary = run_inference(
                model=model_name, checkpoint=checkpoint, dataset=dataset, out=out, num_classes=num_classes,
                classes=parse_class_names(classes), class_table=class_table, class_map=class_map, device=device, batch_size=batch_size, precision=precision,
                score_threshold=score_threshold, resize=resize, trust_checkpoint=trust_checkpoint,
                progress=progress, workers=workers, size_bucket=size_bucket, compile=compile_,
            )
        except InferenceError as err:
            progress.close()
            _echo_warnings(caught)
            flag = f"--{err.field.split('.')[0].replace('_', '-')}"
            if err.path == OPTIONS:  # an option's value: say it with its flag
                raise click.BadParameter(err.reason, param_hint=flag) from err
            if err.path == CLASS_OPTIONS:  # class options that do not fit this model or dataset: an input mismatch, exit 1
                raise click.ClickException(f"{flag}: {err.field}: {err.reason}") from err
            raise click.ClickException(str(err)) from err
        except KeyboardInterrupt:
            progress.close()
            _echo_warnings(caught)
            _echo_interrupted(out)
            raise SystemExit(EXIT_INTERRUPTED) from None
        finally:
            progress.close()
    _echo_warnings(caught)
    speed = f"{summary.images_per_second:.2f} images/s" if summary.images_per_second else "no image predicted"
    if summary.mean_batch_size:
        speed += f", {summary.mean_batch_size:.1f} images per batch"
    if summary.n_resumed:
        speed += f"; {summary.n_resumed} image(s) resumed from an earlier run"
    click.echo(
        f"{summary.n_processed}/{summary.n_images} images -> {summary.out} ({summary.task}, {summary.device}, "
        f"{summary.precision}, {speed}); {summary.n_skipped} skipped (inference_report.csv)"
    )
    if summary.dropped:
        names = list(dict.fromkeys(summary.dropped))
        shown = ", ".join(names[:12]) + (f" ... ({len(names) - 12} more)" if len(names) > 12 else "")
        click.echo(f"dropped {len(summary.dropped)} model class output(s) not in the dataset: {shown} (meta.json: dropped_model_classes)")
    click.echo(f"scoring: {summary.scoring}")
    if summary.task == "semantic":
        click.echo(f"predictions: {summary.out / 'semantic'}/; score them (and get report.html): "
                   f"segpipe evaluate semantic --gt {dataset} --pred {summary.out} -o REPORT_DIR")
    else:
        click.echo(f"predictions: {summary.out / 'results.json'}; score them (and get report.html): "
                   f"segpipe evaluate instances --gt {dataset / 'instances.json'} --pred {summary.out / 'results.json'} -o REPORT_DIR")
    click.get_current_context().exit(EXIT_SKIPPED_ERRORS if summary.n_skipped else EXIT_OK)


def _echo_interrupted(out: Path) -> None:
    """What an interrupted inference leaves: its finished shards, in an OUT marked incomplete."""
    from segpipe.inference.outputs import SHARDS_DIR, finished_image_ids
    from segpipe.out_manifest import read_manifest

    total = (read_manifest(out) or {}).get("n_images")
    done = len(finished_image_ids(out))
    of = f" of {total}" if isinstance(total, int) else ""
    click.echo(f"interrupted: {done}{of} image(s) finished and kept in {out / SHARDS_DIR}; {out} is marked incomplete "
               "(evaluate, compare and audit refuse it without --allow-partial); run the same command again to resume "
               "(finished images are not predicted again)", err=True)


def _echo_warnings(caught: list[warnings.WarningMessage]) -> None:
    from segpipe.inference.checkpoints import UntrustedCheckpointWarning

    for w in caught:
        if issubclass(w.category, UntrustedCheckpointWarning):  # loud on purpose: pickled code just ran
            click.secho(f"WARNING: {w.message}", fg="red", bold=True, err=True)
        else:
            click.echo(f"warning: {w.category.__name__}: {w.message}", err=True)

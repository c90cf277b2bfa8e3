"""`segpipe infer`: run a checkpoint over a converted dataset (torch is imported only when it runs)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

import click

from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from segpipe.inference.class_tables import CLASS_TABLE_NAMES
from segpipe.inference.options import FIELDS, checked_value, option_name

CLASS_TABLE_CHOICES: tuple[str, ...] = CLASS_TABLE_NAMES
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def _checked(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """An option's value checked while the flags are parsed, before anything runs (the device itself is
    opened only inside inference)."""
    from segpipe.inference.checkpoints import InferenceError

    try:
        return checked_value(str(param.name), value)
    except InferenceError as err:
        raise click.BadParameter(err.reason) from err


def option_flag(f: dataclasses.Field[Any], *, run: bool = False) -> str:
    """The flag of an InferenceOptions field: `--batch-size`; in `segpipe run`, its run flag (`--model-classes`)."""
    if run:
        return f.metadata["run_flag"] or "--" + option_name(f, "run").replace("_", "-")
    return "--" + f.name.replace("_", "-")


def inference_option(f: dataclasses.Field[Any], *, run: bool = False) -> Callable[[Any], Any]:
    """The click option of one InferenceOptions field. In `segpipe run` every option defaults to None (not
    given: run.toml or the default decides) and is checked with the rest of the run's settings."""
    meta = f.metadata
    flag = option_flag(f, run=run)
    name = flag[2:].replace("-", "_")
    help_text = (meta["run_help"] if run else None) or meta["help"]
    if meta["flag"]:
        return click.option(flag, name, is_flag=True, default=None if run else f.default, help=help_text)
    kwargs: dict[str, Any] = {"default": None if run else f.default, "help": help_text, "metavar": meta["metavar"],
                              "show_default": meta["show_default"] and not run}
    if meta["choices"] is not None:
        kwargs["type"] = click.Choice(meta["choices"])
    elif meta["number"] is int:
        kwargs["type"] = click.IntRange(min=meta["min_value"], max=meta["max_value"])
    elif meta["number"] is float:
        kwargs["type"] = click.FloatRange(min=meta["min_value"], max=meta["max_value"])
    if meta["check"] and not run:
        kwargs["callback"] = _checked
    return click.option(flag, name, **kwargs)


def inference_options(*, run: bool = False) -> Callable[[Any], Any]:
    """Every InferenceOptions field as a click option, in declaration order."""
    def decorate(command: Any) -> Any:
        for f in reversed(FIELDS):
            command = inference_option(f, run=run)(command)
        return command
    return decorate


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
@inference_options()
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or lines (the summary still prints).")
def infer(model_name: str, checkpoint: Path, dataset: Path, out: Path, quiet: bool = False, **options: Any) -> None:
    """Run a checkpoint over DATASET and write predictions that `segpipe evaluate` scores.

    Semantic models write semantic/<stem>.png (dataset class indices) and results.json (one instance per
    connected component); Mask R-CNN writes results.json (COCO results, RLE masks). Interrupted runs resume
    from the last finished shard; a rerun retries every image skipped before. Exit code 3 when some images
    were skipped (see inference_report.csv). Progress (images done, images/s, ETA) goes to stderr: a bar on a
    terminal, a plain line every 10 s otherwise (SEGPIPE_PROGRESS_INTERVAL); -q silences it.
    """
    from segpipe.inference.checkpoints import OPTIONS, InferenceError, UntrustedCheckpointWarning
    from segpipe.inference.class_maps import CLASS_OPTIONS
    from segpipe.inference.engine import run_inference
    from segpipe.inference.options import InferenceOptions
    from segpipe.core.out_manifest import INFER, check_output_folder
    from segpipe.plan.progress import ImageProgress

    check_output_folder(out, command=INFER)  # another command's folder: refused before the model loads
    progress = ImageProgress(quiet=quiet, label=f"infer {checkpoint.name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrustedCheckpointWarning)
        try:
            summary = run_inference(model=model_name, checkpoint=checkpoint, dataset=dataset, out=out,
                                    options=InferenceOptions.from_mapping(options), progress=progress)
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
    from segpipe.core.out_manifest import read_manifest

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

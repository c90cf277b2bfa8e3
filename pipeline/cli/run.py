"""`segpipe run`: convert → infer → evaluate → leaderboard for a folder of checkpoints, cached by content.

Exit codes: 0 all done; 3 done, but the conversion report has error rows (bad annotation files were
skipped); 5 a task failed (e.g. a corrupt checkpoint: the others still finish and the leaderboard lists
it as failed); 6 Luigi could not schedule or run something; 2 usage error (click).

Progress (one line per finished task, with a count and an ETA) goes to stderr; `-q` silences it,
`--log-jsonl` records it, `-v` adds Luigi's own log with tracebacks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from segpipe.cli.infer import inference_options, option_flag
from segpipe.converters.formats import FORMAT_NAMES, FORMATS
from segpipe.core.errors import SegpipeError
from segpipe.inference.options import FIELDS, option_name

_PATH = click.Path(path_type=Path)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
# The registry's formats (segpipe.converters.formats imports no converter: the CLI starts light).
RUN_FORMATS = FORMAT_NAMES
# The inference options' click parameters (segpipe.inference.options) -> their run.toml [infer] keys.
INFER_PARAMS: dict[str, str] = {option_flag(f, run=True)[2:].replace("-", "_"): option_name(f, "run") for f in FIELDS}
INFER_FLAGS: tuple[str, ...] = tuple(option_flag(f, run=True)[2:].replace("-", "_") for f in FIELDS if f.metadata["flag"])


def family_counts(task_ids: list[str]) -> str:
    """'ConvertShard x2, InferShard x3' from task ids (`Family_param_hash`)."""
    counts = Counter(t.split("_", 1)[0] for t in task_ids)
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "nothing"


def _echo_outcome(outcome: Any, *, out: Path) -> None:
    import pandas as pd

    click.echo(f"ran: {len(outcome.ran)} task(s) ({family_counts(outcome.ran)})")
    click.echo(f"from cache: {len(outcome.cached)} task(s) ({family_counts(outcome.cached)})"
               + (f", {len(outcome.reused)} shard(s) inside the groups that ran" if outcome.reused else ""))
    if outcome.by_others:
        click.echo(f"run by other workers: {len(outcome.by_others)} task(s) ({family_counts(outcome.by_others)})")
    if outcome.failed:
        click.echo(f"failed: {len(outcome.failed)} task(s) ({family_counts(list(outcome.failed))})", err=True)
    for name, reason in sorted(outcome.failed_checkpoints.items()):
        click.echo(f"checkpoint {name} FAILED: {reason}", err=True)
    for line in outcome.skipped_inputs:
        click.echo(f"skipped: {line}", err=True)
    if outcome.conversion_errors:
        click.echo(f"conversion: {outcome.conversion_errors} error row(s) in {out / 'conversion_report.csv'}", err=True)
    if outcome.leaderboard is not None and outcome.leaderboard.is_file():
        table = pd.read_csv(outcome.leaderboard)
        shown = [c for c in ("checkpoint", "status", "AP", "AP50", "mIoU", "mDice", "aAcc") if c in table.columns]
        with pd.option_context("display.width", 120, "display.max_columns", 12):
            click.echo(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        click.echo(f"leaderboard: {outcome.leaderboard}")
        _echo_dropped_classes(out)
        click.echo(f"reports: {out / 'checkpoints'}/<checkpoint>/")


def _echo_dropped_classes(out: Path) -> None:
    """Model classes each checkpoint's inference dropped (not in the dataset), from its report headers."""
    import json

    for header in sorted((out / "checkpoints").glob("*/*/header.json")):
        data = json.loads(header.read_text(encoding="utf-8"))
        if data.get("n_dropped_model_outputs"):
            names = data.get("dropped_model_classes", [])
            shown = ", ".join(names[:8]) + (f" ... ({len(names) - 8} more)" if len(names) > 8 else "")
            click.echo(f"checkpoint {header.parent.parent.name} ({header.parent.name}): dropped "
                       f"{data['n_dropped_model_outputs']} model class output(s) not in the dataset: {shown}; "
                       f"scoring: {data.get('scoring', '')}")


def _echo_progress(line: str) -> None:
    click.echo(line, err=True)


@click.command("run")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="run.toml with the same settings; command-line options override it.")
@click.option("--dataset", type=_PATH, default=None, help="Dataset root (Oxford-IIIT Pet root, VOC root for voc-seg, or the annotation folder).")
@click.option("--format", "format_", type=click.Choice(RUN_FORMATS), default=None, help="Dataset format.")
@click.option("--model", default=None, help="Model name (as `segpipe infer --model`), e.g. unet, deeplabv3_resnet50, maskrcnn_resnet50_fpn.")
@click.option("--checkpoints", multiple=True, help="Checkpoint glob (repeatable), e.g. 'ckpts/*.pt'. Model cards beside them are used.")
@click.option("-o", "--out", type=_PATH, default=None, help="Output folder: leaderboard.csv, per_class_by_checkpoint.csv, checkpoints/<name>/.")
@click.option("--iou-type", type=click.Choice(("segm", "bbox")), default=None, help="Instance evaluation: mask or box mAP [default: segm].")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Luigi worker processes on this host [default: 1].")
@click.option("--scheduler-url", default=None, help="Central luigid, e.g. http://127.0.0.1:8082 [default: a local scheduler].")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, help="Images per task [default: 256].")
@click.option("--cache-dir", type=_PATH, default=None, help="Cache shared by every run pointed at it [default: OUT/.cache].")
@click.option("--audit/--no-audit", default=None, help="Also audit the labels (OUT/audit/).")
@click.option("--rehash", is_flag=True, default=None, help="Ignore the stat cache and hash every input file again.")
@click.option("--html/--no-html", default=None, help="Write report.html pages and OUT/leaderboard.html [default: on].")
@click.option("--images", type=_PATH, default=None, help="voc/trimap: the image folder.")
@click.option("--classes", type=_PATH, default=None, help="voc/yolo/labelme/voc-seg: classes file (yolo: or data.yaml).")
@click.option("--list-file", type=_PATH, default=None, help="trimap: Oxford-IIIT Pet list.txt.")
@click.option("--border", type=click.Choice(("ignore", "foreground", "background")), default=None, help="Trimap border policy (converter).")
@click.option("--categories", type=click.Choice(("breed", "species", "pet")), default=None, help="Pet category granularity (converter).")
@click.option("--split", type=click.Choice(("trainval", "test")), default=None, help="oxford-pet: one split only (converter).")
@click.option("--one-based", is_flag=True, default=None, help="voc: Pascal VOC 1-based boxes (converter).")
@click.option("--difficult", type=click.Choice(["count", "ignore"]), default=None,
              help="voc: count difficult boxes as ordinary objects (default) or ignore them (iscrowd=1).")
@click.option("--size-from-xml", is_flag=True, default=None, help="voc: images may be absent; sizes from <size> (converter).")
@click.option("--rectangle-segmentation", is_flag=True, default=None,
              help="voc/yolo/labelme/cvat: give box annotations a rectangle segmentation (converter).")
@click.option("--strict", is_flag=True, default=None, help="Conversion stops at the first bad file.")
@click.option("--devices", default=None, metavar="0,1", help="GPUs of this host: one inference task per GPU at a time "
              "(at least as many workers as GPUs).")
@inference_options(run=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines or bars (the summary and leaderboard still print).")
@click.option("-v", "--verbose", is_flag=True, help="Also show Luigi's log, with the tracebacks of failed tasks.")
@click.option("--log-jsonl", type=_PATH, default=None, help="Append one JSON object per finished task to this file.")
def run(config_path: Path | None, quiet: bool, verbose: bool, log_jsonl: Path | None, **options: Any) -> None:
    """Run the whole pipeline, cached: a rerun only does what changed (inputs are fingerprinted by content).

    \b
    segpipe run --dataset pets --format oxford-pet --model unet --checkpoints 'ckpts/*.pt' -o nightly
    segpipe run --config run.toml --scheduler-url http://luigid-host:8082
    """
    from segpipe.runner.config import RunConfigError, parse_run_settings, read_run_config
    from segpipe.runner.driver import run_pipeline
    from segpipe.plan.progress import RunProgress, luigi_log

    # The registry's run.toml [convert] keys that have a flag here.
    convert_keys = tuple(dict.fromkeys(k for spec in FORMATS.values() for k in spec.run_options if k in options))
    flags = ("one_based", "size_from_xml", "rectangle_segmentation", "strict", "rehash", *INFER_FLAGS)
    options = {k: (v or None) if k in flags else v for k, v in options.items()}  # an absent flag overrides nothing
    overrides: dict[str, Any] = {k: v for k, v in options.items() if k not in (*convert_keys, *INFER_PARAMS, "format_")}
    overrides["format"] = options["format_"]
    overrides["convert"] = {k: options[k] for k in convert_keys}
    overrides["infer"] = {key: options[param] for param, key in INFER_PARAMS.items()}  # checked by parse_run_settings
    overrides["checkpoints"] = tuple(options["checkpoints"]) or None
    try:
        config = read_run_config(config_path) if config_path is not None else {}
        settings = parse_run_settings(config, overrides=overrides, source=str(config_path or "command line"))
    except RunConfigError as err:
        raise click.UsageError(str(err)) from err
    spec = FORMATS[settings.format]
    if spec.layout_root and spec.source_problem is not None:  # a fixed layout's root check, as `segpipe convert FMT`
        problem = spec.source_problem(settings.dataset, {"images": settings.images})
        if problem is not None:
            raise click.UsageError(f"--dataset {problem}")
    progress = RunProgress(echo=None if quiet else _echo_progress, jsonl=log_jsonl, workers=settings.workers,
                           bars=not quiet and settings.workers == 1)
    try:
        with luigi_log(verbose=verbose), progress:
            outcome = run_pipeline(settings)
    except (SegpipeError, FileNotFoundError, ValueError) as err:  # raised before any task runs: a missing dataset, no checkpoint
        raise click.UsageError(str(err)) from err
    except KeyboardInterrupt:
        kept = sum(1 for how in progress.tally.finished.values() if how in ("ran", "cached"))
        click.echo(f"interrupted: {kept} finished task(s) are kept in the cache {settings.cache} (a half-done one never "
                   "is); run the same command again to continue: finished tasks are taken from the cache, not redone",
                   err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    _echo_outcome(outcome, out=settings.out)
    if (settings.out / "leaderboard.html").is_file():
        click.echo(f"leaderboard page: {settings.out / 'leaderboard.html'}")
    raise SystemExit(outcome.exit_code)

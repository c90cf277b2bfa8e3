"""`segpipe evaluate semantic`: GT and prediction label-map folders in, a semantic report folder out.

REPORT/summary.csv (metric,value), per_class.csv, per_image.csv, confusion.csv, notes.csv (missing
predictions, predictions without GT), each with a .parquet twin, and header.json (inputs and conventions).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from segpipe.cli.evaluate import ALLOW_MISMATCH_HELP, ALLOW_PARTIAL_HELP, NO_HTML_HELP
from segpipe.commands.evaluate_semantic import (  # the command's files live one layer down
    CLASSES_FILE_NAME, HEADER_FILE_NAME as HEADER_FILE_NAME, SEMANTIC_CONVENTIONS, label_map_dir, write_semantic_report,
)
from segpipe.evaluators.semantic.confusion import IGNORE_INDEX
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs, label_maps_by_stem
from segpipe.core.dataset_layout import class_names_option, is_existing_file, read_class_names_file

if TYPE_CHECKING:
    from segpipe.evaluators.semantic.tables import SemanticReport

CLASSES_FILE_SUFFIXES = (".txt", ".names", ".lst")  # a --classes value like these must be an existing file
CONVENTIONS = SEMANTIC_CONVENTIONS


def read_class_names(option: str | None, *, gt_dir: Path) -> list[str]:
    """--classes as a file path or a comma list; without it, GT_DIR/classes.txt when present."""
    if option is None:
        default = gt_dir / CLASSES_FILE_NAME
        if not default.is_file():
            raise click.UsageError(f"--classes is required ({default} does not exist)")
        option = str(default)
    if not is_existing_file(option) and "," not in option and (Path(option).suffix.lower() in CLASSES_FILE_SUFFIXES or "/" in option):
        raise click.BadParameter(f"no such classes file: {option}", param_hint="--classes")
    try:
        names = class_names_option(option)
    except (OSError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"unreadable classes file {option}: {err}", param_hint="--classes") from err
    if not names:
        raise click.BadParameter(f"no class names in {option!r}", param_hint="--classes")
    if len(set(names)) != len(names):
        raise click.BadParameter(f"duplicate class names: {names}", param_hint="--classes")
    check_against_gt_classes(names, gt_dir=gt_dir)
    return names


def check_against_gt_classes(names: list[str], *, gt_dir: Path) -> None:
    """--classes against GT_DIR/classes.txt (what `segpipe convert` wrote): the same names in another order
    would silently swap the per-class rows, so that is a usage error; other names are a warning."""
    default = gt_dir / CLASSES_FILE_NAME
    if not default.is_file():
        return
    declared = read_class_names_file(default)
    if names == declared:
        return
    if sorted(names) == sorted(declared):
        raise click.BadParameter(
            f"{','.join(names)} names the classes of {default} in another order ({','.join(declared)}): pixel value i "
            f"is class i of that file, so the per-class rows would be swapped; omit --classes or keep that order",
            param_hint="--classes")
    click.echo(f"warning: --classes {','.join(names)} differs from {default} ({','.join(declared)}); "
               "pixel value i is scored as the i-th name given", err=True)


def format_report(report: SemanticReport) -> str:
    """The stdout table: summary, then per class."""
    from segpipe.reports.tables import format_tables  # imports pandas: not before the maps decode

    return format_tables(report.summary, report.per_class, width=120)


@click.command("semantic")
@click.option("--gt", "gt_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ground-truth label maps (<stem>.png, single channel; a converted dataset dir works too).")
@click.option("--pred", "pred_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Predicted label maps matched by stem (an inference output dir works too).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report directory (created if missing).")
@click.option("--classes", "classes", default=None,
              help="Class names in index order: a comma list or a file with one per line "
              "[default: GT_DIR/classes.txt].")
@click.option("--ignore-index", type=int, default=IGNORE_INDEX, show_default=True,
              help="GT value left out of the scores; a prediction with this value counts as a miss.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding threads [default: all cores].")
@click.option("--no-html", is_flag=True, help=NO_HTML_HELP)
@click.option("--allow-label-mismatch", is_flag=True, help=ALLOW_MISMATCH_HELP)
@click.option("--allow-partial", is_flag=True, help=ALLOW_PARTIAL_HELP)
def semantic(gt_dir: Path, pred_dir: Path, out: Path, classes: str | None, ignore_index: int, workers: int | None,
             no_html: bool, allow_label_mismatch: bool, allow_partial: bool) -> None:
    """Score semantic label maps: mIoU, Dice, pixel accuracy, per class and per image."""
    from tqdm import tqdm

    from segpipe.core.out_manifest import EVALUATE_SEMANTIC, check_output_folder, claim_output_folder

    check_output_folder(out, command=EVALUATE_SEMANTIC)
    gt_dir, pred_dir = label_map_dir(gt_dir), label_map_dir(pred_dir)
    class_names = read_class_names(classes, gt_dir=gt_dir)
    try:
        n_images = len(label_maps_by_stem(gt_dir))
        guard_warnings = guard_label_maps(gt_dir, pred_dir, class_names=class_names,
                                          allow_label_mismatch=allow_label_mismatch, allow_partial=allow_partial)
    except EvaluationError as err:
        raise click.ClickException(str(err)) from err
    with tqdm(total=n_images, desc="evaluate semantic", unit="img", disable=not sys.stderr.isatty()) as bar:
        try:
            report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=class_names, ignore_index=ignore_index,
                                            workers=workers, progress=bar.update)
        except (EvaluationError, ValueError) as err:
            raise click.ClickException(str(err)) from err
    header = {
        "command": "evaluate semantic", "gt": str(gt_dir.resolve()), "pred": str(pred_dir.resolve()),
        "classes": class_names, "ignore_index": ignore_index, "n_images": len(report.per_image),
        "conventions": CONVENTIONS,
    }
    if guard_warnings:
        import dataclasses

        report = dataclasses.replace(report, warnings=(*guard_warnings, *report.warnings))
    claim_output_folder(out, command=EVALUATE_SEMANTIC, what="`segpipe evaluate semantic`", owns=())
    write_semantic_report(report, out, header=header)
    from segpipe.cli.evaluate import announce_report

    announce_report(out, text=format_report(report), warnings=report.warnings, html=not no_html)


def guard_label_maps(gt_dir: Path, pred_dir: Path, *, class_names: list[str], allow_label_mismatch: bool,
                     allow_partial: bool) -> list[str]:
    """segpipe.prediction_checks' label-space and partial-output checks; a refusal is a usage error."""
    from segpipe.prediction_checks import PredictionCheckError
    from segpipe.prediction_checks import guard_label_maps as guard

    try:
        return guard(gt_dir, pred_dir, class_names=class_names, allow_label_mismatch=allow_label_mismatch,
                     allow_partial=allow_partial)
    except PredictionCheckError as err:
        raise click.UsageError(str(err)) from err

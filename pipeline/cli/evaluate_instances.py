"""`segpipe evaluate instances`: a COCO ground truth and a COCO results list in, a mAP report folder out.

REPORT/summary.csv (metric,value: pycocotools' 12 stats), per_class.csv, per_image.csv, pr_curves (parquet,
and csv), each table with a .parquet twin, and header.json (inputs, iou type, the area convention, warnings).
"""

from __future__ import annotations

import dataclasses
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from segpipe.cli.evaluate import ALLOW_MISMATCH_HELP, ALLOW_PARTIAL_HELP, NO_HTML_HELP
from segpipe.commands.evaluate_instances import (  # the command's files and refusals live one layer down
    HEADER_FILE_NAME as HEADER_FILE_NAME, INSTANCE_CONVENTIONS, located_warning, refuse_empty_by_construction,
    write_instance_report,
)
from segpipe.evaluators.instance.coco_ground_truth import GT_PATH
from segpipe.core.errors import EvaluationError

if TYPE_CHECKING:  # numpy/pandas are imported when the command runs, not for `--help`
    from segpipe.evaluators.instance.evaluation import InstanceReport
    from segpipe.reports.gallery import GallerySource

CONVENTIONS = INSTANCE_CONVENTIONS


def format_report(report: InstanceReport) -> str:
    """The stdout text: a comment line with the area convention, the summary, then per class."""
    from segpipe.reports.tables import format_tables

    return f"# {report.area_note}\n{format_tables(report.tables['summary'], report.tables['per_class'])}"


@click.command("instances")
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO ground truth (instances.json; ours or anyone's).")
@click.option("--pred", "pred_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="COCO results list (image_id, category_id, score, segmentation and/or bbox), or a `segpipe infer` folder.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report directory (created if missing).")
@click.option("--iou-type", type=click.Choice(["segm", "bbox"]), default=None,
              help="[default: segm when the results carry masks, else bbox]")
@click.option("--drop-invalid", is_flag=True,
              help="Leave invalid results out (counted in the report's warnings) instead of failing.")
@click.option("--no-html", is_flag=True, help=NO_HTML_HELP)
@click.option("--allow-label-mismatch", is_flag=True, help=ALLOW_MISMATCH_HELP)
@click.option("--allow-partial", is_flag=True, help=ALLOW_PARTIAL_HELP)
def instances(gt_path: Path, pred_path: Path, out: Path, iou_type: str | None, drop_invalid: bool, no_html: bool,
              allow_label_mismatch: bool, allow_partial: bool) -> None:
    """Score COCO results: mask or box mAP with pycocotools' numbers, per class and per image."""
    from segpipe.core.out_manifest import EVALUATE_INSTANCES, check_output_folder

    if pred_path.is_dir():
        from segpipe.core.layout import RESULTS_FILE

        pred_path = pred_path / RESULTS_FILE
    check_output_folder(out, command=EVALUATE_INSTANCES)
    frozen_before = gc.get_freeze_count()
    try:
        score_files(gt_path, pred_path, out, iou_type=iou_type, drop_invalid=drop_invalid, no_html=no_html,
                    allow_label_mismatch=allow_label_mismatch, allow_partial=allow_partial)
    finally:
        # An in-process caller (CliRunner, a notebook) gets its collector back as it was. One that had frozen
        # objects itself (a pre-fork server) keeps everything frozen: unfreezing would undo its own freeze too.
        if frozen_before == 0:
            gc.unfreeze()


def looks_swapped(gt: Any, results: Any, *, gt_path: Path, pred_path: Path) -> None:
    """A ground truth given as --pred (or the two swapped) is said as such, not as a type error."""
    gt_like = isinstance(results, dict) and bool({"images", "annotations"} & set(results))
    results_like = isinstance(gt, list)
    if gt_like or results_like:
        which = (f"--pred {pred_path} is a COCO ground truth (it has images/annotations)" if gt_like
                 else f"--gt {gt_path} is a results list")
        hint = ("--gt and --pred look swapped" if gt_like and results_like else
                "give the ground truth as --gt and the results list as --pred")
        raise click.UsageError(f"{which}: {hint}")


def guard_predictions(gt: Any, results: Any, *, gt_path: Path, pred_path: Path, allow_label_mismatch: bool,
                      allow_partial: bool) -> tuple[Any, list[str]]:
    """segpipe.prediction_checks' label-space and partial-output checks; a refusal is a usage error."""
    from segpipe.prediction_checks import PredictionCheckError, guard_instance_predictions

    try:
        return guard_instance_predictions(gt, results, gt_path=gt_path, pred_path=pred_path,
                                          allow_label_mismatch=allow_label_mismatch, allow_partial=allow_partial)
    except PredictionCheckError as err:
        raise click.UsageError(str(err)) from err


def score_files(gt_path: Path, pred_path: Path, out: Path, *, iou_type: str | None, drop_invalid: bool, no_html: bool,
                allow_label_mismatch: bool = False, allow_partial: bool = False) -> None:
    from segpipe.evaluators.instance.coco_results import RESULTS_PATH
    from segpipe.evaluators.instance.evaluation import default_iou_type, instance_compute, instance_update
    from segpipe.evaluators.json_files import read_json_file
    from segpipe.core.out_manifest import is_partial_prediction

    try:
        # Parsed JSON is millions of small containers, and every full pass of CPython's cyclic collector walks them
        # all: again and again while the heap grows during parsing, and while the evaluation allocates. The
        # collector is paused while parsing and the parsed inputs are frozen out of its view (JSON has no cycles;
        # refcounting still frees them) until the command ends: a third less CPU on 8,000 images.
        # https://docs.python.org/3/library/gc.html#gc.freeze
        collecting = gc.isenabled()
        gc.disable()
        try:
            gt = read_json_file(gt_path, what="ground truth")
            # an unfinished inference: its finished shards are read by guard_predictions (with --allow-partial)
            results = [] if is_partial_prediction(pred_path) else read_json_file(pred_path, what="results")
        finally:
            if collecting:
                gc.enable()
        gc.freeze()
        looks_swapped(gt, results, gt_path=gt_path, pred_path=pred_path)
        guard_warnings: list[str] = []
        if isinstance(gt, dict):
            results, guard_warnings = guard_predictions(gt, results, gt_path=gt_path, pred_path=pred_path,
                                                        allow_label_mismatch=allow_label_mismatch, allow_partial=allow_partial)
        refuse_empty_by_construction(pred_path, results)
        kind = iou_type or default_iou_type(results if isinstance(results, list) else [])
        n_images = len(gt.get("images") or []) if isinstance(gt, dict) else 0
        if sys.stderr.isatty():
            from tqdm import tqdm  # only for a bar someone sees: importing tqdm costs more than a small evaluation

            with tqdm(total=n_images, desc=f"evaluate {kind}", unit="img") as bar:
                stats = instance_update(gt, results, iou_type=kind, drop_invalid=drop_invalid, progress=bar.update)
        else:
            stats = instance_update(gt, results, iou_type=kind, drop_invalid=drop_invalid)
    except EvaluationError as err:
        # evaluators name in-memory inputs "ground truth" / "results"; here they are files
        path = {GT_PATH: str(gt_path), RESULTS_PATH: str(pred_path)}.get(err.path, err.path)
        raise click.ClickException(str(EvaluationError(path, err.field, err.reason))) from err
    stats = dataclasses.replace(stats, warnings=(*guard_warnings, *(located_warning(w, gt_path=gt_path, pred_path=pred_path)
                                                                    for w in stats.warnings)))
    header = {
        "command": "evaluate instances", "gt": str(gt_path.resolve()), "pred": str(pred_path.resolve()),
        "n_images": int(len(stats.image_ids)), "n_results": len(results) if isinstance(results, list) else 0,
        "drop_invalid": drop_invalid, "conventions": CONVENTIONS,
    }
    gallery = None if no_html else parsed_gallery(header, gt=gt, results=results)
    # The match records are all that is left to reduce: the parsed JSON goes before pandas is imported (the
    # two are the largest things this process holds; together they set its peak memory).
    del gt, results
    report = instance_compute(stats)
    from segpipe.core.out_manifest import EVALUATE_INSTANCES, claim_output_folder

    claim_output_folder(out, command=EVALUATE_INSTANCES, what="`segpipe evaluate instances`", owns=())
    write_instance_report(report, out, header=header)
    from segpipe.cli.evaluate import announce_report

    announce_report(out, text=format_report(report), warnings=report.warnings, html=not no_html, gallery=gallery)


def parsed_gallery(header: dict[str, Any], *, gt: Any, results: Any) -> "GallerySource | None":
    """The page's thumbnail source for the inputs named in `header`, holding the JSON already parsed here
    (the page would otherwise read and parse both files a second time)."""
    from segpipe.reports.gallery import GallerySource

    source = GallerySource.from_header(header)
    if source is not None and isinstance(gt, dict) and isinstance(results, list):
        # `coco` and `detections` are functools.cached_property: a value in the instance dict is what they return.
        source.__dict__.update(coco=gt, detections=results)
    return source

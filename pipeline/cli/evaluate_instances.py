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

from segpipe.cli.evaluate import NO_HTML_HELP
from segpipe.evaluators.coco_ground_truth import GT_PATH
from segpipe.evaluators.errors import EvaluationError

if TYPE_CHECKING:  # numpy/pandas are imported when the command runs, not for `--help`
    from segpipe.evaluators.instance import InstanceReport
    from segpipe.reports.gallery import GallerySource

HEADER_FILE_NAME = "header.json"  # segpipe.reports.tables.REPORT_HEADER_FILE (a test keeps them equal)
CONVENTIONS = (
    "pycocotools COCOeval numbers (evaluate + accumulate + summarize), fractions; -1 = no ground truth. "
    "per_class: summarize() on each category's slice of eval['precision'] / eval['recall']; n_gt counts "
    "iscrowd=0 annotations, n_dt the detections evaluated (best 100 per image and category). "
    "per_image: IoU 0.5, area 'all', maxDets 100; mean_iou over the true positives. "
    "pr_curves: precision at the 101 recall thresholds, area 'all', maxDets 100."
)


def located_warning(warning: str, *, gt_path: Path, pred_path: Path) -> str:
    """A warning about the in-memory "ground truth" / "results" names the file it came from."""
    from segpipe.evaluators.coco_results import RESULTS_PATH

    for name, path in ((GT_PATH, gt_path), (RESULTS_PATH, pred_path)):
        if warning.startswith(f"{name}: "):
            return f"{path}{warning[len(name):]}"
    return warning


def write_instance_report(report: InstanceReport, out: Path, *, header: dict[str, Any]) -> None:
    """Write every table (CSV + Parquet) and header.json into `out`."""
    from segpipe.reports.tables import write_report_dir

    tables = {"summary": report.summary, "per_class": report.per_class, "per_image": report.per_image,
              "pr_curves": report.pr_curves}
    write_report_dir(out, tables, header={**header, "iou_type": report.iou_type, "area": report.area_note,
                                          "warnings": list(report.warnings)})


def format_report(report: InstanceReport) -> str:
    """The stdout text: a comment line with the area convention, the summary, then per class."""
    from segpipe.reports.tables import format_tables

    return f"# {report.area_note}\n{format_tables(report.summary, report.per_class)}"


def refuse_empty_by_construction(pred_path: Path, results: object) -> None:
    """`segpipe infer` records in meta.json when its results.json is empty because no model class is a dataset
    category: scoring it would report a meaningless 0 as a success."""
    import json

    meta = pred_path.parent / "meta.json"
    if results != [] or not meta.is_file():
        return
    try:
        reason = json.loads(meta.read_text(encoding="utf-8")).get("empty_results_reason")
    except (OSError, ValueError, AttributeError):
        return
    if reason:
        raise EvaluationError(pred_path, "", f"empty by construction ({meta}: {reason}); score the semantic label maps "
                              "with `segpipe evaluate semantic`, or give infer a class map onto the dataset's categories")


@click.command("instances")
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO ground truth (instances.json; ours or anyone's).")
@click.option("--pred", "pred_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO results list (image_id, category_id, score, segmentation and/or bbox).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report directory (created if missing).")
@click.option("--iou-type", type=click.Choice(["segm", "bbox"]), default=None,
              help="[default: segm when the results carry masks, else bbox]")
@click.option("--drop-invalid", is_flag=True,
              help="Leave invalid results out (counted in the report's warnings) instead of failing.")
@click.option("--no-html", is_flag=True, help=NO_HTML_HELP)
def instances(gt_path: Path, pred_path: Path, out: Path, iou_type: str | None, drop_invalid: bool, no_html: bool) -> None:
    """Score COCO results: mask or box mAP with pycocotools' numbers, per class and per image."""
    frozen_before = gc.get_freeze_count()
    try:
        score_files(gt_path, pred_path, out, iou_type=iou_type, drop_invalid=drop_invalid, no_html=no_html)
    finally:
        # An in-process caller (CliRunner, a notebook) gets its collector back as it was. One that had frozen
        # objects itself (a pre-fork server) keeps everything frozen: unfreezing would undo its own freeze too.
        if frozen_before == 0:
            gc.unfreeze()


def score_files(gt_path: Path, pred_path: Path, out: Path, *, iou_type: str | None, drop_invalid: bool, no_html: bool) -> None:
    from segpipe.evaluators.coco_results import RESULTS_PATH
    from segpipe.evaluators.instance import default_iou_type, instance_compute, instance_update
    from segpipe.evaluators.json_files import read_json_file

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
            results = read_json_file(pred_path, what="results")
        finally:
            if collecting:
                gc.enable()
        gc.freeze()
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
    stats = dataclasses.replace(stats, warnings=tuple(located_warning(w, gt_path=gt_path, pred_path=pred_path)
                                                      for w in stats.warnings))
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

"""`evaluate instances` below the CLI: the report folder it writes, the conventions it states, the results it
refuses, and warnings that name files (used by `segpipe evaluate instances`, `segpipe.evaluate_instances` and
the pipeline's report task)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.evaluators.instance.coco_ground_truth import GT_PATH
from segpipe.core.errors import EvaluationError
from segpipe.core.layout import REPORT_HEADER_FILE

if TYPE_CHECKING:  # numpy/pandas are imported when a function runs, not for `segpipe --help`
    from segpipe.evaluators.instance.evaluation import InstanceReport

HEADER_FILE_NAME = REPORT_HEADER_FILE
INSTANCE_CONVENTIONS = (
    "pycocotools COCOeval numbers (evaluate + accumulate + summarize), fractions; -1 = no ground truth. "
    "per_class: summarize() on each category's slice of eval['precision'] / eval['recall']; n_gt counts "
    "iscrowd=0 annotations, n_dt the detections evaluated (best 100 per image and category). "
    "per_image: IoU 0.5, area 'all', maxDets 100; mean_iou over the true positives. "
    "pr_curves: precision at the 101 recall thresholds, area 'all', maxDets 100."
)


def located_warning(warning: str, *, gt_path: Path, pred_path: Path) -> str:
    """A warning about the in-memory "ground truth" / "results" names the file it came from."""
    from segpipe.evaluators.instance.coco_results import RESULTS_PATH

    for name, path in ((GT_PATH, gt_path), (RESULTS_PATH, pred_path)):
        if warning.startswith(f"{name}: "):
            return f"{path}{warning[len(name):]}"
    return warning


def write_instance_report(report: InstanceReport, out: Path, *, header: dict[str, Any]) -> None:
    """Write every table (CSV + Parquet) and header.json into `out`."""
    from segpipe.reports.tables import write_report_dir

    write_report_dir(out, report.tables, header={**header, "iou_type": report.iou_type, "area": report.area_note,
                                          "warnings": list(report.warnings)})


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

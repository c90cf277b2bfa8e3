"""COCO mask/box mAP with pycocotools' numbers, as additive per-image records.

    stats = instance_update(gt, results, iou_type="segm", image_ids=shard)   # per shard
    report = instance_compute(InstanceStats.merge_all([stats_a, stats_b]))   # == one pass == COCOeval

Numbers equal pycocotools COCOeval's (evaluate + accumulate + summarize) on the same input; for segm every
result's `bbox` is dropped first, so the detection area is the mask area (as detectron2 does).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from segpipe.evaluators.instance.coco_ground_truth import GroundTruth, parse_ground_truth
from segpipe.evaluators.instance.coco_results import IOU_TYPES, default_iou_type, validate_results
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.accumulate import SUMMARY_METRICS, accumulate
from segpipe.evaluators.instance.stats import InstanceStats, distinct
from segpipe.evaluators.instance.update import instance_update

if TYPE_CHECKING:  # pandas is imported when a DataFrame is asked for: scoring and writing the tables need none
    import pandas as pd

    from segpipe.evaluators.instance.tables import ColumnTable

__all__ = [
    "EvaluationError", "InstanceReport", "InstanceStats", "SEGM_AREA_NOTE", "SUMMARY_METRICS",
    "default_iou_type", "evaluate_instances", "instance_compute", "instance_update", "parse_ground_truth",
    "validate_results",
]

SEGM_AREA_NOTE = (
    "segm: each result's bbox is dropped before evaluation, so the detection area is the mask area "
    "(as detectron2 does; pycocotools' loadRes would take it from the box)"
)
BBOX_AREA_NOTE = "bbox: detection area is the box's w*h (pycocotools' loadRes)"


@dataclass(frozen=True, eq=False)
class InstanceReport:
    """`tables` holds summary (metric, value), per_class, per_image and pr_curves as columns; the attributes of
    the same names are those tables as pandas DataFrames (built, and pandas imported, on first use)."""

    iou_type: str
    tables: Mapping[str, ColumnTable]
    warnings: list[str]
    precision: np.ndarray  # COCOeval.eval['precision'], [T, R, K, A, M]
    recall: np.ndarray  # COCOeval.eval['recall'], [T, K, A, M]

    @cached_property
    def summary(self) -> pd.DataFrame:
        return self.tables["summary"].to_pandas()

    @cached_property
    def per_class(self) -> pd.DataFrame:
        return self.tables["per_class"].to_pandas()

    @cached_property
    def per_image(self) -> pd.DataFrame:
        return self.tables["per_image"].to_pandas()

    @cached_property
    def pr_curves(self) -> pd.DataFrame:
        return self.tables["pr_curves"].to_pandas()

    @property
    def stats(self) -> list[float]:
        """The 12 numbers of COCOeval.stats, in its order."""
        return [float(v) for v in self.tables["summary"].columns["value"]]

    @property
    def area_note(self) -> str:
        return SEGM_AREA_NOTE if self.iou_type == "segm" else BBOX_AREA_NOTE


def images_without_detections(stats: InstanceStats) -> int:
    """How many images that hold ground-truth objects have no detection at all (e.g. results made on a subset)."""
    return int(np.count_nonzero(~np.isin(distinct(stats.gt_image), distinct(stats.det_image), assume_unique=True)))


def instance_compute(stats: InstanceStats) -> InstanceReport:
    """Reduce (merged) match records to the report tables."""
    from segpipe.evaluators.instance.tables import per_class_table, per_image_table, pr_curve_table, summary_table

    acc = accumulate(stats)
    warnings = list(stats.warnings)
    if len(stats.det_image) == 0 and not any("results list is empty" in w for w in warnings):
        warnings.append("no detections on the evaluated images: every category with ground truth scores 0")
    elif (uncovered := images_without_detections(stats)):
        warnings.append(
            f"{uncovered} of {len(distinct(stats.gt_image))} ground-truth images with objects got no result at all: "
            "AP counts every object of theirs as missed; if the results come from a subset of the images, "
            "score them against a ground truth of the same images")
    tables = {"summary": summary_table(acc), "per_class": per_class_table(acc, stats), "per_image": per_image_table(stats),
              "pr_curves": pr_curve_table(acc, stats)}
    return InstanceReport(
        iou_type=stats.iou_type,
        tables=tables,
        warnings=warnings,
        precision=acc.precision,
        recall=acc.recall,
    )


def evaluate_instances(
    gt: Mapping[str, Any] | GroundTruth,
    results: list[Mapping[str, Any]],
    *,
    iou_type: str | None = None,
    drop_invalid: bool = False,
    progress: Callable[[int], object] | None = None,
) -> InstanceReport:
    """One pass over every GT image. `iou_type` defaults to segm when results carry masks, else bbox."""
    kind = iou_type or default_iou_type(results if isinstance(results, list) else [])
    if kind not in IOU_TYPES:
        raise EvaluationError("iou_type", "", f"must be one of {IOU_TYPES}, got {kind!r}")
    return instance_compute(instance_update(gt, results, iou_type=kind, drop_invalid=drop_invalid, progress=progress))

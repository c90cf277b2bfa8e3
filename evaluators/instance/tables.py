"""The tables of a COCO mAP evaluation: summary, per class, per image, PR curves.

Each is a `ColumnTable` (named columns: text as lists of str, numbers as int64/float64 arrays). Writing them
(CSV + Parquet, segpipe.reports.tables) and printing them need no pandas, whose import costs about as much CPU as
evaluating 2,000 images; `to_pandas()` gives the DataFrame the Python API returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence, Union

import numpy as np

from segpipe.evaluators.instance.accumulate import SUMMARY_METRICS, Accumulated, summarize
from segpipe.evaluators.instance.stats import MAX_DETS, RECALL_THRESHOLDS, InstanceStats

if TYPE_CHECKING:
    import pandas as pd

PER_CLASS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
PER_IMAGE_COLUMNS = ("image_id", "file_name", "n_gt", "n_dt", "tp", "fp", "fn", "mean_iou")
PER_CLASS_COLUMNS = ("category", *PER_CLASS_METRICS, "n_gt", "n_dt", "category_id")
PR_CURVE_COLUMNS = ("category", "category_id", "iou", "recall", "precision")
# PR curves: (label, IoU threshold index or None for the mean over 0.5:0.95)
PR_CURVES = (("0.50", 0), ("0.75", 5), ("0.50:0.95", None))
AREA_ALL = 0
IOU_50 = 0
MAX_DET_100 = MAX_DETS.index(100)

Column = Union[Sequence[str], np.ndarray]  # text: a list of str; numbers: a 1-D int64 or float64 array


@dataclass(frozen=True, eq=False)
class ColumnTable:
    """A table as named columns of equal length. `untyped_when_empty`: with no rows its DataFrame has
    object columns (as a DataFrame built from an empty list of rows has)."""

    columns: Mapping[str, Column]
    untyped_when_empty: bool = False

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        if len(self) == 0 and self.untyped_when_empty:
            return pd.DataFrame(columns=list(self.columns))
        return pd.DataFrame({name: list(c) if not isinstance(c, np.ndarray) else c for name, c in self.columns.items()},
                            columns=list(self.columns))


def summary_table(acc: Accumulated) -> ColumnTable:
    stats = summarize(acc)
    return ColumnTable({"metric": list(SUMMARY_METRICS), "value": np.array([stats[m] for m in SUMMARY_METRICS], dtype=np.float64)})


def per_class_table(acc: Accumulated, stats: InstanceStats) -> ColumnTable:
    """One row per GT category (sorted by id); metrics are summarize() on the category's slice, -1 without GT.

    n_gt counts the GT annotations COCOeval scores (iscrowd=0); n_dt the detections it sees (best 100 per image).
    """
    per_metric: dict[str, list[float]] = {m: [] for m in PER_CLASS_METRICS}
    n_gt, n_dt = [], []
    for k, cat in enumerate(stats.category_ids):
        s = summarize(acc, category=k)
        for m in PER_CLASS_METRICS:
            per_metric[m].append(float(s[m]))
        n_gt.append(int(np.count_nonzero(~stats.gt_ignored[stats.gt_category == cat, AREA_ALL])))
        n_dt.append(int(np.count_nonzero(stats.det_category == cat)))
    return ColumnTable({
        "category": list(stats.category_names),
        **{m: np.array(v, dtype=np.float64) for m, v in per_metric.items()},
        "n_gt": np.array(n_gt, dtype=np.int64),
        "n_dt": np.array(n_dt, dtype=np.int64),
        "category_id": np.array([int(c) for c in stats.category_ids], dtype=np.int64),
    }, untyped_when_empty=True)


def per_image_table(stats: InstanceStats) -> ColumnTable:
    """Counts at IoU 0.5, area "all", maxDets 100, as COCOeval matches them; mean IoU of the true positives."""
    n_img = len(stats.image_ids)
    det_img = np.searchsorted(stats.image_ids, stats.det_image)
    gt_img = np.searchsorted(stats.image_ids, stats.gt_image)
    matched = stats.det_matched[:, AREA_ALL, IOU_50]
    ignored = stats.det_ignored[:, AREA_ALL, IOU_50]
    tp_mask = matched & ~ignored
    tp = np.bincount(det_img[tp_mask], minlength=n_img)
    fp = np.bincount(det_img[~matched & ~ignored], minlength=n_img)
    # The summary's rule: COCOeval scores only GT filed under a declared category. A duplicated annotation id
    # whose last copy names an undeclared category is filed there (COCO.loadAnns looks ids up again) and never scored.
    scored = ~stats.gt_ignored[:, AREA_ALL] & np.isin(stats.gt_category, np.asarray(stats.category_ids, dtype=np.int64))
    n_gt = np.bincount(gt_img[scored], minlength=n_img)
    iou_sum = np.bincount(det_img[tp_mask], weights=stats.det_iou[tp_mask], minlength=n_img)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_iou = np.where(tp > 0, iou_sum / np.maximum(tp, 1), np.nan)
    return ColumnTable({
        "image_id": stats.image_ids.astype(np.int64),
        "file_name": list(stats.file_names),
        "n_gt": n_gt.astype(np.int64),
        "n_dt": np.bincount(det_img, minlength=n_img).astype(np.int64),
        "tp": tp.astype(np.int64),
        "fp": fp.astype(np.int64),
        "fn": (n_gt - tp).astype(np.int64),
        "mean_iou": mean_iou.astype(np.float64),
    })


def pr_curve_table(acc: Accumulated, stats: InstanceStats) -> ColumnTable:
    """Long table: category, category_id, iou, recall (101 thresholds), precision (-1 for a category without GT)."""
    n_recall = len(RECALL_THRESHOLDS)
    curves_out = []
    for k in range(len(stats.category_ids)):
        curves = acc.precision[:, :, k, AREA_ALL, MAX_DET_100]  # [T, R]
        for _, t in PR_CURVES:
            curves_out.append(curves[t] if t is not None else
                              (curves.mean(axis=0) if (curves > -1).all() else np.full(curves.shape[1], -1.0)))
    n_blocks = len(curves_out)
    names = [name for name in stats.category_names for _ in PR_CURVES]
    return ColumnTable({
        "category": [name for name in names for _ in range(n_recall)],
        "category_id": np.repeat(np.array([int(c) for c in stats.category_ids], dtype=np.int64), len(PR_CURVES) * n_recall),
        "iou": [label for _ in stats.category_ids for label, _t in PR_CURVES for _r in range(n_recall)],
        "recall": np.tile(np.asarray(RECALL_THRESHOLDS, dtype=np.float64), n_blocks),
        "precision": (np.concatenate(curves_out) if curves_out else np.zeros(0)).astype(np.float64),
    }, untyped_when_empty=True)

"""pandas tables of a COCO mAP evaluation: summary, per class, per image, PR curves (issue 3 report columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segpipe.evaluators.instance_accumulate import SUMMARY_METRICS, Accumulated, summarize
from segpipe.evaluators.instance_stats import MAX_DETS, RECALL_THRESHOLDS, InstanceStats

PER_CLASS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
PER_IMAGE_COLUMNS = ("image_id", "file_name", "n_gt", "n_dt", "tp", "fp", "fn", "mean_iou")
# PR curves: (label, IoU threshold index or None for the mean over 0.5:0.95)
PR_CURVES = (("0.50", 0), ("0.75", 5), ("0.50:0.95", None))
AREA_ALL = 0
IOU_50 = 0
MAX_DET_100 = MAX_DETS.index(100)


def summary_table(acc: Accumulated) -> pd.DataFrame:
    stats = summarize(acc)
    return pd.DataFrame({"metric": list(SUMMARY_METRICS), "value": [stats[m] for m in SUMMARY_METRICS]})


def per_class_table(acc: Accumulated, stats: InstanceStats) -> pd.DataFrame:
    """One row per GT category (sorted by id); metrics are summarize() on the category's slice, -1 without GT.

    n_gt counts the GT annotations COCOeval scores (iscrowd=0); n_dt the detections it sees (best 100 per image).
    """
    rows = []
    for k, (cat, name) in enumerate(zip(stats.category_ids, stats.category_names)):
        s = summarize(acc, category=k)
        rows.append({
            "category": name,
            **{m: s[m] for m in PER_CLASS_METRICS},
            "n_gt": int(np.count_nonzero(~stats.gt_ignored[stats.gt_category == cat, AREA_ALL])),
            "n_dt": int(np.count_nonzero(stats.det_category == cat)),
            "category_id": int(cat),
        })
    columns = ["category", *PER_CLASS_METRICS, "n_gt", "n_dt", "category_id"]
    return pd.DataFrame(rows, columns=columns)


def per_image_table(stats: InstanceStats) -> pd.DataFrame:
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
    return pd.DataFrame({
        "image_id": stats.image_ids.astype(np.int64),
        "file_name": list(stats.file_names),
        "n_gt": n_gt.astype(np.int64),
        "n_dt": np.bincount(det_img, minlength=n_img).astype(np.int64),
        "tp": tp.astype(np.int64),
        "fp": fp.astype(np.int64),
        "fn": (n_gt - tp).astype(np.int64),
        "mean_iou": mean_iou,
    }, columns=list(PER_IMAGE_COLUMNS))


def pr_curve_table(acc: Accumulated, stats: InstanceStats) -> pd.DataFrame:
    """Long table: category, category_id, iou, recall (101 thresholds), precision (-1 for a category without GT)."""
    frames = []
    for k, (cat, name) in enumerate(zip(stats.category_ids, stats.category_names)):
        for label, t in PR_CURVES:
            curves = acc.precision[:, :, k, AREA_ALL, MAX_DET_100]  # [T, R]
            precision = curves[t] if t is not None else (curves.mean(axis=0) if (curves > -1).all() else np.full(curves.shape[1], -1.0))
            frames.append(pd.DataFrame({
                "category": name, "category_id": int(cat), "iou": label,
                "recall": RECALL_THRESHOLDS, "precision": precision,
            }))
    if not frames:
        return pd.DataFrame(columns=["category", "category_id", "iou", "recall", "precision"])
    return pd.concat(frames, ignore_index=True)

"""Per-class precision / recall / F1 at every score threshold, from the actual detections.

A threshold `s` keeps the detections with score >= s. At each distinct score of a class (ties form one step),
precision = TP / kept, recall = TP / n_gt, F1 = 2PR / (P + R), where TP, kept and n_gt are COCOeval's counts at
IoU 0.5, area "all", best 100 per image (detections COCOeval ignores are left out, like its `dtIgnore`).

This is *not* the 101-point interpolated curve of `accumulate`: the interpolated precision at a recall is
the best precision at any higher recall, so an F1 optimum read from it can report a precision that no
threshold achieves (faster-coco-eval computed its optimal F1 that way until its 1.8 release:
https://github.com/MiXaiLL76/faster_coco_eval/issues/73; 1.8 agrees with this module on the test case). The F1-optimal threshold here is a threshold a
deployment can use, with the precision and recall it will get on this data. Ties in F1 go to the higher
threshold (fewer detections for the same F1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segpipe.evaluators.instance.stats import InstanceStats

AREA_ALL = 0
IOU_50 = 0
MAX_DET = 100
CURVE_COLUMNS = ("category", "category_id", "threshold", "n_kept", "tp", "fp", "n_gt", "precision", "recall", "F1")
OPTIMUM_COLUMNS = ("category", "category_id", "threshold", "precision", "recall", "F1", "tp", "fp", "n_gt")


def class_threshold_curve(scores: np.ndarray, true_positive: np.ndarray, n_gt: int) -> pd.DataFrame:
    """One step per distinct score, highest first: counts, precision, recall and F1 of `score >= threshold`.

    >>> class_threshold_curve(np.array([0.9, 0.8, 0.8]), np.array([True, False, True]), 2)[["threshold", "tp", "F1"]].values.tolist()
    [[0.9, 1.0, 0.6666666666666666], [0.8, 2.0, 0.8]]
    """
    order = np.argsort(-scores, kind="mergesort")
    s = np.asarray(scores, dtype=np.float64)[order]
    tp = np.cumsum(np.asarray(true_positive, dtype=bool)[order])
    # the last detection of each run of equal scores closes a step
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, dtype=np.int64)
    kept = last + 1
    tp_at = tp[last].astype(np.float64)
    precision = tp_at / kept
    recall = tp_at / n_gt if n_gt > 0 else np.full(len(last), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if n_gt == 0:
        f1 = np.full(len(last), np.nan)
    return pd.DataFrame({
        "threshold": s[last], "n_kept": kept.astype(np.int64), "tp": tp_at, "fp": kept - tp_at,
        "n_gt": np.full(len(last), n_gt, dtype=np.int64), "precision": precision, "recall": recall, "F1": f1,
    })


def threshold_tables(stats: InstanceStats) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves: one row per class and distinct score, optimum: one row per class with its F1-optimal threshold).

    A class without GT has NaN recall and F1 and no optimum (threshold NaN); a class with GT but no
    detections has an optimum row with threshold NaN and F1 0.
    """
    frames = []
    optimum = []
    for cat, name in zip(stats.category_ids, stats.category_names):
        rows = np.flatnonzero((stats.det_category == cat) & (stats.det_rank < MAX_DET)
                              & ~stats.det_ignored[:, AREA_ALL, IOU_50])
        n_gt = int(np.count_nonzero(~stats.gt_ignored[stats.gt_category == cat, AREA_ALL]))
        curve = class_threshold_curve(stats.det_score[rows], stats.det_matched[rows, AREA_ALL, IOU_50], n_gt)
        curve.insert(0, "category_id", int(cat))
        curve.insert(0, "category", name)
        frames.append(curve)
        best = {"category": name, "category_id": int(cat), "threshold": np.nan, "precision": np.nan,
                "recall": np.nan, "F1": np.nan, "tp": 0.0, "fp": 0.0, "n_gt": n_gt}
        if n_gt > 0:
            best.update(F1=0.0, recall=0.0)
            if len(curve):
                i = int(np.argmax(curve["F1"].to_numpy()))  # first maximum = highest threshold among ties
                best.update({k: curve[k].iloc[i] for k in ("threshold", "precision", "recall", "F1", "tp", "fp")})
        optimum.append(best)
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CURVE_COLUMNS))
    return curves[list(CURVE_COLUMNS)], pd.DataFrame(optimum, columns=list(OPTIMUM_COLUMNS))

"""COCOeval's `accumulate` and `summarize` over InstanceStats: the same arrays, the same floats.

`precision` is [T, R, K, A, M] and `recall` [T, K, A, M], -1 where a category has no non-ignored GT, built
with the very operations of pycocotools 2.0.11 (integer cumsums, `tp / npig`, `tp / (fp + tp + eps)`,
the right-to-left running maximum, `searchsorted(..., side='left')`), so means over them match bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segpipe.evaluators import kernel
from segpipe.evaluators.instance.stats import (
    AREA_LABELS,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    InstanceStats,
)

SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# (ap?, iou threshold or None for the 0.5:0.95 mean, area label, maxDets), COCOeval._summarizeDets' order
SUMMARY_SPECS: tuple[tuple[bool, float | None, str, int], ...] = (
    (True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100),
    (True, None, "small", 100), (True, None, "medium", 100), (True, None, "large", 100),
    (False, None, "all", 1), (False, None, "all", 10), (False, None, "all", 100),
    (False, None, "small", 100), (False, None, "medium", 100), (False, None, "large", 100),
)


@dataclass(frozen=True, eq=False)
class Accumulated:
    precision: np.ndarray  # [T, R, K, A, M]
    recall: np.ndarray  # [T, K, A, M]


def accumulate(stats: InstanceStats) -> Accumulated:
    """COCOeval.accumulate over the records.

    Per category the detections are sorted by score once (a stable sort, so for each maxDets the rows kept are in
    the order COCOeval's own mergesort of that subset gives); each (area, IoU threshold) lane then takes the same
    integer counts and the same float operations as pycocotools' loop (in C with the kernel, else `_curves`), so
    the arrays are bit-identical.
    """
    t_n, r_n, k_n, a_n, m_n = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(stats.category_ids), len(AREA_LABELS), len(MAX_DETS)
    precision = -np.ones((t_n, r_n, k_n, a_n, m_n))
    recall = -np.ones((t_n, k_n, a_n, m_n))
    positives: tuple[np.ndarray, np.ndarray] | None = None
    if kernel.available():
        # true / false positive flags of every detection [N, A, T], computed once: each (category, maxDets) takes its
        # rows with one gather (40 contiguous bytes a row) and one transpose into the kernel's lane-major order
        counted_all = ~stats.det_ignored
        positives = (stats.det_matched & counted_all, ~stats.det_matched & counted_all)
    for k, cat in enumerate(stats.category_ids):
        npig = np.count_nonzero(~stats.gt_ignored[stats.gt_category == cat], axis=0)  # [A]
        areas = np.flatnonzero(npig)  # COCOeval skips the (category, area) pairs without a non-ignored GT
        if not len(areas):
            continue
        in_cat = np.flatnonzero(stats.det_category == cat)  # already in image, rank order
        by_score = in_cat[np.argsort(-stats.det_score[in_cat], kind="mergesort")]
        for m, max_det in enumerate(MAX_DETS):
            rows = by_score[stats.det_rank[by_score] < max_det]
            nd = len(rows)
            if not nd:
                precision[:, :, k, areas, m] = 0.0
                recall[:, k, areas, m] = 0.0
                continue
            if positives is not None:  # the same floats, one C loop per lane (segpipe/evaluators/_kernel.c)
                lanes = len(areas) * t_n
                tp_rows, fp_rows = positives[0][rows], positives[1][rows]  # [n, A, T]
                if len(areas) != a_n:
                    tp_rows, fp_rows = tp_rows[:, areas], fp_rows[:, areas]
                tps = np.ascontiguousarray(tp_rows.reshape(nd, lanes).T)
                fps = np.ascontiguousarray(fp_rows.reshape(nd, lanes).T)
                q = np.empty((lanes, r_n))
                final = np.empty(lanes)
                kernel.accumulate_lanes(tps=tps, fps=fps, npig=np.repeat(npig[areas].astype(np.float64), t_n),
                                        thresholds=RECALL_THRESHOLDS, precision=q, recall=final)
                precision[:, :, k, areas, m] = q.reshape(len(areas), t_n, r_n).transpose(1, 2, 0)
                recall[:, k, areas, m] = final.reshape(len(areas), t_n).T
                continue
            matched = stats.det_matched[rows][:, areas]  # [n, A', T]
            counted = ~stats.det_ignored[rows][:, areas]
            tp_sum = np.cumsum(np.moveaxis(matched & counted, 0, -1), axis=-1).astype(dtype=float)  # [A', T, n]
            fp_sum = np.cumsum(np.moveaxis(~matched & counted, 0, -1), axis=-1).astype(dtype=float)
            for j, a in enumerate(areas.tolist()):
                precision[:, :, k, a, m], recall[:, k, a, m] = _curves(tp_sum[j], fp_sum[j], int(npig[a]), nd)
    return Accumulated(precision=precision, recall=recall)


def _curves(tp: np.ndarray, fp: np.ndarray, npig: int, nd: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision at the recall thresholds [T, R] and final recall [T] for one (category, area, maxDets)."""
    rc = tp / npig
    pr = tp / (fp + tp + np.spacing(1))
    # right-to-left running maximum: the interpolated precision envelope
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    q = np.zeros((tp.shape[0], len(RECALL_THRESHOLDS)))
    for t in range(tp.shape[0]):
        inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        ok = inds < nd  # pycocotools stops at the first index past the end
        q[t, ok] = pr[t, inds[ok]]
    final_recall = rc[:, -1] if nd else np.zeros(tp.shape[0])
    return q, final_recall


def summarize_value(acc: Accumulated, *, ap: bool, iou: float | None, area: str, max_dets: int, category: int | None = None) -> float:
    """COCOeval._summarize for one metric, over all categories or one category index."""
    a = [i for i, label in enumerate(AREA_LABELS) if label == area]
    m = [i for i, d in enumerate(MAX_DETS) if d == max_dets]
    s = acc.precision if ap else acc.recall
    if iou is not None:
        s = s[np.where(iou == IOU_THRESHOLDS)[0]]
    if category is not None:
        s = s[:, :, category : category + 1] if ap else s[:, category : category + 1]
    s = s[:, :, :, a, m] if ap else s[:, :, a, m]
    kept = s[s > -1]
    return -1.0 if len(kept) == 0 else float(np.mean(kept))


def summarize(acc: Accumulated, *, category: int | None = None) -> dict[str, float]:
    """The 12 COCO stats (AP, AP50, ..., ARl), as COCOeval.stats, or for one category index."""
    return {
        name: summarize_value(acc, ap=ap, iou=iou, area=area, max_dets=md, category=category)
        for name, (ap, iou, area, md) in zip(SUMMARY_METRICS, SUMMARY_SPECS)
    }

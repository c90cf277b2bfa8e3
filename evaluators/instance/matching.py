"""COCOeval's `computeIoU` + `evaluateImg`, vectorised: the same IoU floats, the same greedy matches.

IoUs come from pycocotools' own `mask.iou` (on RLE: masks are never decoded), one call per image instead of
one per (image, category). The greedy matching of `evaluateImg` runs for many (image, category) pairs at once:
step r matches every pair's r-th best detection for all area ranges and IoU thresholds in one numpy pass.
Rules kept from `evaluateImg` (pycocotools 2.0.11): a detection takes the best-IoU unmatched non-ignored GT
(ties: the later one), else the best ignored GT; crowd GTs can be matched again; unmatched detections outside
the area range are ignored; a match to a GT whose id is 0 reads as unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segpipe.evaluators.instance.stats import AREA_RANGES, IOU_THRESHOLDS

A = len(AREA_RANGES)
T = len(IOU_THRESHOLDS)
# evaluateImg compares against min(t, 1 - 1e-10)
THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
AREA_LO = np.array([lo for lo, _ in AREA_RANGES])
AREA_HI = np.array([hi for _, hi in AREA_RANGES])
# Cap on the working arrays of one batch (elements per array), to bound memory.
_BATCH_ELEMENTS = 1 << 22


def out_of_range(area: np.ndarray) -> np.ndarray:
    """[n] areas -> bool [n, A]: outside each COCO area range (COCOeval's strict < and > tests)."""
    area = np.asarray(area, dtype=np.float64)[:, None]
    return (area < AREA_LO[None, :]) | (area > AREA_HI[None, :])


@dataclass(frozen=True)
class PairInput:
    """One (image, category) pair with at least one detection and one GT."""

    ious: np.ndarray  # float64 [D, G], detections in score order, GTs in COCOeval order
    gt_ignored: np.ndarray  # bool [G, A]
    gt_crowd: np.ndarray  # bool [G]
    gt_id_nonzero: np.ndarray  # bool [G]
    det_out_of_range: np.ndarray  # bool [D, A]


@dataclass(frozen=True)
class PairMatches:
    matched: np.ndarray  # bool [D, A, T]
    ignored: np.ndarray  # bool [D, A, T]
    iou: np.ndarray  # float64 [D]: IoU of the match at threshold 0.5, area "all"; NaN when unmatched


def unmatched(det_out_of_range: np.ndarray) -> PairMatches:
    """Detections of a pair with no GT: nothing matches; those outside an area range are ignored there."""
    d = det_out_of_range.shape[0]
    return PairMatches(
        matched=np.zeros((d, A, T), dtype=bool),
        ignored=np.repeat(det_out_of_range[:, :, None], T, axis=2),
        iou=np.full(d, np.nan),
    )


def match_pairs(pairs: list[PairInput]) -> list[PairMatches]:
    """Greedy COCO matching of many pairs; results in the order of `pairs`.

    Pairs are batched by exact (D, G) shape, so no batch does work for padding.
    """
    out: list[PairMatches | None] = [None] * len(pairs)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(pairs):
        by_shape.setdefault(x.ious.shape, []).append(i)
    for (d, g), members in sorted(by_shape.items()):
        # [P, A, T, G] per step and [P, D, A, T] for the results: with dense detections (D = 100) and few GTs
        # the second dominates, so both count towards the cap.
        size = max(1, _BATCH_ELEMENTS // (A * T * (g + d)))
        for start in range(0, len(members), size):
            batch = members[start : start + size]
            for i, res in zip(batch, _match_batch([pairs[i] for i in batch])):
                out[i] = res
    return [r for r in out if r is not None]


def _match_batch(pairs: list[PairInput]) -> list[PairMatches]:
    p = len(pairs)
    d_max = max(x.ious.shape[0] for x in pairs)
    g_max = max(x.ious.shape[1] for x in pairs)
    ious = np.full((p, d_max, g_max), -np.inf)  # padding never passes a threshold
    gt_ig = np.zeros((p, A, g_max), dtype=bool)
    crowd = np.zeros((p, g_max), dtype=bool)
    id_ok = np.zeros((p, g_max), dtype=bool)
    det_out = np.zeros((p, d_max, A), dtype=bool)
    n_det = np.zeros(p, dtype=np.int64)
    for i, x in enumerate(pairs):  # every pair of a batch has the same shape in match_pairs; padding is general
        d, g = x.ious.shape
        ious[i, :d, :g] = x.ious
        gt_ig[i, :, :g] = x.gt_ignored.T
        crowd[i, :g] = x.gt_crowd
        id_ok[i, :g] = x.gt_id_nonzero
        det_out[i, :d] = x.det_out_of_range
        n_det[i] = d

    taken = np.zeros((p, A, T, g_max), dtype=bool)  # COCOeval's gtm > 0
    found = np.zeros((p, d_max, A, T), dtype=bool)
    best = np.zeros((p, d_max, A, T), dtype=np.int64)
    thr = THRESHOLDS[None, None, :, None]
    ig = gt_ig[:, :, None, :]
    for r in range(d_max):
        iou_r = ious[:, r, None, None, :]  # [P, 1, 1, G]
        cand = (iou_r >= thr) & ~(taken & ~crowd[:, None, None, :])
        regular = cand & ~ig
        use = np.where(regular.any(axis=-1, keepdims=True), regular, cand & ig)
        scored = np.where(use, iou_r, -np.inf)
        m = g_max - 1 - np.argmax(scored[..., ::-1], axis=-1)  # last index of the maximum, as evaluateImg
        hit = use.any(axis=-1)
        found[:, r] = hit
        best[:, r] = m
        pi, ai, ti = np.nonzero(hit)
        taken[pi, ai, ti, m[pi, ai, ti]] = True

    rows = np.arange(p)[:, None, None, None]
    matched = found & id_ok[rows, best]
    dt_ig = (found & gt_ig[rows, np.arange(A)[None, None, :, None], best]) | (~matched & det_out[..., None])
    m0 = best[:, :, 0, 0]
    iou0 = np.where(matched[:, :, 0, 0], np.take_along_axis(ious, m0[:, :, None], axis=2)[:, :, 0], np.nan)
    return [
        PairMatches(matched=matched[i, : n_det[i]], ignored=dt_ig[i, : n_det[i]], iou=iou0[i, : n_det[i]])
        for i in range(p)
    ]

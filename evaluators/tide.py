"""TIDE's six error types and what fixing each is worth in AP50 (Bolya et al., ECCV 2020,
https://arxiv.org/abs/2008.08115; definitions as in tidecv, https://github.com/dbolya/tide, tidecv/quantify.py).

Every false positive at IoU t_f = 0.5 (COCOeval's matches, so the base AP is the reported AP50) is given the
first type that applies, in tidecv's order; t_b = 0.1; IoU_same / IoU_other: the highest IoU with a
non-crowd GT of the detection's class / of another class:
  Loc   t_b <= IoU_same < t_f                       fix: becomes a true positive of that GT, if the GT is unmatched
  Cls   IoU_other >= t_f                            fix: relabelled to the GT's class, a true positive if the GT is unmatched
  Dupe  IoU >= t_f with a same-class GT already matched         fix: removed
  Bkg   IoU < t_b with every GT                     fix: removed
  Both  anything else (wrong class and t_b <= IoU < t_f)        fix: removed
  Miss  a non-crowd GT neither matched nor the target of a Loc/Cls error     fix: removed from the GT count
A Loc/Cls fix whose GT is matched, or whose GT a higher-scored Loc or Cls error also points at, removes the detection
(one true positive per GT, as tidecv's BestGTMatch).
dAP of a type = AP50 with only that type fixed - AP50, each type fixed alone (tidecv's non-progressive mode).

Deliberate differences from tidecv 1.0.1: matching is COCOeval's (crowd GTs are ignore regions as in COCOeval,
at most 100 detections per image *and class*), so the base is exactly the AP50 segpipe reports; Loc's upper
bound is strict (tidecv's `<= pos_thresh` also calls a detection at IoU exactly 0.5 with a matched GT a
localisation error; here that is a duplicate); a class without GT is left out of the mean as in COCOeval
(tidecv averages it in as AP 0 when it has detections), also after the Miss fix has removed a class's only GTs
(tidecv and hotcoco 1.3 then keep it as AP 0, so their dAP for Miss is smaller there); Bkg is IoU < t_b (tidecv: <=); a negative dAP is reported as
computed rather than clipped to 0; dAP is a fraction like AP (tidecv prints percentage points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from segpipe.evaluators.instance_accumulate import _curves
from segpipe.evaluators.overlaps import ImageOverlaps

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1
ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
ERROR_NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "both (class and location)",
               "Dupe": "duplicate", "Bkg": "background", "Miss": "missed"}
SUMMARY_COLUMNS = ("error", "name", "count", "dAP50", "AP50", "AP50_fixed")
ERROR_COLUMNS = ("error", "image_id", "file_name", "category_id", "score", "gt_category_id", "iou")


@dataclass(frozen=True)
class ImageErrors:
    kind: list[str]  # per detection: "" (true positive or ignored) or an error type
    target: np.ndarray  # int64 per detection: the GT index the error concerns, -1 if none
    missed: np.ndarray  # int64: indices of missed GTs
    claims: np.ndarray  # bool per detection: the highest-scoring Loc/Cls error on its (unmatched) GT, the one a fix turns into a true positive


def classify_image(o: ImageOverlaps, *, t_f: float = FOREGROUND_IOU, t_b: float = BACKGROUND_IOU) -> ImageErrors:
    """The error type of each false positive of one image (in score order for the `usable` bookkeeping) and its missed GTs."""
    valid = ~o.gt_crowd
    used = np.zeros(len(o.gt_category), dtype=bool)
    used[o.det_gt[o.det_gt >= 0]] = True
    usable = np.zeros_like(used)
    same = o.det_category[:, None] == o.gt_category[None, :]
    kind = [""] * len(o.det_category)
    target = np.full(len(o.det_category), -1, dtype=np.int64)
    claims = np.zeros(len(o.det_category), dtype=bool)
    for d in np.argsort(-o.det_score, kind="mergesort"):
        if o.det_gt[d] >= 0:
            continue  # true positive, or ignored (matched to a crowd region)
        kind[d], target[d] = _classify(o.iou[d], same=same[d], valid=valid, used=used, t_f=t_f, t_b=t_b)
        if kind[d] in ("Loc", "Cls") and not used[target[d]]:
            # One fix per GT, whichever type is being fixed: the best-scored error on it (tidecv's BestGTMatch)
            claims[d] = not usable[target[d]]
            usable[target[d]] = True
    return ImageErrors(kind=kind, target=target, missed=np.flatnonzero(valid & ~used & ~usable), claims=claims)


def _classify(iou: np.ndarray, *, same: np.ndarray, valid: np.ndarray, used: np.ndarray, t_f: float, t_b: float) -> tuple[str, int]:
    if not valid.any():
        return "Bkg", -1
    same_iou = np.where(same & valid, iou, -1.0)
    g = int(np.argmax(same_iou))
    if t_b <= same_iou[g] < t_f:
        return "Loc", g
    other = np.where(~same & valid, iou, -1.0)
    g = int(np.argmax(other))
    if other[g] >= t_f:
        return "Cls", g
    dup = np.where(same & valid & used, iou, -1.0)
    g = int(np.argmax(dup))
    if dup[g] >= t_f:
        return "Dupe", g
    g = int(np.argmax(np.where(valid, iou, -1.0)))
    if iou[g] < t_b:
        return "Bkg", g
    return "Both", g


def tide_tables(overlaps: Sequence[ImageOverlaps], *, category_ids: Sequence[int], t_f: float = FOREGROUND_IOU,
                t_b: float = BACKGROUND_IOU) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per error type with its count and dAP50; errors: one row per error)."""
    found = [classify_image(o, t_f=t_f, t_b=t_b) for o in overlaps]
    rows = []
    for o, e in zip(overlaps, found):
        for d in np.argsort(-o.det_score, kind="mergesort"):
            if e.kind[d]:
                g = e.target[d]
                rows.append((e.kind[d], int(o.image_id), o.file_name, int(o.det_category[d]), float(o.det_score[d]),
                             int(o.gt_category[g]) if g >= 0 else -1, float(o.iou[d, g]) if g >= 0 else np.nan))
        rows += [("Miss", int(o.image_id), o.file_name, -1, np.nan, int(o.gt_category[g]), np.nan) for g in e.missed]
    errors = pd.DataFrame(rows, columns=list(ERROR_COLUMNS))
    base = _ap50(overlaps, found, category_ids=category_ids, fix=None)
    summary = []
    for kind in ERROR_TYPES:
        fixed = _ap50(overlaps, found, category_ids=category_ids, fix=kind)
        summary.append({"error": kind, "name": ERROR_NAMES[kind], "count": int((errors["error"] == kind).sum()),
                        "dAP50": fixed - base, "AP50": base, "AP50_fixed": fixed})
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)), errors


def _ap50(overlaps: Sequence[ImageOverlaps], found: Sequence[ImageErrors], *, category_ids: Sequence[int], fix: str | None) -> float:
    """COCO 101-point AP at the matching threshold, mean over classes with GT, with the errors of type `fix` fixed."""
    scores: dict[int, list[float]] = {int(c): [] for c in category_ids}
    hits: dict[int, list[bool]] = {int(c): [] for c in category_ids}
    n_gt = {int(c): 0 for c in category_ids}
    for o, e in zip(overlaps, found):
        for c in o.gt_category[~o.gt_crowd]:
            n_gt[int(c)] += 1
        if fix == "Miss":
            for g in e.missed:
                n_gt[int(o.gt_category[g])] -= 1
        for d in np.argsort(-o.det_score, kind="mergesort"):
            cat, score = int(o.det_category[d]), float(o.det_score[d])
            if not e.kind[d]:
                if o.det_gt[d] >= 0 and not o.gt_crowd[o.det_gt[d]]:
                    scores[cat].append(score)
                    hits[cat].append(True)
            elif e.kind[d] != fix:
                scores[cat].append(score)
                hits[cat].append(False)
            elif fix in ("Loc", "Cls") and e.claims[d]:
                target = int(o.gt_category[e.target[d]])
                scores[target].append(score)
                hits[target].append(True)
            # any other fixed error: the detection is removed
    aps = []
    for c in n_gt:
        if n_gt[c] <= 0:
            continue
        hit = np.array(hits[c], dtype=bool)[np.argsort(-np.array(scores[c]), kind="mergesort")]
        tp = np.cumsum(hit).astype(float)[None, :]
        fp = np.cumsum(~hit).astype(float)[None, :]
        precision, _ = _curves(tp, fp, n_gt[c], len(hit))
        aps.append(float(np.mean(precision)))
    return float(np.mean(aps)) if aps else -1.0

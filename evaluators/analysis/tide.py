"""TIDE's six error types and what fixing each is worth in AP50 (Bolya et al., ECCV 2020,
https://arxiv.org/abs/2008.08115), in two variants (`tide_tables(..., variant=...)`):

"tidecv" (the default): tidecv 1.0.1's definitions (https://github.com/dbolya/tide, tidecv/quantify.py, ap.py,
errors/), so a table compares with papers made with tidecv. Per image the 100 best-scored detections (all classes
together) are matched greedily in score order to the unmatched same-class GT of highest IoU >= t_f = 0.5 (the
first GT on IoU ties); an unmatched detection with crowd IoU > t_f with a crowd GT of its class is ignored (left
out of AP, but still given an error type). Every unmatched or ignored detection gets the first type that applies,
t_b = 0.1, IoUs with non-crowd GTs only:
  Bkg   the image has no non-crowd GT                            fix: removed
  Loc   t_b <= best same-class IoU <= t_f                        fix: a true positive of that GT if it is unmatched
  Cls   best IoU with another class >= t_f                       fix: a true positive of that GT's class if it is unmatched
  Dupe  best IoU with a matched same-class GT >= t_f             fix: removed
  Bkg   best IoU with any GT <= t_b                              fix: removed
  Both  anything else                                            fix: removed
  Miss  a non-crowd GT neither matched nor the target of a Loc/Cls error (every GT of an image without detections)
                                                                 fix: removed from the GT count
One fix per GT: of the Loc/Cls errors on an unmatched GT only the highest-scored (the first on ties) becomes a true
positive (tidecv's BestGTMatch). AP50 is tidecv's: 101-point COCO interpolation per class, averaged over every
class with GT or detections (a class with detections and no GT counts as AP 0, so the base can be below COCO's
AP50); dAP of a type = AP50 with only that type fixed - AP50, clipped at 0, as a fraction (tidecv prints
percentage points).

"coco-matches" (segpipe's own): the same error types on COCOeval's matches, so the base is exactly the AP50 segpipe reports
(what differs from tidecv): matching is COCOeval's (at most 100 detections per image *and class*, IoU ties to the
later GT, a detection at IoU >= t_f with a crowd GT is ignored and not an error); Loc's upper bound is strict
(IoU exactly t_f with a matched GT is a Dupe) and Bkg is IoU < t_b; AP50 is the mean over classes with GT, also
after the Miss fix has removed a class's only GTs (hotcoco 1.3, which also starts from COCOeval's matches, keeps
such a class as AP 0: that is the one place where its dAP differs, for Miss); a negative dAP is reported as
computed. "hotcoco": "coco-matches" with hotcoco's Miss rule, which gives hotcoco's `tide_errors()` numbers
(tests/evaluators/test_error_analysis.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from segpipe.evaluators.instance.accumulate import _curves
from segpipe.evaluators.instance.overlaps import ImageOverlaps

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1
ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
ERROR_NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "both (class and location)",
               "Dupe": "duplicate", "Bkg": "background", "Miss": "missed"}
SUMMARY_COLUMNS = ("error", "name", "count", "dAP50", "AP50", "AP50_fixed")
ERROR_COLUMNS = ("error", "image_id", "file_name", "category_id", "score", "gt_category_id", "iou")
TIDE_VARIANTS = ("tidecv", "coco-matches", "hotcoco")
TIDECV_MAX_DETS = 100  # tidecv's Data(max_dets=100): per image, all classes together


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


def tide_tables(overlaps: Sequence[ImageOverlaps], *, category_ids: Sequence[int], variant: str = "tidecv",
                t_f: float = FOREGROUND_IOU, t_b: float = BACKGROUND_IOU) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per error type with its count and dAP50; errors: one row per error), by the definitions
    of `variant` (TIDE_VARIANTS; see the module docstring)."""
    if variant == "tidecv":
        return _tidecv_tables(overlaps, t_f=t_f, t_b=t_b)
    if variant not in TIDE_VARIANTS:
        raise ValueError(f"TIDE variant {variant!r}: expected one of {', '.join(TIDE_VARIANTS)}")
    emptied = variant == "hotcoco"
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
    base = _ap50(overlaps, found, category_ids=category_ids, fix=None, emptied_as_zero=emptied)
    summary = []
    for kind in ERROR_TYPES:
        fixed = _ap50(overlaps, found, category_ids=category_ids, fix=kind, emptied_as_zero=emptied)
        summary.append({"error": kind, "name": ERROR_NAMES[kind], "count": int((errors["error"] == kind).sum()),
                        "dAP50": fixed - base, "AP50": base, "AP50_fixed": fixed})
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)), errors


def _ap50(overlaps: Sequence[ImageOverlaps], found: Sequence[ImageErrors], *, category_ids: Sequence[int], fix: str | None,
          emptied_as_zero: bool = False) -> float:
    """COCO 101-point AP at the matching threshold, mean over classes with GT, with the errors of type `fix` fixed;
    `emptied_as_zero`: a class whose every GT the Miss fix removed counts as AP 0 (hotcoco 1.3) instead of leaving the mean."""
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
            if emptied_as_zero and any(len(o.gt_category) and (o.gt_category[~o.gt_crowd] == c).any() for o in overlaps):
                aps.append(0.0)
            continue
        hit = np.array(hits[c], dtype=bool)[np.argsort(-np.array(scores[c]), kind="mergesort")]
        tp = np.cumsum(hit).astype(float)[None, :]
        fp = np.cumsum(~hit).astype(float)[None, :]
        precision, _ = _curves(tp, fp, n_gt[c], len(hit))
        aps.append(float(np.mean(precision)))
    return float(np.mean(aps)) if aps else -1.0


# ---------------------------------------------------------------- tidecv's definitions


@dataclass
class _ErrorRecord:
    kind: str
    image: int  # index into overlaps
    det: int  # index into the image's detections, -1 for Miss
    gt: int  # index into the image's GTs, -1 if none
    uid: int  # the detection's (or, for Miss, the GT's) id, unique over the run
    cls: int  # the class its AP data point belongs to (the detection's; the GT's for Miss)
    score: float
    ignored: bool  # an ignored detection: no AP data point unless fixed
    fixes: bool = False  # a Loc/Cls error that the fix turns into a true positive (BestGTMatch)
    target_cls: int = -1  # the class of that true positive


@dataclass
class _TidecvRun:
    points: dict[int, dict[int, tuple[float, bool]]]  # class -> detection uid -> (score, true positive), push order
    gt_pos: dict[int, int]  # class -> non-crowd GT count
    errors: list[_ErrorRecord]


def _tidecv_run(overlaps: Sequence[ImageOverlaps], *, t_f: float, t_b: float) -> _TidecvRun:
    points: dict[int, dict[int, tuple[float, bool]]] = {}
    gt_pos: dict[int, int] = {}
    errors: list[_ErrorRecord] = []
    best: dict[tuple[int, int], tuple[float, int]] = {}  # (image, gt) -> (best score, uid) of Loc/Cls errors on it
    claims: list[tuple[_ErrorRecord, tuple[int, int]]] = []
    uid = 0
    for i in sorted(range(len(overlaps)), key=lambda k: overlaps[k].file_position):  # ties in AP keep tidecv's push order
        o = overlaps[i]
        valid = np.flatnonzero(~o.gt_crowd)  # tidecv's gt; crowd GTs are its ignore regions
        crowd = np.flatnonzero(o.gt_crowd)
        gt_cls = o.gt_category[valid]
        for c in gt_cls.tolist():
            gt_pos[c] = gt_pos.get(c, 0) + 1
            points.setdefault(c, {})
        gt_uid = {int(g): uid + k for k, g in enumerate(valid)}
        uid += len(valid)
        if not len(o.det_score):  # no detections: every GT missed
            for gi in valid.tolist():
                errors.append(_ErrorRecord("Miss", i, -1, gi, gt_uid[gi], int(o.gt_category[gi]), np.nan, True))
            continue
        order = np.lexsort((o.det_index, -o.det_score))[:TIDECV_MAX_DETS]  # stable sort by score over file order
        det_cls = o.det_category[order]
        iou = o.iou[np.ix_(order, valid)]  # [P, G] plain IoU with the non-crowd GTs
        same = det_cls[:, None] == gt_cls[None, :]
        cls_iou = iou * same
        used = np.zeros(len(valid), dtype=bool)
        matched = np.zeros(len(order), dtype=bool)
        buffer = cls_iou.copy()
        for p in range(len(order)):
            if not len(valid):
                break
            g = int(np.argmax(buffer[p]))
            if buffer[p, g] >= t_f:
                matched[p] = used[g] = True
                buffer[:, g] = 0
        ignored = np.zeros(len(order), dtype=bool)
        for region in crowd:  # tidecv: crowd IoU > t_f (strict) with a crowd GT of the detection's class
            ignored |= ~matched & (o.iou[order, region] > t_f) & (det_cls == o.gt_category[region])
        det_uid = uid + np.arange(len(order))
        uid += len(order)
        for p in range(len(order)):
            c = int(det_cls[p])
            if not ignored[p]:
                points.setdefault(c, {})[int(det_uid[p])] = (float(o.det_score[order[p]]), bool(matched[p]))
            if matched[p]:
                continue
            d = int(order[p])
            err = _ErrorRecord("", i, d, -1, int(det_uid[p]), c, float(o.det_score[d]), bool(ignored[p]))
            errors.append(err)
            if not len(valid):
                err.kind = "Bkg"
                continue
            g = int(np.argmax(cls_iou[p]))
            if t_b <= cls_iou[p, g] <= t_f:
                err.kind, err.gt, err.target_cls = "Loc", int(valid[g]), c
            else:
                other = iou[p] * ~same[p]
                g = int(np.argmax(other))
                if other[g] >= t_f:
                    err.kind, err.gt, err.target_cls = "Cls", int(valid[g]), int(gt_cls[g])
                else:
                    dup = cls_iou[p] * used
                    g = int(np.argmax(dup))
                    if dup[g] >= t_f:
                        err.kind, err.gt = "Dupe", int(valid[g])
                    else:
                        g = int(np.argmax(iou[p]))
                        err.kind, err.gt = ("Bkg", -1) if iou[p, g] <= t_b else ("Both", int(valid[g]))
            if err.kind in ("Loc", "Cls") and not used[g]:
                key = (i, int(valid[g]))
                if best.get(key, (-1.0, -1))[0] < err.score:  # the first of equal scores keeps the fix
                    best[key] = (err.score, err.uid)
                claims.append((err, key))
        for k, gi in enumerate(valid.tolist()):
            if not used[k] and (i, gi) not in best:
                errors.append(_ErrorRecord("Miss", i, -1, gi, gt_uid[gi], int(gt_cls[k]), np.nan, True))
    for err, key in claims:
        err.fixes = best[key][1] == err.uid
    return _TidecvRun(points=points, gt_pos=gt_pos, errors=errors)


def _tidecv_ap(points: dict[int, tuple[float, bool]], n_gt: int) -> float:
    """tidecv's APDataObject.get_ap as a fraction: 101-point interpolated AP over a stable sort by score."""
    if n_gt == 0:
        return 0.0
    data = sorted(points.values(), key=lambda x: -x[0])
    hit = np.array([h for _, h in data], dtype=bool)
    if not hit.size:
        return 0.0
    tp = np.cumsum(hit)
    precision = tp / np.arange(1, hit.size + 1)
    recall = tp / n_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # max(precisions[i:])
    x_range = np.array([x / 100 for x in range(101)])
    idx = np.searchsorted(recall, x_range, side="left")
    y = [float(precision[k]) if k < hit.size else 0.0 for k in idx]
    return sum(y) / len(y)


def _tidecv_map(points: dict[int, dict[int, tuple[float, bool]]], gt_pos: dict[int, int]) -> float:
    """Mean AP over every class with GT or detections (tidecv's ClassedAPDataObject.get_mAP)."""
    aps = [_tidecv_ap(points.get(c, {}), gt_pos.get(c, 0)) for c in dict.fromkeys([*points, *gt_pos])
           if points.get(c) or gt_pos.get(c, 0)]
    return sum(aps) / len(aps) if aps else 0.0


def _tidecv_fixed(run: _TidecvRun, kind: str) -> float:
    """AP50 with the errors of `kind` fixed (tidecv's TIDERun.fix_errors): errors' data points first, in order,
    then the true positives; the Miss fix lowers the GT count."""
    points: dict[int, dict[int, tuple[float, bool]]] = {}
    gt_pos = dict(run.gt_pos)
    for err in run.errors:
        if err.kind == kind:
            if kind == "Miss":
                gt_pos[err.cls] = gt_pos.get(err.cls, 0) - 1
            elif kind in ("Loc", "Cls") and err.fixes:
                points.setdefault(err.target_cls, {})[err.uid] = (err.score, True)
        elif err.kind != "Miss" and not err.ignored:
            points.setdefault(err.cls, {})[err.uid] = (err.score, False)
    for c in run.points:
        for u, (score, hit) in run.points[c].items():
            if hit:
                points.setdefault(c, {})[u] = (score, True)
    return _tidecv_map(points, gt_pos)


def _tidecv_tables(overlaps: Sequence[ImageOverlaps], *, t_f: float, t_b: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = _tidecv_run(overlaps, t_f=t_f, t_b=t_b)
    base = _tidecv_map(run.points, run.gt_pos)
    rows = []
    for err in run.errors:
        o = overlaps[err.image]
        g = err.gt
        rows.append((err.kind, int(o.image_id), o.file_name, int(o.det_category[err.det]) if err.det >= 0 else -1,
                     err.score, int(o.gt_category[g]) if g >= 0 else -1,
                     float(o.iou[err.det, g]) if g >= 0 and err.det >= 0 else np.nan))
    errors = pd.DataFrame(rows, columns=list(ERROR_COLUMNS))
    summary = []
    for kind in ERROR_TYPES:
        fixed = _tidecv_fixed(run, kind)
        summary.append({"error": kind, "name": ERROR_NAMES[kind], "count": int((errors["error"] == kind).sum()),
                        "dAP50": max(fixed - base, 0.0), "AP50": base, "AP50_fixed": fixed})
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)), errors

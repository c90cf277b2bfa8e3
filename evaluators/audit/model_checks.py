"""Model-assisted checks: compare each image's annotations with the model's predictions.

What cleanlab's `object_detection.find_label_issues` and FiftyOne's `compute_mistakenness` look for, in one
ranking. Phase 1, per image: one IoU matrix (pycocotools, masks when both sides have them, else boxes), where a
prediction matching another annotation better (at IoU >= 0.5) is that annotation's, not this one's (one
prediction, one object, as COCO matches them), then

- possibly wrong class: a confident prediction of another class overlaps the annotation at IoU >= 0.5
  better than any same-class prediction, or at all where the model sees nothing of the label's class there
  (evidence = confidence * IoU, discounted by a same-class match);
- possibly sloppy outline: the best confident same-class prediction disagrees with the outline on IoU (< 0.8),
  boundary IoU (< 0.5; Cheng et al., CVPR 2021, https://arxiv.org/abs/2103.16562, band 2 % of the image
  diagonal), area (label 1.25x larger or smaller: grown, eroded, dilated) or shape (a label filling its box
  where the model's mask does not: box-replaced), *and* that value is an outlier among the class's matched
  pairs (modified z-score > 3.5), so a model whose outlines differ from every label alike raises nothing
  (evidence = the prediction's confidence);
- possibly spurious: no confident prediction overlaps the annotation although the model is confident elsewhere
  in the image (evidence = top confidence in the image * (1 - seen), seen = the best confidence * IoU over all
  predictions, or the IoU of an unconfident detection matching the label at IoU >= 0.5 when larger: a detector
  that keeps low scores leaves one on an object it missed, none on empty background);
- possibly missing: a confident prediction, not a speck (under SPECK_FRACTION of the class's median label
  area), that no annotation explains; score = confidence * (1 - best IoU) * the model's reliability at that
  confidence: the share of the class's other detections within 0.05 of it that an annotation confirms, as a
  reliability diagram reads it.

Phase 2 calibrates the annotation-side checks against the model's own error rate, in the spirit of confident
learning (Northcutt et al., JAIR 2021, https://arxiv.org/abs/1911.00068: per-class thresholds from how the
model behaves on the labels of that class). Per class, p = the share of the *other* labels of the class the
model disagrees with at least as strongly on the same evidence (the same class swap; "nothing seen", counted
apart from "seen only by an unconfident detection"; for an
outline the smallest share over the evidence that flagged it: IoU, or boundary IoU when IoU passed, area
ratio, box shape; on each, the larger of the shares at least as strong and alike, within 0.05: a misplacement
the model repeats is its habit however strong), and e = the share of the class's labels the model disagrees with at all (for an outline:
on the outline; otherwise any kind; this label counted, so p / e < 1). Then

    score = evidence * (1 - min(1, p / e))        (e = 0, the model agrees with every other label: the evidence)

so a disagreement as common as the model's ordinary mistakes sinks towards 0, one rarer than any of them keeps
its full evidence. A score of 0.8 from confidence 0.9 reads: the model is sure, and about a
tenth of its own disagreements with this class are as strong as this one.

A disagreement that is the model's habit is not reported at all: when at least half of the model's
disagreements with the class are alike (the same swap; outlines within 0.05 on every evidence that flagged it;
labels only an unconfident detection matches, out of those no confident prediction covers) and they number at
least 8, or when a detection's confidence is one where the class's other detections are unmatched at least half
the time (see MODEL_HABIT_SHARE). Nothing seen at all is a spurious label's own evidence and never a habit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, cast

import numpy as np

from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.findings import AuditFinding, make_finding
from segpipe.evaluators.audit.format_checks import ImageInfo, PreparedAnnotation
from segpipe.evaluators.audit.geometry_checks import MIN_INSTANCES_FOR_STATS, Z_THRESHOLD, robust_z
from segpipe.evaluators.semantic.boundary import DEFAULT_DILATION_RATIO, boundary_width, mask_boundary
from segpipe.evaluators.instance.rle_strings import compressed_counts, rle_totals
from segpipe.core.errors import EvaluationError

CONFIDENT = 0.5  # a prediction at or above this score is one the model "is confident" about
MIN_SCORE = 0.05  # predictions below this are noise for every check
MATCH_IOU = 0.1  # any real overlap
WRONG_CLASS_IOU = 0.5
SLOPPY_IOU = 0.8  # a confident same-class prediction below this IoU disagrees with the outline
DUPLICATE_IOU = 0.5  # an unexplained prediction this close to an annotation is a duplicate detection, not a miss
AGREE_IOU = 0.5  # COCO's match threshold: below it the model disagrees with the annotation
SLOPPY_BOUNDARY_IOU = 0.5  # boundary IoU below this: the outlines run apart by more than half the band
# Boundary IoU is measured below this IoU only: for the outline bands to overlap less than half, boundaries
# must part by ~d/2 (d = 2 % of the diagonal); on a disc of radius R <= half the diagonal that costs IoU
# 1 - 2 (d / 2) / R <= 0.96. Above, decoding the masks buys nothing.
BOUNDARY_MAX_IOU = 0.96
SLOPPY_AREA_RATIO = 1.25  # label area / predicted area beyond 1.25x either way: grown or shrunk outline
BOX_FILL = 0.97  # a label filling >= 97 % of its box is box-shaped...
MODEL_NOT_BOX_FILL = 0.9  # ...and suspicious when the model's mask fills less than 90 % of its own box
# Predictions smaller than this fraction of the class's median annotation area are specks (a semantic model's
# stray pixels turned into connected components), not missing objects. Chosen on the demo U-Nets' output on the
# embedded Oxford-IIIT Pet sample (converted with one 'pet' category): the components of the 2- and 3-epoch
# checkpoints are under 0.5 % of the median pet (623 and 155 specks) or over 10 % (the pets), the 1-epoch one
# adds 19 fragments of 2-10 %; 2 % sits between the specks and any pet.
SPECK_FRACTION = 0.02
PREDICTIONS_PATH = "predictions"


@dataclass(frozen=True)
class Prediction:
    image_id: int
    category_id: int
    score: float
    bbox: tuple[float, float, float, float]
    rle: Mapping[str, Any] | None


def parse_predictions(
    predictions: Sequence[Mapping[str, Any]], *, images: Mapping[int, ImageInfo], categories: Mapping[int, str]
) -> list[Prediction]:
    """COCO results -> Predictions at or above MIN_SCORE. Raises EvaluationError naming the result and field."""
    out: list[Prediction] = []
    where_of: list[str] = []
    for k, raw in enumerate(predictions):
        where = f"results[{k}]"
        if not isinstance(raw, dict):
            raise EvaluationError(PREDICTIONS_PATH, where, "not an object")
        image_id, cat, score = raw.get("image_id"), raw.get("category_id"), raw.get("score")
        if image_id not in images:
            raise EvaluationError(PREDICTIONS_PATH, f"{where}.image_id", f"{image_id!r} is not an image of the dataset")
        if cat not in categories:
            raise EvaluationError(PREDICTIONS_PATH, f"{where}.category_id", f"{cat!r} is not a category of the dataset")
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            raise EvaluationError(PREDICTIONS_PATH, f"{where}.score", f"not a finite number: {score!r}")
        if score < MIN_SCORE:
            continue
        # Keys of `images` and `categories` (checked above), which are int-keyed.
        image_key, category_key = cast(int, image_id), cast(int, cat)
        im = images[image_key]
        seg, bbox = raw.get("segmentation"), raw.get("bbox")
        rle = None
        if isinstance(seg, dict):
            size = list(seg.get("size", []))
            if size != [im.height, im.width]:
                raise EvaluationError(PREDICTIONS_PATH, f"{where}.segmentation.size", f"{size} differs from the image's [{im.height}, {im.width}]")
            counts = seg.get("counts")
            if not isinstance(counts, (str, bytes)):
                raise EvaluationError(PREDICTIONS_PATH, f"{where}.segmentation.counts", "expected a compressed RLE string")
            rle = {"size": size, "counts": compressed_counts(seg)}
        elif seg is not None:
            raise EvaluationError(PREDICTIONS_PATH, f"{where}.segmentation", "expected a compressed RLE dict")
        if bbox is None and rle is not None:
            from pycocotools import mask as mask_utils

            bbox = [float(v) for v in mask_utils.toBbox(rle)]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            raise EvaluationError(PREDICTIONS_PATH, f"{where}.bbox", f"not [x, y, w, h] finite numbers: {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        out.append(Prediction(image_id=int(image_key), category_id=int(category_key), score=float(score), bbox=(x, y, w, h), rle=rle))
        where_of.append(where)
    totals = rle_totals([p.rle["counts"] if p.rle is not None else b"" for p in out])
    for p, total, where in zip(out, totals.tolist(), where_of):
        if p.rle is not None and total != p.rle["size"][0] * p.rle["size"][1]:
            raise EvaluationError(PREDICTIONS_PATH, f"{where}.segmentation.counts", "not a valid RLE of the image's size")
    return out


def _iou(anns: Sequence[PreparedAnnotation], preds: Sequence[Prediction], *, use_masks: bool) -> np.ndarray:
    """IoU matrix, annotations x predictions."""
    from pycocotools import mask as mask_utils

    d: list[Mapping[str, Any] | None] | np.ndarray
    g: list[Mapping[str, Any] | None] | np.ndarray
    if use_masks:
        d, g = [p.rle for p in preds], [a.rle for a in anns]
    else:
        d = np.array([p.bbox for p in preds], dtype=np.float64)
        g = np.array([a.bbox for a in anns], dtype=np.float64)
    iou = np.asarray(mask_utils.iou(d, g, [0] * len(anns)), dtype=np.float64).reshape(len(preds), len(anns))
    return iou.T




def _best(values: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest value among allowed columns (-1 when none) and its column."""
    masked = np.where(allowed, values, -1.0)
    idx = masked.argmax(axis=1)
    return masked[np.arange(len(values)), idx], idx


def pair_boundary_iou(gt: np.ndarray, pred: np.ndarray, width: int, *, boxes: Sequence[Sequence[float]] = ()) -> float:
    """Boundary IoU of two boolean masks of one image (1.0 when neither has a boundary pixel).

    Computed on the crop around both masks (their [x, y, w, h] `boxes` when given, else found), padded so that
    the crop's edge never makes a contour that the image does not have.
    """
    if boxes:
        x_lo, y_lo = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x_hi, y_hi = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    else:
        rows = np.flatnonzero((gt | pred).any(axis=1))
        cols = np.flatnonzero((gt | pred).any(axis=0))
        if rows.size == 0:
            return 1.0
        y_lo, y_hi, x_lo, x_hi = float(rows[0]), float(rows[-1] + 1), float(cols[0]), float(cols[-1] + 1)
    pad = width + 1
    y0, y1 = max(0, int(math.floor(y_lo)) - pad), min(gt.shape[0], int(math.ceil(y_hi)) + pad)
    x0, x1 = max(0, int(math.floor(x_lo)) - pad), min(gt.shape[1], int(math.ceil(x_hi)) + pad)
    g = mask_boundary(np.ascontiguousarray(gt[y0:y1, x0:x1]), width)
    p = mask_boundary(np.ascontiguousarray(pred[y0:y1, x0:x1]), width)
    union = np.count_nonzero(g | p)
    return float(np.count_nonzero(g & p)) / union if union else 1.0


@dataclass
class _AnnEvidence:
    """What one image's predictions say about one annotation (phase 1), scored against its class (phase 2)."""

    ann: PreparedAnnotation
    image: ImageInfo
    kind: str  # a MODEL_CHECKS name, or "" when the model agrees
    evidence: float  # strength before calibration, in [0, 1]
    message: str
    # Badness on each kind of outline evidence (larger = worse; NaN = not measured), for the per-class tails.
    outline: tuple[float, float, float, float] = (math.nan, math.nan, math.nan, math.nan)
    other_category: int = 0  # wrong class: the class the model sees
    seen_weakly: bool = False  # spurious: an unconfident detection matches the label (the model's ordinary miss)
    reasons: list[tuple[int, str]] = field(default_factory=list)  # (outline evidence index, text) past the fixed bounds


@dataclass
class _PredEvidence:
    pred: Prediction
    image: ImageInfo
    unexplained: bool  # confident, not a speck, and no annotation explains it
    best_iou: float


def _fill(area: float, bbox: Sequence[float]) -> float:
    box = float(bbox[2]) * float(bbox[3])
    return area / box if box > 0 else 0.0


def image_evidence(
    anns: Sequence[PreparedAnnotation], preds: Sequence[Prediction], *, image: ImageInfo, categories: Mapping[int, str],
    use_masks: bool, speck_area: Mapping[int, float]
) -> tuple[list[_AnnEvidence], list[_PredEvidence]]:
    """Phase 1 for one image: each annotation's and each confident prediction's disagreement with the other side."""
    from pycocotools import mask as mask_utils

    out: list[_AnnEvidence] = []
    scores = np.array([p.score for p in preds], dtype=np.float64)
    confident = scores >= CONFIDENT
    top = float(scores.max()) if len(preds) else 0.0
    explained = np.zeros(len(preds), dtype=bool)
    iou = _iou(anns, preds, use_masks=use_masks) if anns and preds else np.zeros((len(anns), len(preds)))
    width = boundary_width((image.height, image.width), DEFAULT_DILATION_RATIO)
    pending: list[tuple[int, int, int]] = []  # (annotation, prediction) pairs whose boundary IoU is measured below
    pred_area = (
        [float(v) for v in mask_utils.area([p.rle for p in preds])] if use_masks and preds else [p.bbox[2] * p.bbox[3] for p in preds]
    )
    if anns and preds:
        gt_cat = np.array([a.category_id for a in anns])
        pr_cat = np.array([p.category_id for p in preds])
        same = gt_cat[:, None] == pr_cat[None, :]
        # One prediction, one object, as COCO matches them: a prediction that matches another annotation (IoU >=
        # AGREE_IOU) better than this one is that annotation's detection, and a neighbour's detection touching
        # this label says nothing about its outline or class. Ties stay with both (a duplicate label).
        best_gt = iou.max(axis=0, keepdims=True)
        mine = (iou >= best_gt) | (best_gt < AGREE_IOU)
        same_iou, same_j = _best(iou, same & confident[None, :] & mine)
        other_iou, other_j = _best(iou, ~same & confident[None, :] & mine)
        support = (iou * scores[None, :]).max(axis=1)  # best confidence-weighted overlap, any prediction
        # A detector keeps unconfident detections too (torchvision's Mask R-CNN down to box_score_thresh=0.05,
        # https://pytorch.org/vision/stable/models/generated/torchvision.models.detection.maskrcnn_resnet50_fpn.html):
        # an object it missed usually still has one in place, a label on empty background has none. A weak
        # detection matching the label (IoU >= AGREE_IOU, COCO's match) counts as seen, by its IoU.
        weak = np.where(confident[None, :], 0.0, iou)
        weak = np.where(weak >= AGREE_IOU, weak, 0.0)
        weak_same = np.where(same, weak, 0.0).max(axis=1)
        weak = weak.max(axis=1)
        for g, a in enumerate(anns):
            s_iou, o_iou = float(same_iou[g]), float(other_iou[g])
            # Another class's confident prediction is this object under another name when it matches the label
            # (COCO's IoU >= 0.5), or when it is the only thing the model sees there. An unconfident detection of
            # the label's own class matching it says the model sees that class, only unsure: a partial overlap
            # with another class is then another object (or the model's mistake), not a swap.
            if o_iou >= MATCH_IOU and o_iou > s_iou and (o_iou >= WRONG_CLASS_IOU or (s_iou < MATCH_IOU and weak_same[g] == 0)):
                j = int(other_j[g])
                explained[j] = True
                agree = scores[same_j[g]] * s_iou if s_iou > 0 else 0.0
                name = categories.get(preds[j].category_id, str(preds[j].category_id))
                message = f"model predicts {name!r} (score {scores[j]:.2f}) at IoU {o_iou:.2f}; best {a.category!r} prediction IoU {max(s_iou, 0):.2f}"
                out.append(_AnnEvidence(a, image, F.CHECK_POSSIBLY_WRONG_CLASS, float(scores[j] * o_iou * (1 - agree)), message,
                                        other_category=preds[j].category_id))
            elif s_iou >= MATCH_IOU:
                j = int(same_j[g])
                explained[j] = True
                ratio = a.area / pred_area[j] if pred_area[j] > 0 else math.inf
                a_fill, p_fill = _fill(a.area, a.bbox), _fill(pred_area[j], preds[j].bbox)
                boxy = use_masks and a_fill >= BOX_FILL and p_fill < MODEL_NOT_BOX_FILL
                outline = (1 - s_iou, math.nan, abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf, a_fill - p_fill)
                reasons: list[tuple[int, str]] = []
                if s_iou < SLOPPY_IOU:
                    reasons.append((0, f"IoU {s_iou:.2f} (< {SLOPPY_IOU})"))
                if not 1 / SLOPPY_AREA_RATIO <= ratio <= SLOPPY_AREA_RATIO:
                    reasons.append((2, f"label area {ratio:.2f}x the model's"))
                if boxy:
                    reasons.append((3, f"box-shaped label (fills {a_fill:.0%} of its box, the model's mask {p_fill:.0%})"))
                # The model's confidence is the evidence; how far apart the outlines are enters through p (rarity).
                message = f"best {a.category!r} prediction (score {scores[j]:.2f}) disagrees with the outline: "
                out.append(_AnnEvidence(a, image, "", float(scores[j]), message, outline=outline, reasons=reasons))
                if use_masks and s_iou < BOUNDARY_MAX_IOU:
                    pending.append((len(out) - 1, g, j))
            elif top >= CONFIDENT:
                seen = max(float(support[g]), float(weak[g]))
                weak_text = f"; an unconfident detection matches it at IoU {float(weak[g]):.2f}" if weak[g] > support[g] else ""
                message = (f"no confident prediction overlaps this annotation (best score x IoU {float(support[g]):.2f}{weak_text}) "
                           f"while the model is confident elsewhere (top score {top:.2f})")
                out.append(_AnnEvidence(a, image, F.CHECK_POSSIBLY_SPURIOUS, top * (1 - seen), message, seen_weakly=bool(weak[g] > 0)))
            else:
                out.append(_AnnEvidence(a, image, "", 0.0, ""))
    else:
        out += [_AnnEvidence(a, image, "", 0.0, "") for a in anns]
    if pending:
        # One decode call per image and side: pycocotools' per-call cost dominates on small images.
        a_idx = sorted({g for _, g, _ in pending})
        p_idx = sorted({j for _, _, j in pending})
        rles = [anns[g].rle for g in a_idx] + [preds[j].rle for j in p_idx]
        masks = mask_utils.decode(rles).view(bool)  # uint8 0/1 read as bool without a copy
        # Crops from the masks' own extents (a file's bbox may disagree with its mask).
        boxes = mask_utils.toBbox(rles).tolist()
        a_masks, p_masks = masks[:, :, : len(a_idx)], masks[:, :, len(a_idx) :]
        a_box, p_box = boxes[: len(a_idx)], boxes[len(a_idx) :]
        for k, g, j in pending:
            ev = out[k]
            b_iou = pair_boundary_iou(a_masks[:, :, a_idx.index(g)], p_masks[:, :, p_idx.index(j)], width,
                                      boxes=(a_box[a_idx.index(g)], p_box[p_idx.index(j)]))
            ev.outline = (ev.outline[0], 1 - b_iou, ev.outline[2], ev.outline[3])
            if b_iou < SLOPPY_BOUNDARY_IOU:
                ev.reasons.insert(1 if ev.reasons and ev.reasons[0][0] == 0 else 0, (1, f"boundary IoU {b_iou:.2f} (< {SLOPPY_BOUNDARY_IOU})"))
    max_gt_iou = iou.max(axis=0) if anns and preds else np.zeros(len(preds))
    pred_out = []
    for j, p in enumerate(preds):
        if not confident[j]:
            continue
        area = pred_area[j]
        if area < speck_area.get(p.category_id, 0.0) and not explained[j]:
            continue  # a speck: neither a missing object nor evidence of the model's reliability
        unexplained = bool(~explained[j] & (max_gt_iou[j] < DUPLICATE_IOU))
        pred_out.append(_PredEvidence(p, image, unexplained, float(max_gt_iou[j])))
    return out, pred_out


RELIABILITY_HALF_WIDTH = 0.05  # a reliability diagram's bin of width 0.1 around the detection's confidence
RELIABILITY_PRIOR = 2.0  # pseudo-detections at the class's overall reliability (additive smoothing)
# Outline evidence, per pair: 1 - IoU, 1 - boundary IoU, |log area ratio|, label's box fill - the model's. Each is
# a reason when past its fixed bound above *and* an outlier among the class's matched pairs (modified z-score,
# as the geometry checks use), so that a model whose outlines differ from every label the same way (a trimap's
# unlabelled border band) raises nothing. The floors on the spread keep pixel noise from making outliers.
OUTLINE_MIN_SPREAD: tuple[float, ...] = (0.02, 0.02, 0.05, 0.02)
SOFT_OUTLINE_EVIDENCE = (1, 2)  # boundary IoU and area ratio: evidence only against the class's distribution


def _outline_outliers(group: Sequence[_AnnEvidence], outline: np.ndarray) -> list[list[int]]:
    """Per member: the outline evidence that holds (a sloppy outline when any does); sets kind and message."""
    z = np.full(outline.shape, np.inf)
    for f in range(outline.shape[1]):
        have = np.isfinite(outline[:, f])
        if int(np.count_nonzero(have)) >= MIN_INSTANCES_FOR_STATS:
            z[have, f] = robust_z(outline[have, f], min_mad=OUTLINE_MIN_SPREAD[f])
        elif f in SOFT_OUTLINE_EVIDENCE:
            # Too few pairs to know the model's ordinary outline habits: a boundary or area difference cannot be
            # told from them (a U-Net trained on trimaps misses every label's border band alike), so only the
            # IoU bound and the box shape, which hold on their own, flag an outline; the soft evidence is
            # then said beside the IoU, never alone.
            z[:, f] = np.nan
    out: list[list[int]] = []
    for i, ev in enumerate(group):
        iou_held = any(f == 0 and z[i, f] > Z_THRESHOLD for f, _ in ev.reasons)
        held = [(f, text) for f, text in ev.reasons if z[i, f] > Z_THRESHOLD or (np.isnan(z[i, f]) and iou_held)]
        out.append([f for f, _ in held])
        if held and not ev.kind:
            ev.kind = F.CHECK_POSSIBLY_SLOPPY
            ev.message = ev.message + "; ".join(text for _, text in held)
    return out


def _tail_share(values: np.ndarray, flagged: np.ndarray, value: float, *, self_flagged: bool) -> float:
    """Share of the other members whose value is at least `value` and who are themselves flagged (leave one out)."""
    n = len(values) - 1
    if n <= 0 or not math.isfinite(value) and math.isnan(value):
        return 0.0
    count = int(np.count_nonzero(flagged & (values >= value))) - (1 if self_flagged else 0)
    return max(0, count) / n


def _near_share(values: np.ndarray, flagged: np.ndarray, value: float, *, self_flagged: bool) -> float:
    """Share of the other members within RELIABILITY_HALF_WIDTH of `value` who are themselves flagged (leave one out)."""
    n = len(values) - 1
    if n <= 0 or math.isnan(value):
        return 0.0
    count = int(np.count_nonzero(flagged & (np.abs(values - value) <= RELIABILITY_HALF_WIDTH))) - (1 if self_flagged else 0)
    return max(0, count) / n


# A disagreement is not reported when it is the model's habit: at least half of the model's disagreements with
# the class are alike (alike = the same class swap; outlines within a reliability bin on every evidence that
# flagged this one; for a label that only an unconfident detection matches, the class's other labels seen that
# way, out of those no confident prediction covers), and at least MIN_INSTANCES_FOR_STATS of them, so that a habit
# is a habit and two or three label errors that happen to look alike (one annotator's erosions) are not taken for
# one. Likewise a detection at a confidence where the class's other detections are unmatched at least half the
# time. The model's ordinary mistake is then the likelier explanation: a majority vote, as a reliability diagram
# is read (https://scikit-learn.org/stable/modules/calibration.html). "As strong" alone never makes a habit: the
# weakest of a class's label errors has all the others stronger than itself.
MODEL_HABIT_SHARE = 0.5


def _is_habit(alike: float, of: float, n_others: int) -> bool:
    """`alike` (a share of the class's other labels) is at least MODEL_HABIT_SHARE of `of` and counts
    MIN_INSTANCES_FOR_STATS labels or more."""
    return of > 0 and alike / of >= MODEL_HABIT_SHARE and round(alike * n_others) >= MIN_INSTANCES_FOR_STATS


def _calibrated(evidence: float, p: float, e: float) -> float:
    return evidence * (1 - min(1.0, p / e)) if e > 0 else evidence


def _id_list(ids: Sequence[int], *, limit: int = 10) -> str:
    ordered = sorted(ids)
    return ", ".join(str(i) for i in ordered[:limit]) + (f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else "")


def _habit_findings(habits: Mapping[tuple[str, str, str, bool], Sequence[int]]) -> list[AuditFinding]:
    """One CHECK_MODEL_HABIT row per class and habit on the annotation side: what was left out, and why."""
    out: list[AuditFinding] = []
    for (kind, category, other, _weakly), ids in sorted(habits.items()):
        if kind == F.CHECK_POSSIBLY_WRONG_CLASS:
            what = f"the model predicts {other!r} on {len(ids)} {category!r} labels"
        elif kind == F.CHECK_POSSIBLY_SLOPPY:
            what = f"the model's outlines of {len(ids)} {category!r} labels differ from theirs alike"
        else:  # possibly_spurious, seen only unsure (`weakly`): nothing seen at all is never a habit
            what = f"{len(ids)} {category!r} labels are seen only by an unconfident detection (missed, unsure)"
        out.append(make_finding(check=F.CHECK_MODEL_HABIT, category=category, message=(
            f"{what}: at least half of its disagreements with the class, so taken as the model's habit and not listed "
            f"one by one as {kind}; if these labels are wrong, they are wrong together (a labelling convention): "
            f"look at a few. Annotation ids: {_id_list(ids)}")))
    return out


def _score_annotations(evidence: Sequence[_AnnEvidence], categories: Mapping[int, str]) -> list[AuditFinding]:
    """Phase 2 on the annotation side: per class, each disagreement against the others' (see the module doc)."""
    findings: list[AuditFinding] = []
    habits: dict[tuple[str, str, str, bool], list[int]] = defaultdict(list)
    by_cat: dict[int, list[_AnnEvidence]] = defaultdict(list)
    for ev in evidence:
        by_cat[ev.ann.category_id].append(ev)
    for _cat, group in sorted(by_cat.items()):
        n_others = len(group) - 1
        outline = np.array([ev.outline for ev in group], dtype=np.float64).reshape(len(group), 4)
        reason_features = _outline_outliers(group, outline)
        kinds = np.array([ev.kind for ev in group], dtype=object)
        flagged = kinds != ""
        n_flagged = int(np.count_nonzero(flagged))
        n_outline = int(np.count_nonzero(kinds == F.CHECK_POSSIBLY_SLOPPY))
        swaps = np.array([ev.other_category if ev.kind == F.CHECK_POSSIBLY_WRONG_CLASS else 0 for ev in group])
        weakly = np.array([ev.kind == F.CHECK_POSSIBLY_SPURIOUS and ev.seen_weakly for ev in group], dtype=bool)
        for i, ev in enumerate(group):
            if not ev.kind:
                continue
            # This label counted in e (as in p's "others" it is not): p / e < 1, so calibration alone never drops a
            # disagreement; only the habit rule does, and says so in a model_habit row.
            e = n_flagged / len(group)
            habit = False
            if ev.kind == F.CHECK_POSSIBLY_SLOPPY:
                # IoU and boundary IoU are one kind of evidence (overlap): the IoU's tail when both disagree.
                used = [f for f in reason_features[i] if not (f == 1 and 0 in reason_features[i])]
                # Per evidence, the larger of two shares of the class's other outline disagreements: those at least
                # as strong, and those alike (within a reliability diagram's bin, as for a missing object): a
                # disagreement many others share is the model's habit (a misplacement it repeats), however strong.
                tails, nears = [], []
                for f in used:
                    measured = flagged & ~np.isnan(outline[:, f])
                    tails.append(_tail_share(outline[:, f], measured, float(outline[i, f]), self_flagged=True))
                    nears.append(_near_share(outline[:, f], measured, float(outline[i, f]), self_flagged=True))
                p = min((max(t, n) for t, n in zip(tails, nears)), default=1.0)
                # Against the model's outline disagreements with this class (this one counted: p / e < 1): its
                # ordinary misplacements, as common as that, sink; rarer ones keep their evidence.
                e = n_outline / len(group)
                habit = _is_habit(min(nears, default=0.0), e, n_others)
            elif ev.kind == F.CHECK_POSSIBLY_WRONG_CLASS:
                p = (int(np.count_nonzero(swaps == ev.other_category)) - 1) / n_others if n_others > 0 else 0.0
                habit = _is_habit(p, e, n_others)
            elif ev.kind == F.CHECK_POSSIBLY_SPURIOUS:
                # Against the labels the model sees the same way: the ones an unconfident detection matches (the
                # model's ordinary misses) do not make a label that nothing covers look ordinary, nor the reverse.
                same_way = (kinds == F.CHECK_POSSIBLY_SPURIOUS) & (weakly == ev.seen_weakly)
                p = (int(np.count_nonzero(same_way)) - 1) / n_others if n_others > 0 else 0.0
                if ev.seen_weakly:
                    # Seen, unsure, as most of the class's uncovered labels are: the model's ordinary miss. (Nothing
                    # seen at all is a spurious label's own evidence, never a habit.)
                    uncovered = (int(np.count_nonzero(kinds == F.CHECK_POSSIBLY_SPURIOUS)) - 1) / n_others if n_others > 0 else 0.0
                    habit = _is_habit(p, uncovered, n_others)
            else:
                p = (int(np.count_nonzero(kinds == ev.kind)) - 1) / n_others if n_others > 0 else 0.0
            if habit:
                other = categories.get(ev.other_category, str(ev.other_category)) if ev.kind == F.CHECK_POSSIBLY_WRONG_CLASS else ""
                habits[(ev.kind, ev.ann.category, other, ev.seen_weakly)].append(ev.ann.id)
                continue
            score = _calibrated(ev.evidence, p, e)
            if score <= 0:
                continue
            where: dict[str, Any] = {"image_id": ev.image.id, "file_name": ev.image.file_name, "annotation_id": ev.ann.id}
            alike = " or alike" if ev.kind == F.CHECK_POSSIBLY_SLOPPY else ""
            message = f"{ev.message} [{p:.1%} of the class's other labels disagree this much{alike}, {e:.1%} disagree at all]"
            findings.append(make_finding(check=ev.kind, message=message, score=score, category=ev.ann.category, **where))
    return findings + _habit_findings(habits)


def _score_predictions(evidence: Sequence[_PredEvidence], categories: Mapping[int, str]) -> list[AuditFinding]:
    """Phase 2 on the prediction side: an unexplained detection against the class's other confident detections."""
    findings: list[AuditFinding] = []
    by_cat: dict[int, list[_PredEvidence]] = defaultdict(list)
    for ev in evidence:
        by_cat[ev.pred.category_id].append(ev)
    for cat, group in sorted(by_cat.items()):
        n_others = len(group) - 1
        unexplained = np.array([ev.unexplained for ev in group], dtype=bool)
        conf = np.array([ev.pred.score for ev in group], dtype=np.float64)
        e = (int(np.count_nonzero(unexplained)) - 1) / n_others if n_others > 0 else 0.0
        name = categories.get(cat, str(cat))
        order = np.argsort(conf, kind="stable")
        sorted_conf, sorted_matched = conf[order], (~unexplained[order]).astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(sorted_matched)])
        habit_images: list[int] = []
        for ev in group:
            if not ev.unexplained:
                continue
            # Reliability at this confidence (a reliability diagram's bin of width 2 x RELIABILITY_HALF_WIDTH):
            # the share of the class's other detections this confident that an annotation confirms.
            lo = int(np.searchsorted(sorted_conf, ev.pred.score - RELIABILITY_HALF_WIDTH, side="left"))
            hi = int(np.searchsorted(sorted_conf, ev.pred.score + RELIABILITY_HALF_WIDTH, side="right"))
            n_bin, matched = hi - lo - 1, int(cum[hi] - cum[lo])
            # The bin's share shrunk towards the class's share at any score (a Beta prior worth
            # RELIABILITY_PRIOR detections), so one or two neighbours cannot decide alone: two identical false
            # positives would otherwise each read the other as proof that the model is never right there.
            overall = int(cum[-1]) / n_others if n_others > 0 else 1.0
            reliability = (matched + RELIABILITY_PRIOR * overall) / (n_bin + RELIABILITY_PRIOR)
            p = 1 - reliability
            if p >= MODEL_HABIT_SHARE:  # unmatched at least half the time at this confidence: the model's habit
                habit_images.append(ev.image.id)
                continue
            score = ev.pred.score * (1 - ev.best_iou) * reliability
            if score <= 0:
                continue
            box = ", ".join(f"{v:.1f}" for v in ev.pred.bbox)
            message = (f"confident {name!r} prediction (score {ev.pred.score:.2f}) at bbox [{box}] matches no annotation "
                       f"(best IoU {ev.best_iou:.2f}) [{p:.1%} of the class's other detections within {RELIABILITY_HALF_WIDTH} "
                       f"of this score are unmatched, {e:.1%} at any score]")
            findings.append(make_finding(check=F.CHECK_POSSIBLY_MISSING, message=message, score=score, category=name,
                                         image_id=ev.image.id, file_name=ev.image.file_name))
        if habit_images:
            findings.append(make_finding(check=F.CHECK_MODEL_HABIT, category=name, message=(
                f"{len(habit_images)} confident {name!r} detections match no label at confidences where the class's other "
                f"detections are unmatched at least half the time: taken as the model's false positives and not listed "
                f"one by one as {F.CHECK_POSSIBLY_MISSING}. Image ids: {_id_list(sorted(set(habit_images)))}")))
    return findings


def speck_areas(anns: Sequence[PreparedAnnotation], *, fraction: float = SPECK_FRACTION) -> dict[int, float]:
    """Per class, the predicted area below which an unmatched detection is a speck: `fraction` of the median
    annotation area of that class (of all annotations for a class without any)."""
    by_cat: dict[int, list[float]] = defaultdict(list)
    for a in anns:
        if a.area > 0:
            by_cat[a.category_id].append(a.area)
    overall = float(np.median([v for vs in by_cat.values() for v in vs])) if by_cat else 0.0
    out: dict[int, float] = defaultdict(lambda: fraction * overall)
    out.update({cat: fraction * float(np.median(vs)) for cat, vs in by_cat.items()})
    return out


def model_checks(
    anns: Sequence[PreparedAnnotation], preds: Sequence[Prediction], *, images: Mapping[int, ImageInfo], categories: Mapping[int, str],
    speck_fraction: float = SPECK_FRACTION,
) -> list[AuditFinding]:
    """All four model-assisted checks over the dataset: evidence image by image, then calibrated per class.

    Masks are compared when every annotation and every prediction has one; otherwise boxes, for all images,
    so that scores stay comparable across the ranking.
    """
    use_masks = bool(anns) and bool(preds) and all(a.rle is not None for a in anns) and all(p.rle is not None for p in preds)
    ann_by_image: dict[int, list[PreparedAnnotation]] = defaultdict(list)
    pred_by_image: dict[int, list[Prediction]] = defaultdict(list)
    for a in anns:
        ann_by_image[a.image_id].append(a)
    # A fixed order (score, then geometry) so that ties and argmax do not depend on the results file's order.
    for p in sorted(preds, key=lambda q: (-q.score, q.category_id, q.bbox, q.rle["counts"] if q.rle is not None else b"")):
        pred_by_image[p.image_id].append(p)
    specks = speck_areas(anns, fraction=speck_fraction)
    ann_evidence: list[_AnnEvidence] = []
    pred_evidence: list[_PredEvidence] = []
    for image_id in sorted(set(ann_by_image) | set(pred_by_image)):
        if image_id not in images:
            continue
        a_ev, p_ev = image_evidence(
            ann_by_image.get(image_id, []), pred_by_image.get(image_id, []), image=images[image_id], categories=categories,
            use_masks=use_masks, speck_area=specks,
        )
        ann_evidence += a_ev
        pred_evidence += p_ev
    return _score_annotations(ann_evidence, categories) + _score_predictions(pred_evidence, categories)

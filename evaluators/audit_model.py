"""Model-assisted checks: compare each image's annotations with the model's predictions.

What cleanlab's `object_detection.find_label_issues` and FiftyOne's `compute_mistakenness` look for, in one
ranking: per image, one IoU matrix (pycocotools, masks when both sides have them, else boxes), then
- possibly wrong class: a confident prediction of another class overlaps the annotation at IoU >= 0.5
  better than any same-class prediction (score = confidence * IoU, discounted by a same-class match);
- possibly sloppy outline: the best confident same-class prediction overlaps at 0.1 <= IoU < 0.8
  (score = confidence * (1 - IoU));
- possibly spurious: no confident prediction overlaps the annotation although the model is confident elsewhere
  in the image (score = top confidence in the image * (1 - best confidence * IoU over all predictions));
- possibly missing: a confident prediction that no annotation explains (score = confidence * (1 - best IoU)).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

import numpy as np

from segpipe.evaluators import audit_findings as F
from segpipe.evaluators.audit_findings import AuditFinding, make_finding
from segpipe.evaluators.audit_format import ImageInfo, PreparedAnnotation
from segpipe.evaluators.rle_strings import compressed_counts, rle_totals
from segpipe.evaluators.errors import EvaluationError

CONFIDENT = 0.5  # a prediction at or above this score is one the model "is confident" about
MIN_SCORE = 0.05  # predictions below this are noise for every check
MATCH_IOU = 0.1  # any real overlap
WRONG_CLASS_IOU = 0.5
SLOPPY_IOU = 0.8  # a confident same-class prediction below this IoU disagrees with the outline
DUPLICATE_IOU = 0.5  # an unexplained prediction this close to an annotation is a duplicate detection, not a miss
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


def image_model_checks(
    anns: Sequence[PreparedAnnotation], preds: Sequence[Prediction], *, image: ImageInfo, categories: Mapping[int, str], use_masks: bool
) -> list[AuditFinding]:
    """The four model-assisted checks for one image (annotations and predictions of that image)."""
    findings: list[AuditFinding] = []
    scores = np.array([p.score for p in preds], dtype=np.float64)
    confident = scores >= CONFIDENT
    top = float(scores.max()) if len(preds) else 0.0

    def add(check: str, score: float, message: str, *, ann: PreparedAnnotation | None = None, category: str = "") -> None:
        where: dict[str, Any] = {"image_id": image.id, "file_name": image.file_name, "annotation_id": ann.id if ann else None}
        findings.append(make_finding(check=check, message=message, score=score, category=ann.category if ann else category, **where))

    explained = np.zeros(len(preds), dtype=bool)
    iou = _iou(anns, preds, use_masks=use_masks) if anns and preds else np.zeros((len(anns), len(preds)))
    if anns and preds:
        gt_cat = np.array([a.category_id for a in anns])
        pr_cat = np.array([p.category_id for p in preds])
        same = gt_cat[:, None] == pr_cat[None, :]
        same_iou, same_j = _best(iou, same & confident[None, :])
        other_iou, other_j = _best(iou, ~same & confident[None, :])
        support = (iou * scores[None, :]).max(axis=1)  # best confidence-weighted overlap, any prediction
        for g, a in enumerate(anns):
            s_iou, o_iou = float(same_iou[g]), float(other_iou[g])
            if o_iou >= MATCH_IOU and o_iou > s_iou and (o_iou >= WRONG_CLASS_IOU or s_iou < MATCH_IOU):
                j = int(other_j[g])
                explained[j] = True
                agree = scores[same_j[g]] * s_iou if s_iou > 0 else 0.0
                name = categories.get(preds[j].category_id, str(preds[j].category_id))
                add(
                    check=F.CHECK_POSSIBLY_WRONG_CLASS,
                    score=scores[j] * o_iou * (1 - agree),
                    message=f"model predicts {name!r} (score {scores[j]:.2f}) at IoU {o_iou:.2f}; best {a.category!r} prediction IoU {max(s_iou, 0):.2f}",
                    ann=a,
                )
            elif s_iou >= MATCH_IOU:
                j = int(same_j[g])
                explained[j] = True
                if s_iou < SLOPPY_IOU:
                    add(
                        check=F.CHECK_POSSIBLY_SLOPPY,
                        score=scores[j] * (1 - s_iou),
                        message=f"best {a.category!r} prediction (score {scores[j]:.2f}) overlaps at IoU {s_iou:.2f} only (< {SLOPPY_IOU})",
                        ann=a,
                    )
            elif top >= CONFIDENT:
                add(
                    check=F.CHECK_POSSIBLY_SPURIOUS,
                    score=top * (1 - float(support[g])),
                    message=f"no confident prediction overlaps this annotation (best score x IoU {float(support[g]):.2f}) "
                    f"while the model is confident elsewhere (top score {top:.2f})",
                    ann=a,
                )
    max_gt_iou = iou.max(axis=0) if anns and preds else np.zeros(len(preds))
    for j in np.flatnonzero(confident & ~explained & (max_gt_iou < DUPLICATE_IOU)).tolist():
        p = preds[j]
        name = categories.get(p.category_id, str(p.category_id))
        box = ", ".join(f"{v:.1f}" for v in p.bbox)
        add(
            check=F.CHECK_POSSIBLY_MISSING,
            score=p.score * (1 - float(max_gt_iou[j])),
            message=f"confident {name!r} prediction (score {p.score:.2f}) at bbox [{box}] matches no annotation (best IoU {float(max_gt_iou[j]):.2f})",
            category=name,
        )
    return findings


def model_checks(
    anns: Sequence[PreparedAnnotation], preds: Sequence[Prediction], *, images: Mapping[int, ImageInfo], categories: Mapping[int, str]
) -> list[AuditFinding]:
    """All four model-assisted checks over the dataset, image by image.

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
    findings: list[AuditFinding] = []
    for image_id in sorted(set(ann_by_image) | set(pred_by_image)):
        if image_id not in images:
            continue
        findings.extend(
            image_model_checks(
                ann_by_image.get(image_id, []), pred_by_image.get(image_id, []), image=images[image_id], categories=categories, use_masks=use_masks
            )
        )
    return findings

"""Every detection against every ground-truth object of its image, whatever the classes: the input of
error analysis (TIDE, the cross-class confusion matrix), which the per-class match records do not hold.

Detections and GTs come in the order of the match records (segpipe.evaluators.instance.stats: categories
sorted, detections by score rank, at most 100 per image and category), IoUs from pycocotools' `mask.iou`
with COCO's crowd rule, and the same-class matches at one IoU threshold follow COCOeval.evaluateImg for the
area range "all". `check_against_records` verifies the matches against the records, so the analysis
starts from exactly the true and false positives that the reported AP counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.evaluators.instance.coco_ground_truth import GroundTruth, parse_ground_truth
from segpipe.evaluators.instance.coco_results import validate_results
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.stats import InstanceStats
from segpipe.evaluators.instance.update import MAX_DET, to_rle


@dataclass(frozen=True)
class ImageOverlaps:
    image_id: int
    file_name: str
    det_category: np.ndarray  # int64 [D]
    det_score: np.ndarray  # float64 [D]
    gt_category: np.ndarray  # int64 [G]
    gt_crowd: np.ndarray  # bool [G]
    iou: np.ndarray  # float64 [D, G]
    det_gt: np.ndarray  # int64 [D]: index of the same-class GT matched at the threshold, -1 if none
    det_ignored: np.ndarray  # bool [D]: matched to a crowd GT (COCOeval's dtIgnore, area "all")
    det_index: np.ndarray  # int64 [D]: position of the detection in the (validated) results list: file order, for score ties
    file_position: int  # position of the image in the GT file's image list (tidecv visits images in that order)


def image_overlaps(
    gt: Mapping[str, Any] | GroundTruth, results: Sequence[Mapping[str, Any]], *, iou_type: str, iou_threshold: float = 0.5
) -> list[ImageOverlaps]:
    """One ImageOverlaps per GT image, in image id order."""
    truth = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt)
    kept, _ = validate_results(truth, list(results), iou_type=iou_type)
    by_image: dict[int, dict[int, list[tuple[int, Mapping[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for index, r in enumerate(kept):
        by_image[r["image_id"]][r["category_id"]].append((index, r))
    out = []
    position = {image_id: k for k, image_id in enumerate(truth.images)}  # dicts keep the file's order
    for image_id in sorted(truth.images):
        image = truth.images[image_id]
        dets_by_cat = by_image.get(image_id, {})
        dets: list[Mapping[str, Any]] = []
        det_index: list[int] = []
        det_cat: list[int] = []
        gts: list[Mapping[str, Any]] = []
        gt_cat: list[int] = []
        for cat in sorted(set(truth.image_categories.get(image_id, ())).union(dets_by_cat)):
            cat_dets = sorted(dets_by_cat.get(cat, ()), key=lambda ir: -ir[1]["score"])[:MAX_DET]
            cat_gts = list(truth.annotations.get((image_id, cat), ()))
            det_index += [i for i, _ in cat_dets]
            dets += [r for _, r in cat_dets]
            det_cat += [cat] * len(cat_dets)
            gts += cat_gts
            gt_cat += [cat] * len(cat_gts)
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
        if dets and gts:
            det_geoms = [_det_geometry(d, image=image, iou_type=iou_type) for d in dets]
            gt_geoms = [g["bbox"] if iou_type == "bbox" else to_rle(g["segmentation"], image=image) for g in gts]
            iou = np.asarray(mask_utils.iou(det_geoms, gt_geoms, crowd.astype(np.uint8).tolist()), dtype=np.float64)
        else:
            iou = np.zeros((len(dets), len(gts)))
        categories = np.array(det_cat, dtype=np.int64)
        gt_categories = np.array(gt_cat, dtype=np.int64)
        det_gt = coco_matches(iou, det_category=categories, gt_category=gt_categories, gt_crowd=crowd, threshold=iou_threshold)
        out.append(ImageOverlaps(
            image_id=image_id, file_name=image.file_name, det_category=categories,
            det_score=np.array([float(d["score"]) for d in dets]), gt_category=gt_categories, gt_crowd=crowd,
            iou=iou, det_gt=det_gt, det_ignored=(det_gt >= 0) & crowd[np.maximum(det_gt, 0)] if len(gts) else np.zeros(len(dets), dtype=bool),
            det_index=np.array(det_index, dtype=np.int64), file_position=position[image_id],
        ))
    return out


def _det_geometry(r: Mapping[str, Any], *, image: Any, iou_type: str) -> Any:
    if iou_type == "bbox":
        return list(r["bbox"]) if "bbox" in r else list(mask_utils.toBbox(to_rle(r["segmentation"], image=image)))
    return to_rle(r["segmentation"], image=image)


def coco_matches(iou: np.ndarray, *, det_category: np.ndarray, gt_category: np.ndarray, gt_crowd: np.ndarray, threshold: float) -> np.ndarray:
    """COCOeval.evaluateImg's greedy same-class matching at one threshold, area "all" (crowd = ignored GT).

    Detections are visited in the given order (score rank within each class); each takes the unmatched
    non-crowd GT with the highest IoU >= threshold (ties: the later GT), else the best crowd GT (crowd GTs may
    be matched many times). Returns, per detection, the GT index or -1.
    """
    det_gt = np.full(len(det_category), -1, dtype=np.int64)
    thr = min(threshold, 1 - 1e-10)
    for cat in np.unique(det_category):
        gi = np.flatnonzero(gt_category == cat)
        if not len(gi):
            continue
        gi = gi[np.argsort(gt_crowd[gi], kind="mergesort")]  # evaluateImg puts ignored GTs last
        taken = np.zeros(len(gi), dtype=bool)
        for d in np.flatnonzero(det_category == cat):
            best, m = thr, -1
            for j, g in enumerate(gi):
                if taken[j] and not gt_crowd[g]:
                    continue
                if m > -1 and not gt_crowd[gi[m]] and gt_crowd[g]:
                    break
                if iou[d, g] < best:
                    continue
                best, m = iou[d, g], j
            if m > -1:
                taken[m] = True
                det_gt[d] = gi[m]
    return det_gt


def check_against_records(overlaps: Sequence[ImageOverlaps], stats: InstanceStats) -> None:
    """EvaluationError unless the overlaps' detections and matches are the records' (IoU 0.5, area "all")."""
    scores = np.concatenate([o.det_score for o in overlaps]) if overlaps else np.zeros(0)
    cats = np.concatenate([o.det_category for o in overlaps]) if overlaps else np.zeros(0, dtype=np.int64)
    matched = np.concatenate([(o.det_gt >= 0) for o in overlaps]) if overlaps else np.zeros(0, dtype=bool)
    ignored = np.concatenate([o.det_ignored for o in overlaps]) if overlaps else np.zeros(0, dtype=bool)
    if len(scores) != len(stats.det_score) or not (np.array_equal(scores, stats.det_score) and np.array_equal(cats, stats.det_category)):
        raise EvaluationError("match records", "detections", "the records were computed from other results than these: re-evaluate")
    if not (np.array_equal(matched, stats.det_matched[:, 0, 0]) and np.array_equal(ignored, stats.det_ignored[:, 0, 0])):
        raise EvaluationError("match records", "det_matched", "error analysis matched detections differently from COCOeval")

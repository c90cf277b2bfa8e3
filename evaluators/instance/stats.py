"""Additive per-image match records for COCO mAP (the `*_update` side of segpipe.evaluators.instance.evaluation).

One row per detection (COCOeval's `evaluateImg` outputs, flattened) and one row per ground-truth annotation;
records of disjoint image sets concatenate, so shards merge by sorting on image id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools.cocoeval import Params

from segpipe.core.errors import EvaluationError

# COCOeval's own parameters, so thresholds and ranges are the very same floats.
COCO_PARAMS = Params(iouType="bbox")
IOU_THRESHOLDS: np.ndarray = COCO_PARAMS.iouThrs
RECALL_THRESHOLDS: np.ndarray = COCO_PARAMS.recThrs
MAX_DETS: tuple[int, ...] = tuple(COCO_PARAMS.maxDets)
AREA_RANGES: tuple[tuple[float, float], ...] = tuple((float(a), float(b)) for a, b in COCO_PARAMS.areaRng)
AREA_LABELS: tuple[str, ...] = tuple(COCO_PARAMS.areaRngLbl)

_PER_DET = ("det_image", "det_category", "det_score", "det_rank", "det_matched", "det_ignored", "det_iou")
_PER_GT = ("gt_image", "gt_category", "gt_ignored")
# Array fields, their dtype kind (b bool, i int, f float) and dimensions: what `from_arrays` accepts back.
_ARRAY_FIELDS: dict[str, tuple[str, int]] = {
    "image_ids": ("i", 1), "det_image": ("i", 1), "det_category": ("i", 1), "det_score": ("f", 1), "det_rank": ("i", 1),
    "det_matched": ("b", 3), "det_ignored": ("b", 3), "det_iou": ("f", 1),
    "gt_image": ("i", 1), "gt_category": ("i", 1), "gt_ignored": ("b", 2),
}


def distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for a 1-D integer array, by one sort: numpy's own unique imports numpy.ma on its first
    call (to refuse masked arrays), some 30 ms of a run that takes about one second."""
    ordered = np.sort(values, kind="stable")
    if len(ordered) == 0:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


@dataclass(frozen=True, eq=False)
class InstanceStats:
    """Match records of a set of images. A = len(AREA_RANGES), T = len(IOU_THRESHOLDS).

    Detections are ordered by image id, category id, then score rank within the (image, category) pair,
    which is the order COCOeval.accumulate concatenates them in.
    """

    iou_type: str
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    image_ids: np.ndarray  # int64 [I], sorted: the images these records cover (with or without detections)
    file_names: tuple[str, ...]  # [I]
    det_image: np.ndarray  # int64 [N]
    det_category: np.ndarray  # int64 [N]
    det_score: np.ndarray  # float64 [N]
    det_rank: np.ndarray  # int64 [N], 0 = best score in its (image, category)
    det_matched: np.ndarray  # bool [N, A, T]: COCOeval's dtMatches != 0
    det_ignored: np.ndarray  # bool [N, A, T]: COCOeval's dtIgnore
    det_iou: np.ndarray  # float64 [N]: IoU with the matched GT at IoU 0.5, area "all"; NaN when unmatched
    gt_image: np.ndarray  # int64 [G]
    gt_category: np.ndarray  # int64 [G]
    gt_ignored: np.ndarray  # bool [G, A]: COCOeval's gtIgnore per area range
    warnings: tuple[str, ...] = ()

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(numeric arrays, JSON-able metadata): a data-only form, for `np.savez` + JSON instead of pickle."""
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAY_FIELDS}
        meta = {
            "iou_type": self.iou_type, "category_ids": [int(c) for c in self.category_ids],
            "category_names": list(self.category_names), "file_names": list(self.file_names), "warnings": list(self.warnings),
        }
        return arrays, meta

    @staticmethod
    def from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], *, path: str = "instance stats") -> "InstanceStats":
        """The inverse of `to_arrays`; refuses object arrays and fields of the wrong type or shape."""
        checked: dict[str, np.ndarray] = {}
        for name, (kinds, ndim) in _ARRAY_FIELDS.items():
            value = arrays.get(name)
            if not isinstance(value, np.ndarray) or value.dtype.kind != kinds:
                raise EvaluationError(path, name, f"expected an array of dtype kind {kinds!r}, got {getattr(value, 'dtype', type(value))}")
            if value.ndim != ndim:
                raise EvaluationError(path, name, f"expected {ndim} dimensions, got shape {value.shape}")
            checked[name] = value
        text_lists: dict[str, tuple[str, ...]] = {}
        for name in ("category_names", "file_names", "warnings"):
            value = meta.get(name)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise EvaluationError(path, name, "expected a list of strings")
            text_lists[name] = tuple(value)
        ids = meta.get("category_ids")
        if not (isinstance(ids, list) and all(type(v) is int for v in ids)):
            raise EvaluationError(path, "category_ids", "expected a list of integers")
        if meta.get("iou_type") not in ("segm", "bbox"):
            raise EvaluationError(path, "iou_type", f"expected 'segm' or 'bbox', got {meta.get('iou_type')!r}")
        fields: dict[str, Any] = {**text_lists, **checked}  # names checked above, one per dataclass field
        return InstanceStats(iou_type=str(meta["iou_type"]), category_ids=tuple(ids), **fields)

    @staticmethod
    def merge(a: "InstanceStats", b: "InstanceStats") -> "InstanceStats":
        """Records of two disjoint image sets as one (order of arguments does not matter)."""
        return InstanceStats.merge_all([a, b])

    @staticmethod
    def merge_all(parts: Sequence["InstanceStats"]) -> "InstanceStats":
        if not parts:
            raise EvaluationError("instance stats", "", "nothing to merge")
        first = parts[0]
        for part in parts[1:]:
            if (part.iou_type, part.category_ids) != (first.iou_type, first.category_ids):
                raise EvaluationError(
                    "instance stats", "iou_type/category_ids", "shards were evaluated with different settings"
                )
        image_ids = np.concatenate([p.image_ids for p in parts])
        if len(distinct(image_ids)) != len(image_ids):
            raise EvaluationError("instance stats", "image_ids", "shards overlap: an image would be counted twice")
        img_order = np.argsort(image_ids, kind="stable")
        file_names = [name for p in parts for name in p.file_names]
        det_image = np.concatenate([p.det_image for p in parts])
        # Each image lives in one shard, so a stable sort on image id restores COCOeval's order.
        det_order = np.argsort(det_image, kind="stable")
        gt_order = np.argsort(np.concatenate([p.gt_image for p in parts]), kind="stable")
        merged = {
            name: np.concatenate([getattr(p, name) for p in parts])[det_order] for name in _PER_DET
        } | {name: np.concatenate([getattr(p, name) for p in parts])[gt_order] for name in _PER_GT}
        warnings = tuple(dict.fromkeys(w for p in parts for w in p.warnings))
        return InstanceStats(
            iou_type=first.iou_type,
            category_ids=first.category_ids,
            category_names=first.category_names,
            image_ids=image_ids[img_order],
            file_names=tuple(file_names[i] for i in img_order),
            warnings=warnings,
            **merged,
        )

"""Indexing a COCO ground-truth dict the way pycocotools' COCOeval sees it, with warnings for its traps.

COCOeval quirks reproduced on purpose (numbers must equal pycocotools'; traps in
../shared/peers/README.md):
- annotations are looked up by id (`COCO.anns[id]`), so with duplicated ids every copy becomes the *last*
  annotation carrying that id (two perfect detections then score AP 0.252, not 1.0);
- a detection matched to a GT with id 0 is stored as "matched to 0", which accumulate reads as unmatched
  (a perfect detection on it scores AP 0);
- `ignore` is overwritten by `iscrowd`, so masks marked `iscrowd=1` are never counted.
Each of these gets a warning in the report instead of being silently "fixed".
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from segpipe.core.errors import EvaluationError

GT_PATH = "ground truth"


@dataclass(frozen=True)
class GtImage:
    image_id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class GroundTruth:
    """The parts of a COCO dict that COCOeval reads, indexed once."""

    images: Mapping[int, GtImage]
    category_ids: tuple[int, ...]  # sorted, as COCOeval's params.catIds
    category_names: tuple[str, ...]
    # (image_id, category_id) -> annotations in COCOeval's order (after the by-id lookup above)
    annotations: Mapping[tuple[int, int], tuple[Mapping[str, Any], ...]]
    image_categories: Mapping[int, tuple[int, ...]]  # image id -> categories with GT there, sorted
    warnings: tuple[str, ...]


def _int_field(obj: Mapping[str, Any], key: str, where: str, *, path: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvaluationError(path, f"{where}.{key}", f"expected an integer, got {value!r}")
    return value


def parse_ground_truth(gt: Mapping[str, Any], *, path: str = GT_PATH) -> GroundTruth:
    """Validate and index a COCO ground-truth dict (pure; `gt` is not mutated)."""
    if not isinstance(gt, dict):
        raise EvaluationError(path, "", f"expected a COCO object, got {type(gt).__name__}")
    for key in ("images", "categories"):
        if not isinstance(gt.get(key), list):
            raise EvaluationError(path, key, "missing or not a list")
    images: dict[int, GtImage] = {}
    for i, im in enumerate(gt["images"]):
        where = f"images[{i}]"
        image_id = _int_field(im, "id", where, path=path)
        if image_id in images:
            raise EvaluationError(path, f"{where}.id", f"image id {image_id} appears twice")
        height = _int_field(im, "height", where, path=path)
        width = _int_field(im, "width", where, path=path)
        if height < 1 or width < 1:  # masks and boxes of a negative-size image would score silently wrong
            raise EvaluationError(path, f"{where}.width/height", f"must be positive, got {width}x{height}")
        images[image_id] = GtImage(image_id=image_id, file_name=str(im.get("file_name", "")), height=height, width=width)
    names: dict[int, str] = {}
    for i, cat in enumerate(gt["categories"]):
        cat_id = _int_field(cat, "id", f"categories[{i}]", path=path)
        if cat_id in names:
            raise EvaluationError(path, f"categories[{i}].id", f"category id {cat_id} appears twice")
        names[cat_id] = str(cat.get("name", cat_id))
    anns = gt.get("annotations", [])
    if not isinstance(anns, list):
        raise EvaluationError(path, "annotations", "not a list")
    annotations, warnings = _index_annotations(anns, images=images, categories=names, path=path)
    cat_ids = tuple(sorted(names))
    image_categories: dict[int, list[int]] = defaultdict(list)
    for image_id, cat_id in annotations:  # keys are sorted
        image_categories[image_id].append(cat_id)
    return GroundTruth(
        images=images,
        category_ids=cat_ids,
        category_names=tuple(names[c] for c in cat_ids),
        annotations=annotations,
        image_categories={k: tuple(v) for k, v in image_categories.items()},
        warnings=tuple(warnings),
    )


def _check_annotation(ann: Any, i: int, *, path: str) -> None:
    if type(ann) is dict:  # the common case in one expression (this runs once per annotation); else the checks below
        area = ann.get("area")
        if type(ann.get("id")) is int and type(ann.get("image_id")) is int and type(ann.get("category_id")) is int \
                and type(area) is float and math.isfinite(area) and ann.get("iscrowd", 0) in (0, 1):
            return
    where = f"annotations[{i}]"
    if not isinstance(ann, dict):
        raise EvaluationError(path, where, "not an object")
    for key in ("id", "image_id", "category_id"):
        _int_field(ann, key, where, path=path)
    area = ann.get("area")
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area):
        raise EvaluationError(path, f"{where}.area", f"COCOeval needs a finite number, got {area!r}")
    if ann.get("iscrowd", 0) not in (0, 1, True, False):
        raise EvaluationError(path, f"{where}.iscrowd", f"expected 0 or 1, got {ann.get('iscrowd')!r}")


def _index_annotations(
    anns: Sequence[Any], *, images: Mapping[int, GtImage], categories: Mapping[int, str], path: str
) -> tuple[dict[tuple[int, int], tuple[Mapping[str, Any], ...]], list[str]]:
    by_id: dict[int, Mapping[str, Any]] = {}
    per_image: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    id_counts: dict[int, int] = defaultdict(int)
    for i, ann in enumerate(anns):
        _check_annotation(ann, i, path=path)
        by_id[ann["id"]] = ann  # last one wins, as in COCO.createIndex
        id_counts[ann["id"]] += 1
        per_image[ann["image_id"]].append(ann)
    warnings: list[str] = []
    if id_counts.get(0):
        warnings.append(
            f"{path}: {id_counts[0]} annotation(s) have id 0: COCOeval never counts a match to them "
            "(a perfect detection scores AP 0); renumber annotation ids from 1"
        )
    dups = sorted(k for k, n in id_counts.items() if n > 1)
    if dups:
        warnings.append(
            f"{path}: {len(dups)} annotation id(s) are duplicated (e.g. {dups[:5]}): COCOeval replaces every copy "
            "by the last annotation with that id, so the others are never scored; make ids unique"
        )
    crowd = [a for a in anns if a.get("iscrowd", 0)]
    if crowd:
        crowd_cats = {a["category_id"] for a in crowd}
        only_crowd = sorted(
            categories[c] for c in crowd_cats
            if c in categories and all(a.get("iscrowd", 0) for a in anns if a["category_id"] == c)
        )
        warnings.append(
            f"{path}: {len(crowd)} annotation(s) are marked iscrowd=1: COCOeval ignores them (a detection on one is "
            "neither a true nor a false positive)"
            + (f"; categories with only crowd annotations score -1: {only_crowd}" if only_crowd else "")
        )
    empty = sum(1 for a in anns if a.get("segmentation", None) == [])
    if empty:
        warnings.append(f"{path}: {empty} annotation(s) have an empty segmentation []: segm scores them as empty masks "
                        "(pycocotools would fail on them)")
    if any("iscrowd" not in a for a in anns):
        warnings.append(f"{path}: annotations without 'iscrowd' are treated as iscrowd=0 (pycocotools would fail)")
    stray_images = sorted({a["image_id"] for a in anns} - set(images))
    if stray_images:
        warnings.append(f"{path}: annotations name {len(stray_images)} unknown image id(s) (e.g. {stray_images[:5]}); ignored")
    stray_cats = sorted({a["category_id"] for a in anns} - set(categories))
    if stray_cats:
        warnings.append(f"{path}: annotations name {len(stray_cats)} undeclared category id(s) {stray_cats[:5]}; ignored")
    index: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    # COCOeval: getAnnIds chains imgToAnns over sorted image ids, filters on the listed annotation's category,
    # then loadAnns looks each id up again and files it under the looked-up annotation's own image/category.
    for image_id in sorted(images):
        for ann in per_image.get(image_id, ()):
            if ann["category_id"] not in categories:
                continue
            looked_up = by_id[ann["id"]]
            index[looked_up["image_id"], looked_up["category_id"]].append(looked_up)
    return {k: tuple(v) for k, v in sorted(index.items())}, warnings

"""COCO output conventions, stated once (format: https://cocodataset.org/#format-data).

- ids start at 1: image ids by sorted relative image path, category ids by declared class order,
  annotation ids in image order (then in the order the annotations appear in their file);
- masks are compressed RLE (pycocotools, column-major), `iscrowd=0`; `area` is the mask pixel count for
  masks and w*h for boxes; `bbox` is [x, y, w, h] floats;
- same input => byte-identical JSON (`sort_keys`, no timestamps, no set/dict-order dependence).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from segpipe.core import json_depth
from segpipe.core.atomic_write import atomic_write_bytes

if TYPE_CHECKING:  # numpy is imported by the mask helpers: box-only conversions (voc, yolo) start without it
    import numpy as np

FIRST_ID = 1
ISCROWD_OBJECT = 0
COCO_INFO: Mapping[str, Any] = {"description": "converted by segpipe", "version": "1.0"}


@dataclass(frozen=True)
class CategoryRecord:
    name: str
    supercategory: str = ""


@dataclass(frozen=True)
class AnnotationRecord:
    category: str
    bbox: tuple[float, float, float, float]
    area: float
    segmentation: Mapping[str, Any] | Sequence[Sequence[float]] | None = None  # RLE dict, or polygons (box rectangles)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    iscrowd: int = ISCROWD_OBJECT  # 1 marks an ignore region for COCOeval (VOC difficult boxes under --difficult ignore)


@dataclass(frozen=True)
class ImageRecord:
    file_name: str  # relative POSIX path under the image root
    width: int
    height: int
    annotations: Sequence[AnnotationRecord] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Binary HxW mask -> compressed RLE dict with text counts (JSON-ready).

    >>> import numpy as np
    >>> m = np.zeros((3, 4), dtype=bool); m[1, 1:3] = True
    >>> encode_mask(m)["size"]
    [3, 4]
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight [x, y, w, h] (pixel-corner convention) of a binary mask; zeros for an empty mask."""
    import numpy as np

    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return (float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))


def mask_annotation(*, category: str, mask: np.ndarray, attributes: Mapping[str, Any] | None = None) -> AnnotationRecord:
    import numpy as np

    return AnnotationRecord(
        category=category,
        bbox=mask_bbox(mask),
        area=float(np.count_nonzero(mask)),
        segmentation=encode_mask(mask),
        attributes=dict(attributes or {}),
    )


def box_segmentation(bbox: Sequence[float]) -> list[list[float]]:
    """An [x, y, w, h] box as a one-polygon COCO segmentation (clockwise from the top left)."""
    x, y, w, h = (float(v) for v in bbox)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


MIXED_BOX_MASK_CODE = "mixed_box_mask"


def fill_box_masks(images: Sequence[ImageRecord], *, fill: bool = True) -> tuple[list[ImageRecord], str | None]:
    """A dataset mixing boxes and masks, said and (with `fill`) made safe: each box without a mask is given its
    rectangle as `segmentation` (attribute `segmentation_from_box: true`). torchvision's
    `wrap_dataset_for_transforms_v2` builds masks only from the annotations that have one, so with boxes beside
    masks mask i no longer belongs to box i; pycocotools' `annToMask` raises on an annotation without
    `segmentation`. Returns the images (unchanged unless filled) and the report message (None: not mixed)."""
    from dataclasses import replace

    objects = [a for im in images for a in im.annotations if not a.iscrowd]
    boxes = sum(a.segmentation is None for a in objects)
    masks = len(objects) - boxes
    if not boxes or not masks:
        return list(images), None
    if not fill:
        return list(images), (f"mixed boxes and masks: {boxes} box-only annotation(s) beside {masks} mask(s), left without `segmentation` "
                              "(torchvision's v2 wrapper then pairs masks with the wrong boxes; pycocotools' annToMask raises on them)")
    out = [replace(im, annotations=tuple(
        replace(a, segmentation=box_segmentation(a.bbox), attributes={**a.attributes, "segmentation_from_box": True}) if a.segmentation is None else a
        for a in im.annotations)) for im in images]
    return out, (f"mixed boxes and masks: {boxes} box-only annotation(s) beside {masks} mask(s) were given their rectangle as `segmentation` "
                 "(attribute segmentation_from_box), so that every annotation has one mask (--no-box-masks: leave them boxes)")


def assemble_coco(*, images: Sequence[ImageRecord], categories: Sequence[CategoryRecord]) -> dict[str, Any]:
    """Assign ids by the conventions above and return a COCO dict. Pure: arguments are not mutated.

    Raises ValueError when an annotation names a category that is not declared, or two images share a path.
    """
    cat_ids: dict[str, int] = {}
    for i, cat in enumerate(categories, start=FIRST_ID):
        if cat.name in cat_ids:
            raise ValueError(f"category {cat.name!r} declared twice")
        cat_ids[cat.name] = i
    ordered = sorted(images, key=lambda im: im.file_name)
    for a, b in zip(ordered, ordered[1:]):
        if a.file_name == b.file_name:
            raise ValueError(f"image {a.file_name!r} listed twice")
    out_images: list[dict[str, Any]] = []
    out_anns: list[dict[str, Any]] = []
    ann_id = FIRST_ID
    for image_id, im in enumerate(ordered, start=FIRST_ID):
        out_images.append({**im.extra, "id": image_id, "file_name": im.file_name, "width": int(im.width), "height": int(im.height)})
        for ann in im.annotations:
            if ann.category not in cat_ids:
                raise ValueError(f"{im.file_name}: category {ann.category!r} is not declared")
            record: dict[str, Any] = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_ids[ann.category],
                "bbox": [float(v) for v in ann.bbox],
                "area": float(ann.area),
                "iscrowd": int(ann.iscrowd),
            }
            if isinstance(ann.segmentation, Mapping):
                record["segmentation"] = dict(ann.segmentation)
            elif ann.segmentation is not None:
                record["segmentation"] = [[float(v) for v in polygon] for polygon in ann.segmentation]
            if ann.attributes:
                record["attributes"] = dict(ann.attributes)
            out_anns.append(record)
            ann_id += 1
    out_cats = [
        {"id": cat_ids[c.name], "name": c.name, "supercategory": c.supercategory} for c in categories
    ]
    return {"info": dict(COCO_INFO), "licenses": [], "images": out_images, "annotations": out_anns, "categories": out_cats}


def dumps_coco(dataset: Mapping[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, fixed separators, ASCII, trailing newline."""
    return (json.dumps(dataset, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def write_coco(path: str | os.PathLike[str], dataset: Mapping[str, Any]) -> Path:
    return atomic_write_bytes(path, dumps_coco(dataset))


def read_coco(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, "rb") as fh:
        coco: dict[str, Any] = json_depth.load(fh)  # deep nesting: a ValueError, not a RecursionError
    return coco

"""Geometry shared by the polygon/box formats (YOLO, LabelMe, CVAT): shapes to COCO annotation records.

Polygons are rasterised by pycocotools (`frPyObjects` + `merge`), exactly as COCO loaders rasterise
polygon annotations, then stored as compressed RLE like every other mask (design: masks are RLE).
Coordinates are pixel-corner coordinates: pixel (x, y) covers [x, x + 1) × [y, y + 1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from segpipe.converters.coco import AnnotationRecord, mask_annotation

if TYPE_CHECKING:  # imported where masks are made: box-only conversions start without numpy
    import numpy as np

MIN_POLYGON_POINTS = 3


def polygon_mask(polygons: Sequence[Sequence[float]], *, width: int, height: int) -> np.ndarray:
    """Union of flat [x0, y0, x1, y1, ...] polygons as an HxW bool mask (pycocotools' rasteriser).

    >>> int(polygon_mask([[0, 0, 2, 0, 2, 2, 0, 2]], width=3, height=3).sum())
    4
    """
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    mask: np.ndarray = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    return mask


def disc_mask(*, cx: float, cy: float, radius: float, width: int, height: int) -> np.ndarray:
    """Pixels whose centre (x + 0.5, y + 0.5) lies within `radius` of (cx, cy)."""
    import numpy as np

    ys, xs = np.mgrid[0:height, 0:width]
    inside: np.ndarray = (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= radius * radius
    return inside


def box_polygon(bbox: Sequence[float]) -> list[float]:
    """The four corners of an [x, y, w, h] box as one flat polygon (clockwise from the top left)."""
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def box_record(*, category: str, x0: float, y0: float, x1: float, y1: float, attributes: Mapping[str, Any] | None = None,
               rectangle_segmentation: bool = False) -> AnnotationRecord:
    """A box annotation; with `rectangle_segmentation`, also a one-polygon `segmentation` (the box itself)
    for loaders that need a mask for every annotation (torchvision's Mask R-CNN references, `annToMask`)."""
    bbox = (x0, y0, x1 - x0, y1 - y0)
    segmentation: Any = [box_polygon(bbox)] if rectangle_segmentation else None
    return AnnotationRecord(category=category, bbox=bbox, area=(x1 - x0) * (y1 - y0), segmentation=segmentation,
                            attributes=dict(attributes or {}))


def mask_record(*, category: str, mask: np.ndarray, attributes: Mapping[str, Any] | None = None) -> AnnotationRecord | None:
    """A mask annotation, or None when the mask covers no pixel (a degenerate shape)."""
    if not mask.any():
        return None
    return mask_annotation(category=category, mask=mask, attributes=attributes)


def finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def clip_box(x0: float, y0: float, x1: float, y1: float, *, width: int, height: int) -> tuple[float, float, float, float]:
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))

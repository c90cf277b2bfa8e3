"""Geometry shared by the polygon/box formats (YOLO, LabelMe, CVAT): shapes to COCO annotation records.

Polygons are rasterised by pycocotools (`frPyObjects` + `merge`), exactly as COCO loaders rasterise
polygon annotations, behind the one geometry guard (segpipe.core.polygon_bounds: a shape reaching far
outside its image is clipped first, never a crash), then stored as compressed RLE like every other mask.
Coordinates are pixel-corner coordinates: pixel (x, y) covers [x, x + 1) × [y, y + 1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from segpipe.converters.coco import AnnotationRecord, mask_annotation

if TYPE_CHECKING:  # imported where masks are made: box-only conversions start without numpy
    import numpy as np

MIN_POLYGON_POINTS = 3
_DISC_BLOCK_VALUES = 1 << 21  # float64 distances computed at once by disc_mask (16 MB)


def polygon_mask(polygons: Sequence[Sequence[float]], *, width: int, height: int) -> np.ndarray:
    """Union of flat [x0, y0, x1, y1, ...] polygons as an HxW bool mask (pycocotools' rasteriser).

    >>> int(polygon_mask([[0, 0, 2, 0, 2, 2, 0, 2]], width=3, height=3).sum())
    4
    """
    from segpipe.core.polygon_bounds import polygons_mask

    return polygons_mask(polygons, height=height, width=width)


def disc_mask(*, cx: float, cy: float, radius: float, width: int, height: int) -> np.ndarray:
    """Pixels whose centre (x + 0.5, y + 0.5) lies within `radius` of (cx, cy).

    Only the disc's bounding box, clipped to the image, is computed, a block of rows at a time: memory is
    the HxW bool result, whatever the radius or centre.

    >>> disc_mask(cx=1.5, cy=1.5, radius=1.0, width=4, height=3).astype(int).tolist()
    [[0, 1, 0, 0], [1, 1, 1, 0], [0, 1, 0, 0]]
    >>> int(disc_mask(cx=1e12, cy=-1e12, radius=1e13, width=64, height=48).sum())
    3072
    """
    import numpy as np

    inside = np.zeros((height, width), dtype=bool)
    if not (math.isfinite(cx) and math.isfinite(cy) and math.isfinite(radius)) or radius < 0:
        return inside
    # pixel x is in when |x + 0.5 - cx| <= radius: x in [cx - radius - 0.5, cx + radius - 0.5]
    x0, x1 = max(0, math.floor(cx - radius - 0.5)), min(width, math.ceil(cx + radius - 0.5) + 1)
    y0, y1 = max(0, math.floor(cy - radius - 0.5)), min(height, math.ceil(cy + radius - 0.5) + 1)
    if x0 >= x1 or y0 >= y1:
        return inside
    dx2 = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx) ** 2
    dy2 = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy) ** 2
    rows = max(1, _DISC_BLOCK_VALUES // (x1 - x0))  # a block of rows at a time: float64 distances stay small
    for top in range(0, y1 - y0, rows):
        block = dy2[top:top + rows, None] + dx2[None, :]
        inside[y0 + top:y0 + top + len(block), x0:x1] = block <= radius * radius
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

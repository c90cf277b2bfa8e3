"""The one geometry guard in front of every polygon rasteriser (converters, audit, evaluation, report overlays).

`pycocotools.mask.frPyObjects` (maskApi.c `rleFrPoly`) scales every coordinate by 5 into a C `int` and
allocates one entry per scaled pixel along each edge: a coordinate near 1e9 overflows the int and crashes
the interpreter (segfault), and one far outside the image costs memory in proportion to its distance
(https://github.com/cocodataset/cocoapi/blob/master/common/maskApi.c, `rleFrPoly`). Annotation tools do
write points a little outside the image, so polygons within POLYGON_EXTENT_FACTOR image sizes of the image
go to pycocotools unchanged (the same pixels COCO loaders draw). A polygon reaching further is first clipped
to that region (Sutherland-Hodgman against its four edges), so the work is bounded by the image, not the shape.
The part inside the image keeps its edges; pycocotools rounds each vertex to 1/5 pixel, so a new vertex on
the clip edge can tilt a long edge by a little and move a few of its boundary pixels, never more.
Where a far-off coordinate means a malformed file rather than a shape (detections to score), callers refuse
it with `polygon_extent_problem` instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import numpy as np

POLYGON_EXTENT_FACTOR = 4


def polygon_extent_problem(poly: Sequence[float], *, height: int, width: int) -> str | None:
    """Why a polygon's coordinates are too far outside a height x width image to rasterise safely, or None.

    >>> polygon_extent_problem([0, 0, 10, 0, 10, 10], height=20, width=30) is None
    True
    >>> polygon_extent_problem([0, 0, 1e9, 0, 10, 10], height=20, width=30)
    'polygon coordinate 1000000000.0 is more than 4 image sizes (120) outside the 30x20 image'
    """
    reach = POLYGON_EXTENT_FACTOR * max(int(height), int(width), 1)
    for value in poly:
        if value < -reach or value > reach:
            return f"polygon coordinate {float(value)!r} is more than {POLYGON_EXTENT_FACTOR} image sizes ({reach}) outside the {width}x{height} image"
    return None


def _clip_edge(points: list[tuple[float, float]], axis: int, bound: float, keep_below: bool) -> list[tuple[float, float]]:
    """One Sutherland-Hodgman pass: the part of a closed polygon on one side of the line coordinate[axis] == bound."""
    def inside(p: tuple[float, float]) -> bool:
        return p[axis] <= bound if keep_below else p[axis] >= bound

    def crossing(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        # halves first: b - a of two finite floats may overflow to inf, their halves never do
        t = (bound / 2 - a[axis] / 2) / (b[axis] / 2 - a[axis] / 2)
        other = 1 - axis
        value = a[other] * (1 - t) + b[other] * t  # between a and b, so finite
        return (bound, value) if axis == 0 else (value, bound)

    out: list[tuple[float, float]] = []
    for i, current in enumerate(points):
        previous = points[i - 1]
        if inside(current):
            if not inside(previous):
                out.append(crossing(previous, current))
            out.append(current)
        elif inside(previous):
            out.append(crossing(previous, current))
    return out


def clip_polygon(poly: Sequence[float], *, height: int, width: int) -> list[float]:
    """A flat [x0, y0, ...] polygon ready for pycocotools: unchanged within POLYGON_EXTENT_FACTOR image sizes,
    else clipped to that region ([] when nothing is left).
    Coordinates must be finite.

    >>> [round(v, 3) for v in clip_polygon([0, 0, 1e9, 0, 1e9, 1e9], height=48, width=64)]
    [256.0, 256.0, 0.0, 0.0, 256.0, 0.0]
    >>> clip_polygon([1e9, 1e9, 2e9, 1e9, 2e9, 2e9], height=48, width=64)
    []
    """
    values = [float(v) for v in poly]
    if polygon_extent_problem(values, height=height, width=width) is None:
        return values
    return clip_to_image(values, height=height, width=width)


def clip_to_image(values: Sequence[float], *, height: int, width: int) -> list[float]:
    """The part of a flat polygon within POLYGON_EXTENT_FACTOR image sizes ([] when fewer than 3 points are left)."""
    reach = float(POLYGON_EXTENT_FACTOR * max(int(height), int(width), 1))
    points = list(zip(values[0::2], values[1::2]))
    for axis, bound, below in ((0, -reach, False), (0, reach, True), (1, -reach, False), (1, reach, True)):
        if not points:
            break
        points = _clip_edge(points, axis, bound, below)
    if len(points) < 3:
        return []
    return [float(v) for p in points for v in p]


def polygons_rle(polygons: Sequence[Sequence[float]], *, height: int, width: int) -> dict[str, Any]:
    """The merged compressed RLE of flat polygons on a height x width image (pycocotools' rasteriser behind
    `clip_polygon`): never a crash, and memory bounded by the image whatever the coordinates.
    Raises ValueError for a non-finite coordinate."""
    from pycocotools import mask as mask_utils

    clipped = []
    for poly in polygons:
        if not all(math.isfinite(float(v)) for v in poly):
            raise ValueError("polygon has NaN/inf coordinates")
        if len(kept := clip_polygon(poly, height=height, width=width)) >= 6:
            clipped.append(kept)
    if not clipped:  # pycocotools crashes on an empty list: no polygon left is an empty mask
        return empty_rle(height=height, width=width)
    rle: dict[str, Any] = mask_utils.merge(mask_utils.frPyObjects(clipped, height, width))
    return rle


def empty_rle(*, height: int, width: int) -> dict[str, Any]:
    """The compressed RLE of an all-zero height x width mask, without allocating the mask."""
    from pycocotools import mask as mask_utils

    rle: dict[str, Any] = mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)
    return rle


def polygons_mask(polygons: Sequence[Sequence[float]], *, height: int, width: int) -> np.ndarray:
    """`polygons_rle` decoded to an HxW bool mask."""
    from pycocotools import mask as mask_utils

    mask: np.ndarray = mask_utils.decode(polygons_rle(polygons, height=height, width=width)).astype(bool)
    return mask

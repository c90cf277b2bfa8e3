"""How far outside its image a polygon may reach before pycocotools is asked to rasterise it.

`pycocotools.mask.frPyObjects` (maskApi.c `rleFrPoly`) scales every coordinate by 5 into a C `int` and
allocates one entry per scaled pixel along each edge: a coordinate near 1e9 overflows the int and crashes
the interpreter (segfault), and one far outside the image costs memory in proportion to its distance
(https://github.com/cocodataset/cocoapi/blob/master/common/maskApi.c, `rleFrPoly`). Annotation tools do
write points a little outside the image, so the rule leaves a wide margin: every coordinate must lie
within POLYGON_EXTENT_FACTOR image sizes of the image.
"""

from __future__ import annotations

from typing import Sequence

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

"""Masks as the shapes the polygon formats hold, and as CVAT's run-lengths.

`mask_outlines` traces the pixel edges of a mask (pixel-corner coordinates: pixel (x, y) covers
[x, x + 1) x [y, y + 1)), so an outline follows the mask's own staircase rather than a smoothed contour
through pixel centres (which loses half a pixel all round). Holes cannot be drawn by a COCO/LabelMe/YOLO
polygon (several polygons of one object are a union): they are filled, and the writers measure and report
what that costs as the IoU of the polygon's rasterisation (pycocotools, as every reader here does) with the mask.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Direction of travel -> its right turn, in image coordinates (y down): walking with the object on the right.
_RIGHT = {(1, 0): (0, 1), (0, 1): (-1, 0), (-1, 0): (0, -1), (0, -1): (1, 0)}


def mask_outlines(mask: np.ndarray) -> tuple[list[list[float]], int]:
    """(outer outlines as flat [x0, y0, x1, y1, ...] polygons, number of holes filled) of a bool mask.

    Pixels touching only at a corner get separate outlines (4-connectivity), as pycocotools' union of
    polygons then rasterises them back.

    >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
    >>> mask_outlines(m)
    ([[1.0, 1.0, 3.0, 1.0, 3.0, 3.0, 1.0, 3.0]], 0)
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    inner = m[1:-1, 1:-1]
    ys, xs = np.nonzero(inner & ~m[:-2, 1:-1])  # top edges: (x, y) -> (x + 1, y)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(x0: np.ndarray, y0: np.ndarray, dx: int, dy: int) -> None:
        for a, b in zip(x0.tolist(), y0.tolist()):
            edges.setdefault((a, b), []).append((dx, dy))

    add(xs, ys, 1, 0)
    ys, xs = np.nonzero(inner & ~m[1:-1, 2:])  # right edges: (x + 1, y) -> (x + 1, y + 1)
    add(xs + 1, ys, 0, 1)
    ys, xs = np.nonzero(inner & ~m[2:, 1:-1])  # bottom edges: (x + 1, y + 1) -> (x, y + 1)
    add(xs + 1, ys + 1, -1, 0)
    ys, xs = np.nonzero(inner & ~m[1:-1, :-2])  # left edges: (x, y + 1) -> (x, y)
    add(xs, ys + 1, 0, -1)
    outlines: list[list[float]] = []
    holes = 0
    for start in sorted(edges):
        while start in edges:
            first = edges[start][0]
            walk: list[tuple[tuple[int, int], tuple[int, int]]] = []
            point, direction = start, first
            while True:
                options = edges[point]
                options.remove(direction)
                if not options:
                    del edges[point]
                walk.append((point, direction))
                point = (point[0] + direction[0], point[1] + direction[1])
                if point == start:
                    nxt = _pick(direction, [*edges.get(start, []), first])
                    if nxt == first:
                        break
                    direction = nxt
                else:
                    direction = _pick(direction, edges[point])
            corners = [p for k, (p, d) in enumerate(walk) if d != walk[k - 1][1]]
            area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(corners, corners[1:] + corners[:1]))
            if area > 0:
                outlines.append([float(v) for p in corners for v in p])
            else:
                holes += 1
    return outlines, holes


def _pick(direction: tuple[int, int], options: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The next edge at a vertex: the right turn (hugging the pixel just walked past, so that pixels touching
    only at a corner are outlined apart), else straight on, else the left turn."""
    right = _RIGHT[direction]
    for candidate in (right, direction, (-right[0], -right[1])):
        if candidate in options:
            return candidate
    raise ValueError("broken outline")  # every vertex has as many edges out as in


def polygons_mask(polygons: Sequence[Sequence[float]], *, width: int, height: int) -> np.ndarray:
    from segpipe.converters.shapes import polygon_mask

    return polygon_mask(polygons, width=width, height=height)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return float(np.count_nonzero(a & b)) / union if union else 1.0


def bridged(polygons: Sequence[Sequence[float]]) -> list[float]:
    """Several outlines as one polygon joined by zero-width bridges at their closest vertices: a YOLO line holds
    one polygon per object (Ultralytics joins the parts of a COCO object the same way, `merge_multi_segment`
    in https://github.com/ultralytics/ultralytics/blob/main/ultralytics/data/converter.py)."""
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    merged = parts[0]
    for part in parts[1:]:
        d = ((merged[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        loop = np.concatenate([part[j:], part[: j + 1]])  # the part, closed back at its bridge vertex
        merged = np.concatenate([merged[: i + 1], loop, merged[i:]])
    return [float(v) for v in merged.ravel()]


def cvat_rle(mask: np.ndarray) -> tuple[list[int], int, int, int, int]:
    """A mask as CVAT 1.1 XML's `<mask rle= left= top= width= height=>`: run-lengths over the mask's tight
    box, row-major, starting with a (possibly empty) background run
    (https://docs.cvat.ai/docs/manual/advanced/xml_format/, https://github.com/opencv/cvat/issues/5828).
    Raises ValueError for an empty mask.

    >>> m = np.zeros((2, 3), bool); m[0, 2] = m[1, 1] = True
    >>> cvat_rle(m)
    ([1, 2, 1], 1, 0, 2, 2)
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise ValueError("empty mask")
    cols = np.flatnonzero(mask.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    flat = np.asarray(mask[top : top + height, left : left + width], dtype=np.int8).ravel()
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    return [int(r) for r in runs], left, top, width, height

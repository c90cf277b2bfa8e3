"""COCO compressed RLE of a mask known only inside a crop: the same string pycocotools' `encode` gives for the
whole image, without building or scanning the full-size mask.

A detector's mask (or a connected component) covers a box; the rest of the image is zero. Copying and
encoding full-size masks costs H*W bytes per detection (about 85 MB and ~0.3 s of single-threaded
pycocotools per 800x1066 image at 100 detections); the crop holds all the information. The run-length
rules are pycocotools' `rleEncode` and `rleToString` (column-major runs starting with zeros; counts after
the third stored as the difference to the count two before, 5 bits per character with a continuation bit,
offset by 48): https://github.com/cocodataset/cocoapi/blob/master/common/maskApi.c
Pure numpy, vectorised: large steps release the GIL, so several encoder threads overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_MAX_CHARS = 7  # 7 x 5 bits hold any run of an image below 2**34 pixels
# Below this many pixels per image, pasting the crop into a full mask for pycocotools is faster than the numpy
# run scan. Measured with benchmarks/infer.py on 2 busy cores: at 400x300 (120k px) full-mask pycocotools won
# (89 vs 61 images/s, 100 masks each), at 1066x800 (853k px) the crop scan won 9.6x; the cut between is a guess.
FULL_MASK_PIXELS = 1 << 18


@dataclass(frozen=True)
class MaskCrop:
    """The pixels of a binary mask inside rows [top, top + h) and columns [left, left + w) of an image; zero
    elsewhere. `pixels` is uint8/bool [h, w]; h or w may be 0 for an empty mask."""

    top: int
    left: int
    pixels: np.ndarray


def crop_counts(crop: MaskCrop, *, height: int, width: int) -> np.ndarray:
    """Uncompressed COCO RLE counts (int64) of the full height x width mask that `crop` describes."""
    pix = np.asarray(crop.pixels, dtype=bool)
    h, w = pix.shape
    if crop.top < 0 or crop.left < 0 or crop.top + h > height or crop.left + w > width:
        raise ValueError(f"crop {h}x{w} at ({crop.top}, {crop.left}) is outside the {height}x{width} image")
    total = height * width
    # Column-major, with one zero after each column: a run of ones always ends inside its own column's slot.
    slots = np.zeros((w, h + 1), dtype=np.int8)
    slots[:, :h] = pix.T
    flat = slots.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat.size and flat[0]:
        change = np.concatenate(([0], change))
    if change.size == 0:
        return np.array([total], dtype=np.int64)
    col, row = np.divmod(change, h + 1)
    position = (crop.left + col).astype(np.int64) * height + crop.top + row
    starts, ends = position[0::2], position[1::2]  # changes alternate: start of ones, end of ones
    # A run that reaches the bottom of a column and goes on at the top of the next one is one run.
    joined = ends[:-1] == starts[1:]
    if joined.any():
        starts = np.concatenate((starts[:1], starts[1:][~joined]))
        ends = np.concatenate((ends[:-1][~joined], ends[-1:]))
    edges = np.empty(2 * starts.size + 2, dtype=np.int64)
    edges[0], edges[1:-1:2], edges[2:-1:2], edges[-1] = 0, starts, ends, total
    counts = np.diff(edges)
    return counts if counts[-1] else counts[:-1]  # pycocotools writes no empty trailing run of zeros


def compress_counts(counts: np.ndarray) -> str:
    """pycocotools' `rleToString` of uncompressed counts, vectorised.

    >>> compress_counts(np.array([5, 1]))  # a 3x2 mask whose last pixel is set
    '51'
    """
    x = np.asarray(counts, dtype=np.int64).copy()
    if x.size > 3:  # pycocotools: `if (i > 2) x -= cnts[i - 2]`, so the third count is kept whole too
        x[3:] -= np.asarray(counts, dtype=np.int64)[1:-2]
    # Characters per value: the fewest 5-bit groups that hold it as a signed number (pycocotools stops when the
    # rest is 0, or -1 with the sign bit of the last group set).
    n = np.ones(x.size, dtype=np.int64)
    for k in range(1, _MAX_CHARS):
        n += (x < -(1 << (5 * k - 1))) | (x >= (1 << (5 * k - 1)))
    owner = np.repeat(np.arange(x.size), n)
    first = np.cumsum(n) - n
    pos = np.arange(owner.size, dtype=np.int64) - first[owner]
    chars = ((x[owner] >> (5 * pos)) & 0x1F) | np.where(pos < n[owner] - 1, 0x20, 0)
    text: str = (chars + 48).astype(np.uint8).tobytes().decode("ascii")
    return text


def encode_crop(crop: MaskCrop, *, height: int, width: int, full_mask_below: int | None = None) -> dict[str, Any]:
    """The JSON-ready compressed RLE that `pycocotools.mask.encode` gives for the full-size mask. Images of fewer
    than `full_mask_below` pixels (default FULL_MASK_PIXELS) are encoded by pycocotools from the pasted full
    mask: there its C loop beats numpy's per-call overhead (the results are the same either way).

    >>> m = np.zeros((3, 2), np.uint8); m[2, 1] = 1
    >>> encode_crop(MaskCrop(top=2, left=1, pixels=m[2:, 1:]), height=3, width=2, full_mask_below=0)
    {'size': [3, 2], 'counts': '51'}
    """
    if height * width < (FULL_MASK_PIXELS if full_mask_below is None else full_mask_below):
        from pycocotools import mask as mask_utils

        h, w = crop.pixels.shape
        if crop.top < 0 or crop.left < 0 or crop.top + h > height or crop.left + w > width:
            raise ValueError(f"crop {h}x{w} at ({crop.top}, {crop.left}) is outside the {height}x{width} image")
        full = np.zeros((height, width), dtype=np.uint8, order="F")
        full[crop.top:crop.top + h, crop.left:crop.left + w] = crop.pixels
        counts: bytes = mask_utils.encode(full)["counts"]
        return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}
    return {"size": [int(height), int(width)], "counts": compress_counts(crop_counts(crop, height=height, width=width))}


def crops_from_masks(masks: Any) -> list[MaskCrop]:
    """Tight crops of a [N, H, W] torch bool/uint8 mask batch, cut on its device: two small reductions and one
    copy of the crops (not of N full-size masks) reach the CPU."""
    import torch

    if masks.shape[0] == 0:
        return []
    rows = masks.any(dim=2).cpu().numpy()  # [N, H]
    cols = masks.any(dim=1).cpu().numpy()  # [N, W]
    bounds = []
    for r, c in zip(rows, cols):
        ys, xs = np.flatnonzero(r), np.flatnonzero(c)
        bounds.append((0, 0, 0, 0) if ys.size == 0 else (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1))
    pieces = torch.cat([masks[i, y0:y1, x0:x1].reshape(-1) for i, (y0, y1, x0, x1) in enumerate(bounds)])
    flat: np.ndarray = pieces.to(torch.uint8).cpu().numpy()
    crops, at = [], 0
    for y0, y1, x0, x1 in bounds:
        size = (y1 - y0) * (x1 - x0)
        crops.append(MaskCrop(top=y0, left=x0, pixels=flat[at:at + size].reshape(y1 - y0, x1 - x0)))
        at += size
    return crops


def crops_from_cpu_probabilities(probabilities: np.ndarray, keep: np.ndarray, *, threshold: float) -> list[MaskCrop]:
    """`crops_from_masks((probabilities[keep] > threshold))` for masks already in host memory, in numpy: Mask
    R-CNN's [N, H, W] float masks on the CPU. The torch route copied every kept float mask (`[keep]`) before
    thresholding and reduced along the strided axis: several times the time of this route, a few percent of a
    whole image's time on the CPU (benchmarks/infer.py prints the engine's share outside the forward pass)."""
    index = np.flatnonzero(keep)
    if index.size == 0:
        return []
    binary: np.ndarray = (probabilities if index.size == probabilities.shape[0] else probabilities[index]) > threshold
    rows, cols = np.asarray(binary.any(axis=2)), np.asarray(binary.any(axis=1))
    crops = []
    for mask, r, c in zip(binary, rows, cols):
        ys, xs = np.flatnonzero(r), np.flatnonzero(c)
        if ys.size == 0:
            crops.append(MaskCrop(top=0, left=0, pixels=np.zeros((0, 0), np.uint8)))
            continue
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        crops.append(MaskCrop(top=y0, left=x0, pixels=mask[y0:y1, x0:x1].view(np.uint8).copy()))
    return crops

"""Boundary IoU against a plain numpy erosion, and the ignore rule."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.evaluators.semantic.boundary import boundary_update, boundary_width, mask_boundary


def _numpy_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Erosion by a 3x3 square `width` times with zero padding, written with slices."""
    eroded = mask.copy()
    for _ in range(width):
        p = np.pad(eroded, 1)
        eroded = np.ones_like(eroded)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                eroded &= p[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return mask & ~eroded


@pytest.mark.parametrize("width", [1, 2, 3])
def test_boundary_matches_numpy_erosion(width: int) -> None:
    rng = np.random.default_rng(width)
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:25, 8:30] = True
    mask |= rng.random(mask.shape) < 0.05
    assert np.array_equal(mask_boundary(mask, width), _numpy_boundary(mask, width))


def test_boundary_iou_counts_and_ignore() -> None:
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[11:31, 10:30] = 1  # shifted down by one row
    ratio = 0.02  # diagonal 56.6 px -> d = 1
    assert boundary_width(gt.shape, ratio) == 1
    counts = boundary_update(gt, pred, num_classes=2, dilation_ratio=ratio)
    for c in (0, 1):
        g, p = _numpy_boundary(gt == c, 1), _numpy_boundary(pred == c, 1)
        assert counts[c].tolist() == [np.count_nonzero(g & p), np.count_nonzero(g | p)]
    # an ignore band around the object: a prediction equal to the GT on labelled pixels scores 1
    banded = gt.copy()
    banded[(gt == 0) & (_numpy_boundary(np.pad(gt == 1, 2)[:-4, 2:-2] | (gt == 1), 1))] = 255
    counts = boundary_update(banded, pred * 0 + (gt == 1), num_classes=2, dilation_ratio=ratio)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 1] > 0).all()

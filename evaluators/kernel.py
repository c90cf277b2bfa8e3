"""The compiled kernel (segpipe.evaluators._kernel, built from _kernel.c) behind typed, keyword-only entry points.

The kernel is optional: an install without a C compiler has none and every caller takes its numpy path, which
computes the same numbers. SEGPIPE_NO_KERNEL=1 (read once, at import) chooses the numpy path on purpose; tests
switch paths by setting `KERNEL` on this module, which callers read at call time (`available()`).

A corrupt string raises GtStringError or DetStringError (both KernelStringError, a ValueError) with the index
of the string, so callers tell a bad ground truth from a bad detection by type. The signatures of the compiled
functions are in _kernel.pyi.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

NO_KERNEL_ENV = "SEGPIPE_NO_KERNEL"
MAX_PIXELS = 1 << 31
"""The kernel takes images of fewer pixels than this: below it pycocotools' rleIou cannot wrap its uint sums
(`ct = ca + cb`), so the kernel's IoUs are pycocotools'. Larger images are scored by pycocotools itself."""


class KernelStringError(ValueError):
    """A compressed RLE string the kernel refused: corrupt, or its runs do not cover the image."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message, index)
        self.message = message
        self.index = index  # into the list of strings the kernel was given

    def __str__(self) -> str:
        return self.message


class GtStringError(KernelStringError):
    """A ground-truth string (`gt_strings[index]`) is corrupt."""


class DetStringError(KernelStringError):
    """A detection string (`det_strings[index]`) is corrupt."""


def _load() -> ModuleType | None:
    if os.environ.get(NO_KERNEL_ENV, "") not in ("", "0"):
        return None
    try:
        from segpipe.evaluators import _kernel
    except ImportError:
        return None
    module: ModuleType = _kernel
    return module


KERNEL: ModuleType | None = _load()


def available() -> bool:
    """Whether the compiled kernel is there and wanted (callers take the numpy path otherwise)."""
    return KERNEL is not None


def takes_image(height: int, width: int) -> bool:
    """Whether the kernel scores masks of a height x width image (fewer than MAX_PIXELS pixels)."""
    return height * width < MAX_PIXELS


def _compiled() -> ModuleType:
    if KERNEL is None:
        raise RuntimeError("the compiled kernel is not loaded: check kernel.available() first")
    return KERNEL


def rle_totals(*, strings: list[bytes | str], out: np.ndarray) -> None:
    """Pixel total of each compressed RLE string into `out` (int64 [len(strings)]), -1 where corrupt."""
    _compiled().rle_totals(strings=strings, out=out)


def match_segm(
    *, det_strings: list[bytes | str], gt_strings: list[bytes | str], gt_crowd: np.ndarray, gt_id_nonzero: np.ndarray,
    gt_ignored: np.ndarray, area_lo: np.ndarray, area_hi: np.ndarray, thresholds: np.ndarray, det_matched: np.ndarray,
    det_ignored: np.ndarray, det_iou: np.ndarray, blocks: np.ndarray,
) -> None:
    """COCOeval's mask IoUs and greedy matches for a whole update, written into det_matched / det_ignored /
    det_iou. blocks: int64 [B, 6] rows (height, width, d0, d1, g0, g1), one per (image, category), tiling the
    detections and GTs in order; every image below MAX_PIXELS. Raises GtStringError / DetStringError."""
    _compiled().match_segm(
        det_strings=det_strings, gt_strings=gt_strings, blocks=blocks, gt_crowd=gt_crowd, gt_id_nonzero=gt_id_nonzero,
        gt_ignored=gt_ignored, area_lo=area_lo, area_hi=area_hi, thresholds=thresholds, det_matched=det_matched,
        det_ignored=det_ignored, det_iou=det_iou,
    )


def match_bbox(
    *, det_boxes: np.ndarray, det_area: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray, gt_id_nonzero: np.ndarray,
    gt_ignored: np.ndarray, area_lo: np.ndarray, area_hi: np.ndarray, thresholds: np.ndarray, det_matched: np.ndarray,
    det_ignored: np.ndarray, det_iou: np.ndarray, blocks: np.ndarray,
) -> None:
    """As match_segm for [x, y, w, h] boxes (float64 [N, 4], [G, 4]); blocks: int64 [B, 4] rows (d0, d1, g0, g1)."""
    _compiled().match_bbox(
        det_boxes=det_boxes, det_area=det_area, gt_boxes=gt_boxes, blocks=blocks, gt_crowd=gt_crowd, gt_id_nonzero=gt_id_nonzero,
        gt_ignored=gt_ignored, area_lo=area_lo, area_hi=area_hi, thresholds=thresholds, det_matched=det_matched,
        det_ignored=det_ignored, det_iou=det_iou,
    )


def accumulate_lanes(*, tps: np.ndarray, fps: np.ndarray, npig: np.ndarray, thresholds: np.ndarray, precision: np.ndarray,
                     recall: np.ndarray) -> None:
    """COCOeval.accumulate for L lanes of n detections in score order: tps / fps bool [L, n] (true / false
    positive, not ignored), npig float64 [L] (GTs not ignored), thresholds float64 [R] (recall thresholds); writes
    precision float64 [L, R] (interpolated, at each threshold) and recall float64 [L] (at the last detection)."""
    _compiled().accumulate_lanes(tps=tps, fps=fps, npig=npig, thresholds=thresholds, precision=precision, recall=recall)


def result_columns(
    *, results: list[Any], segm: bool, image_id: np.ndarray, category_id: np.ndarray, score: np.ndarray, ok: np.ndarray,
    plain: np.ndarray, sizes: np.ndarray, boxes: np.ndarray,
) -> list[Any] | None:
    """The common form of each COCO result, in one pass, into columns of [N = len(results)] rows: image_id /
    category_id int64, score float64, ok bool (the row is in the common form and the columns hold its values),
    plain bool (bbox: four floats); sizes int64 [N, 2] for segm ([0, 2] for bbox), boxes float64 [N, 4] for bbox
    ([0, 4] for segm). Returns the counts str/bytes of each row (None where not ok) for segm, None for bbox."""
    counts: list[Any] | None = _compiled().result_columns(
        results=results, segm=segm, image_id=image_id, category_id=category_id, score=score, ok=ok, plain=plain, sizes=sizes,
        boxes=boxes,
    )
    return counts


__all__ = ["DetStringError", "GtStringError", "KernelStringError", "MAX_PIXELS", "KERNEL", "NO_KERNEL_ENV", "accumulate_lanes",
           "available", "match_bbox", "match_segm", "result_columns", "rle_totals", "takes_image"]

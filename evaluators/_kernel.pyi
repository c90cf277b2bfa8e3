# Signatures of the compiled kernel (_kernel.c). Call it through segpipe.evaluators.kernel, whose functions take
# the same keyword-only arguments. Buffers are C-contiguous numpy arrays of the dtypes named; a wrong dtype or
# length raises TypeError / ValueError, a size product that overflows OverflowError, a corrupt string of
# match_segm segpipe.evaluators.kernel.GtStringError / DetStringError.
from typing import Any

import numpy as np
import numpy.typing as npt

def rle_totals(*, strings: list[bytes | str], out: npt.NDArray[np.int64]) -> None: ...
def match_segm(
    *,
    det_strings: list[bytes | str],
    gt_strings: list[bytes | str],
    gt_crowd: npt.NDArray[np.bool_],
    gt_id_nonzero: npt.NDArray[np.bool_],
    gt_ignored: npt.NDArray[np.bool_],
    area_lo: npt.NDArray[np.float64],
    area_hi: npt.NDArray[np.float64],
    thresholds: npt.NDArray[np.float64],
    det_matched: npt.NDArray[np.bool_],
    det_ignored: npt.NDArray[np.bool_],
    det_iou: npt.NDArray[np.float64],
    blocks: npt.NDArray[np.int64],
) -> None: ...
def match_bbox(
    *,
    det_boxes: npt.NDArray[np.float64],
    det_area: npt.NDArray[np.float64],
    gt_boxes: npt.NDArray[np.float64],
    gt_crowd: npt.NDArray[np.bool_],
    gt_id_nonzero: npt.NDArray[np.bool_],
    gt_ignored: npt.NDArray[np.bool_],
    area_lo: npt.NDArray[np.float64],
    area_hi: npt.NDArray[np.float64],
    thresholds: npt.NDArray[np.float64],
    det_matched: npt.NDArray[np.bool_],
    det_ignored: npt.NDArray[np.bool_],
    det_iou: npt.NDArray[np.float64],
    blocks: npt.NDArray[np.int64],
) -> None: ...
def accumulate_lanes(
    *,
    tps: npt.NDArray[np.bool_],
    fps: npt.NDArray[np.bool_],
    npig: npt.NDArray[np.float64],
    thresholds: npt.NDArray[np.float64],
    precision: npt.NDArray[np.float64],
    recall: npt.NDArray[np.float64],
) -> None: ...
def result_columns(
    *,
    results: list[Any],
    segm: bool,
    image_id: npt.NDArray[np.int64],
    category_id: npt.NDArray[np.int64],
    score: npt.NDArray[np.float64],
    ok: npt.NDArray[np.bool_],
    plain: npt.NDArray[np.bool_],
    sizes: npt.NDArray[np.int64],
    boxes: npt.NDArray[np.float64],
) -> list[Any] | None: ...

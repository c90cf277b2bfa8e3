"""The additive statistic of semantic evaluation: one int64 confusion matrix, rows = ground truth.

The matrix has `num_classes + 1` columns: column `c < n` counts GT pixels predicted as class `c`;
the last column (`UNPREDICTED`) counts labelled GT pixels that received no class, i.e. the prediction
was `ignore_index` there or the prediction file was missing. Those pixels are misses (false negatives
for their GT class, false positives for no class). This is the convention of bdd100k/scalabel
(`scalabel/eval/sem_seg.py`: "index n is the ignored class") and of mmseg (a predicted 255 is outside
`histc`'s range, so it only enlarges the GT area); it is what reproduces the bdd100k figure with a
missing prediction (mIoU 31.91 %, pixel accuracy 47.5 %, ../shared/peers/README.md).

Matrices are additive: the sum over shards equals one pass over all images.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from segpipe.core import label_maps
from segpipe.core.errors import ArgumentError, EvaluationError
from segpipe.core.layout import IGNORE_INDEX as IGNORE_INDEX  # re-exported for the evaluators

UNPREDICTED = "(no prediction)"  # label of the confusion matrix's last column

# cv2.calcHist counts in float32, which is exact up to 2**24 per bin; histogram at most that many
# pixels per call and sum the chunks in int64.
_EXACT_FLOAT32_COUNT = 1 << 24
_U8_BINS = 256
_INTERLEAVE = 4


def confusion_update(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    path: str | os.PathLike[str] = "<array>",
) -> np.ndarray:
    """Confusion matrix of one label map pair: int64 [num_classes, num_classes + 1], rows = GT.

    GT pixels equal to `ignore_index` are left out. A prediction equal to `ignore_index` on a labelled
    pixel lands in the last column (a miss). Any other value outside 0..num_classes-1, in GT or in the
    prediction, raises EvaluationError naming `path` and the values.

    >>> gt = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    >>> confusion_update(gt, np.array([[0, 1], [0, 1]], dtype=np.uint8), num_classes=2)
    array([[1, 0, 0],
           [1, 1, 0]])
    """
    check_confusion_arguments(num_classes=num_classes, ignore_index=ignore_index)
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise EvaluationError(path, "shape", f"prediction has shape {pred.shape}, ground truth {gt.shape}")
    for name, array in (("gt", gt), ("prediction", pred)):
        if not np.issubdtype(array.dtype, np.integer):
            raise EvaluationError(path, "dtype", f"{name} label map must hold integers, got {array.dtype}")
    if gt.dtype == np.uint8 and pred.dtype == np.uint8 and num_classes <= _U8_BINS:
        return _confusion_u8(gt, pred, num_classes=num_classes, ignore_index=ignore_index, path=path)
    return _confusion_generic(gt=gt, pred=pred, num_classes=num_classes, ignore_index=ignore_index, path=path)


def unpredicted_update(
    gt: np.ndarray,
    *,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    path: str | os.PathLike[str] = "<array>",
) -> np.ndarray:
    """Confusion matrix of a GT map whose prediction is missing: every labelled pixel is a miss.

    >>> unpredicted_update(np.array([0, 0, 1, 255], dtype=np.uint8), num_classes=2)
    array([[0, 0, 2],
           [0, 0, 1]])
    """
    check_confusion_arguments(num_classes=num_classes, ignore_index=ignore_index)
    gt = np.asarray(gt)
    if not np.issubdtype(gt.dtype, np.integer):
        raise EvaluationError(path, "dtype", f"gt label map must hold integers, got {gt.dtype}")
    return _confusion_generic(gt=gt, pred=None, num_classes=num_classes, ignore_index=ignore_index, path=path)


def check_confusion_arguments(*, num_classes: int, ignore_index: int) -> None:
    """ArgumentError (a ValueError) unless there is at least one class and `ignore_index` is not one of them."""
    if num_classes < 1:
        raise ArgumentError("num_classes", f"must be at least 1, got {num_classes}")
    if 0 <= ignore_index < num_classes:
        raise ArgumentError("ignore_index", f"{ignore_index} is a class index (0..{num_classes - 1})")


def _confusion_u8(
    gt: np.ndarray, pred: np.ndarray, *, num_classes: int, ignore_index: int, path: str | os.PathLike[str]
) -> np.ndarray:
    """uint8 maps: a 256x256 joint histogram per chunk, range-checked, folded into [n, n + 1].

    cv2.calcHist fuses each (gt, pred) pair into one bin in C, without the boolean-mask copies and int64
    casts of the `bincount(n * gt[keep] + pred[keep])` pattern (benchmarks/eval_semantic.py). Within a
    chunk every count and partial sum is an integer <= 2**24, so float32 arithmetic on it is exact.
    """
    n = num_classes
    ignore_bin = ignore_index if 0 <= ignore_index < _U8_BINS else None
    flat_gt = np.ascontiguousarray(gt).reshape(-1)
    flat_pred = np.ascontiguousarray(pred).reshape(-1)
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    helper = label_maps.HELPER  # the compiled counter, when built: same counts, GIL released
    if helper is not None and helper.confusion_u8(gt=flat_gt, pred=flat_pred, num_classes=n,
                                                  ignore=-1 if ignore_bin is None else ignore_bin, out=confusion):
        return confusion  # (False: a value out of range, counted nothing; the histograms below name it)
    for start in range(0, flat_gt.size, _EXACT_FLOAT32_COUNT):
        chunk_gt = flat_gt[start:start + _EXACT_FLOAT32_COUNT]
        hist = _joint_histogram_u8(gt=chunk_gt, pred=flat_pred[start:start + _EXACT_FLOAT32_COUNT])
        in_range = float(hist[:n, :n].sum())
        if ignore_bin is not None:
            in_range += float(hist[:n, ignore_bin].sum() + hist[ignore_bin, :n].sum() + hist[ignore_bin, ignore_bin])
        if in_range != chunk_gt.size:  # some value is neither a class nor ignore: find and name it
            _check_u8_ranges(hist, num_classes=n, ignore_bin=ignore_bin, ignore_index=ignore_index, path=path)
        confusion[:, :n] += hist[:n, :n].astype(np.int64)
        if ignore_bin is not None:
            confusion[:, n] += hist[:n, ignore_bin].astype(np.int64)
    return confusion


def _check_u8_ranges(
    hist: np.ndarray, *, num_classes: int, ignore_bin: int | None, ignore_index: int, path: str | os.PathLike[str]
) -> None:
    disallowed = np.ones(_U8_BINS, dtype=bool)
    disallowed[:num_classes] = False
    if ignore_bin is not None:
        disallowed[ignore_bin] = False
    for who, counts in (("ground truth", hist.sum(axis=1)), ("prediction", hist.sum(axis=0))):
        _raise_if_out_of_range(values=np.flatnonzero(disallowed & (counts > 0)), counts=counts, who=who,
                               num_classes=num_classes, ignore_index=ignore_index, path=path)


def _joint_histogram_u8(*, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """float32 [256, 256] counts of (gt, pred) value pairs of two flat uint8 arrays, rows = gt value.

    Label maps are made of long runs of one class, and a histogram loop that increments the same bin
    pixel after pixel waits on its own store each time. Interleaving _INTERLEAVE far-apart stretches
    of the image (cv2.merge, ~10 us) makes consecutive increments hit different bins: ~1.5x faster.
    """
    body = gt.size - gt.size % _INTERLEAVE
    if body == 0:
        return _calc_hist(gt=gt.reshape(1, -1), pred=pred.reshape(1, -1))
    hist = _calc_hist(gt=_interleave(gt[:body]), pred=_interleave(pred[:body]))
    if body < gt.size:
        hist += _calc_hist(gt=gt[body:].reshape(1, -1), pred=pred[body:].reshape(1, -1))
    return hist


def _interleave(flat: np.ndarray) -> np.ndarray:
    """[a0 b0 c0 d0 a1 b1 ...] from the _INTERLEAVE consecutive stretches a, b, c, d of `flat`, as one row."""
    merged: np.ndarray = cv2.merge(list(flat.reshape(_INTERLEAVE, -1)))
    return merged.reshape(1, -1)


def _calc_hist(*, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    if gt.size == 0:
        return np.zeros((_U8_BINS, _U8_BINS), dtype=np.float32)
    return cv2.calcHist([gt, pred], [0, 1], None, [_U8_BINS, _U8_BINS], [0, _U8_BINS, 0, _U8_BINS])


def _confusion_generic(
    *, gt: np.ndarray, pred: np.ndarray | None, num_classes: int, ignore_index: int, path: str | os.PathLike[str]
) -> np.ndarray:
    """Any integer dtype (uint16 PNGs, int arrays with ignore -1): slower, same result."""
    n = num_classes

    def indices(labels: np.ndarray, *, who: str) -> np.ndarray:
        """Flat int64 class indices with ignore mapped to n; out-of-range values raise."""
        flat = labels.reshape(-1).astype(np.int64)
        ignored = flat == ignore_index
        bad = ~ignored & ((flat < 0) | (flat >= n))
        if bad.any():
            values, counts = np.unique(flat[bad], return_counts=True)
            _raise_if_out_of_range(values=values, counts=dict(zip(values.tolist(), counts.tolist())), who=who,
                                   num_classes=n, ignore_index=ignore_index, path=path)
        return np.where(ignored, n, flat)

    # Ignored GT pixels go to row n and are sliced off; a predicted ignore goes to column n.
    rows = indices(gt, who="ground truth")
    cols = np.full_like(rows, n) if pred is None else indices(pred, who="prediction")
    counts = np.bincount(rows * (n + 1) + cols, minlength=(n + 1) * (n + 1))
    return counts.reshape(n + 1, n + 1)[:n].astype(np.int64)


def _raise_if_out_of_range(
    *, values: np.ndarray, counts: np.ndarray | dict[int, int], who: str, num_classes: int, ignore_index: int,
    path: str | os.PathLike[str],
) -> None:
    if len(values) == 0:
        return
    shown = ", ".join(f"{int(v)} ({int(counts[int(v)])} px)" for v in values[:10])
    more = f" and {len(values) - 10} more" if len(values) > 10 else ""
    raise EvaluationError(
        path, f"{who} values",
        f"{who} values outside the class range 0..{num_classes - 1} (ignore {ignore_index}): {shown}{more}",
    )

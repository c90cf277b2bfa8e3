"""Reduce a summed confusion matrix to pandas tables: summary, per class, per image, confusion, notes.

Conventions (those of MMSegmentation's IoUMetric,
https://github.com/open-mmlab/mmsegmentation/blob/main/mmseg/evaluation/metrics/iou_metric.py):
IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN), pixel accuracy (aAcc) = ΣTP/Σ labelled pixels. A class
with no GT and no predicted pixels has NaN scores and is left out of every mean; a class predicted but
absent from GT scores 0. All figures are fractions, not percentages.
Per-image means (`mIoU_per_image`, `mDice_per_image`) average, over images, the mean over the classes
present in that image's GT or prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from segpipe.evaluators.semantic.confusion import UNPREDICTED
from segpipe.core.errors import ArgumentError

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_METRICS: tuple[str, ...] = (
    "mIoU", "mDice", "aAcc", "mAcc", "mPrecision", "fwIoU", "mIoU_per_image", "mDice_per_image",
)
PER_CLASS_COLUMNS: tuple[str, ...] = ("class", "IoU", "Dice", "precision", "recall", "gt_pixels", "pred_pixels")
PER_IMAGE_COLUMNS: tuple[str, ...] = ("file", "IoU", "Dice", "aAcc", "gt_pixels", "prediction")
NOTES_COLUMNS: tuple[str, ...] = ("file", "issue")
CONFUSION_LABEL_COLUMN = "class"  # first column of confusion.csv: the GT class of the row

# Values of the per-image `prediction` column and the notes' `issue` column.
PREDICTION_FOUND = "found"
MISSING_PREDICTION = "missing_prediction"
PREDICTION_WITHOUT_GT = "prediction_without_gt"


@dataclass(frozen=True)
class ClassScores:
    """Per-class arrays derived from one confusion matrix (NaN where undefined)."""

    tp: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True)
class SemanticReport:
    summary: pd.DataFrame  # metric, value
    per_class: pd.DataFrame  # PER_CLASS_COLUMNS
    per_image: pd.DataFrame  # PER_IMAGE_COLUMNS
    confusion: pd.DataFrame  # class, <pred class names...>, (no prediction)
    notes: pd.DataFrame  # file, issue
    warnings: tuple[str, ...] = field(default=())

    def metric(self, name: str) -> float:
        """One summary value by name."""
        value: Any = self.summary.set_index("metric").loc[name, "value"]
        return float(value)


def class_scores(confusion: np.ndarray) -> ClassScores:
    """Per-class TP, pixel counts and scores of an [n, n] or [n, n + 1] confusion matrix (rows = GT)."""
    matrix = _as_confusion(confusion)
    n = matrix.shape[0]
    tp = np.diagonal(matrix[:, :n]).astype(np.int64)
    gt_pixels = matrix.sum(axis=1)  # includes the unpredicted column: those pixels are misses
    pred_pixels = matrix[:, :n].sum(axis=0)
    union = gt_pixels + pred_pixels - tp  # TP + FP + FN
    return ClassScores(
        tp=tp, gt_pixels=gt_pixels, pred_pixels=pred_pixels,
        iou=_ratio(tp, union), dice=_ratio(2 * tp, gt_pixels + pred_pixels),
        precision=_ratio(tp, pred_pixels), recall=_ratio(tp, gt_pixels),
    )


def per_image_row(confusion: np.ndarray, *, file: str, prediction: str = PREDICTION_FOUND) -> dict[str, object]:
    """One per-image row: mean IoU / Dice over the classes present in the image's GT or prediction.

    >>> per_image_row(np.array([[3, 1], [0, 0]]), file="a.png")["IoU"]
    0.375
    """
    scores = class_scores(confusion)
    total = int(scores.gt_pixels.sum())
    return {
        "file": file, "IoU": _nanmean(scores.iou), "Dice": _nanmean(scores.dice),
        "aAcc": float(scores.tp.sum()) / total if total else float("nan"), "gt_pixels": total, "prediction": prediction,
    }


def semantic_compute(
    confusion: np.ndarray,
    *,
    class_names: Sequence[str],
    per_image: pd.DataFrame | None = None,
    notes: pd.DataFrame | None = None,
) -> SemanticReport:
    """Dataset-level tables from the confusion matrix summed over all images (and shards).

    `per_image` holds rows from `per_image_row`; `notes` rows (file, issue) list missing predictions and
    predictions without GT.
    """
    import pandas as pd  # here, not at import: `segpipe evaluate semantic` imports it while the first maps decode

    matrix = _as_confusion(confusion)
    names = check_class_names(class_names)
    if len(names) != matrix.shape[0]:
        raise ArgumentError("class_names", f"{len(names)} class names for a confusion matrix of {matrix.shape[0]} classes")
    scores = class_scores(matrix)
    per_image = _per_image_table(per_image)
    notes = pd.DataFrame(columns=list(NOTES_COLUMNS)) if notes is None else notes.reset_index(drop=True)
    total = int(scores.gt_pixels.sum())
    frequency = scores.gt_pixels / total if total else np.zeros(len(names))
    valid_iou = ~np.isnan(scores.iou)
    values = {
        "mIoU": _nanmean(scores.iou),
        "mDice": _nanmean(scores.dice),
        "aAcc": float(scores.tp.sum()) / total if total else float("nan"),
        "mAcc": _nanmean(scores.recall),
        "mPrecision": _nanmean(scores.precision),
        "fwIoU": float(np.sum(frequency[valid_iou] * scores.iou[valid_iou])) if total else float("nan"),
        "mIoU_per_image": _nanmean(per_image["IoU"].to_numpy(dtype=float)),
        "mDice_per_image": _nanmean(per_image["Dice"].to_numpy(dtype=float)),
    }
    summary = pd.DataFrame({"metric": list(SUMMARY_METRICS), "value": [values[m] for m in SUMMARY_METRICS]})
    per_class = pd.DataFrame({
        "class": names, "IoU": scores.iou, "Dice": scores.dice, "precision": scores.precision,
        "recall": scores.recall, "gt_pixels": scores.gt_pixels, "pred_pixels": scores.pred_pixels,
    })
    confusion_table = pd.DataFrame(matrix, columns=[*names, UNPREDICTED])
    confusion_table.insert(0, CONFUSION_LABEL_COLUMN, names)
    return SemanticReport(
        summary=summary, per_class=per_class, per_image=per_image, confusion=confusion_table, notes=notes,
        warnings=_warnings(scores=scores, names=names, notes=notes),
    )


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """The names as strings; ArgumentError (a ValueError) when empty, repeated, or clashing with confusion.csv's labels."""
    names = [str(name) for name in class_names]
    if not names or len(set(names)) != len(names) or CONFUSION_LABEL_COLUMN in names or UNPREDICTED in names:
        raise ArgumentError("class_names", f"class names must be unique, at least one, and not {CONFUSION_LABEL_COLUMN!r} "
                         f"or {UNPREDICTED!r}: {names}")
    return names


def _as_confusion(confusion: np.ndarray) -> np.ndarray:
    """Accept [n, n] (no unpredicted column) or [n, n + 1]; return int64 [n, n + 1] without mutating."""
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[1] not in (matrix.shape[0], matrix.shape[0] + 1):
        raise ValueError(f"confusion matrix must be [n, n] or [n, n + 1], got shape {matrix.shape}")
    if matrix.shape[1] == matrix.shape[0]:
        matrix = np.concatenate([matrix, np.zeros((matrix.shape[0], 1), dtype=matrix.dtype)], axis=1)
    return matrix.astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without numpy's RuntimeWarning) when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _per_image_table(per_image: pd.DataFrame | None) -> pd.DataFrame:
    import pandas as pd

    if per_image is None:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("IoU", "Dice", "aAcc") else object)
                             for c in PER_IMAGE_COLUMNS})
    return per_image.sort_values("file", kind="stable").reset_index(drop=True)


def _warnings(*, scores: ClassScores, names: list[str], notes: pd.DataFrame) -> tuple[str, ...]:
    out: list[str] = []
    for issue, what in ((MISSING_PREDICTION, "GT images have no prediction (counted as all wrong)"),
                        (PREDICTION_WITHOUT_GT, "predictions have no GT (ignored)")):
        files = notes.loc[notes["issue"] == issue, "file"].tolist() if len(notes) else []
        if files:
            out.append(f"{len(files)} {what}: {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}")
    absent = [n for n, iou in zip(names, scores.iou) if np.isnan(iou)]
    if absent:
        out.append(f"{len(absent)} classes have neither GT nor predicted pixels (NaN, left out of means): "
                   f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}")
    return tuple(out)

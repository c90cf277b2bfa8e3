"""Model A vs model B on one dataset: per-class and per-image metric deltas (delta = B - A).

Pure functions over the tables an evaluation already produced (per_class, per_image) and over per-image
confusion matrices; the confidence intervals live in segpipe.evaluators.analysis.bootstrap.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from segpipe.core.errors import EvaluationError
from segpipe.evaluators.semantic.tables import class_scores

# Instance per-image score: F1 of the matches at IoU 0.5 (2TP / (2TP + FP + FN)), NaN without GT and detections.
INSTANCE_IMAGE_METRICS = ("f1", "tp", "fp", "fn", "mean_iou")
SEMANTIC_IMAGE_METRICS = ("IoU", "Dice", "aAcc")
PER_CLASS_IOU_COLUMNS = ("file", "class", "IoU", "Dice", "gt_pixels", "pred_pixels")


def per_class_deltas(a: pd.DataFrame, b: pd.DataFrame, *, key: str) -> pd.DataFrame:
    """One row per class: `<metric>_A`, `<metric>_B`, `<metric>_delta` for every numeric column of both tables.

    COCO's -1 ("no ground truth") is kept as NaN in the delta, so it never reads as a change.
    """
    _check_same_keys(a, b, key=key, what="classes")
    metrics = [c for c in a.columns if c != key and not c.endswith("_id") and c in b.columns
               and pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])]
    out = pd.DataFrame({key: a[key].tolist()})
    b = b.set_index(key).loc[a[key]].reset_index()
    for m in metrics:
        va, vb = a[m].to_numpy(dtype=float), b[m].to_numpy(dtype=float)
        missing = (va == -1) | (vb == -1)
        out[f"{m}_A"], out[f"{m}_B"] = va, vb
        out[f"{m}_delta"] = np.where(missing, np.nan, vb - va)
    return out


def instance_image_scores(per_image: pd.DataFrame) -> pd.DataFrame:
    """The per-image table of an instance evaluation plus `f1` = 2TP / (2TP + FP + FN) at IoU 0.5."""
    tp, fp, fn = (per_image[c].to_numpy(dtype=float) for c in ("tp", "fp", "fn"))
    denominator = 2 * tp + fp + fn
    f1 = np.full(len(tp), np.nan)
    np.divide(2 * tp, denominator, out=f1, where=denominator > 0)
    return per_image.assign(f1=f1)


def per_image_deltas(a: pd.DataFrame, b: pd.DataFrame, *, key: str, metrics: Sequence[str], rank_by: str) -> pd.DataFrame:
    """One row per image with A, B and delta of each metric, most regressed first (by `rank_by`'s delta;
    images where it is NaN last), ties by `key`."""
    _check_same_keys(a, b, key=key, what="images")
    b = b.set_index(key).loc[a[key]].reset_index()
    out = pd.DataFrame({key: a[key].tolist()})
    for m in metrics:
        va, vb = a[m].to_numpy(dtype=float), b[m].to_numpy(dtype=float)
        out[f"{m}_A"], out[f"{m}_B"], out[f"{m}_delta"] = va, vb, vb - va
    delta = out[f"{rank_by}_delta"]
    out = out.assign(_nan=delta.isna()).sort_values(["_nan", f"{rank_by}_delta", key], kind="mergesort")
    return out.drop(columns="_nan").reset_index(drop=True)


def regressed_and_improved(deltas: pd.DataFrame, *, rank_by: str, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` images whose `rank_by` dropped most (delta < 0) and rose most (delta > 0)."""
    d = deltas[f"{rank_by}_delta"]
    regressed = deltas[d < 0].head(n)
    improved = deltas[d > 0].sort_values(f"{rank_by}_delta", ascending=False, kind="mergesort").head(n)
    return regressed.reset_index(drop=True), improved.reset_index(drop=True)


def per_image_class_iou(confusions: np.ndarray, *, files: Sequence[str], class_names: Sequence[str]) -> pd.DataFrame:
    """Long table (file, class, IoU, Dice, gt_pixels, pred_pixels) from per-image confusions [I, n, n+1].

    A class with neither GT nor predicted pixels in an image has no row for that image (its IoU is undefined).
    """
    rows = []
    for file, matrix in zip(files, confusions):
        s = class_scores(matrix)
        for c, name in enumerate(class_names):
            if s.gt_pixels[c] or s.pred_pixels[c]:
                rows.append((file, name, float(s.iou[c]), float(s.dice[c]), int(s.gt_pixels[c]), int(s.pred_pixels[c])))
    return pd.DataFrame(rows, columns=list(PER_CLASS_IOU_COLUMNS))


def worst_images_per_class(table: pd.DataFrame, *, n: int) -> pd.DataFrame:
    """The `n` lowest-IoU images of each class (rank 1 = worst), ties by file name."""
    ordered = table.sort_values(["class", "IoU", "file"], kind="mergesort")
    worst = ordered.groupby("class", sort=False).head(n).copy()
    worst["rank"] = worst.groupby("class", sort=False).cumcount() + 1
    return worst[["class", "rank", "file", "IoU", "Dice", "gt_pixels", "pred_pixels"]].reset_index(drop=True)


def _check_same_keys(a: pd.DataFrame, b: pd.DataFrame, *, key: str, what: str) -> None:
    for name, t in (("A", a), ("B", b)):
        if key not in t.columns:
            raise EvaluationError(name, key, f"the table has no {key!r} column")
    if set(a[key]) != set(b[key]):
        only_a = sorted(set(map(str, a[key])) - set(map(str, b[key])))[:5]
        only_b = sorted(set(map(str, b[key])) - set(map(str, a[key])))[:5]
        raise EvaluationError("compare", key, f"A and B cover different {what} (only in A: {only_a}, only in B: "
                              f"{only_b}): compare two evaluations of one dataset")

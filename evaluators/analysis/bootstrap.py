"""Paired bootstrap over images: confidence intervals for headline metrics of two models and their difference.

Both models are scored on the same resampled image lists (one draw of image indices per replicate, shared by
A and B), so the interval of B - A accounts for the images being the same (Efron & Tibshirani, "An
Introduction to the Bootstrap", ch. 16; the paired form used by Koehn 2004, "Statistical Significance Tests
for Machine Translation Evaluation", https://aclanthology.org/W04-3250). Each replicate recomputes the
dataset-level metric from additive per-image statistics: COCO AP/AP50 from the match records of the drawn
images (an image drawn twice counts twice), mIoU/mDice from the sum of the drawn images' confusion matrices.
Intervals are percentile intervals; a difference is called significant when its interval excludes 0.
hotcoco's `compare` instead de-duplicates each draw into a set of images (its bootstrap.rs, "Sampling
convention"), which gives narrower intervals; here a drawn image counts as often as it is drawn.
Same inputs and seed => the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.accumulate import _curves
from segpipe.evaluators.instance.stats import InstanceStats
from segpipe.evaluators.semantic.tables import class_scores

DEFAULT_REPLICATES = 1000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
INSTANCE_HEADLINE = ("AP", "AP50")
SEMANTIC_HEADLINE = ("mIoU", "mDice")
INTERVAL_COLUMNS = (
    "metric", "A", "B", "delta", "delta_low", "delta_high", "A_low", "A_high", "B_low", "B_high",
    "p_value", "significant", "replicates", "confidence", "seed",
)
_AREA_ALL = 0
_MAX_DET = 100


@dataclass(frozen=True)
class ImageRows:
    """Row positions of each image's detections and GTs in an InstanceStats (records are sorted by image)."""

    det_start: np.ndarray
    det_end: np.ndarray
    gt_start: np.ndarray
    gt_end: np.ndarray

    @staticmethod
    def of(stats: InstanceStats) -> "ImageRows":
        ids = stats.image_ids
        return ImageRows(
            det_start=np.searchsorted(stats.det_image, ids, side="left"),
            det_end=np.searchsorted(stats.det_image, ids, side="right"),
            gt_start=np.searchsorted(stats.gt_image, ids, side="left"),
            gt_end=np.searchsorted(stats.gt_image, ids, side="right"),
        )


def _gather(start: np.ndarray, end: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Concatenated ranges start[i]:end[i] for i in picks (repeats allowed)."""
    lengths = end[picks] - start[picks]
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(start[picks] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    gathered: np.ndarray = np.arange(int(lengths.sum())) + offsets
    return gathered


def instance_headline(stats: InstanceStats, picks: np.ndarray | None = None, rows: ImageRows | None = None) -> dict[str, float]:
    """AP (0.5:0.95) and AP50, area "all", 100 detections, over the images at `picks` (default: all once).

    The same arithmetic as COCOeval.accumulate/summarize (segpipe.evaluators.instance.accumulate), restricted
    to the one area range and detection limit the headline numbers use.
    """
    if picks is None:
        det_rows, gt_rows = np.arange(len(stats.det_image)), np.arange(len(stats.gt_image))
    else:
        rows = rows or ImageRows.of(stats)
        det_rows, gt_rows = _gather(rows.det_start, rows.det_end, picks), _gather(rows.gt_start, rows.gt_end, picks)
    det_cat, gt_cat = stats.det_category[det_rows], stats.gt_category[gt_rows]
    per_class_ap = []
    for cat in stats.category_ids:
        npig = int(np.count_nonzero(~stats.gt_ignored[gt_rows[gt_cat == cat], _AREA_ALL]))
        if npig == 0:
            continue
        sel = det_rows[(det_cat == cat) & (stats.det_rank[det_rows] < _MAX_DET)]
        sel = sel[np.argsort(-stats.det_score[sel], kind="mergesort")]
        matched = stats.det_matched[sel, _AREA_ALL, :].T  # [T, n]
        ignored = stats.det_ignored[sel, _AREA_ALL, :].T
        tp = np.cumsum(matched & ~ignored, axis=1).astype(float)
        fp = np.cumsum(~matched & ~ignored, axis=1).astype(float)
        precision, _ = _curves(tp, fp, npig, len(sel))
        per_class_ap.append(precision)  # [T, R]
    if not per_class_ap:
        return {"AP": -1.0, "AP50": -1.0}
    p = np.stack(per_class_ap)  # [K, T, R]
    return {"AP": float(np.mean(p)), "AP50": float(np.mean(p[:, 0]))}


def semantic_headline(confusions: np.ndarray, picks: np.ndarray | None = None) -> dict[str, float]:
    """mIoU and mDice of the summed confusion matrices [I, n, n+1] of the images at `picks` (default: all)."""
    weights = np.ones(len(confusions), dtype=np.int64) if picks is None else np.bincount(picks, minlength=len(confusions))
    total = np.tensordot(weights, confusions, axes=1)
    scores = class_scores(total)
    return {"mIoU": _nanmean(scores.iou), "mDice": _nanmean(scores.dice)}


def draw_images(n_images: int, *, replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """[replicates, n_images] image indices: `numpy.random.default_rng(seed).integers(0, n_images, ...)`."""
    if n_images < 1:
        raise EvaluationError("bootstrap", "images", "no images to resample")
    if replicates < 1:
        raise EvaluationError("bootstrap", "replicates", f"need at least 1 replicate, got {replicates}")
    return np.random.default_rng(seed).integers(0, n_images, size=(replicates, n_images))


def replicate_values(metric: Callable[[np.ndarray | None], dict[str, float]], draws: np.ndarray, *, metrics: Sequence[str]) -> np.ndarray:
    """[replicates, len(metrics)]: the metrics of each drawn image list."""
    values = np.full((len(draws), len(metrics)), np.nan)
    for r, picks in enumerate(draws):
        got = metric(picks)
        values[r] = [got[m] for m in metrics]
    return values


def interval_table(
    *, point_a: dict[str, float], point_b: dict[str, float], values_a: np.ndarray, values_b: np.ndarray,
    metrics: Sequence[str], seed: int, confidence: float = DEFAULT_CONFIDENCE,
) -> pd.DataFrame:
    """Percentile intervals of A, B and B - A from replicate values drawn with the same image lists.

    p_value is the two-sided bootstrap proportion 2 * min(P(d <= 0), P(d >= 0)).
    """
    if not 0 < confidence < 1:
        raise EvaluationError("bootstrap", "confidence", f"must be between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2 * 100
    rows = []
    for j, m in enumerate(metrics):
        va, vb = values_a[:, j], values_b[:, j]
        d = vb - va
        lo, hi = _percentiles(d, tail)
        p_value = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))) if np.isfinite(d).any() else float("nan")
        rows.append({
            "metric": m, "A": point_a[m], "B": point_b[m], "delta": point_b[m] - point_a[m],
            "delta_low": lo, "delta_high": hi, **dict(zip(("A_low", "A_high"), _percentiles(va, tail))),
            **dict(zip(("B_low", "B_high"), _percentiles(vb, tail))), "p_value": p_value,
            "significant": bool(np.isfinite(lo) and (lo > 0 or hi < 0)),
            "replicates": int(len(values_a)), "confidence": float(confidence), "seed": int(seed),
        })
    return pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS))


def paired_bootstrap(
    metric_a: Callable[[np.ndarray | None], dict[str, float]],
    metric_b: Callable[[np.ndarray | None], dict[str, float]],
    *,
    n_images: int,
    metrics: Sequence[str],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> pd.DataFrame:
    """Percentile intervals of A, B and B - A for each metric; `metric_x(picks)` scores the drawn images
    (`picks=None`: every image once), and both see the same draws (`draw_images`)."""
    draws = draw_images(n_images, replicates=replicates, seed=seed)
    return interval_table(
        point_a=metric_a(None), point_b=metric_b(None), metrics=metrics, seed=seed, confidence=confidence,
        values_a=replicate_values(metric_a, draws, metrics=metrics), values_b=replicate_values(metric_b, draws, metrics=metrics),
    )


def instance_intervals(a: InstanceStats, b: InstanceStats, **options: float) -> pd.DataFrame:
    """Paired intervals of AP and AP50 for two models' records on the same images."""
    check_same_images(a.file_names, b.file_names)
    rows_a, rows_b = ImageRows.of(a), ImageRows.of(b)
    return paired_bootstrap(
        lambda picks: instance_headline(a, picks, rows_a), lambda picks: instance_headline(b, picks, rows_b),
        n_images=len(a.image_ids), metrics=INSTANCE_HEADLINE, **options,  # type: ignore[arg-type]
    )


def semantic_intervals(a: np.ndarray, b: np.ndarray, **options: float) -> pd.DataFrame:
    """Paired intervals of mIoU and mDice from per-image confusion stacks [I, n, n+1] in the same image order."""
    if a.shape != b.shape:
        raise EvaluationError("bootstrap", "confusion", f"A has shape {a.shape}, B {b.shape}: not the same images and classes")
    return paired_bootstrap(
        lambda picks: semantic_headline(a, picks), lambda picks: semantic_headline(b, picks),
        n_images=len(a), metrics=SEMANTIC_HEADLINE, **options,  # type: ignore[arg-type]
    )


def check_same_images(a: Sequence[str], b: Sequence[str]) -> None:
    if list(a) != list(b):
        only_a = sorted(set(a) - set(b))[:5]
        only_b = sorted(set(b) - set(a))[:5]
        raise EvaluationError("compare", "images", f"A and B were not scored on the same images "
                              f"(only in A: {only_a}, only in B: {only_b}): compare runs on one dataset")


def _percentiles(values: np.ndarray, tail: float) -> tuple[float, float]:
    kept = values[np.isfinite(values)]
    if not kept.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(kept, [tail, 100 - tail])
    return float(lo), float(hi)


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")

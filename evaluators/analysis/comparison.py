"""The tables of a comparison of two models (A, B) on one dataset and of each model's error analysis.

Pure: in-memory ground truth, results, match records and per-image confusion matrices in, dicts of pandas
tables out (the CLI and the pipeline write them). The pieces: segpipe.evaluators.analysis.bootstrap (intervals),
.compare (deltas), .tide, .instance_confusion, .thresholds, .boundary.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from segpipe.evaluators.analysis.bootstrap import instance_intervals, semantic_intervals
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.analysis.compare import (
    SEMANTIC_IMAGE_METRICS, instance_image_scores, per_class_deltas, per_image_class_iou, per_image_deltas,
    worst_images_per_class,
)
from segpipe.evaluators.instance.evaluation import instance_compute, instance_update
from segpipe.evaluators.analysis.class_confusion import DEFAULT_SCORE_THRESHOLD, instance_confusion
from segpipe.evaluators.instance.stats import InstanceStats
from segpipe.evaluators.instance.overlaps import check_against_records, image_overlaps
from segpipe.evaluators.semantic.tables import per_image_row, semantic_compute
from segpipe.evaluators.analysis.thresholds import threshold_tables
from segpipe.evaluators.analysis.tide import tide_tables

WORST_PER_CLASS = 5
INSTANCE_RANK_METRIC = "f1"
SEMANTIC_RANK_METRIC = "IoU"


# What the evaluate commands suggest for invalid results; compare has no such option (both models must be
# scored on their full output for the comparison to mean anything), so its errors leave it out.
_DROP_INVALID_HINTS = (" (use --drop-invalid to leave them out and report them)", ", or use --drop-invalid to keep the best ")


class ModelError(EvaluationError):
    """An input problem of one side of a comparison: the message starts with "A: " or "B: "."""

    def __init__(self, side: str, err: EvaluationError) -> None:
        reason = err.reason
        for hint in _DROP_INVALID_HINTS:
            if hint in reason:
                reason = reason[:reason.index(hint)]
        super().__init__(err.path, err.field, reason)
        self.side = side
        self.args = (f"{side}: {self.args[0]}",)


@contextmanager
def model_side(side: str) -> Iterator[None]:
    """Say which model ("A" or "B") an input error inside the block belongs to."""
    try:
        yield
    except ModelError:
        raise
    except EvaluationError as err:
        raise ModelError(side, err) from err


def instance_analysis(
    gt: Mapping[str, Any], results: list[Mapping[str, Any]], *, iou_type: str,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> tuple[InstanceStats, dict[str, pd.DataFrame]]:
    """Match records and the error-analysis tables of one instance model."""
    stats = instance_update(gt, results, iou_type=iou_type)
    overlaps = image_overlaps(gt, results, iou_type=iou_type)
    check_against_records(overlaps, stats)
    tide_summary, tide_errors = tide_tables(overlaps, category_ids=stats.category_ids)
    curves, optimum = threshold_tables(stats)
    report = instance_compute(stats)
    return stats, {
        "summary": report.summary, "per_class": report.per_class, "per_image": instance_image_scores(report.per_image),
        "tide": tide_summary, "tide_errors": tide_errors,
        "confusion": instance_confusion(overlaps, category_ids=stats.category_ids, category_names=stats.category_names,
                                        score_threshold=score_threshold),
        "thresholds": curves, "f1_optimal": optimum,
    }


def semantic_analysis(confusions: np.ndarray, *, files: Sequence[str], class_names: Sequence[str],
                      boundary: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Dataset tables, per-image per-class IoU and the worst images of each class of one semantic model."""
    per_image = pd.DataFrame([per_image_row(m, file=f) for f, m in zip(files, confusions)])
    report = semantic_compute(np.add.reduce(list(confusions)), class_names=class_names, per_image=per_image)
    per_class_iou = per_image_class_iou(confusions, files=files, class_names=class_names)
    tables = {
        "summary": report.summary, "per_class": report.per_class, "per_image": report.per_image,
        "per_image_class_iou": per_class_iou, "worst_per_class": worst_images_per_class(per_class_iou, n=WORST_PER_CLASS),
    }
    if boundary is not None:
        tables["boundary_iou"] = boundary
    return tables


def compare_instances(a: tuple[InstanceStats, Mapping[str, pd.DataFrame]], b: tuple[InstanceStats, Mapping[str, pd.DataFrame]],
                      **bootstrap: Any) -> dict[str, pd.DataFrame]:
    (stats_a, tables_a), (stats_b, tables_b) = a, b
    return {
        "intervals": instance_intervals(stats_a, stats_b, **bootstrap),
        "per_class_delta": per_class_deltas(tables_a["per_class"], tables_b["per_class"], key="category"),
        "per_image_delta": per_image_deltas(tables_a["per_image"], tables_b["per_image"], key="file_name",
                                            metrics=("f1", "tp", "fp", "fn", "mean_iou"), rank_by=INSTANCE_RANK_METRIC),
    }


def compare_semantic(confusions_a: np.ndarray, confusions_b: np.ndarray, tables_a: Mapping[str, pd.DataFrame],
                     tables_b: Mapping[str, pd.DataFrame], **bootstrap: Any) -> dict[str, pd.DataFrame]:
    return {
        "intervals": semantic_intervals(confusions_a, confusions_b, **bootstrap),
        "per_class_delta": per_class_deltas(tables_a["per_class"], tables_b["per_class"], key="class"),
        "per_image_delta": per_image_deltas(tables_a["per_image"], tables_b["per_image"], key="file",
                                            metrics=SEMANTIC_IMAGE_METRICS, rank_by=SEMANTIC_RANK_METRIC),
    }


def verdict(intervals: pd.DataFrame) -> list[str]:
    """One sentence per metric: the difference, its interval, and whether it is significant."""
    lines = []
    for row in intervals.to_dict("records"):
        level = f"{row['confidence'] * 100:g}%"
        interval = f"[{row['delta_low']:+.4f}, {row['delta_high']:+.4f}]"
        if row["significant"]:
            better = "B" if row["delta"] > 0 else "A"
            text = f"significant at {level}: {better} is better"
        else:
            text = f"not significant at {level} (the interval contains 0)"
        lines.append(f"{row['metric']}: A {row['A']:.4f}, B {row['B']:.4f}, B - A {row['delta']:+.4f}, "
                     f"{level} interval {interval}, {text}")
    return lines

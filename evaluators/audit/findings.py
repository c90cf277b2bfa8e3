"""The audit's row type: one finding per suspicious thing, with the check names stated once.

`findings.csv` columns: check, severity, image_id, file_name, annotation_id, category, score, message.
`score` is in [0, 1], higher = more likely a real problem; rows are sorted by score (descending), then by
stable keys so that equal inputs give equal bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

import pandas as pd

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
FINDING_COLUMNS: tuple[str, ...] = ("check", "severity", "image_id", "file_name", "annotation_id", "category", "score", "message")
SUMMARY_COLUMNS: tuple[str, ...] = ("check", "severity", "count")

# 1. Format and integrity.
CHECK_ANNOTATION_ID_ZERO = "annotation_id_zero"
CHECK_ANNOTATION_ID_DUPLICATE = "annotation_id_duplicate"
CHECK_IMAGE_ID_DUPLICATE = "image_id_duplicate"
CHECK_UNKNOWN_IMAGE = "unknown_image"
CHECK_CROWD_OBJECT = "crowd_object"
CHECK_UNKNOWN_CATEGORY = "unknown_category"
CHECK_BBOX_OUTSIDE = "bbox_outside_image"
CHECK_SEGMENTATION_OUTSIDE = "segmentation_outside_image"
CHECK_DEGENERATE = "degenerate_size"
CHECK_NON_FINITE = "non_finite"
CHECK_BAD_SEGMENTATION = "bad_segmentation"
CHECK_RLE_SIZE = "rle_size_mismatch"
CHECK_AREA_MISMATCH = "area_mismatch"
CHECK_IMAGE_MISSING = "image_missing"
CHECK_IMAGE_UNREADABLE = "image_unreadable"
CHECK_IMAGE_OUTSIDE_ROOT = "image_outside_root"  # file_name absolute or with `..`: never read
CHECK_IMAGE_SIZE = "image_size_mismatch"
CHECK_DUPLICATE_IMAGE = "duplicate_image"
CHECK_CROSS_SPLIT = "image_in_two_splits"
CHECK_SPLIT_FILE_UNREADABLE = "split_file_unreadable"
CHECK_CONVERSION_PREFIX = "conversion:"  # + the conversion report's code

# 2. Geometry and statistics, per class.
CHECK_AREA_OUTLIER = "area_outlier"
CHECK_ASPECT_OUTLIER = "aspect_outlier"
CHECK_POSITION_OUTLIER = "position_outlier"
CHECK_FEW_INSTANCES = "few_instances"
CHECK_CLASS_IMBALANCE = "class_imbalance"
CHECK_NEAR_DUPLICATE = "near_duplicate"
CHECK_EMPTY_IMAGE = "empty_image"  # no annotation, where nearly every other image has one
CHECK_EMPTY_MASK = "empty_mask"
CHECK_TINY_MASK = "tiny_mask"
CHECK_FRAGMENTED_MASK = "fragmented_mask"
CHECK_HEAD_OUTSIDE_PET = "head_outside_pet"
CHECK_EMPTY_TRIMAP = "empty_trimap"
CHECK_NOT_IN_LIST = "not_in_list"
CHECK_SPECIES_MISMATCH = "species_mismatch"

# 3. Model-assisted, with predictions.
CHECK_POSSIBLY_MISSING = "possibly_missing"
CHECK_POSSIBLY_SPURIOUS = "possibly_spurious"
CHECK_POSSIBLY_WRONG_CLASS = "possibly_wrong_class"
CHECK_POSSIBLY_SLOPPY = "possibly_sloppy_outline"
CHECK_NO_PREDICTIONS = "no_predictions"  # predictions were given but hold nothing: no model check could run
# One row per class and habit: the disagreements left out of the list as the model's habit, counted and named, so
# that leaving them out is never silent (a labelling convention wrong on many labels alike would look the same).
CHECK_MODEL_HABIT = "model_habit"

MODEL_CHECKS: tuple[str, ...] = (CHECK_POSSIBLY_MISSING, CHECK_POSSIBLY_SPURIOUS, CHECK_POSSIBLY_WRONG_CLASS, CHECK_POSSIBLY_SLOPPY)

# Severity and score of the checks whose verdict does not depend on how strong the evidence is: a certain
# defect scores 1.0, a suspicion less. Outlier, shape and model checks compute their score from the evidence.
FIXED_RULES: Mapping[str, tuple[Severity, float]] = {
    **{
        check: ("error", 1.0)
        for check in (
            CHECK_ANNOTATION_ID_ZERO,
            CHECK_ANNOTATION_ID_DUPLICATE,
            CHECK_IMAGE_ID_DUPLICATE,
            CHECK_UNKNOWN_IMAGE,
            CHECK_UNKNOWN_CATEGORY,
            CHECK_DEGENERATE,
            CHECK_NON_FINITE,
            CHECK_BAD_SEGMENTATION,
            CHECK_RLE_SIZE,
            CHECK_IMAGE_MISSING,
            CHECK_IMAGE_UNREADABLE,
            CHECK_IMAGE_OUTSIDE_ROOT,
            CHECK_IMAGE_SIZE,
            CHECK_CROSS_SPLIT,
            CHECK_SPLIT_FILE_UNREADABLE,
            CHECK_EMPTY_MASK,
        )
    },
    CHECK_EMPTY_TRIMAP: ("error", 0.95),
    CHECK_NO_PREDICTIONS: ("warning", 1.0),
    CHECK_CROWD_OBJECT: ("warning", 0.9),
    CHECK_SPECIES_MISMATCH: ("warning", 0.8),
    CHECK_BBOX_OUTSIDE: ("warning", 0.7),
    CHECK_SEGMENTATION_OUTSIDE: ("warning", 0.7),
    CHECK_AREA_MISMATCH: ("warning", 0.6),
    CHECK_DUPLICATE_IMAGE: ("warning", 0.5),
    CHECK_NOT_IN_LIST: ("warning", 0.4),
    CHECK_FEW_INSTANCES: ("warning", 0.3),
    CHECK_CLASS_IMBALANCE: ("info", 0.2),
    CHECK_MODEL_HABIT: ("info", 0.1),
}


@dataclass(frozen=True)
class AuditFinding:
    check: str
    severity: Severity
    score: float
    message: str
    image_id: int | None = None
    file_name: str = ""
    annotation_id: int | None = None
    category: str = ""


# Severity of the checks that compute their score from the evidence (outliers, shapes, model disagreement).
SCORED_SEVERITY: Mapping[str, Severity] = {
    CHECK_AREA_OUTLIER: "warning",
    CHECK_ASPECT_OUTLIER: "warning",
    CHECK_POSITION_OUTLIER: "info",
    CHECK_NEAR_DUPLICATE: "warning",
    CHECK_EMPTY_IMAGE: "warning",
    CHECK_TINY_MASK: "warning",
    CHECK_FRAGMENTED_MASK: "warning",
    CHECK_HEAD_OUTSIDE_PET: "warning",
    **{check: "warning" for check in MODEL_CHECKS},
}


def make_finding(
    *,
    check: str,
    message: str,
    score: float | None = None,
    image_id: int | None = None,
    file_name: str = "",
    annotation_id: int | None = None,
    category: str = "",
) -> AuditFinding:
    """A finding with its check's severity; `score` for the checks in SCORED_SEVERITY, None for FIXED_RULES."""
    if score is None:
        severity, score = FIXED_RULES[check]
    else:
        severity = SCORED_SEVERITY[check]
    return AuditFinding(
        check=check,
        severity=severity,
        score=score,
        message=message,
        image_id=image_id,
        file_name=file_name,
        annotation_id=annotation_id,
        category=category,
    )


def clamp_score(value: float) -> float:
    """Scores live in [0, 1]; NaN (no evidence either way) becomes 0."""
    if not math.isfinite(value):
        return 0.0
    return float(min(1.0, max(0.0, value)))


def findings_frame(findings: Iterable[AuditFinding]) -> pd.DataFrame:
    """Findings as a DataFrame in the canonical order: score descending, then stable keys."""
    rows = [
        {
            "check": f.check,
            "severity": f.severity,
            "image_id": f.image_id,
            "file_name": f.file_name,
            "annotation_id": f.annotation_id,
            "category": f.category,
            "score": round(clamp_score(f.score), 6),
            "message": f.message,
        }
        for f in findings
    ]
    frame = pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
    frame["image_id"] = frame["image_id"].astype("Int64")
    frame["annotation_id"] = frame["annotation_id"].astype("Int64")
    frame["score"] = frame["score"].astype("float64")
    for col in ("check", "severity", "file_name", "category", "message"):
        frame[col] = frame[col].astype("object")
    if frame.empty:
        return frame
    # Missing ids sort last; a mergesort over explicit keys does not depend on input order.
    frame = frame.sort_values(
        by=["score", "check", "image_id", "annotation_id", "file_name", "category", "message"],
        ascending=[False, True, True, True, True, True, True],
        na_position="last",
        kind="mergesort",
    )
    return frame.reset_index(drop=True)


def summary_frame(findings: pd.DataFrame) -> pd.DataFrame:
    """Counts per check and severity, sorted by check then severity order."""
    if findings.empty:
        return pd.DataFrame(
            {"check": pd.Series([], dtype="object"), "severity": pd.Series([], dtype="object"), "count": pd.Series([], dtype="int64")}
        )
    counts = findings.groupby(["check", "severity"], sort=False).size().reset_index(name="count")
    counts["_sev"] = counts["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
    counts = counts.sort_values(by=["check", "_sev"], kind="mergesort").drop(columns="_sev")
    counts["count"] = counts["count"].astype("int64")
    return counts.reset_index(drop=True)[list(SUMMARY_COLUMNS)]

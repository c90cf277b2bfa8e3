"""`evaluate semantic` below the CLI: the report folder it writes, the conventions it states and where label maps
are found (used by `segpipe evaluate semantic`, `segpipe.evaluate_semantic` and the pipeline's report task)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.core.layout import REPORT_HEADER_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR

if TYPE_CHECKING:
    from segpipe.evaluators.semantic.tables import SemanticReport

CLASSES_FILE_NAME = SEMANTIC_CLASSES_FILE  # what `segpipe convert` writes beside the semantic maps
HEADER_FILE_NAME = REPORT_HEADER_FILE
SEMANTIC_CONVENTIONS = (
    "Fractions, not percentages. One int64 confusion matrix summed over all images (rows = GT). "
    "IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN), aAcc = sum TP / labelled pixels, mAcc = mean recall. "
    "A class with neither GT nor predicted pixels is NaN and left out of the means; a predicted class absent "
    "from GT scores 0. GT pixels equal to the ignore index are left out; a prediction equal to it, or a missing "
    "prediction file, counts the GT pixel as a miss (column '(no prediction)' of confusion.csv). "
    "mIoU_per_image / mDice_per_image average per-image means over the classes present in each image."
)


def label_map_dir(path: Path) -> Path:
    """A folder of PNGs, or a converted dataset / predictions dir holding them under semantic/."""
    if not any(p.suffix.lower() == ".png" for p in path.iterdir()) and (path / SEMANTIC_DIR).is_dir():
        return path / SEMANTIC_DIR
    return path


def write_semantic_report(report: SemanticReport, out: Path, *, header: dict[str, Any]) -> None:
    """Write every table (CSV + Parquet) and header.json into `out`."""
    from segpipe.reports.tables import write_report_dir

    tables = {"summary": report.summary, "per_class": report.per_class, "per_image": report.per_image,
              "confusion": report.confusion, "notes": report.notes}
    write_report_dir(out, tables, header={**header, "warnings": list(report.warnings)})

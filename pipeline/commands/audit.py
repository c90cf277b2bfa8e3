"""`audit` below the CLI: the tables it writes (used by `segpipe audit`, `segpipe.audit` and the pipeline's audit
task)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FINDINGS_TABLE = "findings"
SUMMARY_TABLE = "summary"
PARTIAL_RESULTS_FILE = "partial_results.json"  # the finished shards of an unfinished inference (--allow-partial)


def write_audit(out: Path, *, findings: pd.DataFrame, summary: pd.DataFrame) -> Path:
    """AUDIT_DIR/findings.csv + summary.csv and their parquet twins; returns the findings CSV path."""
    from segpipe.reports.tables import write_table

    out.mkdir(parents=True, exist_ok=True)
    path = write_table(out, FINDINGS_TABLE, findings)
    write_table(out, SUMMARY_TABLE, summary)
    return path

"""Writing report tables: each table as `<name>.csv` and its `<name>.parquet` twin, atomically.

CSV floats are written with `repr` precision (pandas' default) so the CSV carries the exact numbers the
evaluators computed; row order is whatever the caller sorted, so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.layout import REPORT_HEADER_FILE  # noqa: F401  (re-exported for the report writers)


def write_table(directory: str | os.PathLike[str], name: str, table: pd.DataFrame, *, parquet: bool = True) -> Path:
    """Write `table` to DIRECTORY/NAME.csv (and .parquet); returns the CSV path."""
    directory = Path(directory)
    csv_path = atomic_write_text(directory / f"{name}.csv", table.to_csv(index=False, lineterminator="\n"))
    if parquet:
        buf = io.BytesIO()
        # Explicit engine and no pandas index metadata: stable bytes across runs.
        table.to_parquet(buf, engine="pyarrow", index=False)
        atomic_write_bytes(directory / f"{name}.parquet", buf.getvalue())
    return csv_path




def write_report_dir(out: str | os.PathLike[str], tables: Mapping[str, pd.DataFrame], *, header: Mapping[str, Any]) -> Path:
    """A report directory: every table (CSV + Parquet, in the given order) and then `header.json`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_table(out, name, table)
    return atomic_write_text(out / REPORT_HEADER_FILE, json.dumps(dict(header), sort_keys=True, indent=2, default=str) + "\n")


def format_tables(*tables: pd.DataFrame, width: int = 160) -> str:
    """Tables as plain text for stdout, four decimals, separated by a blank line."""
    with pd.option_context("display.max_rows", 1000, "display.width", width, "display.float_format", "{:.4f}".format):
        return "\n\n".join(t.to_string(index=False) for t in tables)

"""Writing report tables: each table as `<name>.csv` and its `<name>.parquet` twin, atomically.

CSV floats are written with `repr` precision (pandas' default) so the CSV carries the exact numbers the
evaluators computed; row order is whatever the caller sorted, so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from converters.atomic_write import atomic_write_bytes, atomic_write_text


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

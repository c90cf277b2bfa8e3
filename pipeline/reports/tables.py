"""Writing report tables: each table as `<name>.csv` and its `<name>.parquet` twin, atomically.

CSV floats are written with `repr` precision (pandas' default) so the CSV carries the exact numbers the
evaluators computed; row order is whatever the caller sorted, so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.core.layout import REPORT_HEADER_FILE as REPORT_HEADER_FILE  # re-exported for the report writers

if TYPE_CHECKING:  # pandas is imported for DataFrames only: a ColumnTable is written and printed without it
    import pandas as pd

    from segpipe.evaluators.instance.tables import ColumnTable

    Table = Union[pd.DataFrame, ColumnTable]


# A spreadsheet opening a CSV runs a cell that starts with one of these as a formula (`=HYPERLINK(...)` in a
# category name or file name would be a live link or worse): such text cells get a leading apostrophe, as
# OWASP recommends (https://owasp.org/www-community/attacks/CSV_Injection). Numbers are left alone.
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe_text(value: Any) -> Any:
    """`value` with a leading apostrophe when it is text a spreadsheet would evaluate.

    >>> print(spreadsheet_safe_text('=HYPERLINK("http://x")'), spreadsheet_safe_text("cat"), spreadsheet_safe_text(-1.5))
    '=HYPERLINK("http://x") cat -1.5
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` whose text cells are spreadsheet-safe (numeric columns untouched)."""
    import pandas as pd

    text_columns = [c for c in table.columns if table[c].dtype == object or isinstance(table[c].dtype, pd.StringDtype)]
    if not text_columns:
        return table
    safe = table.copy()
    for column in text_columns:
        safe[column] = safe[column].map(spreadsheet_safe_text)
    safe.columns = [spreadsheet_safe_text(c) if isinstance(c, str) else c for c in safe.columns]
    return safe


def printable_text(value: Any) -> Any:
    """Text as UTF-8 can store it: a file name that is not valid UTF-8 reaches Python with lone surrogates
    (os.fsdecode), which neither a UTF-8 CSV nor Parquet accepts; they are written as `\\udcXX` escapes, as
    in the conversion report.

    >>> printable_text("caf\\udce9.png")
    'caf\\\\udce9.png'
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _storable(table: pd.DataFrame) -> pd.DataFrame:
    text_columns = [c for c in table.columns if table[c].dtype == object]
    bad = [c for c in text_columns if any(printable_text(v) is not v for v in table[c])]
    if not bad:
        return table
    fixed = table.copy()
    for column in bad:
        fixed[column] = fixed[column].map(printable_text)
    return fixed


def write_table(directory: str | os.PathLike[str], name: str, table: Table, *, parquet: bool = True) -> Path:
    """Write `table` to DIRECTORY/NAME.csv (and .parquet); returns the CSV path. CSV text cells are
    spreadsheet-safe (`spreadsheet_safe`); the Parquet twin keeps every value verbatim."""
    directory = Path(directory)
    from segpipe.evaluators.instance.tables import ColumnTable
    from segpipe.reports.columns import column_table_files

    if isinstance(table, ColumnTable):
        files = column_table_files(table, parquet=parquet)
        if files is not None:
            csv_path = atomic_write_text(directory / f"{name}.csv", files[0])
            if files[1] is not None:
                atomic_write_bytes(directory / f"{name}.parquet", files[1])
            return csv_path
        table = table.to_pandas()  # a column the direct writer does not cover: pandas writes it
    table = _storable(table)
    csv_text = spreadsheet_safe(table).to_csv(index=False, lineterminator="\n")
    csv_path = atomic_write_text(directory / f"{name}.csv", csv_text)
    if parquet:
        buf = io.BytesIO()
        # Explicit engine and no pandas index metadata: stable bytes across runs.
        table.to_parquet(buf, engine="pyarrow", index=False)
        atomic_write_bytes(directory / f"{name}.parquet", buf.getvalue())
    return csv_path




def write_report_dir(out: str | os.PathLike[str], tables: Mapping[str, Table], *, header: Mapping[str, Any]) -> Path:
    """A report directory: every table (CSV + Parquet, in the given order) and then `header.json`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_table(out, name, table)
    return atomic_write_text(out / REPORT_HEADER_FILE, json.dumps(dict(header), sort_keys=True, indent=2, default=str) + "\n")


def format_tables(*tables: Table, width: int = 160) -> str:
    """Tables as plain text for stdout, four decimals, separated by a blank line."""
    from segpipe.evaluators.instance.tables import ColumnTable
    from segpipe.reports.columns import column_table_text

    columns = [t for t in tables if isinstance(t, ColumnTable)]
    if len(columns) == len(tables):
        texts = [column_table_text(t, width=width, max_rows=1000) for t in columns]
        if all(text is not None for text in texts):
            return "\n\n".join(t for t in texts if t is not None)
    import pandas as pd

    frames = [t.to_pandas() if isinstance(t, ColumnTable) else t for t in tables]
    with pd.option_context("display.max_rows", 1000, "display.width", width, "display.float_format", "{:.4f}".format):
        return "\n\n".join(t.to_string(index=False) for t in frames)

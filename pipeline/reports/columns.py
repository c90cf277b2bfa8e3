"""Writing and printing a `ColumnTable` without pandas: the same CSV and Parquet bytes, and the same text, as
`segpipe.reports.tables` writes for the table's DataFrame.

Importing pandas costs about as much CPU as evaluating 2,000 images at 100 detections each, and the tables an
evaluation writes are plain columns (text, int64, float64). The files must not change with the writer, so:

- CSV: pandas' `to_csv` writes with the standard library's csv writer (QUOTE_MINIMAL, `"` quotes); numbers as
  `str` of the numpy value (floats at repr precision), a missing value (NaN, None) as an empty cell. The same
  writer, given the same cells, gives the same bytes.
- Parquet: `DataFrame.to_parquet(engine="pyarrow", index=False)` is `pyarrow.Table.from_pandas(df,
  preserve_index=False)` then `pyarrow.parquet.write_table(table, compression="snappy")`
  (https://github.com/pandas-dev/pandas/blob/main/pandas/io/parquet.py); the table built here has the same
  arrow types, the same nulls (NaN becomes null, as `from_pandas` does) and the same `pandas` schema metadata
  (https://github.com/apache/arrow/blob/main/python/pyarrow/pandas_compat.py, `construct_metadata`).

Only the pandas/pyarrow combination this layout was checked on takes the direct path (pandas 3, whose text
columns are the `str` dtype stored as large_string; pyarrow 26, whose metadata has `attributes`); with any
other, or a column outside text/int64/float64, the functions return None and the caller goes through pandas.
tests/evaluators/test_instance_tables_direct.py compares the bytes with pandas' on the same tables.
"""

from __future__ import annotations

import csv
import io
import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from segpipe.evaluators.instance.tables import ColumnTable


@lru_cache(maxsize=1)
def _pandas_version() -> str | None:
    """The installed pandas' version when the direct layout matches it, without importing pandas: from the name of
    its `pandas-VERSION.dist-info` folder beside the package (https://packaging.python.org/en/latest/specifications/
    recording-installed-packages/); importlib.metadata itself costs some 25 ms to import."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("pandas")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.parent.glob("pandas-*.dist-info"))
    if len(found) != 1:
        return None
    version = found[0].name[len("pandas-"):-len(".dist-info")]
    return version if version.split(".")[0] == "3" else None


def _text_cells(column: Any) -> list[str | None] | None:
    """A text column's cells as UTF-8-storable str (None = missing), or None when it is not a text column
    pandas would give the `str` dtype (at least one str, nothing but str and None)."""
    from segpipe.reports.tables import printable_text

    if isinstance(column, np.ndarray):
        return None
    cells = list(column)
    if not all(c is None or isinstance(c, str) for c in cells) or not any(isinstance(c, str) for c in cells):
        return None
    return [printable_text(c) for c in cells]


def _columns(table: ColumnTable) -> dict[str, list[str | None] | np.ndarray] | None:
    if len(table) == 0 or not table.columns:
        return None
    out: dict[str, list[str | None] | np.ndarray] = {}
    for name, column in table.columns.items():
        if not isinstance(name, str):
            return None
        if isinstance(column, np.ndarray):
            if column.ndim != 1 or column.dtype not in (np.dtype(np.int64), np.dtype(np.float64)):
                return None
            out[name] = column
        else:
            text = _text_cells(column)
            if text is None:
                return None
            out[name] = text
    return out


def _csv_text(columns: dict[str, list[str | None] | np.ndarray]) -> str:
    from segpipe.reports.tables import spreadsheet_safe_text

    cells: list[list[str]] = []
    for column in columns.values():
        if isinstance(column, list):
            cells.append(["" if c is None else spreadsheet_safe_text(c) for c in column])
        elif column.dtype.kind == "f":
            text = column.astype(str)
            text[np.isnan(column)] = ""
            cells.append(text.tolist())
        else:
            cells.append(column.astype(str).tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", delimiter=",", quotechar='"', quoting=csv.QUOTE_MINIMAL,
                        doublequote=True)
    # spreadsheet_safe renames columns only in a table with a text column
    any_text = any(isinstance(c, list) for c in columns.values())
    writer.writerow([spreadsheet_safe_text(name) if any_text else name for name in columns])
    writer.writerows(zip(*cells))
    return buf.getvalue()


def _arrow_array(column: list[str | None] | np.ndarray) -> Any:
    """The arrow array `from_pandas` makes of the column (missing text and NaN are nulls), built from its buffers:
    `pyarrow.array` itself imports pandas to look for pandas types (https://arrow.apache.org/docs/format/Columnar.html
    for the layouts: a validity bitmap, LSB first, then the values, or int64 offsets and UTF-8 bytes)."""
    import pyarrow as pa

    n = len(column)
    if isinstance(column, list):
        valid = np.fromiter((c is not None for c in column), dtype=bool, count=n)
        data = [c.encode("utf-8") for c in column if c is not None]
        lengths = np.zeros(n, dtype=np.int64)
        lengths[valid] = np.fromiter((len(d) for d in data), dtype=np.int64, count=len(data))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        kind, values = pa.large_string(), [pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    else:
        valid = ~np.isnan(column) if column.dtype.kind == "f" else np.ones(n, dtype=bool)
        kind = pa.float64() if column.dtype.kind == "f" else pa.int64()
        values = [pa.py_buffer(np.ascontiguousarray(column))]
    n_null = int(n - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if n_null else None
    return pa.Array.from_buffers(kind, n, [bitmap, *values], null_count=n_null)


def _parquet_bytes(columns: dict[str, list[str | None] | np.ndarray], pandas_version: str) -> bytes | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if int(pa.__version__.split(".")[0]) < 26:
        return None
    arrays, described = [], []
    for name, column in columns.items():
        arrays.append(_arrow_array(column))
        if isinstance(column, list):
            pandas_type, numpy_type = "object", "str"
        else:
            pandas_type = numpy_type = str(column.dtype)
        described.append({"name": name, "field_name": name, "pandas_type": pandas_type, "numpy_type": numpy_type,
                          "metadata": None})
    metadata = {"index_columns": [], "column_indexes": [], "columns": described, "attributes": {},
                "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": pandas_version}
    table = pa.Table.from_arrays(arrays, names=list(columns), metadata={b"pandas": json.dumps(metadata).encode("utf8")})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def column_table_files(table: ColumnTable, *, parquet: bool) -> tuple[str, bytes | None] | None:
    """(CSV text, Parquet bytes or None without `parquet`) as `write_table` writes the table's DataFrame, or
    None where only pandas can say (see the module's docstring)."""
    pandas_version = _pandas_version()
    columns = _columns(table)
    if pandas_version is None or columns is None:
        return None
    parquet_bytes = _parquet_bytes(columns, pandas_version) if parquet else None
    if parquet and parquet_bytes is None:
        return None
    return _csv_text(columns), parquet_bytes


def column_table_text(table: ColumnTable, *, width: int, max_rows: int) -> str | None:
    """The table as `DataFrame.to_string(index=False)` prints it with four decimals, or None where pandas
    would lay it out otherwise (rows past `max_rows`, lines past `width`, text pandas escapes or measures
    by display width)."""
    columns = _columns(table)
    if columns is None or len(table) > max_rows:
        return None
    rendered: list[list[str]] = []
    for name, column in columns.items():
        header = name
        if isinstance(column, list):
            if not all(c is None or (c.isprintable() and c.isascii()) for c in column) or not name.isprintable():
                return None
            values = ["NaN" if c is None else c for c in column]
        else:
            header = f" {name}"  # pandas gives a numeric column's label a leading space
            if column.dtype.kind == "f":
                values = ["NaN" if v != v else f"{v:.4f}" for v in column.tolist()]
            else:
                values = [str(v) for v in column.tolist()]
        w = max(len(header), *(len(v) for v in values))
        rendered.append([header.rjust(w), *(v.rjust(w) for v in values)])
    lines = [" ".join(row) for row in zip(*rendered)]
    if any(len(line) > width for line in lines):
        return None
    return "\n".join(lines)

"""Report tables in, page-ready values out: reading saved tables, tidying PR curves and confusion matrices,
choosing the worst images, natural checkpoint order, the header block. Pure functions except `read_*`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from segpipe.reports.plots import natural_key
from segpipe.core.errors import SegpipeError

# header.json keys shown first, in this order; any other keys follow sorted.
HEADER_ORDER: tuple[str, ...] = ("command", "dataset", "gt", "predictions", "pred", "checkpoint", "checkpoint_sha256", "sha256",
                                  "model", "task", "evaluation", "iou_type", "area", "n_images", "n_results")
INPUT_DATE_KEYS: tuple[str, ...] = ("inputs_date", "inputs_mtime", "input_mtime", "inputs_modified")
# header.json keys that name input files or folders (never outputs): their mtimes date the inputs.
INPUT_PATH_KEYS: tuple[str, ...] = ("dataset", "gt", "pred", "predictions", "images", "checkpoint_path")
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "category": ("category", "category_name", "class", "class_name", "name"),
    "iou": ("iou", "iou_threshold", "iou_thr", "iouthr", "iou_type_threshold", "iou_thrs"),
    "recall": ("recall", "recall_threshold", "rec", "rec_thr"),
    "precision": ("precision", "prec"),
    "mean_iou": ("mean_iou", "miou", "mean_iou_matched", "matched_iou", "iou"),
}


def find_column(table: pd.DataFrame, role: str) -> str | None:
    """The column of `table` playing `role` (case-insensitive alias match), or None."""
    lower = {str(c).lower(): str(c) for c in table.columns}
    return next((lower[a] for a in _ALIASES[role] if a in lower), None)


class ReportError(SegpipeError, ValueError):
    """A report folder or table the pages cannot be made from, naming the file (or table) and the column."""


class MissingReportFile(ReportError, FileNotFoundError):
    """A folder without the table its page is made from."""


def read_table(directory: Path, name: str) -> pd.DataFrame | None:
    """NAME.parquet if present (exact dtypes), else NAME.csv, else None."""
    pq, csv = directory / f"{name}.parquet", directory / f"{name}.csv"
    try:
        if pq.is_file():
            return pd.read_parquet(pq)
        if csv.is_file():
            return pd.read_csv(csv)
    except Exception as err:
        raise ReportError(pq if pq.is_file() else csv, "", f"cannot read the table: {err}") from err
    return None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except json.JSONDecodeError as err:
        raise ReportError(path, "", f"not valid JSON: {err}") from err


def _iou_value(v: Any) -> float:
    """0.5 / "0.50" / "IoU=0.75" -> float; ranges such as "0.50:0.95" -> NaN (not one threshold)."""
    if isinstance(v, (int, float, np.number)):
        return float(v)
    text = str(v)
    if ":" in text or "-" in text.strip("-"):
        return math.nan
    m = re.search(r"\d*\.?\d+", text)
    return float(m.group()) if m else math.nan


def tidy_pr_curves(table: pd.DataFrame | None) -> pd.DataFrame:
    """Long PR table (category, iou, recall, precision) with COCO's −1 "no data" precision as NaN."""
    empty = pd.DataFrame({"category": pd.Series(dtype=str), "iou": pd.Series(dtype=float),
                          "recall": pd.Series(dtype=float), "precision": pd.Series(dtype=float)})
    if table is None or table.empty:
        return empty
    cols = {role: find_column(table, role) for role in ("category", "iou", "recall", "precision")}
    if any(c is None for c in cols.values()):
        raise ReportError("pr_curves", "columns", f"expected category, iou, recall, precision; got {list(table.columns)}")
    out = pd.DataFrame({
        "category": table[cols["category"]].astype(str),
        "iou": [_iou_value(v) for v in table[cols["iou"]]],
        "recall": pd.to_numeric(table[cols["recall"]], errors="coerce"),
        "precision": pd.to_numeric(table[cols["precision"]], errors="coerce"),
    })
    out.loc[out["precision"] < 0, "precision"] = np.nan
    finite: pd.DataFrame = out[np.isfinite(out["iou"])].reset_index(drop=True)
    return finite


def tidy_confusion(table: pd.DataFrame | None, *, class_names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Confusion counts (rows = GT), row names and column names, from a wide table (a label column + one
    column per predicted class, plus optionally extra columns such as "(no prediction)") or a long one
    (gt, pred, count)."""
    if table is None or table.empty:
        return np.zeros((0, 0), dtype=np.int64), [], []
    lower = {str(c).lower(): str(c) for c in table.columns}
    if {"gt", "pred", "count"} <= set(lower):
        wide = table.pivot_table(index=lower["gt"], columns=lower["pred"], values=lower["count"], aggfunc="sum", fill_value=0)
        names = [str(n) for n in (class_names or sorted(set(wide.index) | set(wide.columns), key=natural_key))]
        wide = wide.reindex(index=names, columns=names, fill_value=0)
        return wide.to_numpy(dtype=np.int64), names, list(names)
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    labels = [c for c in table.columns if c not in numeric]
    matrix = table[numeric].to_numpy(dtype=np.int64)
    rows = [str(v) for v in table[labels[0]]] if labels else [str(c) for c in numeric[: len(table)]]
    columns = [str(c) for c in numeric]
    if matrix.shape[1] < matrix.shape[0]:
        raise ReportError("confusion", "columns", f"expected one column per class, got {matrix.shape} (columns {list(table.columns)})")
    # Extra columns (e.g. "(no prediction)") are kept only where they count something.
    keep = [j for j in range(matrix.shape[1]) if j < matrix.shape[0] or matrix[:, j].any()]
    return matrix[:, keep], rows, [columns[j] for j in keep]


def worst_instance_images(per_image: pd.DataFrame | None, *, n: int) -> pd.DataFrame:
    """Most errors (fp + fn) first, then lowest mean matched IoU, then image id: the images to look at."""
    if per_image is None or per_image.empty or n <= 0:
        return pd.DataFrame()
    t = per_image.copy()
    # A missing fp/fn column counts as 0 errors (pd.to_numeric of a scalar default would have no .fillna).
    fp, fn = (pd.to_numeric(t[c], errors="coerce").fillna(0) if c in t else pd.Series(0, index=t.index) for c in ("fp", "fn"))
    t["errors"] = fp + fn
    iou_col = find_column(t, "mean_iou")
    t["_iou"] = pd.to_numeric(t[iou_col], errors="coerce").fillna(-1.0) if iou_col else -1.0
    id_col = "image_id" if "image_id" in t.columns else t.columns[0]
    t = t.sort_values(["errors", "_iou", id_col], ascending=[False, True, True], kind="mergesort")
    return t.drop(columns=["_iou"]).head(n).reset_index(drop=True)


def worst_semantic_images(per_image: pd.DataFrame | None, *, n: int) -> pd.DataFrame:
    """Lowest per-image IoU first (NaN last), ties by file name."""
    if per_image is None or per_image.empty or n <= 0:
        return pd.DataFrame()
    iou_col = next((c for c in per_image.columns if str(c).lower() in ("iou", "miou", "mean_iou")), None)
    file_col = next((c for c in per_image.columns if str(c).lower() in ("file", "file_name", "image")), per_image.columns[0])
    key = pd.to_numeric(per_image[iou_col], errors="coerce").fillna(np.inf) if iou_col else 0.0
    t = per_image.assign(_k=key).sort_values(["_k", file_col], kind="mergesort")
    return t.drop(columns=["_k"]).head(n).reset_index(drop=True)


def order_checkpoints(table: pd.DataFrame, *, column: str = "checkpoint") -> pd.DataFrame:
    """Rows in natural checkpoint order (epoch_2 before epoch_10)."""
    order = sorted(range(len(table)), key=lambda i: natural_key(str(table[column].iloc[i])))
    return table.iloc[order].reset_index(drop=True)


def numeric_metric_columns(table: pd.DataFrame, *, exclude: Iterable[str]) -> list[str]:
    skip = {str(e).lower() for e in exclude}
    return [str(c) for c in table.columns if str(c).lower() not in skip and pd.api.types.is_numeric_dtype(table[c])]


def format_cell(value: Any, *, digits: int = 4) -> tuple[str, str]:
    """(display text, sort key) for one table cell; the sort key is the full-precision number or ''."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):  # None, NaN, pd.NA (nullable ints)
        return "", ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), ""
    if isinstance(value, (int, np.integer)):
        return str(int(value)), str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        text = str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.{digits}f}"
        return text, repr(v)
    return str(value), ""


def table_model(table: pd.DataFrame | None, *, max_rows: int | None = None, digits: int = 4) -> dict[str, Any]:
    """Columns and cells for the sortable-table macro (template `_macros.html.j2`)."""
    if table is None:
        return {"columns": [], "rows": [], "hidden": 0}
    shown = table if max_rows is None else table.head(max_rows)
    rows = [[format_cell(v, digits=digits) for v in rec] for rec in shown.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in table.columns], "rows": rows, "hidden": len(table) - len(shown)}


def format_mtime(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def inputs_date(paths: Iterable[Path]) -> str | None:
    """Latest modification time among the input files (a directory counts through its files), or None.

    The page shows when the inputs changed, not when the report ran, so equal inputs render equal bytes."""
    latest: float | None = None
    for p in paths:
        p = Path(p)
        if p.is_dir():
            times = [c.stat().st_mtime for c in sorted(p.iterdir()) if c.is_file()]
        elif p.is_file():
            times = [p.stat().st_mtime]
        else:
            times = []
        if times:
            latest = max([*times, latest] if latest is not None else times)
    return None if latest is None else format_mtime(latest)


def header_rows(header: Mapping[str, Any], *, extra_inputs: Iterable[Path] = ()) -> list[tuple[str, str]]:
    """(key, value) rows for the page header: known keys first, then the rest sorted, then the inputs' date."""
    rows = [(k, header[k]) for k in HEADER_ORDER if k in header]
    rows += [(k, header[k]) for k in sorted(header) if k not in HEADER_ORDER and k not in INPUT_DATE_KEYS]
    out = [(str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in rows]
    date = next((str(header[k]) for k in INPUT_DATE_KEYS if header.get(k)), None)
    if date is not None and re.fullmatch(r"\d+(\.\d+)?", date):
        date = format_mtime(float(date))
    if date is None:
        named = [Path(header[k]) for k in INPUT_PATH_KEYS if isinstance(header.get(k), str) and Path(header[k]).is_absolute()]
        date = inputs_date([*named, *extra_inputs])
    out.append(("inputs modified", date or "unknown"))
    return out

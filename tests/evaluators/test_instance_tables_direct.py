"""The report tables written and printed without pandas (segpipe.reports.columns) give the bytes and the text
pandas gives for the same tables; `segpipe evaluate instances --no-html` does not import pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segpipe.evaluators.instance.evaluation import evaluate_instances
from segpipe.evaluators.instance.tables import ColumnTable
from segpipe.reports import columns as direct
from segpipe.reports.tables import format_tables, write_report_dir, write_table
from tests.evaluators.test_instance import make_dataset

DIRECT = direct._pandas_version() is not None  # the pandas this layout was checked on (else pandas writes)
FILES = ("summary", "per_class", "per_image", "pr_curves")


def _written(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _tricky() -> ColumnTable:
    return ColumnTable({
        "category": ["cat", "=HYPERLINK(\"x\")", None, "café, \"quoted\"", "+1", "multi\nline", "", "-minus"],
        "AP": np.array([0.1 + 0.2, np.nan, -1.0, 1e-300, 1.0, 2.5e17, -0.0, np.inf]),
        "n_gt": np.array([0, -3, 7, 2**40, 1, 5, 6, 9], dtype=np.int64),
        "file_name": ["a.png", "b.png", "c d.png", "é.png", "@x.png", "\tt.png", "r.png", None],
    })


def test_the_direct_writer_is_the_one_taken_here() -> None:
    """The check below must compare the direct bytes, not pandas' with themselves."""
    if not DIRECT:
        pytest.skip(f"pandas {pd.__version__}: tables go through pandas (the direct layout is pandas 3's)")
    assert direct._pandas_version() == pd.__version__
    assert direct.column_table_files(_tricky(), parquet=True) is not None


@pytest.mark.parametrize("table", [
    _tricky(),
    ColumnTable({"metric": ["AP", "AR"], "value": np.array([0.5, -1.0])}),
    ColumnTable({"image_id": np.array([3], dtype=np.int64), "mean_iou": np.array([np.nan])}),  # all null
    ColumnTable({"n": np.array([1, 2], dtype=np.int64), "x": np.array([1.5, 2.0])}),  # no text column
], ids=["tricky", "summary", "all-nan", "numbers-only"])
def test_files_equal_pandas_bytes(tmp_path: Path, table: ColumnTable) -> None:
    (tmp_path / "direct").mkdir()
    (tmp_path / "pandas").mkdir()
    write_table(tmp_path / "direct", "t", table)
    write_table(tmp_path / "pandas", "t", table.to_pandas())
    assert _written(tmp_path / "direct") == _written(tmp_path / "pandas")
    back = pd.read_parquet(tmp_path / "direct" / "t.parquet")
    pd.testing.assert_frame_equal(back, table.to_pandas())


def test_a_whole_report_equals_the_pandas_one(tmp_path: Path) -> None:
    gt, results = make_dataset(seed=3)
    gt["categories"].append({"id": 99, "name": "=no ground truth"})  # a -1 row and a formula-like name
    report = evaluate_instances(gt, results, iou_type="segm")
    write_report_dir(tmp_path / "direct", report.tables, header={"x": 1})
    write_report_dir(tmp_path / "pandas", {name: getattr(report, name) for name in FILES}, header={"x": 1})
    assert _written(tmp_path / "direct") == _written(tmp_path / "pandas")
    assert np.isnan(report.tables["per_image"].columns["mean_iou"]).any()  # the null case is in the files
    direct_text = format_tables(report.tables["summary"], report.tables["per_class"])
    assert direct_text == format_tables(report.summary, report.per_class)
    if DIRECT:
        assert direct.column_table_text(report.tables["per_class"], width=160, max_rows=1000) is not None


@pytest.mark.parametrize("table", [
    _tricky(),  # a newline in a name: pandas escapes it, so pandas prints it
    ColumnTable({"category": ["a", "longer name", None], "AP": np.array([0.5, np.nan, -1.0]),
                 "n_gt": np.array([1, 20000, -3], dtype=np.int64), "category_id": np.array([1, 2, 3], dtype=np.int64)}),
    ColumnTable({"category": ["x" * 200], "AP": np.array([1.0])}),  # wider than the line: pandas wraps it
    ColumnTable({"metric": [f"m{i}" for i in range(1200)], "value": np.arange(1200.0)}),  # pandas truncates
], ids=["tricky", "plain", "wide", "long"])
def test_text_equals_pandas(table: ColumnTable) -> None:
    with pd.option_context("display.max_rows", 1000, "display.width", 160, "display.float_format", "{:.4f}".format):
        expected = table.to_pandas().to_string(index=False)
    assert format_tables(table) == expected


def test_empty_tables_keep_pandas_types(tmp_path: Path) -> None:
    gt, _ = make_dataset(seed=1)
    report = evaluate_instances(gt, [], iou_type="bbox")
    empty = ColumnTable({"category": [], "AP": np.zeros(0)}, untyped_when_empty=True)
    assert list(empty.to_pandas().dtypes) == [object, object]
    (tmp_path / "a").mkdir()
    write_table(tmp_path / "a", "t", empty)
    assert (tmp_path / "a" / "t.csv").read_text(encoding="utf-8") == "category,AP\n"
    assert len(report.tables["per_image"]) == len(gt["images"])


def test_no_html_run_imports_no_pandas(tmp_path: Path) -> None:
    gt, results = make_dataset(seed=2)
    (tmp_path / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    script = ("import sys\nfrom segpipe.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "print('pandas' in sys.modules)")
    argv = ["evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json"),
            "-o", str(tmp_path / "report"), "--no-html"]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == ("False" if DIRECT else "True"), done.stdout + done.stderr
    assert (tmp_path / "report" / "per_image.parquet").is_file()
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    expected = evaluate_instances(gt, results).stats
    assert summary["value"].tolist() == expected

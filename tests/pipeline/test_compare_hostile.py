"""`segpipe compare` on hostile inputs: each error says which model (A or B) it is about, never suggests an
option compare lacks, and statistics archives are checked before they cost memory."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.core.images import MAX_FILE_BYTES_ENV
from segpipe.reports.records import SEMANTIC_RECORDS, write_semantic_records
from tests.pipeline.test_compare_cli import _instance_predictions, converted as converted  # noqa: F401 (fixture)


def _records(directory: Path, confusions: np.ndarray) -> Path:
    directory.mkdir(parents=True)
    write_semantic_records(directory, files=[f"x{i}.png" for i in range(len(confusions))], confusions=confusions,
                           class_names=["background", "pet"])
    return directory


def _confusions() -> np.ndarray:
    return np.array([[[5, 1, 0], [2, 7, 0]], [[3, 0, 1], [0, 4, 0]]], dtype=np.int64)


def _compare(a: Path, b: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "-o", str(out), "--no-html", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_a_negative_confusion_matrix_is_refused_naming_b(tmp_path: Path) -> None:
    a = _records(tmp_path / "a", _confusions())
    bad = _confusions()
    bad[1, 0, 1] = -3
    b = _records(tmp_path / "b", bad)
    code, output = _compare(a, b, tmp_path / "o")
    assert code == 1, output
    assert f"B: {b / (SEMANTIC_RECORDS + '.npz')}: confusion: negative pixel count in the matrix of 'x1.png'" in output


def _npz_with_member(path: Path, member: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("confusion.npy", member)
    path.write_bytes(buffer.getvalue())


def test_an_npz_whose_header_lies_about_its_shape_is_refused_naming_a(tmp_path: Path) -> None:
    a = _records(tmp_path / "a", _confusions())
    b = _records(tmp_path / "b", _confusions())
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (10**12, 2, 3)})
    _npz_with_member(a / f"{SEMANTIC_RECORDS}.npz", header.getvalue() + b"\0" * 96)  # np.load would allocate 48 TB
    code, output = _compare(a, b, tmp_path / "o")
    assert code == 1, output
    assert f"A: {a / (SEMANTIC_RECORDS + '.npz')}: confusion.npy: declares a int64 array of shape (1000000000000, 2, 3)" in output


def test_a_zip_bomb_npz_is_refused_before_inflating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _records(tmp_path / "a", _confusions())
    b = _records(tmp_path / "b", _confusions())
    member = io.BytesIO()
    np.save(member, np.zeros((1_000_000, 2, 3), dtype=np.int64))  # 48 MB of zeros: ~50 KB deflated
    _npz_with_member(b / f"{SEMANTIC_RECORDS}.npz", member.getvalue())
    assert (b / f"{SEMANTIC_RECORDS}.npz").stat().st_size < 1_000_000
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, "10000000")
    code, output = _compare(a, b, tmp_path / "o")
    assert code == 1, output
    assert f"B: {b / (SEMANTIC_RECORDS + '.npz')}: statistics archive inflates to 48000128 bytes, over the limit of 10000000" in output


def test_invalid_results_name_the_model_and_no_drop_invalid(converted: Path, tmp_path: Path) -> None:  # noqa: F811
    a = _instance_predictions(converted, tmp_path / "a", drop_every=0, wrong_class=False)
    b = _instance_predictions(converted, tmp_path / "b", drop_every=0, wrong_class=False)
    results = json.loads((b / "results.json").read_text())
    results[0]["score"] = "high"
    (b / "results.json").write_text(json.dumps(results))
    code, output = _compare(a, b, tmp_path / "o", "--dataset", str(converted))
    assert code == 1, output
    assert output.startswith("Error: B: ") and "score" in output, output
    assert "--drop-invalid" not in output

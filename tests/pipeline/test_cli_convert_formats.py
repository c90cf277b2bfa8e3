"""`segpipe convert yolo|labelme|cvat|voc-seg`: --strict stops at the first error row (exit 4, no
instances.json left from an earlier run), and a clean dataset exits 0 with the summary line."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS, EXIT_STRICT_ABORT
from tests.converters import test_cvat, test_labelme, test_voc_segmentation, test_yolo
from tests.converters.test_voc import write_image


def _break_yolo(root: Path) -> None:
    write_image(root / "images/train/zz.jpg", width=8, height=8)
    (root / "labels/train/zz.txt").write_text("9 0.5 0.5 0.1 0.1\n", encoding="utf-8")


def _break_labelme(root: Path) -> None:
    (root / "zz.json").write_text("{", encoding="utf-8")


def _break_cvat(root: Path) -> None:
    xml = root / "annotations.xml"
    xml.write_text(xml.read_text().replace("</annotations>", '<image id="9" name="../zz.jpg" width="1" height="1"/></annotations>'))


def _break_voc_seg(root: Path) -> None:
    test_voc_segmentation.palette_png(root / "SegmentationClass/zz.png", np.zeros((4, 4), dtype=np.uint8))


@pytest.mark.parametrize(("fmt", "make", "breaks"), [
    ("yolo", test_yolo.ultralytics, _break_yolo), ("labelme", test_labelme.dataset, _break_labelme),
    ("cvat", test_cvat.dataset, _break_cvat), ("voc-seg", test_voc_segmentation.voc_root, _break_voc_seg),
])
def test_clean_then_strict(tmp_path: Path, fmt: str, make: Callable[[Path], Path], breaks: Callable[[Path], None]) -> None:
    root = make(tmp_path / "ds")
    out = tmp_path / "out"
    clean = CliRunner().invoke(main, ["convert", fmt, str(root), "-o", str(out)])
    assert clean.exit_code == EXIT_OK, clean.output
    assert "0 error(s)" in clean.output and (out / "instances.json").is_file()
    breaks(root)
    strict = CliRunner().invoke(main, ["convert", fmt, str(root), "-o", str(out), "--strict"])
    assert strict.exit_code == EXIT_STRICT_ABORT, strict.output
    assert not (out / "instances.json").exists() and (out / "conversion_report.csv").is_file()


def _grow_yolo(root: Path) -> Path:
    path = root / "labels/train/a.txt"
    path.write_text(path.read_text() + "\n" * 5000)
    return path


def _grow_labelme(root: Path) -> Path:
    path = root / "a.json"
    path.write_text(path.read_text() + " " * 5000)
    return path


def _grow_cvat(root: Path) -> Path:
    path = root / "annotations.xml"
    path.write_text(path.read_text() + " " * 5000)
    return path


def _grow_voc_seg(root: Path) -> Path:
    path = root / "SegmentationObject/2007_000001.png"
    path.write_bytes(path.read_bytes() + b"\0" * 5000)  # PNG decoders ignore bytes after IEND
    return path


@pytest.mark.parametrize(("fmt", "make", "grow"), [
    ("yolo", test_yolo.ultralytics, _grow_yolo), ("labelme", test_labelme.dataset, _grow_labelme),
    ("cvat", test_cvat.dataset, _grow_cvat), ("voc-seg", test_voc_segmentation.voc_root, _grow_voc_seg),
])
def test_an_oversized_annotation_file_is_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str,
                                               make: Callable[[Path], Path], grow: Callable[[Path], Path]) -> None:
    root = make(tmp_path / "ds")
    big = grow(root)
    monkeypatch.setenv("SEGPIPE_MAX_FILE_BYTES", "4000")
    result = CliRunner().invoke(main, ["convert", fmt, str(root), "-o", str(tmp_path / "out")])
    # CVAT's one XML names every image and the voc-seg root holds one image: nothing is converted, a usage error
    assert result.exit_code == (2 if fmt in ("cvat", "voc-seg") else EXIT_SKIPPED_ERRORS), result.output
    found = [r for r in test_yolo.rows(tmp_path / "out") if r["severity"] == "error"]
    assert [(Path(r["file"]).name, r["code"]) for r in found] == [(big.name, "file_too_large")]


def test_non_utf8_names_are_rows(tmp_path: Path) -> None:
    import os

    bad = os.fsdecode(b"caf\xe9")
    yolo = test_yolo.ultralytics(tmp_path / "yolo")
    write_image(yolo / f"images/train/{bad}.jpg", width=8, height=8)
    lm = test_labelme.dataset(tmp_path / "lm")
    (lm / f"{bad}.json").write_text((lm / "a.json").read_text())
    for fmt, root in (("yolo", yolo), ("labelme", lm)):
        result = CliRunner().invoke(main, ["convert", fmt, str(root), "-o", str(tmp_path / f"out-{fmt}")])
        assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
        assert [r["code"] for r in test_yolo.rows(tmp_path / f"out-{fmt}") if r["severity"] == "error"] == ["non_utf8_name"]

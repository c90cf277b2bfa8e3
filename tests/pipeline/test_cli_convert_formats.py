"""`segpipe convert yolo|labelme|cvat|voc-seg`: --strict stops at the first error row (exit 4, no
instances.json left from an earlier run), and a clean dataset exits 0 with the summary line."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.converters.report import EXIT_OK, EXIT_STRICT_ABORT
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

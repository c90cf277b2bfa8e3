"""VOC XML folders without their images (sizes from <size>, --size-from-xml) and rectangle segmentations
for box annotations (--rectangle-segmentation), checked through pycocotools' annToMask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from segpipe.converters.voc import convert_voc
from tests.converters.format_helpers import codes, coco_masks, rect, rows
from tests.converters.test_voc import labelimg_xml, write_pair


def box_only(src: Path) -> Path:
    (src / "sub").mkdir(parents=True)
    (src / "a.xml").write_bytes(labelimg_xml(filename="a.png", width=50, height=40, objects=[{"name": "cat", "box": (2, 3, 12, 23)}]))
    (src / "sub/b.xml").write_bytes(labelimg_xml(filename="../../etc/b.jpeg", width=30, height=20, objects=[{"name": "dog", "box": (0, 0, 5, 5)}]))
    (src / "nosize.xml").write_bytes(labelimg_xml(filename="n.jpg", width=None, height=None, objects=[{"name": "dog", "box": (0, 0, 5, 5)}]))
    write_pair(src, "withimage", width=40, height=30)
    return src


def test_size_from_xml_converts_box_only_folders(tmp_path: Path) -> None:
    src = box_only(tmp_path / "src")
    off = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(tmp_path / "off")])
    assert off.exit_code == EXIT_SKIPPED_ERRORS, "without the option a missing image stays an error"
    assert [im["file_name"] for im in json.loads((tmp_path / "off/instances.json").read_text())["images"]] == ["withimage.jpg"]
    on = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(tmp_path / "on"), "--size-from-xml"])
    assert on.exit_code == EXIT_SKIPPED_ERRORS, on.output  # nosize.xml: nothing to take the size from
    images = json.loads((tmp_path / "on/instances.json").read_text())["images"]
    assert [(im["file_name"], im["width"], im["height"]) for im in images] == [("a.png", 50, 40), ("sub/b.jpeg", 30, 20), ("withimage.jpg", 40, 30)]
    by = {(Path(r["file"]).name, r["severity"], r["code"]) for r in rows(tmp_path / "on")}
    assert {("a.xml", "warning", "size_from_xml"), ("b.xml", "warning", "size_from_xml"), ("b.xml", "warning", "filename_path"),
            ("nosize.xml", "error", "missing_image")} <= by
    assert not any("withimage" in f for f, _, c in by if c == "size_from_xml")


def test_rectangle_segmentation_is_off_by_default_and_matches_the_box(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pair(src, "x", width=40, height=30, objects=[{"name": "cat", "box": (1, 2, 11, 22)}, {"name": "dog", "box": (5.5, 0, 9.5, 4)}])
    convert_voc(src, tmp_path / "plain")
    assert all("segmentation" not in a for a in json.loads((tmp_path / "plain/instances.json").read_text())["annotations"])
    result = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(tmp_path / "rect"), "--rectangle-segmentation"])
    assert result.exit_code == EXIT_OK, result.output
    coco, masks = coco_masks(tmp_path / "rect")
    (c1, m1), (c2, m2) = masks["x.jpg"]
    assert c1 == "cat" and np.array_equal(m1, rect(40, 30, 1, 2, 11, 22))
    assert c2 == "dog" and m2.sum() > 0 and m2[:4, 6:9].all()  # half-pixel edges: pycocotools' rasteriser decides
    first = coco.dataset["annotations"][0]
    assert first["segmentation"] == [[1.0, 2.0, 11.0, 2.0, 11.0, 22.0, 1.0, 22.0]] and first["area"] == 200.0


def test_datumaro_xmls_without_size_or_images_are_located_rows(peers: Path, tmp_path: Path) -> None:
    src = peers / "datumaro/voc_dataset/voc_dataset2/Annotations"
    result = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(tmp_path / "out"), "--size-from-xml"])
    assert result.exit_code == 2 and "nothing converted (0 images)" in result.output, result.output
    assert codes(tmp_path / "out") == [("error", "missing_image")] * 5
    assert all("no <size>" in r["message"] for r in rows(tmp_path / "out"))

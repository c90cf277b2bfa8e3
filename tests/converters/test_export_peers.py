"""Exports round-trip on the third-party corpus (../shared/peers, skipped when absent): genuine LabelImg XMLs,
Datumaro's VOC segmentation PNGs (RGB-coded), faster_coco_eval's polygon COCO file and Datumaro's tiny COCO
with a crowd region. Read back by the format's converter, compared with pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segpipe.converters.voc import convert_voc
from segpipe.converters.voc_segmentation import convert_voc_segmentation
from tests.converters.export_helpers import compare, export, read_back

FORMATS = [("cvat", "cvat"), ("voc", "voc"), ("labelme", "labelme"), ("yolo", "yolo")]


@pytest.mark.parametrize(("fmt", "reader"), FORMATS)
def test_labelimg_boxes_round_trip(peers: Path, tmp_path: Path, fmt: str, reader: str) -> None:
    convert_voc(peers / "labelimg", tmp_path / "src")
    assert [f for f in export(fmt, tmp_path / "src", tmp_path / "out").findings if f.code != "attribute_not_exported"] == []
    back, prefix = read_back(reader, tmp_path / "out", tmp_path / "back")
    result = compare(tmp_path / "src" / "instances.json", back / "instances.json", prefix=prefix)
    assert result.problems == [] and result.objects == 51
    assert result.box_max_error <= 1e-6


@pytest.mark.parametrize(("fmt", "reader"), [("cvat", "cvat"), ("voc", "voc-seg"), ("labelme", "labelme"), ("yolo", "yolo")])
def test_datumaro_voc_masks_round_trip(peers: Path, tmp_path: Path, fmt: str, reader: str) -> None:
    convert_voc_segmentation(peers / "datumaro" / "voc_dataset" / "voc_dataset1", tmp_path / "src")
    assert [f for f in export(fmt, tmp_path / "src", tmp_path / "out").findings if f.code != "attribute_not_exported"] == []
    back, prefix = read_back(reader, tmp_path / "out", tmp_path / "back")
    result = compare(tmp_path / "src" / "instances.json", back / "instances.json", prefix=prefix)
    assert result.problems == [] and result.objects == 1
    assert result.exact_masks == 1 and result.box_max_error <= 1e-6


@pytest.mark.parametrize(("fmt", "reader"), [("cvat", "cvat"), ("labelme", "labelme"), ("yolo", "yolo")])
def test_faster_coco_eval_polygons_round_trip(peers: Path, tmp_path: Path, fmt: str, reader: str) -> None:
    """Polygons are written as they are (CVAT, LabelMe) or, in several parts, bridged into one (YOLO)."""
    gt = peers / "faster_coco_eval" / "gt_dataset.json"
    report = export(fmt, gt, tmp_path / "out")
    assert [f for f in report.findings if f.severity != "info"] == []
    back, prefix = read_back(reader, tmp_path / "out", tmp_path / "back")
    result = compare(gt, back / "instances.json", prefix=prefix, mask_boxes=False)
    assert result.problems == [] and result.objects == len(json.loads(gt.read_text())["annotations"])
    assert result.min_iou >= (1.0 if fmt != "yolo" else 0.99), result.mask_ious


def test_datumaro_coco_crowd_region_is_a_row(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "coco_dataset" / "coco_instances"
    src = root / "annotations" / "instances_val.json"
    coco = json.loads(src.read_text())
    crowd = [a["id"] for a in coco["annotations"] if a.get("iscrowd")]
    assert crowd, "the fixture holds a crowd annotation"
    report = export("cvat", src, tmp_path / "out", images=root / "images" / "val")
    assert sorted(f.code for f in report.findings) == ["crowd_not_exported"] * len(crowd)
    back, _ = read_back("cvat", tmp_path / "out", tmp_path / "back")
    coco["annotations"] = [a for a in coco["annotations"] if not a.get("iscrowd")]
    (tmp_path / "no_crowd.json").write_text(json.dumps(coco))
    result = compare(tmp_path / "no_crowd.json", back / "instances.json", mask_boxes=False)
    assert result.problems == [] and result.exact_masks == len(result.mask_ious)


@pytest.mark.parametrize(("fmt", "rows"), [("yolo", {"difficult", "pose", "truncated"}), ("labelme", {"difficult", "pose", "truncated"}),
                                           ("voc", set()), ("cvat", set())])
def test_attributes_a_format_cannot_hold_are_rows(peers: Path, tmp_path: Path, fmt: str, rows: set[str]) -> None:
    convert_voc(peers / "labelimg", tmp_path / "src")
    report = export(fmt, tmp_path / "src", tmp_path / "out")
    named = {f.message.split("'")[1] for f in report.findings if f.code == "attribute_not_exported"}
    assert named == rows
    assert all("of 51 annotation(s)" in f.message for f in report.findings if f.code == "attribute_not_exported")

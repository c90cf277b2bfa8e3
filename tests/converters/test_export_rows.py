"""What a format cannot hold is a row of export_report.csv, never dropped silently: crowd regions, holes,
overlapping masks in VOC PNGs, bad source records, missing images. Source polygons and float boxes are
written as they are. The CLI's exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.converters.coco import encode_mask, mask_bbox
from segpipe.converters.export import EXPORT_REPORT_FILE, EXPORTERS
from segpipe.cli.export import EXPORT_CHOICES
from segpipe.converters.shapes import polygon_mask
from tests.converters.export_helpers import compare, export, read_back

W, H = 40, 30


def ring() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[5:25, 5:25] = True
    m[10:20, 10:20] = False  # a 10 x 10 hole
    return m


def two_parts() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[2:8, 28:36] = True
    m[20:28, 30:38] = True
    return m


def write_source(root: Path) -> Path:
    """A COCO json + image: a ring (hole), a two-part mask, a crowd region, a polygon, a float box."""
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "images" / "b.png")
    crowd = np.zeros((H, W), bool)
    crowd[0:3, 0:3] = True
    polygon = [2.5, 3.25, 20.0, 3.25, 11.0, 17.5]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": encode_mask(ring()), "bbox": [5, 5, 20, 20], "area": 300, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": encode_mask(two_parts()), "bbox": [28, 2, 10, 26], "area": 112, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": encode_mask(crowd), "bbox": [0, 0, 3, 3], "area": 9, "iscrowd": 1},
        # Boxed as segpipe's converters box a polygon: the box of its rasterised pixels.
        {"id": 4, "image_id": 2, "category_id": 2, "segmentation": [polygon], "bbox": list(mask_bbox(polygon_mask([polygon], width=W, height=H))),
         "area": 124.6875, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [21.125, 4.5, 10.25, 7.75], "area": 79.4375, "iscrowd": 0},
    ]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}, {"id": 2, "file_name": "b.png", "width": W, "height": H}],
            "annotations": anns, "categories": [{"id": 1, "name": "ring"}, {"id": 2, "name": "parts"}]}
    path = root / "coco.json"
    path.write_text(json.dumps(coco))
    return path


def report_rows(out: Path) -> list[dict[str, str]]:
    with open(out / EXPORT_REPORT_FILE, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("fmt", ["yolo", "voc", "labelme", "cvat"])
def test_crowd_region_is_a_row_in_every_format(tmp_path: Path, fmt: str) -> None:
    export(fmt, write_source(tmp_path / "src"), tmp_path / "out")
    rows = report_rows(tmp_path / "out")
    assert [(r["file"], r["code"]) for r in rows if r["code"] == "crowd_not_exported"] == [("a.png", "crowd_not_exported")]
    assert "annotation 3" in next(r["message"] for r in rows if r["code"] == "crowd_not_exported")


def test_cvat_keeps_holes_parts_polygons_and_float_boxes_exactly(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    export("cvat", src, tmp_path / "out")
    back, _ = read_back("cvat", tmp_path / "out", tmp_path / "back")
    coco = json.loads(src.read_text())
    coco["annotations"] = [a for a in coco["annotations"] if not a["iscrowd"]]
    (tmp_path / "src" / "no_crowd.json").write_text(json.dumps(coco))
    result = compare(tmp_path / "src" / "no_crowd.json", back / "instances.json")
    assert result.problems == [] and result.objects == 4
    assert result.exact_masks == 3  # ring (mask), two parts (mask), the polygon (rasterised the same way)
    assert result.box_max_error <= 1e-6


@pytest.mark.parametrize("fmt", ["labelme", "yolo"])
def test_polygon_formats_fill_holes_and_say_so_with_the_measured_iou(tmp_path: Path, fmt: str) -> None:
    src = write_source(tmp_path / "src")
    export(fmt, src, tmp_path / "out")
    rows = [r for r in report_rows(tmp_path / "out") if r["code"] == "outline_approximation"]
    assert len(rows) == 1 and "annotation 1" in rows[0]["message"]
    expected = ring().sum() / 400  # the filled outline covers the 20 x 20 square
    assert f"{expected:.4f}" in rows[0]["message"] and rows[0]["severity"] == "warning"
    back, prefix = read_back(fmt, tmp_path / "out", tmp_path / "back")
    data = json.loads((back / "instances.json").read_text())
    assert len(data["annotations"]) == 4  # the two-part mask is still one object


def test_voc_overlap_is_a_row_and_the_later_object_keeps_the_pixels(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    a = np.zeros((H, W), bool)
    a[0:10, 0:10] = True
    b = np.zeros((H, W), bool)
    b[5:15, 5:15] = True
    anns = [{"id": i, "image_id": 1, "category_id": 1, "segmentation": encode_mask(m), "iscrowd": 0} for i, m in ((1, a), (2, b))]
    coco = {"images": [{"id": 1, "file_name": "x.png", "width": W, "height": H}], "annotations": anns, "categories": [{"id": 1, "name": "sq"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    export("voc", tmp_path / "c.json", tmp_path / "out", images=tmp_path / "images")
    rows = [r for r in report_rows(tmp_path / "out") if r["code"] == "overlap_lost"]
    assert len(rows) == 1 and "annotation 2" in rows[0]["message"] and "25 px" in rows[0]["message"]
    objects = np.asarray(Image.open(tmp_path / "out" / "SegmentationObject" / "x.png"))
    assert int((objects == 1).sum()) == 75 and int((objects == 2).sum()) == 100


def test_bad_records_and_missing_images_are_rows(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    coco = json.loads(src.read_text())
    coco["images"].append({"id": 3, "file_name": "gone.png", "width": W, "height": H})
    coco["images"].append({"id": 4, "file_name": "../../etc/passwd", "width": W, "height": H})
    coco["annotations"].append({"id": 9, "image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]})
    coco["annotations"].append({"id": 10, "image_id": 1, "category_id": 1, "segmentation": {"size": [H, W], "counts": "xx"}, "bbox": [0, 0, 1, 1]})
    src.write_text(json.dumps(coco))
    report = export("cvat", src, tmp_path / "out")
    codes = sorted(f.code for f in report.findings if f.severity == "error")
    assert codes == ["image_path_outside", "invalid_segmentation", "missing_image", "unknown_reference"]
    assert not (tmp_path / "out" / "images" / "gone.png").exists()


def test_cli_exports_and_exit_codes(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    runner = CliRunner()
    ok = runner.invoke(main, ["export", "cvat", str(src), "-o", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output  # the crowd row is a warning: everything writable was written
    assert "segpipe convert cvat" in ok.output
    coco = json.loads(src.read_text())
    coco["annotations"].append({"id": 9, "image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]})
    src.write_text(json.dumps(coco))
    partial = runner.invoke(main, ["export", "yolo", str(src), "-o", str(tmp_path / "out2")])
    assert partial.exit_code == 3, partial.output
    usage = runner.invoke(main, ["export", "coco", str(src), "-o", str(tmp_path / "out3")])
    assert usage.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(main, ["export", "voc", str(empty), "-o", str(tmp_path / "out4")])
    assert missing.exit_code == 2 and "no COCO file" in missing.output


def test_cli_choices_are_the_registered_exporters() -> None:
    assert set(EXPORT_CHOICES) == set(EXPORTERS)

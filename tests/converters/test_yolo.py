"""YOLO txt -> COCO: boxes and Ultralytics polygons against numpy references through pycocotools' reader,
class-name checks as report rows, bad input, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from segpipe.converters.yolo import convert_yolo, label_candidates, parse_data_yaml, parse_yolo_labels
from tests.converters.format_helpers import codes, coco_masks, convert_under_seeds, rect, rows, write_image

W, H = 40, 20


def ultralytics(root: Path) -> Path:
    """images/{train,val} + labels/{train,val} + data.yaml, as Ultralytics lays a dataset out."""
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n", encoding="utf-8")
    write_image(root / "images/train/a.jpg", width=W, height=H)
    write_image(root / "images/val/b.png", width=W, height=H, fmt="PNG")
    write_image(root / "images/val/neg.jpg", width=W, height=H)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    # a box x 4..12, y 2..10 (pixel corners): cx = 8/40, cy = 6/20, w = 8/40, h = 8/20
    (root / "labels/train/a.txt").write_text("1 0.2 0.3 0.2 0.4\n", encoding="utf-8")
    # an L-shaped polygon with integer pixel vertices (exact raster) and a rectangle polygon
    l_shape = [(10, 4), (30, 4), (30, 8), (20, 8), (20, 16), (10, 16)]
    norm = " ".join(f"{x / W} {y / H}" for x, y in l_shape)
    (root / "labels/val/b.txt").write_text(f"0 {norm}\n\n1 0.0 0.0 0.25 0.0 0.25 0.5 0.0 0.5\n", encoding="utf-8")
    return root


def test_ultralytics_layout_round_trips_through_pycocotools(tmp_path: Path) -> None:
    src = ultralytics(tmp_path / "ds")
    report = convert_yolo(src, tmp_path / "out", box_masks=False)  # boxes kept as boxes: see test_mixed_outputs
    assert not report.has_errors, report.findings
    assert ("warning", "mixed_box_mask") in codes(tmp_path / "out")
    coco, masks = coco_masks(tmp_path / "out")
    assert [c["name"] for c in coco.dataset["categories"]] == ["cat", "dog"]
    assert sorted(masks) == ["images/train/a.jpg", "images/val/b.png", "images/val/neg.jpg"]
    box = coco.dataset["annotations"][0]
    assert box["bbox"] == [4.0, 2.0, 8.0, 8.0] and box["area"] == 64.0 and "segmentation" not in box
    (c1, m1), (c2, m2) = masks["images/val/b.png"]
    l_ref = rect(W, H, 10, 4, 30, 8) | rect(W, H, 10, 8, 20, 16)
    assert c1 == "cat" and np.array_equal(m1, l_ref)
    assert c2 == "dog" and np.array_equal(m2, rect(W, H, 0, 0, 10, 10))
    ann = coco.dataset["annotations"][1]
    assert ann["area"] == float(l_ref.sum()) and ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
    assert masks["images/val/neg.jpg"] == [] and ("info", "no_label_file") in codes(tmp_path / "out")


def test_rectangle_segmentation_gives_boxes_a_mask(tmp_path: Path) -> None:
    src = ultralytics(tmp_path / "ds")
    convert_yolo(src, tmp_path / "out", rectangle_segmentation=True)
    _, masks = coco_masks(tmp_path / "out")
    (cat, mask), = masks["images/train/a.jpg"]
    assert cat == "dog" and np.array_equal(mask, rect(W, H, 4, 2, 12, 10))


def test_labelimg_flat_folder_with_classes_txt(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    write_image(src / "x.jpg", width=W, height=H)
    (src / "classes.txt").write_text("person\ncar\n", encoding="utf-8")
    (src / "x.txt").write_text("1 0.5 0.5 1.0 1.0\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "yolo", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads((tmp_path / "out/instances.json").read_text())
    assert data["annotations"][0]["bbox"] == [0.0, 0.0, 40.0, 20.0] and data["categories"][1] == {"id": 2, "name": "car", "supercategory": ""}


def test_bad_lines_are_rows_and_the_image_is_left_out(tmp_path: Path) -> None:
    src = ultralytics(tmp_path / "ds")
    bad = {"c1.txt": "2 0.5 0.5 0.1 0.1\n", "c2.txt": "0 0.5 0.5 1.2 0.1\n", "c3.txt": "x 0.5 0.5 0.1 0.1\n",
           "c4.txt": "0 0.5 nan 0.1 0.1\n", "c5.txt": "0 0.1 0.1 0.2 0.2 0.3\n", "c6.txt": "0 0.5 0.5 0 0.1\n",
           "c7.txt": b"\xff\xfe\x00garbage", "c8.txt": "0 0.1 0.1 0.1 0.1 0.1 0.1\n"}
    for name, text in bad.items():
        write_image(src / f"images/train/{name[:-4]}.jpg", width=W, height=H)
        path = src / "labels/train" / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    (src / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "yolo", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
    found = {(Path(r["file"]).name, r["code"]) for r in rows(tmp_path / "out") if r["severity"] == "error"}
    assert found == {("c1.txt", "class_out_of_range"), ("c2.txt", "coordinate_out_of_range"), ("c3.txt", "invalid_class"),
                     ("c4.txt", "invalid_coordinate"), ("c5.txt", "invalid_polygon"), ("c6.txt", "empty_box"),
                     ("c7.txt", "unreadable_label"), ("c8.txt", "empty_polygon"), ("orphan.txt", "missing_image")}
    files = [im["file_name"] for im in json.loads((tmp_path / "out/instances.json").read_text())["images"]]
    assert files == ["images/train/a.jpg", "images/val/b.png", "images/val/neg.jpg"]


@pytest.mark.parametrize("text, code", [
    ("names: [cat, dog, cat]\n", "duplicate_class"), ("nc: 3\nnames: [cat, dog]\n", "invalid_classes"),
    ("names: {0: cat, 2: dog}\n", "invalid_classes"), ("names: [unclosed\n", "invalid_yaml"), ("train: x\n", "no_classes"),
])
def test_data_yaml_problems_are_rows_not_guesses(text: str, code: str, tmp_path: Path) -> None:
    assert parse_data_yaml(text, path="d.yaml")[0] is None
    src = ultralytics(tmp_path / "ds")
    (src / "data.yaml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "yolo", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "nothing converted (0 images)" in result.output, result.output
    assert ("error", code) in codes(tmp_path / "out") and not (tmp_path / "out/instances.json").exists()


def test_fewer_names_than_indices_and_no_names_at_all(tmp_path: Path) -> None:
    records, findings = parse_yolo_labels("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n", names=["a", "b"], width=10, height=10, path="l.txt")
    assert len(records) == 1 and [f.code for f in findings] == ["class_out_of_range"] and "line 2" in findings[0].message
    src = tmp_path / "nonames"
    write_image(src / "x.jpg", width=W, height=H)
    (src / "x.txt").write_text("0 0.5 0.5 1 1\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "yolo", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--classes" in result.output


def test_label_paths_follow_ultralytics() -> None:
    assert label_candidates("a/images/b/images/c.jpg") == ["a/images/b/labels/c.txt", "a/images/b/images/c.txt"]
    assert label_candidates("c.jpg") == ["c.txt"]


def test_same_bytes_across_hash_seeds(tmp_path: Path) -> None:
    src = ultralytics(tmp_path / "ds")
    first, second = convert_under_seeds(["yolo", str(src)], outs=[tmp_path / "o1", tmp_path / "o2"])
    assert first == second and first

"""Folders laid out as other tools export them, written by hand from the tools' format documents (each builder
names its source), with the expected COCO figures worked out by hand from those documents:

- CVAT for images 1.1, a project export: https://docs.cvat.ai/docs/manual/advanced/xml_format/ (box `rotation`
  in degrees, clockwise about the centre; `<ellipse cx cy rx ry>`; `<image subset=...>`) and Datumaro's layout
  of project exports, images/<subset>/<name>
  (https://github.com/openvinotoolkit/datumaro/blob/develop/docs/source/docs/data-formats/formats/cvat.md);
- LabelMe 5.5 JSON: https://github.com/wkentaro/labelme (examples/instance_segmentation/labels.txt starts with
  `__ignore__` and `_background_`; a `mask` shape holds a base64 PNG pasted at [y1:y2+1, x1:x2+1] of its two
  points, labelme/utils/shape.py; `oriented_rectangle` has four corner points);
- CVAT "YOLO 1.1" (darknet): https://docs.cvat.ai/docs/manual/advanced/formats/format-yolo/ (obj.names, obj.data,
  train.txt listing `data/obj_train_data/<image>`, each label `.txt` beside its image).

Every converted file is read back by pycocotools (`annToMask`) and torchvision's `wrap_dataset_for_transforms_v2`.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.converters.report import EXIT_OK
from tests.converters.format_helpers import codes, coco_masks, rect, rows, write_image

W, H = 40, 30
USAGE = 2


def cvat_project(root: Path) -> Path:
    """A CVAT project export: labels under <meta><project>, two subsets, the same image name in both."""
    write_image(root / "images/Train/a.jpg", width=W, height=H)
    write_image(root / "images/Validation/a.jpg", width=W, height=H)
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><project><id>1</id><name>p</name>'
        '<labels><label><name>car</name><type>any</type><attributes/></label><label><name>cell</name><type>any</type><attributes/></label>'
        '</labels><subsets>Train\nValidation</subsets></project></meta>'
        f'<image id="0" name="a.jpg" subset="Train" task_id="1" width="{W}" height="{H}">'
        '<box label="car" source="manual" occluded="0" xtl="10" ytl="10" xbr="30" ybr="14" rotation="90" z_order="0"/>'
        '<ellipse label="cell" source="manual" occluded="0" cx="20" cy="15" rx="6" ry="3" rotation="90" z_order="0"/>'
        '</image>'
        f'<image id="1" name="a.jpg" subset="Validation" task_id="2" width="{W}" height="{H}">'
        '<box label="car" source="manual" occluded="0" xtl="2" ytl="3" xbr="12" ybr="9" z_order="0"/>'
        '<polygon label="cell" source="manual" occluded="0" points="20,4;30,4;30,14;20,14" z_order="0"/>'
        '</image></annotations>\n', encoding="utf-8")
    return root


def centre_ellipse(*, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W]
    inside: np.ndarray = ((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2 <= 1
    return inside


def test_cvat_project_export_rotated_box_and_ellipse(tmp_path: Path) -> None:
    src = cvat_project(tmp_path / "cvat")
    result = CliRunner().invoke(main, ["convert", "cvat", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    assert "mixed boxes and masks: 1 box-only annotation(s) beside 3 mask(s)" in result.output
    coco, masks = coco_masks(tmp_path / "out")
    images = {im["file_name"]: im for im in coco.dataset["images"]}
    assert sorted(images) == ["Train/a.jpg", "Validation/a.jpg"]
    assert [images[n]["subset"] for n in sorted(images)] == ["Train", "Validation"]
    assert [c["name"] for c in coco.dataset["categories"]] == ["car", "cell"], "the project's label order"
    anns = {(images_by_id["file_name"], a["category_id"]): a
            for a in coco.dataset["annotations"] for images_by_id in [coco.imgs[a["image_id"]]]}
    # rotated 90° clockwise about (20, 12): the 20×4 box stands up as x 18..22, y 2..22
    rotated = anns[("Train/a.jpg", 1)]
    assert rotated["bbox"] == [18.0, 2.0, 4.0, 20.0] and rotated["area"] == 80.0 and rotated["attributes"]["rotation"] == "90"
    assert np.array_equal(masks["Train/a.jpg"][0][1], rect(W, H, 18, 2, 22, 22))
    # an ellipse turned 90° is the one with its radii swapped
    assert np.array_equal(masks["Train/a.jpg"][1][1], centre_ellipse(cx=20, cy=15, rx=3, ry=6))
    box = anns[("Validation/a.jpg", 1)]
    assert box["bbox"] == [2.0, 3.0, 10.0, 6.0] and box["attributes"]["segmentation_from_box"] is True
    assert np.array_equal(masks["Validation/a.jpg"][0][1], rect(W, H, 2, 3, 12, 9))
    assert ("warning", "mixed_box_mask") in codes(tmp_path / "out")


def test_mixed_outputs_load_one_mask_per_box_in_torchvision_and_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    src = cvat_project(tmp_path / "cvat")
    for flag, out in (("--box-masks", tmp_path / "filled"), ("--no-box-masks", tmp_path / "bare")):
        assert CliRunner().invoke(main, ["convert", "cvat", str(src), "-o", str(out), flag]).exit_code == EXIT_OK
    dataset = wrap_dataset_for_transforms_v2(CocoDetection(str(src / "images"), str(tmp_path / "filled/instances.json")),
                                             target_keys=("boxes", "masks", "labels"))
    for index in range(len(dataset)):
        _, target = dataset[index]
        boxes, found = target["boxes"], target["masks"]
        assert len(found) == len(boxes) == 2
        for box, mask in zip(boxes.tolist(), found.numpy()):  # mask i is box i's object
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(round(v) for v in box)
    coco = COCO(str(tmp_path / "filled/instances.json"))
    assert all(coco.annToMask(a).sum() == a["area"] for a in coco.dataset["annotations"])
    bare = COCO(str(tmp_path / "bare/instances.json"))
    box_only = [a for a in bare.dataset["annotations"] if "segmentation" not in a]
    assert len(box_only) == 1
    with pytest.raises(KeyError):  # what the default saves users from
        bare.annToMask(box_only[0])
    assert ("warning", "mixed_box_mask") in codes(tmp_path / "bare")


def png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


CROP = np.array([[0, 1, 1], [1, 1, 1], [0, 1, 0], [0, 1, 0]], dtype=bool)


def labelme_folder(root: Path, *, labels: str = "__ignore__\n_background_\ncat\ndog\n") -> Path:
    write_image(root / "a.jpg", width=W, height=H)
    (root / "labels.txt").write_text(labels, encoding="utf-8")

    def shape(label: str, kind: str, points: list[list[float]], **extra: object) -> dict[str, object]:
        return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind, "flags": {}, **extra}

    doc = {"version": "5.5.0", "flags": {}, "imagePath": "a.jpg", "imageData": None, "imageHeight": H, "imageWidth": W, "shapes": [
        shape("dog", "rectangle", [[2, 3], [12, 15]]),
        shape("cat", "mask", [[20, 5], [22, 8]], mask=png_b64(CROP)),
        shape("cat", "oriented_rectangle", [[30, 10], [36, 10], [36, 20], [30, 20]]),
        shape("__ignore__", "polygon", [[0, 20], [10, 20], [10, 30], [0, 30]]),
    ]}
    (root / "a.json").write_text(json.dumps(doc), encoding="utf-8")
    write_image(root / "b.jpg", width=W, height=H)
    (root / "b.json").write_text(json.dumps({**doc, "imagePath": "b.jpg", "shapes": [shape("cat", "polygon", [[1, 1], [9, 1], [9, 9]])]}))
    return root


@pytest.mark.parametrize("labels", ["__ignore__\n_background_\ncat\ndog\n", "cat\ndog\n", None], ids=["labels.txt", "no-ignore-line", "no-classes"])
def test_labelme_ignore_mask_and_oriented_rectangle(tmp_path: Path, labels: str | None) -> None:
    src = labelme_folder(tmp_path / "lm", labels=labels or "cat\ndog\n")
    args = ["convert", "labelme", str(src), "-o", str(tmp_path / "out")] + (["--classes", str(src / "labels.txt")] if labels else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_OK, result.output
    coco, masks = coco_masks(tmp_path / "out")
    assert [c["name"] for c in coco.dataset["categories"]] == ["cat", "dog"], "__ignore__ and _background_ are no categories"
    got = masks["a.jpg"]
    pasted = np.zeros((H, W), dtype=bool)
    pasted[5:9, 20:23] = CROP
    assert [c for c, _ in got] == ["dog", "cat", "cat", "cat", "dog"]
    assert np.array_equal(got[0][1], rect(W, H, 2, 3, 12, 15))  # the box, given its rectangle: the dataset mixes boxes and masks
    assert np.array_equal(got[1][1], pasted)
    assert np.array_equal(got[2][1], rect(W, H, 30, 10, 36, 20))
    anns = [a for a in coco.dataset["annotations"] if coco.imgs[a["image_id"]]["file_name"] == "a.jpg"]
    assert [a["iscrowd"] for a in anns] == [0, 0, 0, 1, 1], "the ignore region: one crowd annotation per category"
    for ann, (_, mask) in zip(anns[3:], got[3:]):
        assert np.array_equal(mask, rect(W, H, 0, 20, 10, 30)) and ann["attributes"] == {"ignore_region": "__ignore__"}


def test_labelme_bad_mask_is_a_row(tmp_path: Path) -> None:
    src = labelme_folder(tmp_path / "lm")
    doc = json.loads((src / "a.json").read_text())
    doc["shapes"][1]["points"] = [[20, 5], [25, 8]]  # the 3×4 PNG does not span 6×4
    (src / "a.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(main, ["convert", "labelme", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    found = [(Path(r["file"]).name, r["code"], r["message"]) for r in rows(tmp_path / "out") if r["severity"] == "error"]
    assert found == [("a.json", "invalid_shape", "shapes[1] ('cat', mask): the mask is 3×4, its points span 6×4")]


def darknet(root: Path, *, with_images: bool = True) -> Path:
    """CVAT's YOLO 1.1 export: obj.data, obj.names, train.txt, obj_train_data/ with each label beside its image."""
    (root / "obj_train_data").mkdir(parents=True)
    (root / "obj.names").write_text("cat\ndog\n", encoding="utf-8")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n", encoding="utf-8")
    (root / "train.txt").write_text("data/obj_train_data/a.jpg\ndata/obj_train_data/b.jpg\n", encoding="utf-8")
    (root / "obj_train_data/a.txt").write_text("1 0.25 0.5 0.5 0.4\n", encoding="utf-8")
    (root / "obj_train_data/b.txt").write_text("0 0.5 0.5 1.0 1.0\n0 0.125 0.1 0.25 0.2\n", encoding="utf-8")
    if with_images:
        write_image(root / "obj_train_data/a.jpg", width=W, height=H)
        write_image(root / "obj_train_data/b.jpg", width=W, height=H)
    return root


def test_darknet_yolo_export_is_found_by_its_files(tmp_path: Path) -> None:
    src = darknet(tmp_path / "yolo")
    result = CliRunner().invoke(main, ["convert", "yolo", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    coco = json.loads((tmp_path / "out/instances.json").read_text())
    assert [(im["file_name"], im["subset"]) for im in coco["images"]] == [("obj_train_data/a.jpg", "train"), ("obj_train_data/b.jpg", "train")]
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    # cx 0.25, w 0.5 of 40 px -> x 0..20; cy 0.5, h 0.4 of 30 px -> y 9..21
    assert [(a["category_id"], a["bbox"]) for a in coco["annotations"]] == [
        (2, [0.0, 9.0, 20.0, 12.0]), (1, [0.0, 0.0, 40.0, 30.0]), (1, [0.0, 0.0, 10.0, 6.0])]
    assert rows(tmp_path / "out") == []


def test_darknet_export_without_images_is_a_usage_error(tmp_path: Path) -> None:
    src = darknet(tmp_path / "yolo", with_images=False)
    result = CliRunner().invoke(main, ["convert", "yolo", str(src), "-o", str(tmp_path / "out"), "--classes", str(src / "obj.names")])
    assert result.exit_code == USAGE and "nothing converted (0 images)" in result.output, result.output
    found = sorted((Path(r["file"]).name, r["code"]) for r in rows(tmp_path / "out"))
    assert found == [("a.jpg", "missing_image"), ("a.txt", "missing_image"), ("b.jpg", "missing_image"), ("b.txt", "missing_image")]


@pytest.mark.parametrize("fmt", ["voc", "yolo", "labelme", "cvat", "voc-seg"])
def test_nothing_converted_is_one_usage_error(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.md").write_text("nothing here\n")
    if fmt == "yolo":
        (src / "classes.txt").write_text("cat\n")
    if fmt == "cvat":
        (src / "annotations.xml").write_text('<annotations><version>1.1</version><meta><task><labels><label><name>cat</name></label>'
                                             "</labels></task></meta></annotations>")
    if fmt == "voc-seg":
        (src / "SegmentationClass").mkdir()
    result = CliRunner().invoke(main, ["convert", fmt, str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == USAGE, result.output
    assert "nothing converted (0 images): looked for" in result.output and "found" in result.output, result.output


def test_cvat_rotated_box_extent_from_the_format_document(tmp_path: Path) -> None:
    """xtl=100 ytl=100 xbr=300 ybr=140 rotation=90 (degrees, clockwise about the centre (200, 120)): the box
    stands up as x 180..220, y 20..220; unrotated it would read [100, 100, 200, 40]."""
    src = tmp_path / "cvat"
    write_image(src / "images/r.jpg", width=400, height=300)
    (src / "annotations.xml").write_text(
        '<annotations><version>1.1</version><meta><task><labels><label><name>car</name></label></labels></task></meta>'
        '<image id="0" name="r.jpg" width="400" height="300"><box label="car" occluded="0" xtl="100" ytl="100" xbr="300" ybr="140" '
        'rotation="90" z_order="0"/></image></annotations>', encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "cvat", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    coco, masks = coco_masks(tmp_path / "out")
    (ann,) = coco.dataset["annotations"]
    assert ann["bbox"] == [180.0, 20.0, 40.0, 200.0] and ann["area"] == 8000.0
    ref = np.zeros((300, 400), dtype=bool)
    ref[20:220, 180:220] = True
    assert np.array_equal(masks["r.jpg"][0][1], ref)


def test_voc_parts_and_actions_are_attributes_and_a_broken_part_is_a_row(tmp_path: Path) -> None:
    """VOC2012 person layout and action flags (devkit: host.robots.ox.ac.uk/pascal/VOC/voc2012/htmldoc/devkit_doc.html)."""
    src = tmp_path / "voc"
    write_image(src / "p.jpg", width=W, height=H)
    (src / "p.xml").write_text(
        "<annotation><filename>p.jpg</filename><object><name>person</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax>"
        "<ymax>28</ymax></bndbox><part><name>hand</name><bndbox><xmin>4</xmin><ymin>5</ymin><xmax>8</xmax><ymax>9</ymax></bndbox></part>"
        "<part><name>foot</name></part><actions><jumping>1</jumping><phoning>0</phoning><walking>x</walking></actions></object></annotation>")
    result = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    (ann,) = json.loads((tmp_path / "out/instances.json").read_text())["annotations"]
    assert ann["bbox"] == [2.0, 3.0, 18.0, 25.0]
    assert ann["attributes"]["parts"] == [{"name": "hand", "xmin": 4.0, "ymin": 5.0, "xmax": 8.0, "ymax": 9.0}]
    assert ann["attributes"]["actions"] == {"jumping": True, "phoning": False}
    found = sorted((r["code"], r["message"]) for r in rows(tmp_path / "out"))
    assert found == [("invalid_flag", "object[0].actions.walking: expected 0 or 1, got 'x'; left out"),
                     ("invalid_part", "object[0].part[1]: bndbox: missing; the part is left out of the object's attributes")]

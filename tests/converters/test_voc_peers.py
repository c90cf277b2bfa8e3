"""VOC conformance on the peer fixtures in ../shared/peers (skipped when that folder is absent).

The fixtures are read in place or copied into tmp_path for the cases that need an image beside them;
nothing is copied into the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from segpipe.converters.coco import read_coco
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from segpipe.converters.voc import convert_voc, parse_voc_xml, read_classes_file
from tests.converters.test_voc import rows, write_image


def boxes(coco: dict) -> list[tuple[str, str, list[float]]]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    return [(files[a["image_id"]], names[a["category_id"]], a["bbox"]) for a in coco["annotations"]]


def findings(out: Path) -> list[tuple[str, str, str]]:
    return sorted((Path(r["file"]).name, r["severity"], r["code"]) for r in rows(out))


def test_datumaro_voc_dataset1_figures(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "voc_dataset" / "voc_dataset1"
    report = convert_voc(root / "Annotations", tmp_path / "out", images=root / "JPEGImages", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    # datumaro reads the cat as x=1, y=2, w=2, h=2 and the person as 4, 5, 2, 2; the <part> is not a box of its
    # own: it and the <actions> flags stay on the person, with the XML's numbers as written.
    assert boxes(coco) == [("2007_000001.jpg", "cat", [1.0, 2.0, 2.0, 2.0]), ("2007_000001.jpg", "person", [4.0, 5.0, 2.0, 2.0])]
    assert [(i["width"], i["height"]) for i in coco["images"]] == [(20, 10)]
    assert coco["annotations"][0]["attributes"] == {"difficult": False, "truncated": True, "pose": "Unspecified"}
    actions = {"other": True, "jumping": False, "phoning": True, "playinginstrument": False, "reading": True, "ridingbike": False,
               "ridinghorse": True, "running": False, "takingphoto": True, "usingcomputer": False, "walking": True}
    assert coco["annotations"][1]["attributes"] == {
        "difficult": False, "parts": [{"name": "head", "xmin": 5.5, "ymin": 6.0, "xmax": 7.5, "ymax": 8.0}], "actions": actions}
    assert findings(tmp_path / "out") == [("2007_000002.jpg", "warning", "unannotated")]
    assert report.exit_code() == EXIT_OK


def test_datumaro_voc_dataset1_one_based(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "voc_dataset" / "voc_dataset1"
    convert_voc(root / "Annotations", tmp_path / "out", images=root / "JPEGImages", one_based=True, workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [b for _, _, b in boxes(coco)] == [[0.0, 1.0, 3.0, 3.0], [3.0, 4.0, 3.0, 3.0]]


def test_datumaro_voc_dataset2_without_images(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "voc_dataset" / "voc_dataset2"
    report = convert_voc(root, tmp_path / "out", workers=1)
    assert report.exit_code() == EXIT_SKIPPED_ERRORS
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert coco["images"] == [] and [c["name"] for c in coco["categories"]] == ["aeroplane", "background", "bicycle", "bird"]
    assert findings(tmp_path / "out") == [(f"{s}.xml", "error", "missing_image") for s in ("@", "a", "b", "c", "d")]


def test_datumaro_voc_dataset2_with_images_keeps_negative(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "voc_dataset" / "voc_dataset2"
    for stem in ("@", "a", "b", "c", "d"):
        write_image(tmp_path / "img" / f"{stem}.jpg", width=12, height=8)
    report = convert_voc(root / "Annotations", tmp_path / "out", images=tmp_path / "img", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [i["file_name"] for i in coco["images"]] == ["@.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert boxes(coco) == [("a.jpg", "background", [1.0, 2.0, 3.0, 4.0]), ("b.jpg", "aeroplane", [2.0, 2.0, 5.0, 4.0]),
                           ("c.jpg", "bicycle", [3.0, 1.0, 8.0, 5.0]), ("d.jpg", "bird", [4.0, 4.0, 4.0, 4.0])]
    assert coco["annotations"][0]["attributes"] == {"difficult": False, "truncated": False, "occluded": True}
    assert findings(tmp_path / "out") == [("@.xml", "info", "no_objects")]
    assert report.exit_code() == EXIT_OK


def test_datumaro_voc_dataset3(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "voc_dataset" / "voc_dataset3"
    convert_voc(root / "Annotations", tmp_path / "out", images=root / "JPEGImages", workers=1)
    assert boxes(read_coco(tmp_path / "out" / "instances.json")) == [("2007_000001.jpg", "cat", [1.0, 2.0, 2.0, 2.0])]
    assert findings(tmp_path / "out") == []


def test_datumaro_kaggle_relaxed_layouts(peers: Path, tmp_path: Path) -> None:
    root = peers / "datumaro" / "kaggle_dataset"
    expected = [("2007_000001.jpg", "cat", [1.0, 2.0, 2.0, 2.0]), ("2007_000001.jpg", "person", [4.0, 5.0, 2.0, 2.0])]
    convert_voc(root / "relaxed_voc1" / "annotations", tmp_path / "apart", images=root / "relaxed_voc1" / "images", workers=1)
    convert_voc(root / "relaxed_voc2", tmp_path / "beside", workers=1)
    for out in (tmp_path / "apart", tmp_path / "beside"):
        assert boxes(read_coco(out / "instances.json")) == expected
        assert findings(out) == [("2007_000002.jpg", "warning", "unannotated")]


def test_datumaro_roboflow_export(peers: Path, tmp_path: Path) -> None:
    report = convert_voc(peers / "datumaro" / "roboflow_dataset" / "voc", tmp_path / "out", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    # xmin, xmax, ymin, ymax tag order; val_001's label_1 box is 1 pixel high.
    assert boxes(coco) == [("train/train_001.jpg", "label_0", [2.0, 1.0, 3.0, 1.0]), ("train/train_002.jpg", "label_1", [0.0, 0.0, 2.0, 4.0]),
                           ("val/val_001.jpg", "label_0", [0.0, 0.0, 1.0, 2.0]), ("val/val_001.jpg", "label_1", [0.0, 0.0, 9.0, 1.0])]
    assert report.findings == []


def test_labelimg_files(peers: Path, tmp_path: Path) -> None:
    report = convert_voc(peers / "labelimg", tmp_path / "out", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        ("C1_P01_N1_S2_1.JPG", 1363, 2188), ("C1_P11_N2_S4_2.JPG", 3264, 2358)]
    per_image = [sum(a["image_id"] == i for a in coco["annotations"]) for i in (1, 2)]
    assert per_image == [10, 41]
    assert [c["name"] for c in coco["categories"]] == ["chesterfield", "lark", "lm", "marlboro", "muratti", "parliament"]
    assert boxes(coco)[0] == ("C1_P01_N1_S2_1.JPG", "chesterfield", [13.0, 875.0, 262.0, 374.0])
    assert report.findings == []  # sizes agree, <path> is ignored, <filename> matches


def test_labelimg_with_predefined_classes(peers: Path, tmp_path: Path) -> None:
    classes = read_classes_file(peers / "labelimg" / "predefined_classes.txt")
    assert classes[:3] == ["dog", "person", "cat"] and "marinara sauce" in classes and len(classes) == 15
    report = convert_voc(peers / "labelimg", tmp_path / "out", classes=peers / "labelimg" / "predefined_classes.txt", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    # None of the tobacco brands in these files is a predefined class: every object is an error row.
    assert [c["name"] for c in coco["categories"]] == classes and coco["images"] == []
    found = findings(tmp_path / "out")
    assert found.count(("C1_P01_N1_S2_1.xml", "error", "unknown_label")) == 10
    assert found.count(("C1_P11_N2_S4_2.xml", "error", "unknown_label")) == 41
    assert report.exit_code() == EXIT_SKIPPED_ERRORS


def test_odd_voc_xml_in_place(peers: Path, tmp_path: Path) -> None:
    convert_voc(peers / "odd_voc_xml", tmp_path / "out", workers=1)
    found = findings(tmp_path / "out")
    assert ("mindspore_invalidbbox.xml", "error", "inverted_box") in found
    assert ("mmdetection_000001.xml", "warning", "filename_mismatch") in found
    assert ("pylabel_pascal_voc4.xml", "warning", "box_clipped") in found
    assert ("pylabel_pascal_voc4.xml", "info", "empty_tag") in found
    messages = {(Path(r["file"]).name, r["code"]): r["message"] for r in rows(tmp_path / "out")}
    assert messages[("mindspore_invalidbbox.xml", "inverted_box")] == "object[1] ('person'): bndbox: max < min (xmin=321, ymin=121, xmax=421, ymax=120)"
    assert "'000002.jpg'" in messages[("mmdetection_000001.xml", "filename_mismatch")]
    assert "object[2] ('person')" in messages[("pylabel_pascal_voc4.xml", "box_clipped")] and "-207.7" in messages[("pylabel_pascal_voc4.xml", "box_clipped")]
    assert {name for name, _, code in found if code == "missing_image"} == {
        "mindspore_32.xml", "mindspore_invalidbbox.xml", "mindspore_xmlnoobject.xml", "mmdetection_000001.xml", "pylabel_pascal_voc4.xml"}


def test_odd_voc_xml_with_images(peers: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for xml in sorted((peers / "odd_voc_xml").glob("*.xml")):
        shutil.copyfile(xml, src / xml.name)
        size = parse_voc_xml(xml.read_bytes(), path=str(xml)).size
        write_image(src / f"{xml.stem}.jpg", width=size[0], height=size[1])
    report = convert_voc(src, tmp_path / "out", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [i["file_name"] for i in coco["images"]] == ["mindspore_32.jpg", "mindspore_xmlnoobject.jpg", "mmdetection_000001.jpg", "pylabel_pascal_voc4.jpg"]
    assert findings(tmp_path / "out") == [
        ("mindspore_32.xml", "warning", "filename_mismatch"),  # says 32.jpg
        ("mindspore_invalidbbox.xml", "error", "inverted_box"),
        ("mindspore_invalidbbox.xml", "info", "image_skipped"),
        ("mindspore_invalidbbox.xml", "warning", "filename_mismatch"),  # says 33.jpg
        ("mindspore_xmlnoobject.xml", "info", "no_objects"),
        ("mindspore_xmlnoobject.xml", "warning", "filename_mismatch"),  # says 33.jpg
        ("mmdetection_000001.xml", "warning", "filename_mismatch"),  # says 000002.jpg
        ("pylabel_pascal_voc4.xml", "info", "empty_tag"),
        ("pylabel_pascal_voc4.xml", "warning", "box_clipped"),
        ("pylabel_pascal_voc4.xml", "warning", "filename_mismatch"),  # says 000000397133.jpg
    ]
    pylabel = [b for f, _, b in boxes(coco) if f == "pylabel_pascal_voc4.jpg"]
    assert len(pylabel) == 19
    assert pylabel[2] == [388.66, 0.0, 498.07000000000005 - 388.66, 69.92]  # ymin -207.7 clipped to 0
    names = {n for f, n, _ in boxes(coco) if f == "pylabel_pascal_voc4.jpg"}
    assert "dining table" in names
    assert report.exit_code() == EXIT_SKIPPED_ERRORS


def test_tfds_oxford_pet_real_xmls(peers: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    expected = []
    for xml in sorted((peers / "tfds_oxford_pet" / "real_xmls").glob("*.xml")):
        shutil.copyfile(xml, src / xml.name)
        doc = parse_voc_xml(xml.read_bytes(), path=str(xml))
        write_image(src / f"{xml.stem}.jpg", width=doc.size[0], height=doc.size[1])
        (obj,) = doc.objects
        expected.append((f"{xml.stem}.jpg", obj.name, [obj.xmin, obj.ymin, obj.xmax - obj.xmin, obj.ymax - obj.ymin]))
    convert_voc(src, tmp_path / "out", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert boxes(coco) == expected and len(expected) == 10
    assert {c["name"] for c in coco["categories"]} <= {"cat", "dog"}
    assert expected[0] == ("image0_0.jpg", "cat", [333.0, 72.0, 92.0, 86.0])
    # the tfds files are renamed copies: every <filename> (Abyssinian_1.jpg, ...) disagrees and says so
    assert findings(tmp_path / "out") == [(f"{Path(f).stem}.xml", "warning", "filename_mismatch") for f, _, _ in expected]

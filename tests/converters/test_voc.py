"""LabelImg / VOC XML -> COCO: conventions, lookup, ids, determinism, pycocotools round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest
from PIL import Image

from segpipe.converters.coco import read_coco
from segpipe.core.dataset_layout import DatasetDir
from segpipe.core.errors import AnnotationError
from segpipe.converters.report import EXIT_OK, REPORT_COLUMNS
from segpipe.converters.voc import (
    VocDocument,
    VocObject,
    convert_voc,
    match_images,
    parse_voc_xml,
    read_classes_file,
    voc_objects_to_annotations,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- helpers shared with the other VOC test modules -------------------------------------------------

def labelimg_xml(*, filename: str, width: int | None, height: int | None, objects: Sequence[dict[str, Any]], path: str = "/home/someone/images/x.jpg") -> bytes:
    """An XML as LabelImg writes it (tab indent, absolute <path>). Object keys: name, box, and any flags."""
    size = "" if width is None else f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
    parts = [f"<annotation>\n\t<folder>images</folder>\n\t<filename>{filename}</filename>\n\t<path>{path}</path>\n"
             f"\t<source>\n\t\t<database>Unknown</database>\n\t</source>\n{size}\t<segmented>0</segmented>\n"]
    for obj in objects:
        flags = "".join(f"\t\t<{k}>{v}</{k}>\n" for k, v in obj.items() if k not in ("name", "box"))
        xmin, ymin, xmax, ymax = obj["box"]
        parts.append(f"\t<object>\n\t\t<name>{obj['name']}</name>\n{flags}\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n"
                     f"\t\t\t<ymin>{ymin}</ymin>\n\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n")
    parts.append("</annotation>\n")
    return "".join(parts).encode("utf-8")


def write_image(path: Path, *, width: int, height: int, fmt: str = "JPEG", exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (width, height), (120, 80, 40))
    kwargs: dict[str, Any] = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[274] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, format=fmt, **kwargs)
    return path


def write_pair(folder: Path, stem: str, *, width: int = 40, height: int = 30, ext: str = ".jpg", objects: Sequence[dict[str, Any]] = ({"name": "cat",
    "box": (1, 2, 11, 22)},)) -> None:
    write_image(folder / f"{stem}{ext}", width=width, height=height, fmt="PNG" if ext.lower() == ".png" else "JPEG")
    (folder / f"{stem}.xml").write_bytes(labelimg_xml(filename=f"{stem}{ext}", width=width, height=height, objects=objects))


def rows(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "conversion_report.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def codes(out: Path) -> list[tuple[str, str]]:
    return sorted((r["severity"], r["code"]) for r in rows(out))


# ---- pure parsing -----------------------------------------------------------------------------------

def test_parse_reads_labelimg_fields() -> None:
    data = labelimg_xml(filename="a.jpg", width=40, height=30, objects=[
        {"name": " cat ", "box": (1, 2, 11.5, 22), "pose": "Left", "truncated": 1, "difficult": 1},
        {"name": "dog", "box": (3, 4, 5, 6), "occluded": 0},
    ])
    doc = parse_voc_xml(data, path="a.xml")
    assert doc.filename == "a.jpg"
    assert doc.size == (40, 30, 3)
    assert doc.objects[0] == VocObject(name="cat", xmin=1.0, ymin=2.0, xmax=11.5, ymax=22.0, difficult=True, truncated=True, occluded=None, pose="Left")
    assert doc.objects[1] == VocObject(name="dog", xmin=3.0, ymin=4.0, xmax=5.0, ymax=6.0, difficult=False, truncated=None, occluded=False, pose=None)
    assert doc.findings == ()


def test_parse_ignores_parts_and_tag_order() -> None:
    data = (b"<annotation><object><name>person</name><bndbox><xmin>4</xmin><xmax>6</xmax><ymin>5</ymin><ymax>7</ymax></bndbox>"
            b"<part><name>head</name><bndbox><xmin>5.5</xmin><ymin>6</ymin><xmax>7.5</xmax><ymax>8</ymax></bndbox></part>"
            b"</object></annotation>")
    doc = parse_voc_xml(data, path="p.xml")
    assert [(o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in doc.objects] == [("person", 4.0, 5.0, 6.0, 7.0)]
    assert doc.size is None and doc.filename is None


def test_boxes_pixel_corner_by_default_and_one_based_on_request() -> None:
    doc = VocDocument(filename=None, size=None, objects=(VocObject(name="cat", xmin=1, ymin=2, xmax=3, ymax=4, difficult=True, truncated=False,
        occluded=None, pose="Frontal"),))
    corner, findings = voc_objects_to_annotations(doc, width=20, height=10, one_based=False, path="a.xml")
    assert findings == []
    assert corner[0].bbox == (1.0, 2.0, 2.0, 2.0) and corner[0].area == 4.0
    assert dict(corner[0].attributes) == {"difficult": True, "truncated": False, "pose": "Frontal"}
    pascal, _ = voc_objects_to_annotations(doc, width=20, height=10, one_based=True, path="a.xml")
    assert pascal[0].bbox == (0.0, 1.0, 3.0, 3.0) and pascal[0].area == 9.0


def test_category_of_maps_and_refuses() -> None:
    doc = VocDocument(filename=None, size=None, objects=(
        VocObject(name="Cat", xmin=0, ymin=0, xmax=1, ymax=1, difficult=False, truncated=None, occluded=None, pose=None),
        VocObject(name="zebra", xmin=0, ymin=0, xmax=1, ymax=1, difficult=False, truncated=None, occluded=None, pose=None),
    ))
    table = {"Cat": "cat"}
    records, findings = voc_objects_to_annotations(doc, width=5, height=5, one_based=False, path="a.xml", category_of=lambda n: table[n])
    assert [r.category for r in records] == ["cat"]
    assert [(f.severity, f.code) for f in findings] == [("error", "unknown_label")]
    assert "object[1] ('zebra')" in findings[0].message


def test_read_classes_file(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeffdog\n\nmarinara sauce \r\ncat\n".encode("utf-8"))
    assert read_classes_file(path) == ["dog", "marinara sauce", "cat"]
    path.write_text("dog\ncat\ndog\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="line 3.*'dog' listed twice"):
        read_classes_file(path)
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="no class names"):
        read_classes_file(path)


def test_match_images_prefers_mirrored_folder_and_reports_leftovers(tmp_path: Path) -> None:
    image_of, findings = match_images(
        xmls=["train/x.xml", "val/y.xml", "z.xml"], images=["train/x.jpg", "val/x.jpg", "val/y.png", "w.jpg"],
        beside=False, src=tmp_path / "ann", image_root=tmp_path / "img")
    assert image_of == {"train/x.xml": "train/x.jpg", "val/y.xml": "val/y.png", "z.xml": None}
    assert sorted((f.code, f.file) for f in findings) == [
        ("unannotated", str(tmp_path / "img" / "val/x.jpg")), ("unannotated", str(tmp_path / "img" / "w.jpg"))]


# ---- whole conversions ------------------------------------------------------------------------------

def test_convert_writes_coco_with_sorted_ids(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pair(src / "b", "img2", objects=[{"name": "dog", "box": (5, 5, 15, 25), "difficult": 1}, {"name": "cat", "box": (0, 0, 40, 30)}])
    write_pair(src / "a", "img9", ext=".PNG", width=50, height=20, objects=[{"name": "bird", "box": (2.5, 1, 7.5, 3)}])
    write_pair(src, "neg", objects=[])
    report = convert_voc(src, tmp_path / "out", workers=1)
    assert report.exit_code() == EXIT_OK
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "a/img9.PNG", 50, 20), (2, "b/img2.jpg", 40, 30), (3, "neg.jpg", 40, 30)]
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "bird"), (2, "cat"), (3, "dog")]
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in coco["annotations"]] == [
        (1, 1, 1, [2.5, 1.0, 5.0, 2.0], 10.0, 0),
        (2, 2, 3, [5.0, 5.0, 10.0, 20.0], 200.0, 0),
        (3, 2, 2, [0.0, 0.0, 40.0, 30.0], 1200.0, 0)]
    assert coco["annotations"][1]["attributes"] == {"difficult": True}
    assert codes(tmp_path / "out") == [("info", "no_objects")]
    meta = DatasetDir(tmp_path / "out").meta()
    assert meta["format"] == "voc" and Path(meta["image_root"]) == src.resolve()
    assert DatasetDir(tmp_path / "out").image_path("a/img9.PNG").is_file()
    with open(tmp_path / "out" / "conversion_report.csv", encoding="utf-8") as fh:
        assert fh.readline().strip() == ",".join(REPORT_COLUMNS)


def test_classes_file_fixes_order_and_refuses_other_labels(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pair(src, "a", objects=[{"name": "dog", "box": (1, 1, 5, 5)}])
    write_pair(src, "b", objects=[{"name": "dog", "box": (1, 1, 5, 5)}, {"name": "zebra", "box": (1, 1, 5, 5)}])
    (tmp_path / "classes.txt").write_text("person\ndog\ncat\n", encoding="utf-8")
    report = convert_voc(src, tmp_path / "out", classes=tmp_path / "classes.txt", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "person"), (2, "dog"), (3, "cat")]
    assert [i["file_name"] for i in coco["images"]] == ["a.jpg"]  # b.xml dropped whole: one unknown label
    assert [a["category_id"] for a in coco["annotations"]] == [2]
    assert report.has_errors and report.exit_code() != EXIT_OK
    assert codes(tmp_path / "out") == [("error", "unknown_label"), ("info", "image_skipped")]


def test_images_folder_any_case_extension_and_unannotated(tmp_path: Path) -> None:
    ann, img = tmp_path / "ann", tmp_path / "img"
    (ann / "s").mkdir(parents=True)
    (ann / "s" / "a.xml").write_bytes(labelimg_xml(filename="a.jpg", width=40, height=30, objects=[{"name": "cat", "box": (1, 1, 5, 5)}]))
    write_image(img / "s" / "a.JpEg", width=40, height=30)
    write_image(img / "other.png", width=8, height=8, fmt="PNG")
    convert_voc(ann, tmp_path / "out", images=img, workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [i["file_name"] for i in coco["images"]] == ["s/a.JpEg"]
    assert DatasetDir(tmp_path / "out").image_root == img.resolve()
    assert [(r["code"], Path(r["file"]).name) for r in rows(tmp_path / "out")] == [("filename_mismatch", "a.xml"), ("unannotated", "other.png")]


def test_image_size_from_header_with_exif_and_size_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "rot.jpg", width=40, height=30, exif_orientation=6)  # displayed as 30×40
    (src / "rot.xml").write_bytes(labelimg_xml(filename="rot.jpg", width=40, height=30, objects=[{"name": "cat", "box": (1, 1, 5, 5)}]))
    write_image(src / "nosize.jpg", width=16, height=12)
    (src / "nosize.xml").write_bytes(labelimg_xml(filename="nosize.jpg", width=None, height=None, objects=[{"name": "cat", "box": (1, 1, 5, 5)}]))
    convert_voc(src, tmp_path / "out", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [("nosize.jpg", 16, 12), ("rot.jpg", 30, 40)]
    (row,) = rows(tmp_path / "out")
    assert row["code"] == "size_mismatch" and row["severity"] == "warning" and "40×30" in row["message"] and "30×40" in row["message"]


def test_duplicate_stems_warn_and_choose_deterministically(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pair(src, "a", ext=".png")
    write_image(src / "a.jpg", width=40, height=30)
    convert_voc(src, tmp_path / "out", workers=1)
    coco = read_coco(tmp_path / "out" / "instances.json")
    assert [i["file_name"] for i in coco["images"]] == ["a.jpg"]  # sorted first
    dup = [r for r in rows(tmp_path / "out") if r["code"] == "duplicate_stem"]
    assert len(dup) == 1 and "a.jpg" in dup[0]["message"] and "a.png" in dup[0]["message"]


def test_pycocotools_loads_output_and_scores_gt_as_perfect(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    src = tmp_path / "src"
    write_pair(src, "a", objects=[{"name": "cat", "box": (1, 2, 11, 22)}, {"name": "dog", "box": (20, 5, 39, 29), "difficult": 1}])
    write_pair(src, "b", objects=[{"name": "dog", "box": (0.5, 0.5, 30.5, 20.5)}])
    convert_voc(src, tmp_path / "out", workers=1)
    gt = COCO(str(tmp_path / "out" / "instances.json"))
    assert sorted(gt.getImgIds()) == [1, 2] and len(gt.getAnnIds()) == 3
    assert gt.loadAnns(gt.getAnnIds(imgIds=[2]))[0]["bbox"] == [0.5, 0.5, 30.0, 20.0]
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_workers_give_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(12):
        write_pair(src / f"d{i % 3}", f"im{i:02d}", objects=[{"name": f"c{i % 4}", "box": (i, 1, i + 5, 9)}])
    convert_voc(src, tmp_path / "one", workers=1)
    convert_voc(src, tmp_path / "two", workers=2, progress=True)
    for name in ("instances.json", "conversion_report.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_same_input_same_bytes_across_hash_seeds(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, name in enumerate(["zeta", "alpha", "mid", "beta", "omega"]):
        write_pair(src / ("x" if i % 2 else "y"), f"{name}", objects=[{"name": n, "box": (1, 1, 5 + i, 6)} for n in ("q", "b", "k", name)])
    script = "import sys; from pathlib import Path; from segpipe.converters.voc import convert_voc; convert_voc(Path(sys.argv[1]), Path(sys.argv[2]))"
    outputs = []
    for seed in ("1", "4242"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script, str(src), str(out)], check=True, cwd=REPO_ROOT, env=env)
        outputs.append((out / "instances.json").read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["categories"][0]["name"] == "alpha"


def test_source_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="not a directory"):
        convert_voc(tmp_path / "absent", tmp_path / "out")


def test_box_conventions_property() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    coord = st.integers(min_value=1, max_value=99)

    @settings(max_examples=200, deadline=None)
    @given(a=coord, b=coord, c=coord, d=coord)
    def check(a: int, b: int, c: int, d: int) -> None:
        xmin, xmax, ymin, ymax = min(a, b), max(a, b) + 1, min(c, d), max(c, d) + 1
        doc = VocDocument(filename=None, size=None, objects=(VocObject(name="o", xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax),))
        (corner,), none = voc_objects_to_annotations(doc, width=100, height=100, one_based=False, path="p.xml")
        (pascal,), _ = voc_objects_to_annotations(doc, width=100, height=100, one_based=True, path="p.xml")
        assert none == []
        assert corner.bbox == (xmin, ymin, xmax - xmin, ymax - ymin)
        assert pascal.bbox == (xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1)
        assert corner.area == (xmax - xmin) * (ymax - ymin)

    check()


def test_hidden_files_and_folders_are_not_inputs(tmp_path: Path) -> None:
    """Same rule as the pipeline's dataset fingerprint: a hidden file never changes the conversion."""
    from segpipe.core.images import walk_input_files
    from segpipe.converters.voc import convert_voc

    src = tmp_path / "src"
    (src / ".ipynb_checkpoints").mkdir(parents=True)
    Image.new("RGB", (10, 8)).save(src / "a.jpg")
    xml = ("<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
           "</bndbox></object></annotation>")
    (src / "a.xml").write_text(xml)
    (src / ".ipynb_checkpoints" / "a-checkpoint.xml").write_text(xml.replace("cat", "dog"))
    (src / "._a.xml").write_bytes(b"\x00\x05\x16\x07 AppleDouble fork")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    report = convert_voc(src, tmp_path / "out")
    coco = json.loads((tmp_path / "out" / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat"]
    assert not report.has_errors
    assert [p.name for p in walk_input_files(src)] == ["a.jpg", "a.xml"]

"""`segpipe audit --relabel` task contents, `segpipe relabel accept` and `segpipe relabel apply` on a small
synthetic dataset whose model checks are known: a wrong class, a sloppy outline, a spurious label, a missing
object, and an image without findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from defusedxml.ElementTree import fromstring
from PIL import Image

from segpipe.cli import main
from segpipe.converters.coco import dumps_coco, encode_mask, mask_bbox
from segpipe.evaluators.audit.dataset import audit_path
from segpipe.relabel import RelabelError, accept_all, apply_relabel, write_relabel_task

W, H = 60, 40
MODEL_CHECKS = ["possibly_missing", "possibly_spurious", "possibly_wrong_class", "possibly_sloppy_outline"]


def square(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def ann(i: int, image: int, cat: int, m: np.ndarray) -> dict[str, Any]:
    return {"id": i, "image_id": image, "category_id": cat, "segmentation": encode_mask(m), "bbox": list(mask_bbox(m)),
            "area": float(m.sum()), "iscrowd": 0}


def pred(image: int, cat: int, m: np.ndarray, score: float) -> dict[str, Any]:
    return {"image_id": image, "category_id": cat, "segmentation": encode_mask(m), "score": score}


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "ds"
    root.mkdir()
    images = []
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"], start=1):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(root / name)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
    anns = [
        ann(1, 1, 1, square(5, 5, 25, 25)),  # wrong class: the model says `b`
        ann(2, 2, 1, square(5, 5, 25, 25)),  # sloppy: the model's `a` is shifted by 8 px
        ann(3, 3, 2, square(30, 5, 50, 25)),  # spurious: nothing predicted here ...
        ann(4, 3, 1, square(2, 2, 20, 20)),  # ... while the model is confident about this one
        ann(5, 4, 2, square(10, 10, 30, 30)),  # correct, and the model agrees
    ]
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a", "supercategory": ""}, {"id": 2, "name": "b", "supercategory": ""}]}
    (root / "instances.json").write_bytes(dumps_coco(coco))
    preds = [
        pred(1, 2, square(5, 5, 25, 25), 0.95),
        pred(2, 1, square(13, 5, 33, 25), 0.9),
        pred(3, 1, square(2, 2, 20, 20), 0.9),
        pred(3, 2, square(30, 28, 45, 38), 0.85),  # missing: a `b` nobody labelled
        pred(4, 2, square(10, 10, 30, 30), 0.95),
    ]
    (tmp_path / "results.json").write_text(json.dumps(preds))
    return root / "instances.json", tmp_path / "results.json"


def model_findings(gt: Path, results: Path) -> pd.DataFrame:
    findings = audit_path(gt, pred=results).findings
    return findings[findings["check"].isin(MODEL_CHECKS)]


def test_the_synthetic_findings_are_the_four_known_ones(dataset: tuple[Path, Path]) -> None:
    found = model_findings(*dataset)
    assert sorted(zip(found["check"], found["image_id"])) == [
        ("possibly_missing", 3), ("possibly_sloppy_outline", 2), ("possibly_spurious", 3), ("possibly_wrong_class", 1)]


def test_cvat_task_holds_flagged_images_findings_and_suggestions(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    gt, results = dataset
    findings = model_findings(gt, results)
    tasks = write_relabel_task(gt, findings, tmp_path / "task", fmt="cvat", predictions=json.loads(results.read_text()))
    order = list(dict.fromkeys(findings["image_id"].tolist()))
    assert [t.image.image_id for t in tasks] == order and 4 not in order  # ranked as the findings; d.png has none
    root = fromstring((tmp_path / "task" / "annotations.xml").read_bytes())
    names = [im.get("name") for im in root.iterfind("image")]
    assert names == [t.task_file for t in tasks] and all(n.startswith(f"{k:04d}_") for k, n in enumerate(names, start=1))
    assert sorted(p.name for p in (tmp_path / "task" / "images").iterdir()) == sorted(names)
    declared = [el.text for el in root.iterfind("meta/task/labels/label/name")]
    assert {"a", "b", "suggested:a", "suggested:b"} <= set(declared)
    shapes = {}
    for im in root.iterfind("image"):
        for s in im:
            attrs = {a.get("name"): a.text or "" for a in s.iterfind("attribute")}
            if s.tag == "tag":  # image-level findings: the missing object
                assert s.get("label") == "segpipe_findings" and attrs["findings"].startswith("possibly_missing")
                continue
            shapes[attrs["segpipe_id"]] = (s.get("label"), attrs)
    assert "possibly_wrong_class" in shapes["1"][1]["findings"] and shapes["1"][0] == "a"
    assert shapes["3"][1]["suggestion"] == "delete"
    suggestions = {(label, a["suggestion"], a["replaces"]) for k, (label, a) in shapes.items() if k.startswith("s")}
    assert suggestions == {("suggested:b", "class", "1"), ("suggested:a", "outline", "2"), ("suggested:b", "add", "")}
    mapping = json.loads((tmp_path / "task" / "relabel.json").read_text())
    mapped = {str(s["key"]) for entry in mapping["images"] for s in entry["shapes"]}
    assert mapped == set(shapes)  # every shape maps back
    assert {(e["task_file"], e["file_name"], e["image_id"]) for e in mapping["images"]} == {(t.task_file, t.image.file_name, t.image.image_id) for t in tasks}


def test_labelme_task_findings_in_flags_and_description(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    gt, results = dataset
    tasks = write_relabel_task(gt, model_findings(gt, results), tmp_path / "task", fmt="labelme", predictions=json.loads(results.read_text()))
    by_image = {t.image.file_name: t for t in tasks}
    doc = json.loads((tmp_path / "task" / (Path(by_image["a.png"].task_file).stem + ".json")).read_text())
    assert doc["flags"] == {"possibly_wrong_class": True} and doc["imagePath"] == by_image["a.png"].task_file
    labelled = [s for s in doc["shapes"] if s["group_id"] == 1]
    assert labelled[0]["flags"] == {"possibly_wrong_class": True} and "model predicts 'b'" in labelled[0]["description"]
    suggested = [s for s in doc["shapes"] if s["label"].startswith("suggested:")]
    assert [s["label"] for s in suggested] == ["suggested:b"] and "replaces annotation 1" in suggested[0]["description"]
    doc3 = json.loads((tmp_path / "task" / (Path(by_image["c.png"].task_file).stem + ".json")).read_text())
    assert next(s for s in doc3["shapes"] if s["group_id"] == 3)["flags"] == {"possibly_spurious": True, "suggest_delete": True}


@pytest.mark.parametrize("fmt", ["cvat", "labelme"])
def test_apply_untouched_task_changes_nothing_and_drops_suggestions(dataset: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    gt, results = dataset
    write_relabel_task(gt, model_findings(gt, results), tmp_path / "task", fmt=fmt, predictions=json.loads(results.read_text()))
    result = apply_relabel(tmp_path / "task", gt.parent, tmp_path / "fixed")
    assert (tmp_path / "fixed" / "instances.json").read_bytes() == gt.read_bytes()
    assert set(result.changes["change"]) == {"suggestion_dropped"} and len(result.changes) == 3
    assert (tmp_path / "fixed" / "a.png").read_bytes() == (gt.parent / "a.png").read_bytes()


@pytest.mark.parametrize("fmt", ["cvat", "labelme"])
def test_accept_all_then_apply_relabels_reshapes_adds_and_removes(dataset: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    gt, results = dataset
    write_relabel_task(gt, model_findings(gt, results), tmp_path / "task", fmt=fmt, predictions=json.loads(results.read_text()))
    assert accept_all(tmp_path / "task") == 4
    result = apply_relabel(tmp_path / "task", gt.parent, tmp_path / "fixed")
    got = sorted((r.change, r.image_id, None if pd.isna(r.annotation_id) else int(r.annotation_id)) for r in result.changes.itertuples())
    assert got == [("added", 3, 6), ("relabelled", 1, 1), ("removed", 3, 3), ("reshaped", 2, 2)]
    fixed = json.loads((tmp_path / "fixed" / "instances.json").read_text())
    anns = {a["id"]: a for a in fixed["annotations"]}
    assert anns[1]["category_id"] == 2 and anns[1]["segmentation"] == json.loads(gt.read_text())["annotations"][0]["segmentation"]
    assert anns[2]["bbox"] == [13.0, 5.0, 20.0, 20.0]
    assert 3 not in anns and anns[6]["category_id"] == 2 and anns[6]["bbox"] == [30.0, 28.0, 15.0, 10.0]
    assert anns[5] == json.loads(gt.read_text())["annotations"][4]  # the image without findings, as it was
    after = model_findings(tmp_path / "fixed" / "instances.json", results)
    assert after.empty  # the model and the labels now agree everywhere


def test_unknown_label_refuses_and_writes_nothing(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    gt, results = dataset
    write_relabel_task(gt, model_findings(gt, results), tmp_path / "task", fmt="labelme", predictions=json.loads(results.read_text()))
    path = next((tmp_path / "task").glob("0001_*.json"))
    doc = json.loads(path.read_text())
    doc["shapes"][0]["label"] = "zebra"
    path.write_text(json.dumps(doc))
    (tmp_path / "task" / "classes.txt").write_text("a\nb\nsuggested:a\nsuggested:b\nzebra\n")
    with pytest.raises(RelabelError, match="zebra"):
        apply_relabel(tmp_path / "task", gt.parent, tmp_path / "fixed")
    assert not (tmp_path / "fixed").exists()
    run = CliRunner().invoke(main, ["relabel", "apply", str(tmp_path / "task"), "--dataset", str(gt.parent), "-o", str(tmp_path / "fixed")])
    assert run.exit_code == 1 and "zebra" in run.output


def test_cli_audit_relabel_accept_apply(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    gt, results = dataset
    runner = CliRunner()
    audit = runner.invoke(main, ["audit", str(gt), "--pred", str(results), "-o", str(tmp_path / "audit"), "--relabel", "cvat", "--top", "0"])
    assert audit.exit_code == 0, audit.output
    task = tmp_path / "audit" / "relabel"
    assert (task / "annotations.xml").is_file() and (task / "relabel.json").is_file()
    assert runner.invoke(main, ["relabel", "accept", str(task)]).exit_code == 0
    applied = runner.invoke(main, ["relabel", "apply", str(task), "--dataset", str(gt), "-o", str(tmp_path / "fixed")])
    assert applied.exit_code == 0, applied.output
    assert "1 added, 1 removed, 1 relabelled, 1 reshaped" in applied.output
    assert (tmp_path / "fixed" / "relabel_changes.csv").is_file() and (tmp_path / "fixed" / "dataset.json").is_file()


@pytest.mark.parametrize("fmt", ["cvat", "labelme"])
def test_task_is_byte_identical_on_rerun(dataset: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    gt, results = dataset
    findings = model_findings(gt, results)
    for name in ("a", "b"):
        write_relabel_task(gt, findings, tmp_path / name, fmt=fmt, predictions=json.loads(results.read_text()))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_labelme_filled_hole_of_an_untouched_shape_is_not_a_reshape(tmp_path: Path) -> None:
    """LabelMe polygons cannot hold holes: a shape read back as its filled outline was not edited."""
    root = tmp_path / "ds"
    root.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "a.png")
    ring = square(5, 5, 30, 30) & ~square(12, 12, 20, 20)
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "annotations": [ann(1, 1, 1, ring)],
            "categories": [{"id": 1, "name": "a", "supercategory": ""}]}
    (root / "instances.json").write_bytes(dumps_coco(coco))
    findings = pd.DataFrame([{"check": "area_outlier", "severity": "warning", "image_id": 1, "file_name": "a.png", "annotation_id": 1,
                              "category": "a", "score": 0.7, "message": "large"}])
    write_relabel_task(root, findings, tmp_path / "task", fmt="labelme")
    result = apply_relabel(tmp_path / "task", root, tmp_path / "fixed")
    assert result.changes.empty
    assert (tmp_path / "fixed" / "instances.json").read_bytes() == (root / "instances.json").read_bytes()


def test_findings_with_nullable_integer_columns() -> None:
    """findings.parquet read back gives pandas' nullable Int64 columns: missing ids are NA, not NaN."""
    from segpipe.relabel import _finding_records

    frame = pd.DataFrame({"check": ["x", "y"], "severity": ["warning"] * 2, "image_id": pd.array([1, None], dtype="Int64"),
                          "annotation_id": pd.array([None, 3], dtype="Int64"), "category": ["a", "b"], "score": [0.5, 0.4], "message": ["m", "n"]})
    assert _finding_records(frame) == [{"check": "x", "severity": "warning", "image_id": 1, "annotation_id": None, "category": "a",
                                        "score": 0.5, "message": "m"}]

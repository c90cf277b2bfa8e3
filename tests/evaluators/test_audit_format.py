"""Format and integrity checks of the audit: each one triggered by a small COCO dict / file, and not by a clean one."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segpipe.converters.coco import encode_mask as rle_of
from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.dataset import audit_dataset

W, H = 40, 30


def mask_ann(ann_id: int, image_id: int, cat: int, x0: int, y0: int, x1: int, y1: int, *, w: int = W, h: int = H) -> dict[str, Any]:
    """A rectangle mask annotation with exact area and bbox (converters/coco.py conventions)."""
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "iscrowd": 0,
        "segmentation": rle_of(m),
        "area": float(m.sum()),
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
    }


def write_png(path: Path, *, w: int = W, h: int = H, seed: int = 0) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def clean_coco(tmp_path: Path) -> dict[str, Any]:
    """Two images on disk with distinct content, three well-formed mask annotations, two categories."""
    for k, name in enumerate(("a.png", "b.png")):
        write_png(tmp_path / name, seed=k)
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}, {"id": 2, "file_name": "b.png", "width": W, "height": H}],
        "annotations": [mask_ann(1, 1, 1, 2, 2, 12, 10), mask_ann(2, 1, 2, 20, 5, 35, 25), mask_ann(3, 2, 1, 5, 5, 15, 20)],
        "categories": [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog", "supercategory": ""}],
    }


FORMAT_CHECKS = (
    F.CHECK_ANNOTATION_ID_ZERO,
    F.CHECK_ANNOTATION_ID_DUPLICATE,
    F.CHECK_IMAGE_ID_DUPLICATE,
    F.CHECK_UNKNOWN_IMAGE,
    F.CHECK_CROWD_OBJECT,
    F.CHECK_UNKNOWN_CATEGORY,
    F.CHECK_BBOX_OUTSIDE,
    F.CHECK_SEGMENTATION_OUTSIDE,
    F.CHECK_DEGENERATE,
    F.CHECK_NON_FINITE,
    F.CHECK_BAD_SEGMENTATION,
    F.CHECK_RLE_SIZE,
    F.CHECK_AREA_MISMATCH,
    F.CHECK_IMAGE_MISSING,
    F.CHECK_IMAGE_UNREADABLE,
    F.CHECK_IMAGE_SIZE,
    F.CHECK_DUPLICATE_IMAGE,
    F.CHECK_CROSS_SPLIT,
)


def checks_of(coco: dict[str, Any], root: Path | None, **kwargs: Any) -> pd.DataFrame:
    return audit_dataset(coco, image_root=root, **kwargs).findings


def test_clean_dataset_has_no_format_findings(tmp_path: Path) -> None:
    found = checks_of(clean_coco(tmp_path), tmp_path)
    assert not set(found["check"]) & set(FORMAT_CHECKS), found


def _mutated(tmp_path: Path, mutate: Any) -> pd.DataFrame:
    coco = clean_coco(tmp_path)
    mutate(coco)
    return checks_of(coco, tmp_path)


def _poly_ann(ann_id: int, coords: list[float], *, crowd: int = 0) -> dict[str, Any]:
    rle = mask_utils.merge(mask_utils.frPyObjects([coords], H, W))
    return {
        "id": ann_id,
        "image_id": 2,
        "category_id": 2,
        "iscrowd": crowd,
        "segmentation": [coords],
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


CASES: dict[str, tuple[str, Any]] = {
    "id zero": (F.CHECK_ANNOTATION_ID_ZERO, lambda c: c["annotations"][0].update(id=0)),
    "duplicate ann id": (F.CHECK_ANNOTATION_ID_DUPLICATE, lambda c: c["annotations"][1].update(id=1)),
    "duplicate image id": (F.CHECK_IMAGE_ID_DUPLICATE, lambda c: c["images"].append({"id": 1, "file_name": "b.png", "width": W, "height": H})),
    "unknown image": (F.CHECK_UNKNOWN_IMAGE, lambda c: c["annotations"][0].update(image_id=99)),
    "crowd rle": (F.CHECK_CROWD_OBJECT, lambda c: c["annotations"][0].update(iscrowd=1)),
    "crowd polygon": (F.CHECK_CROWD_OBJECT, lambda c: c["annotations"].append(_poly_ann(7, [1, 1, 9, 1, 9, 9, 1, 9], crowd=1))),
    "unknown category": (F.CHECK_UNKNOWN_CATEGORY, lambda c: c["annotations"][0].update(category_id=5)),
    "bbox outside": (F.CHECK_BBOX_OUTSIDE, lambda c: c["annotations"][0].update(bbox=[30.0, 2.0, 15.0, 8.0])),
    "polygon outside": (F.CHECK_SEGMENTATION_OUTSIDE, lambda c: c["annotations"].append(_poly_ann(7, [30, 1, 45, 1, 45, 9, 30, 9]))),
    "zero width": (F.CHECK_DEGENERATE, lambda c: c["annotations"][0].update(bbox=[2.0, 2.0, 0.0, 8.0])),
    "negative height": (F.CHECK_DEGENERATE, lambda c: c["annotations"][0].update(bbox=[2.0, 2.0, 10.0, -8.0])),
    "image size zero": (F.CHECK_DEGENERATE, lambda c: c["images"][1].update(width=0)),
    "nan bbox": (F.CHECK_NON_FINITE, lambda c: c["annotations"][0].update(bbox=[float("nan"), 2.0, 10.0, 8.0])),
    "inf area": (F.CHECK_NON_FINITE, lambda c: c["annotations"][0].update(area=float("inf"))),
    "inf polygon": (
        F.CHECK_NON_FINITE,
        lambda c: c["annotations"].append({**_poly_ann(7, [1, 1, 9, 1, 9, 9, 1, 9]), "segmentation": [[1, 1, float("inf"), 1, 9, 9]]}),
    ),
    "bad segmentation": (F.CHECK_BAD_SEGMENTATION, lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]])),
    "corrupt rle": (F.CHECK_BAD_SEGMENTATION, lambda c: c["annotations"][0].update(segmentation={"size": [H, W], "counts": "\x7f\x7f"})),
    "rle runs overrun the mask": (F.CHECK_BAD_SEGMENTATION, lambda c: c["annotations"][0].update(segmentation={"size": [H, W], "counts": "o?o?o?"})),
    "rle size": (F.CHECK_RLE_SIZE, lambda c: c["annotations"][0].update(segmentation={**c["annotations"][0]["segmentation"], "size": [W, H]})),
    "area": (F.CHECK_AREA_MISMATCH, lambda c: c["annotations"][0].update(area=40.0)),
    "box-only area": (F.CHECK_AREA_MISMATCH, lambda c: c["annotations"][0].update(segmentation=[], area=99.0)),
    "missing image": (F.CHECK_IMAGE_MISSING, lambda c: c["images"][1].update(file_name="nope.png")),
    "image size": (F.CHECK_IMAGE_SIZE, lambda c: c["images"][1].update(width=W + 1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_format_check_triggers(tmp_path: Path, name: str) -> None:
    check, mutate = CASES[name]
    found = _mutated(tmp_path, mutate)
    rows = found[found["check"] == check]
    assert len(rows) >= 1, found
    assert rows["score"].between(0, 1).all()


def test_uncompressed_rle_and_polygon_are_accepted(tmp_path: Path) -> None:
    coco = clean_coco(tmp_path)
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    m[3:9, 4:10] = 1
    flat = m.flatten(order="F")
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat.astype(np.int64), -1]) != 0)).tolist()  # starts with a run of zeros
    coco["annotations"].append(
        {
            "id": 8,
            "image_id": 2,
            "category_id": 2,
            "iscrowd": 0,
            "area": 36.0,
            "bbox": [4.0, 3.0, 6.0, 6.0],
            "segmentation": {"size": [H, W], "counts": runs},
        }
    )
    coco["annotations"].append(_poly_ann(9, [20, 10, 30, 10, 30, 20, 20, 20]))
    found = checks_of(coco, tmp_path)
    assert not set(found["check"]) & set(FORMAT_CHECKS), found


def test_unreadable_image(tmp_path: Path) -> None:
    coco = clean_coco(tmp_path)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    found = checks_of(coco, tmp_path)
    assert (found["check"] == F.CHECK_IMAGE_UNREADABLE).sum() == 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    coco = clean_coco(tmp_path)
    exif = Image.Exif()
    exif[274] = 6  # rotated 90 degrees: displayed H x W
    Image.fromarray(np.zeros((W, H, 3), dtype=np.uint8)).save(tmp_path / "b.jpg", exif=exif)
    coco["images"][1]["file_name"] = "b.jpg"  # stored W wide after rotation... recorded as displayed: W x H
    found = checks_of(coco, tmp_path)
    assert F.CHECK_IMAGE_SIZE not in set(found["check"])
    coco["images"][1].update(width=H, height=W)  # the stored (unrotated) size is wrong once EXIF is applied
    for a in coco["annotations"]:
        if a["image_id"] == 2:
            a["segmentation"]["size"] = [W, H]
    assert F.CHECK_IMAGE_SIZE in set(checks_of(coco, tmp_path)["check"])


def test_duplicate_images_and_splits(tmp_path: Path) -> None:
    coco = clean_coco(tmp_path)
    (tmp_path / "c.png").write_bytes((tmp_path / "a.png").read_bytes())
    coco["images"].append({"id": 3, "file_name": "c.png", "width": W, "height": H})
    found = checks_of(coco, tmp_path)
    assert found.loc[found["check"] == F.CHECK_DUPLICATE_IMAGE, "image_id"].tolist() == [3]
    assert F.CHECK_CROSS_SPLIT not in set(found["check"])
    coco["images"][0]["split"] = "train"
    coco["images"][2]["split"] = "val"
    found = checks_of(coco, tmp_path)
    assert sorted(found.loc[found["check"] == F.CHECK_CROSS_SPLIT, "image_id"].tolist()) == [1, 3]


def test_conversion_report_rows_are_carried_in(tmp_path: Path) -> None:
    text = (
        "file,severity,code,message\nxmls/b.xml,warning,size_mismatch,<size> says 1x1\nxmls/zzz.xml,error,bad_xml,truncated\n,info,no_list,no list\n"
    )
    rows = pd.read_csv(io.StringIO(text))  # as pipeline/tasks/audit.py reads it: the empty file cell is NaN
    found = checks_of(clean_coco(tmp_path), tmp_path, conversion_findings=rows)
    conv = found[found["check"].str.startswith(F.CHECK_CONVERSION_PREFIX)]
    assert sorted(conv["check"]) == ["conversion:bad_xml", "conversion:no_list", "conversion:size_mismatch"]
    assert conv.loc[conv["check"] == "conversion:no_list", "file_name"].tolist() == [""]
    assert conv.loc[conv["check"] == "conversion:size_mismatch", "image_id"].tolist() == [2]
    assert conv.loc[conv["check"] == "conversion:bad_xml", "score"].tolist() == [1.0]


def test_findings_are_sorted_and_deterministic(tmp_path: Path) -> None:
    coco = clean_coco(tmp_path)
    coco["annotations"][0]["id"] = 0
    coco["annotations"][1]["area"] = 1.0
    a = checks_of(coco, tmp_path)
    shuffled = copy.deepcopy(coco)
    shuffled["annotations"].reverse()
    shuffled["images"].reverse()
    b = checks_of(shuffled, tmp_path)
    assert list(a.columns) == list(F.FINDING_COLUMNS)
    assert a["score"].is_monotonic_decreasing
    pd.testing.assert_frame_equal(a.drop(columns="message"), b.drop(columns="message"))


def test_summary_counts(tmp_path: Path) -> None:
    coco = clean_coco(tmp_path)
    coco["annotations"][0]["id"] = 0
    result = audit_dataset(coco, image_root=tmp_path)
    row = result.summary[result.summary["check"] == F.CHECK_ANNOTATION_ID_ZERO]
    assert row[["severity", "count"]].values.tolist() == [["error", 1]]
    assert result.summary["count"].sum() == len(result.findings)


def test_peer_coco_files(peers: Path) -> None:
    """Real COCO files: val2014's 9 crowd regions are flagged, nothing crashes, Datumaro's images/<split>/ is found."""
    import json

    from segpipe.evaluators.audit.dataset import audit_path

    gt = json.loads((peers / "faster_coco_eval" / "instances_val2014_100.json").read_text())
    found = audit_dataset(gt, image_root=None).findings
    crowd = sorted(a["id"] for a in gt["annotations"] if a["iscrowd"])
    assert sorted(found.loc[found["check"] == F.CHECK_CROWD_OBJECT, "annotation_id"]) == crowd
    assert not set(found["check"]) & {F.CHECK_ANNOTATION_ID_ZERO, F.CHECK_ANNOTATION_ID_DUPLICATE, F.CHECK_BAD_SEGMENTATION, F.CHECK_RLE_SIZE}
    for split in ("train", "val"):
        f = audit_path(peers / "datumaro" / "coco_dataset" / "coco_instances" / "annotations" / f"instances_{split}.json").findings
        assert F.CHECK_IMAGE_MISSING not in set(f["check"]), f
    f = audit_path(peers / "faster_coco_eval" / "gt_dataset.json").findings  # file_name <-> id shuffled, images beside it
    assert not set(f["check"]) & set(FORMAT_CHECKS), f

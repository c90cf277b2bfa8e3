"""Geometry/statistics checks and the Oxford-IIIT Pet layout checks: each triggered, and quiet on clean data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest

from segpipe.converters.coco import assemble_coco, CategoryRecord, ImageRecord, AnnotationRecord, mask_annotation, write_coco
from segpipe.core.dataset_layout import write_dataset_meta
from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.dataset import audit_dataset, audit_path
from segpipe.evaluators.audit.geometry_checks import PetLayout, robust_z
from tests.evaluators.test_audit_format import rle_of

S = 64  # image side


def rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((S, S), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def dataset(masks: list[list[tuple[int, np.ndarray]]], *, names: tuple[str, ...] = ("cat", "dog")) -> dict[str, Any]:
    """COCO dict from per-image lists of (category id, mask)."""
    images, anns = [], []
    for i, objs in enumerate(masks, start=1):
        images.append({"id": i, "file_name": f"im{i:03d}.png", "width": S, "height": S})
        for cat, m in objs:
            ys, xs = np.nonzero(m)
            bbox = (
                [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
                if len(xs)
                else [0.0, 0.0, 1.0, 1.0]
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "iscrowd": 0,
                    "segmentation": rle_of(m),
                    "area": float(m.sum()),
                    "bbox": bbox,
                }
            )
    return {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(names)]}


def clean_masks(n: int = 24) -> list[list[tuple[int, np.ndarray]]]:
    """Squares of side 10-13 around the centre for cats, 14-17 for dogs: no outlier, no duplicate, one piece."""
    out = []
    for i in range(n):
        s, d = 10 + i % 4, 14 + i % 4
        cx = 26 + (i % 5)
        out.append([(1, rect(cx - s // 2, 10, cx - s // 2 + s, 10 + s)), (2, rect(cx - d // 2, 36, cx - d // 2 + d, 36 + d))])
    return out


def found(coco: dict[str, Any], **kwargs: Any) -> pd.DataFrame:
    return audit_dataset(coco, image_root=None, **kwargs).findings


GEOMETRY_CHECKS = (
    F.CHECK_AREA_OUTLIER,
    F.CHECK_ASPECT_OUTLIER,
    F.CHECK_POSITION_OUTLIER,
    F.CHECK_FEW_INSTANCES,
    F.CHECK_CLASS_IMBALANCE,
    F.CHECK_NEAR_DUPLICATE,
    F.CHECK_EMPTY_MASK,
    F.CHECK_TINY_MASK,
    F.CHECK_FRAGMENTED_MASK,
)


def test_robust_z_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=101)
    mad = np.median(np.abs(v - np.median(v)))
    np.testing.assert_allclose(robust_z(v), 0.6745 * (v - np.median(v)) / mad)
    assert robust_z(np.ones(5)).tolist() == [0.0] * 5


def test_clean_dataset_has_no_geometry_findings() -> None:
    f = found(dataset(clean_masks()))
    assert not set(f["check"]) & set(GEOMETRY_CHECKS), f


def _with(extra: list[tuple[int, np.ndarray]]) -> dict[str, Any]:
    masks = clean_masks()
    masks[3] = masks[3] + extra
    return dataset(masks)


@pytest.mark.parametrize(
    "check,extra",
    [
        (F.CHECK_AREA_OUTLIER, [(1, rect(0, 0, 60, 60))]),  # a 60x60 "cat" among 10-13 px squares
        (F.CHECK_ASPECT_OUTLIER, [(1, rect(20, 30, 60, 34))]),  # 40x4 among squares
        (F.CHECK_POSITION_OUTLIER, [(2, rect(50, 0, 64, 14))]),  # a dog in the top right corner
        (F.CHECK_NEAR_DUPLICATE, None),
        (F.CHECK_EMPTY_MASK, [(1, np.zeros((S, S), dtype=np.uint8))]),
        (F.CHECK_TINY_MASK, [(2, rect(5, 5, 7, 8))]),
    ],
)
def test_geometry_check_triggers(check: str, extra: list | None) -> None:
    if extra is None:  # a copy of image 4's cat, one pixel wider: IoU > 0.9
        m = clean_masks()[3][0][1].copy()
        ys, xs = np.nonzero(m)
        m[ys.min() : ys.max() + 1, xs.max() + 1] = 1
        extra = [(1, m)]
    f = found(_with(extra))
    rows = f[f["check"] == check]
    assert len(rows) == 1, f
    assert rows["image_id"].tolist() == [4]


def test_fragmented_mask() -> None:
    speckle = np.zeros((S, S), dtype=np.uint8)
    speckle[::8, ::8] = 1  # 64 single pixels, none touching
    f = found(_with([(1, speckle)]))
    assert (f["check"] == F.CHECK_FRAGMENTED_MASK).sum() == 1
    few = np.zeros((S, S), dtype=np.uint8)
    few[0:4, 0:4] = few[10:14, 10:14] = few[20:24, 20:24] = 1  # 3 pieces: fine
    assert F.CHECK_FRAGMENTED_MASK not in set(found(_with([(1, few)]))["check"])


def test_few_instances_and_imbalance() -> None:
    masks = clean_masks()
    masks[0] = masks[0] + [(3, rect(1, 1, 11, 11))]
    f = found(dataset(masks, names=("cat", "dog", "bird")))
    assert f.loc[f["check"] == F.CHECK_FEW_INSTANCES, "category"].tolist() == ["bird"]
    assert f.loc[f["check"] == F.CHECK_CLASS_IMBALANCE, "category"].tolist() == ["bird"]
    assert f.loc[f["check"] == F.CHECK_FEW_INSTANCES, "image_id"].isna().all()


def test_box_only_dataset_gets_statistics() -> None:
    coco = dataset(clean_masks())
    for a in coco["annotations"]:
        a["segmentation"] = []
        a["area"] = a["bbox"][2] * a["bbox"][3]
    coco["annotations"].append({"id": 999, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 3000.0, "bbox": [2.0, 2.0, 60.0, 50.0]})
    f = found(coco)
    assert f.loc[f["check"] == F.CHECK_AREA_OUTLIER, "annotation_id"].tolist() == [999]


# --- Oxford-IIIT Pet layout -------------------------------------------------------------------------------


def _pet_dataset(
    tmp_path: Path,
    *,
    stems: tuple[str, ...] = ("Abyssinian_1", "beagle_2", "Bengal_3"),
    head_species: dict[str, str] | None = None,
    list_lines: list[str] | None = None,
    test_split: list[str] | None = None,
    empty: str | None = None,
    head_box: dict[str, tuple[float, float, float, float]] | None = None,
) -> Path:
    """A converted oxford-pet dataset dir (as converters/oxford_pet.py writes it) with a pet square in each image."""
    root = tmp_path / "pets"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    out = tmp_path / "converted"
    (out / "semantic").mkdir(parents=True)
    records, heads = [], []
    for k, stem in enumerate(stems):
        pixels = np.full((S, S, 3), k, dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), pixels)
        pet = rect(16, 16, 48, 48) if stem != empty else np.zeros((S, S), dtype=np.uint8)
        sem = pet.copy()
        cv2.imwrite(str(out / "semantic" / f"{stem}.png"), sem)
        breed = stem.rsplit("_", 1)[0]
        anns = (mask_annotation(category=breed, mask=pet.astype(bool)),) if pet.any() else ()
        records.append(ImageRecord(file_name=f"{stem}.png", width=S, height=S, annotations=anns))
        species = (head_species or {}).get(stem, "cat" if breed[0].isupper() else "dog")
        box = (head_box or {}).get(stem, (20.0, 20.0, 12.0, 12.0))
        heads.append(
            ImageRecord(file_name=f"{stem}.png", width=S, height=S, annotations=(AnnotationRecord(category=species, bbox=box, area=box[2] * box[3]),))
        )
    breeds = sorted({s.rsplit("_", 1)[0] for s in stems})
    cats = [CategoryRecord(name=b, supercategory="cat" if b[0].isupper() else "dog") for b in breeds]
    write_coco(out / "instances.json", assemble_coco(images=records, categories=cats))
    write_coco(out / "heads.json", assemble_coco(images=heads, categories=[CategoryRecord("cat", "animal"), CategoryRecord("dog", "animal")]))
    write_dataset_meta(out, format="oxford-pet", image_root=root / "images", options={"border": "ignore", "categories": "breed"})
    lines = list_lines if list_lines is not None else [f"{s} 1 {1 if s[0].isupper() else 2} 1" for s in stems]
    (root / "annotations" / "list.txt").write_text("#h\n" + "\n".join(lines) + "\n")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(test_split or []) + "\n")
    return out


PET_CHECKS = (F.CHECK_HEAD_OUTSIDE_PET, F.CHECK_EMPTY_TRIMAP, F.CHECK_NOT_IN_LIST, F.CHECK_SPECIES_MISMATCH, F.CHECK_CROSS_SPLIT)


def _pet_findings(out: Path) -> pd.DataFrame:
    f = audit_path(out).findings
    return f[f["check"].isin(PET_CHECKS)]


def test_clean_pet_layout_has_no_pet_findings(tmp_path: Path) -> None:
    assert _pet_findings(_pet_dataset(tmp_path)).empty


@pytest.mark.parametrize(
    "check,kwargs",
    [
        (F.CHECK_HEAD_OUTSIDE_PET, {"head_box": {"beagle_2": (0.0, 0.0, 10.0, 10.0)}}),
        (F.CHECK_EMPTY_TRIMAP, {"empty": "beagle_2"}),
        (F.CHECK_NOT_IN_LIST, {"list_lines": ["Abyssinian_1 1 1 1", "Bengal_3 2 1 2"]}),
        (F.CHECK_SPECIES_MISMATCH, {"head_species": {"beagle_2": "cat"}}),
        (F.CHECK_SPECIES_MISMATCH, {"list_lines": ["Abyssinian_1 1 1 1", "beagle_2 3 1 3", "Bengal_3 2 1 2"]}),
        (F.CHECK_CROSS_SPLIT, {"test_split": ["beagle_2 3 2 1"]}),
    ],
)
def test_pet_check_triggers(tmp_path: Path, check: str, kwargs: dict[str, Any]) -> None:
    f = _pet_findings(_pet_dataset(tmp_path, **kwargs))
    assert f["check"].tolist() == [check], f
    assert f["file_name"].tolist() == ["beagle_2.png"]


def test_pet_layout_checks_on_in_memory_inputs() -> None:
    coco = dataset([[(1, rect(16, 16, 48, 48))]], names=("Abyssinian",))
    coco["images"][0]["file_name"] = "Abyssinian_1.jpg"
    layout = PetLayout(heads={"Abyssinian_1": (("dog", (20.0, 20.0, 8.0, 8.0)),)}, list_species={"Abyssinian_1": "cat"})
    f = found(coco, pet_layout=layout)
    assert f.loc[f["check"].isin(PET_CHECKS), "check"].tolist() == [F.CHECK_SPECIES_MISMATCH]
    assert "head box (dog)" in f.loc[f["check"] == F.CHECK_SPECIES_MISMATCH, "message"].item()


def _raw_pet_layout(root: Path, *, stems: tuple[str, ...], species_in_xml: dict[str, str], listed: tuple[str, ...]) -> None:
    """An Oxford-IIIT Pet folder as the real dataset has it: images, trimaps (1 pet, 2 bg, 3 border), head XMLs, list.txt."""
    for sub in ("images", "annotations/trimaps", "annotations/xmls"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate(stems):
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), np.full((S, S, 3), 40 * k, dtype=np.uint8))
        tri = np.full((S, S), 2, dtype=np.uint8)
        tri[14:50, 14:50] = 3
        tri[16:48, 16:48] = 1
        cv2.imwrite(str(root / "annotations" / "trimaps" / f"{stem}.png"), tri)
        sp = species_in_xml.get(stem, "cat" if stem[0].isupper() else "dog")
        (root / "annotations" / "xmls" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{S}</width><height>{S}</height><depth>3</depth></size>"
            f"<object><name>{sp}</name><bndbox><xmin>20</xmin><ymin>18</ymin><xmax>36</xmax><ymax>32</ymax></bndbox>"
            "<difficult>0</difficult></object></annotation>"
        )
    lines = [f"{s} {1 if s[0].isupper() else 2} {1 if s[0].isupper() else 2} 1" for s in listed]
    (root / "annotations" / "list.txt").write_text("\n".join(["#"] * 6 + lines) + "\n")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations" / "test.txt").write_text("")


def test_audit_of_a_real_oxford_pet_conversion(tmp_path: Path) -> None:
    """Through segpipe.converters.oxford_pet: the audit reads what the converter writes (heads.json, list.txt, semantic/)."""
    from segpipe.converters.oxford_pet import convert_oxford_pet

    stems = ("Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2")
    root = tmp_path / "raw"
    _raw_pet_layout(root, stems=stems, species_in_xml={}, listed=stems)
    convert_oxford_pet(root, tmp_path / "clean", workers=1)
    f = audit_path(tmp_path / "clean").findings
    assert f[f["check"].isin(PET_CHECKS)].empty, f
    _raw_pet_layout(root, stems=stems, species_in_xml={"beagle_2": "cat"}, listed=stems[:3])
    convert_oxford_pet(root, tmp_path / "dirty", workers=1)
    f = audit_path(tmp_path / "dirty").findings
    pet = f[f["check"].isin(PET_CHECKS)]
    assert sorted(pet["check"]) == [F.CHECK_NOT_IN_LIST, F.CHECK_SPECIES_MISMATCH], pet
    assert set(pet["file_name"]) == {"beagle_2.jpg"}
    assert "conversion:not_in_list" in set(f["check"])


def test_area_is_compared_relative_to_the_image() -> None:
    """The same framing photographed at 4x the resolution is no outlier (absolute pixels would flag it:
    16x the area); a box covering a far smaller share of its image than the others still is."""
    images, anns = [], []
    for i in range(24):
        scale = 4 if i % 6 == 0 else 1  # every sixth photo is large
        w, h = 100 * scale, 80 * scale
        images.append({"id": i + 1, "file_name": f"im{i:03d}.png", "width": w, "height": h})
        bw, bh = (40 + i % 4) * scale, (30 + i % 3) * scale  # about 15% of the image, whatever its size
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": float(bw * bh),
                     "bbox": [30.0 * scale, 25.0 * scale, float(bw), float(bh)], "segmentation": []})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "pet", "supercategory": ""}]}
    absolute = np.log([a["area"] for a in anns])  # independent check that absolute areas *would* be outliers
    assert (np.abs(robust_z(absolute, min_mad=0.05)) > 3.5).sum() >= 4
    f = found(coco)
    assert not (f["check"] == F.CHECK_AREA_OUTLIER).any(), f[f["check"] == F.CHECK_AREA_OUTLIER]["message"].tolist()
    # a 40x30 box in a 400x320 photo: 16x less of its image than the others
    images.append({"id": 99, "file_name": "big.png", "width": 400, "height": 320})
    anns.append({"id": 99, "image_id": 99, "category_id": 1, "iscrowd": 0, "area": 1200.0, "bbox": [120.0, 100.0, 40.0, 30.0],
                 "segmentation": []})
    f = found(coco)
    hit = f[f["check"] == F.CHECK_AREA_OUTLIER]
    assert hit["annotation_id"].tolist() == [99] and "of the image" in hit["message"].iloc[0]


def test_shifted_duplicate_below_the_fixed_cut_off_is_found_by_distribution() -> None:
    """A copy of image 4's dog moved 1 px (IoU ~0.88 < 0.9) in a dataset where same-class objects never overlap."""
    masks = clean_masks()
    dog = masks[3][1][1]
    moved = np.roll(dog, 1, axis=1)
    inter, union = np.count_nonzero(dog & moved), np.count_nonzero(dog | moved)
    assert 0.8 < inter / union < 0.9  # the pair the old fixed 0.9 rule missed
    masks[3] = masks[3] + [(2, moved)]
    coco = dataset(masks)
    f = found(coco)
    rows = f[f["check"] == F.CHECK_NEAR_DUPLICATE]
    later = max(a["id"] for a in coco["annotations"] if a["image_id"] == 4)
    assert rows[["image_id", "annotation_id"]].values.tolist() == [[4, later]]
    # p = 0 (no other overlapping pair): 0.9 x IoU, the IoU computed here with numpy
    assert rows["score"].item() == pytest.approx(0.9 * inter / union, abs=1e-6)


def test_overlap_that_is_usual_in_the_dataset_is_not_a_duplicate() -> None:
    """Every image has two dogs overlapping at IoU ~0.6 to 0.8 (a crowd): none is a near duplicate."""
    masks = []
    for i in range(24):
        a = rect(10, 10, 30, 30)
        b = rect(10 + 3 + i % 3, 10, 30 + 3 + i % 3, 30)
        masks.append([(2, a), (2, b)])
    f = found(dataset(masks))
    assert f[f["check"] == F.CHECK_NEAR_DUPLICATE].empty


def test_empty_image_where_all_others_are_annotated(tmp_path: Path) -> None:
    """A bare COCO file: 2 of 30 images lost their only annotation; found without predictions, through the CLI."""
    from click.testing import CliRunner

    from segpipe.cli import main

    coco = dataset(clean_masks(30))
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in (5, 17)]
    path = tmp_path / "instances.json"
    path.write_text(__import__("json").dumps(coco), encoding="utf-8")
    f = audit_path(path).findings
    rows = f[f["check"] == F.CHECK_EMPTY_IMAGE]
    assert rows["image_id"].tolist() == [5, 17]
    assert rows["score"].tolist() == pytest.approx([0.6 * (1 - (1 / 29) / 0.1)] * 2, abs=1e-6)
    result = CliRunner().invoke(main, ["audit", str(path), "-o", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    assert "empty_image" in (tmp_path / "audit" / "findings.csv").read_text(encoding="utf-8")
    # Many background images: emptiness is this dataset's habit, not a finding.
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] > 6]
    assert found(coco).query("check == @F.CHECK_EMPTY_IMAGE").empty

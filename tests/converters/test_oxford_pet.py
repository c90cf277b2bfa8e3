"""Oxford-IIIT Pet layout: list.txt parsing, category levels, heads.json, splits, quirks of the real dataset."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from segpipe.core.errors import AnnotationError
from segpipe.converters.oxford_pet import convert_oxford_pet, parse_head_boxes
from segpipe.core.pet_list import LIST_HEADER, PetListEntry, format_pet_list, parse_pet_list, parse_split_names
from segpipe.converters.pet_categories import pet_categories
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from segpipe.converters.trimap import TRIMAP_BORDER, TRIMAP_PET
from segpipe.demo.sample import OXFORD_PET_BREEDS, generate_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("sample") / "pets", n_images=24, seed=0)


def rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "conversion_report.csv").read_text(encoding="utf-8"))))


def test_parse_pet_list_with_and_without_header() -> None:
    body = "Abyssinian_1 1 1 1\nbeagle_10 5 2 4\n"
    expected = [PetListEntry("Abyssinian_1", 1, 1, 1), PetListEntry("beagle_10", 5, 2, 4)]
    assert parse_pet_list(body, path="l.txt") == expected
    assert parse_pet_list("\n".join(LIST_HEADER) + "\n" + body, path="l.txt") == expected
    assert parse_pet_list(format_pet_list(expected, header=True), path="l.txt") == expected
    assert expected[1].breed == "beagle" and expected[1].species_name == "dog"
    assert parse_split_names("Abyssinian_1 1 1 1\n\nbeagle_10 5 2 4\n") == ["Abyssinian_1", "beagle_10"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("Abyssinian_1 1 1\n", "line 1"),
        ("#h\nAbyssinian_1 one 1 1\n", "line 2"),
        ("Abyssinian_1 1 3 1\n", "line 1.SPECIES"),
        ("Abyssinian_1 0 1 1\n", "line 1.CLASS-ID"),
        ("Abyssinian_1 1 1 1\nAbyssinian_1 1 1 1\n", "line 2"),
    ],
)
def test_parse_pet_list_errors_name_the_line(text: str, field: str) -> None:
    with pytest.raises(AnnotationError) as err:
        parse_pet_list(text, path="list.txt")
    assert err.value.path == "list.txt" and err.value.field == field


def test_breed_order_matches_tfds_labels(peers: Path) -> None:
    labels = (peers / "tfds_oxford_pet" / "label.labels.txt").read_text().split()
    assert len(labels) == 37 and tuple(labels) == OXFORD_PET_BREEDS
    # A synthetic list.txt in name order (as the real one is), not CLASS-ID order.
    entries = [
        PetListEntry(f"{name}_{n}", class_id, 1 if name[0].isupper() else 2, 1)
        for class_id, name in enumerate(labels, start=1)
        for n in (1, 2)
    ]
    entries.sort(key=lambda e: e.image.lower())
    parsed = parse_pet_list(format_pet_list(entries, header=True), path="list.txt")
    cats = pet_categories(parsed, stems=[e.image for e in parsed], level="breed", path="list.txt")
    assert [c.name for c in cats.categories] == labels
    assert [c.supercategory for c in cats.categories] == ["cat" if n[0].isupper() else "dog" for n in labels]


def test_conflicting_list_is_an_error() -> None:
    entries = [PetListEntry("pug_1", 26, 2, 18), PetListEntry("boxer_1", 26, 2, 5)]
    with pytest.raises(AnnotationError, match="CLASS-ID 26"):
        pet_categories(entries, stems=[], level="breed", path="list.txt")


def test_sample_end_to_end(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = convert_oxford_pet(sample, out)
    assert report.exit_code() == EXIT_OK, report.findings
    inst, heads = COCO(str(out / "instances.json")), COCO(str(out / "heads.json"))
    assert [c["name"] for c in inst.dataset["categories"]] == ["Abyssinian", "beagle", "Bengal", "Persian", "pug", "yorkshire_terrier"]
    assert [(c["name"], c["id"]) for c in heads.dataset["categories"]] == [("cat", 1), ("dog", 2)]
    assert [(i["id"], i["file_name"]) for i in inst.dataset["images"]] == [(i["id"], i["file_name"]) for i in heads.dataset["images"]]
    assert len(inst.dataset["images"]) == 24 and len(inst.dataset["annotations"]) == 24
    for im in inst.dataset["images"]:
        stem = Path(im["file_name"]).stem
        trimap = cv2.imread(str(sample / "annotations" / "trimaps" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        (ann,) = inst.loadAnns(inst.getAnnIds(imgIds=[im["id"]]))
        mask = inst.annToMask(ann).astype(bool)
        np.testing.assert_array_equal(mask, trimap == TRIMAP_PET)
        assert inst.cats[ann["category_id"]]["name"] == stem.rsplit("_", 1)[0]
        (head,) = heads.loadAnns(heads.getAnnIds(imgIds=[im["id"]]))
        assert heads.cats[head["category_id"]]["name"] == ("cat" if stem[0].isupper() else "dog")
        x, y, w, h = (int(v) for v in head["bbox"])
        assert mask[y : y + h, x : x + w].all()  # the head lies inside the pet
        assert heads.imgs[im["id"]]["heads_annotated"] is True
    assert (out / "semantic" / "classes.txt").read_text() == "background\npet\n"
    assert len(list((out / "semantic").glob("*.png"))) == 24
    assert json.loads((out / "dataset.json").read_text())["format"] == "oxford-pet"


@pytest.mark.parametrize(("split", "count"), [("trainval", 18), ("test", 6)])
def test_split_keeps_only_its_images(sample: Path, tmp_path: Path, split: str, count: int) -> None:
    out = tmp_path / split
    assert convert_oxford_pet(sample, out, split=split).exit_code() == EXIT_OK
    listed = sorted(parse_split_names((sample / "annotations" / f"{split}.txt").read_text()))
    images = json.loads((out / "instances.json").read_text())["images"]
    assert sorted(Path(i["file_name"]).stem for i in images) == listed and len(listed) == count
    assert [i["id"] for i in images] == list(range(1, count + 1))


@pytest.mark.parametrize(("level", "names"), [("species", ["cat", "dog"]), ("pet", ["pet"])])
def test_category_levels(sample: Path, tmp_path: Path, level: str, names: list[str]) -> None:
    out = tmp_path / level
    assert convert_oxford_pet(sample, out, categories=level, border="foreground").exit_code() == EXIT_OK
    coco = COCO(str(out / "instances.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == names
    for ann in coco.dataset["annotations"]:
        stem = Path(coco.imgs[ann["image_id"]]["file_name"]).stem
        expected = names[0] if level == "pet" else ("cat" if stem[0].isupper() else "dog")
        assert coco.cats[ann["category_id"]]["name"] == expected
        trimap = cv2.imread(str(sample / "annotations" / "trimaps" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), (trimap == TRIMAP_PET) | (trimap == TRIMAP_BORDER))


def test_quirks_of_the_real_dataset(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(sample, root)
    images = root / "images"
    (images / "Abyssinian_101.mat").write_bytes(b"MATLAB 5.0 MAT-file")  # skipped: not an image name
    Image.open(images / "Bengal_1.jpg").save(images / "Bengal_1.jpg", format="PNG")  # PNG named .jpg
    Image.open(images / "pug_1.jpg").save(images / "pug_1.jpg", format="GIF")  # GIF named .jpg
    # An image missing from list.txt, of a breed the list does not know.
    shutil.copy(images / "pug_2.jpg", images / "boxer_7.jpg")
    shutil.copy(root / "annotations" / "trimaps" / "pug_2.png", root / "annotations" / "trimaps" / "boxer_7.png")
    xmls = root / "annotations" / "xmls"
    (xmls / "beagle_1.xml").write_text((xmls / "beagle_1.xml").read_text().replace("<name>dog", "<name>horse"))
    (xmls / "beagle_2.xml").write_text("<annotation><object>")  # truncated
    (xmls / "beagle_3.xml").unlink()
    text = (xmls / "Persian_1.xml").read_text()
    (xmls / "Persian_1.xml").write_text(text.replace("<width>", "<width>1", 1))
    out = tmp_path / "out"
    report = convert_oxford_pet(root, out)
    found = {(Path(r["file"]).name, r["severity"], r["code"]) for r in rows(out)}
    assert {
        ("Bengal_1.jpg", "warning", "content_mismatch"),
        ("pug_1.jpg", "warning", "content_mismatch"),
        ("boxer_7.jpg", "warning", "not_in_list"),
        ("beagle_1.xml", "error", "unknown_label"),
        ("beagle_2.xml", "error", "malformed_xml"),
        ("beagle_3.xml", "info", "no_head_xml"),
        ("Persian_1.xml", "warning", "size_mismatch"),
    } <= found, found
    assert not any(name.endswith(".mat") for name, _, _ in found)
    assert report.exit_code() == EXIT_SKIPPED_ERRORS  # the XML errors; every pet mask still converted
    inst = json.loads((out / "instances.json").read_text())
    assert len(inst["images"]) == len(inst["annotations"]) == 25
    assert inst["categories"][-1] == {"id": 7, "name": "boxer", "supercategory": ""}
    sizes = {i["file_name"]: (i["width"], i["height"]) for i in inst["images"]}
    assert sizes["pug_1.jpg"] == Image.open(sample / "images" / "pug_1.jpg").size
    heads = json.loads((out / "heads.json").read_text())
    flags = {i["file_name"]: i["heads_annotated"] for i in heads["images"]}
    # beagle_1's head XML names a horse: an error row, and the image counts as not head-annotated
    # (partial labels would turn a correct head detection into a false positive).
    assert not flags["beagle_2.jpg"] and not flags["beagle_3.jpg"] and not flags["beagle_1.jpg"]
    assert len(heads["annotations"]) == 25 - 4  # horse refused, truncated XML, two images without XML


def test_images_missing_from_the_list_get_their_species_from_the_name(sample: Path, tmp_path: Path) -> None:
    """The list's own header: a capital first letter is a cat, a small one a dog. Two images left out of
    list.txt are kept at --categories species, with a warning naming the rule, not dropped as errors."""
    root = tmp_path / "pets"
    shutil.copytree(sample, root)
    listing = root / "annotations" / "list.txt"
    lines = listing.read_text().splitlines()
    dropped = [ln.split()[0] for ln in lines if ln and not ln.startswith("#")][:1]
    dropped += [ln.split()[0] for ln in lines if ln and not ln.startswith("#") and ln[0].islower()][:1]
    listing.write_text("\n".join(ln for ln in lines if not ln or ln.split()[0] not in dropped) + "\n")
    out = tmp_path / "out"
    report = convert_oxford_pet(root, out, categories="species")
    assert not [f for f in report.findings if f.code == "unknown_species"]
    warned = {Path(f.file).stem: f.message for f in report.findings if f.code == "not_in_list"}
    assert set(warned) == set(dropped) and all("first letter" in m for m in warned.values())
    inst = json.loads((out / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    by_stem = {Path(i["file_name"]).stem: i["id"] for i in inst["images"]}
    species = {a["image_id"]: names[a["category_id"]] for a in inst["annotations"]}
    for stem in dropped:
        assert species[by_stem[stem]] == ("cat" if stem[0].isupper() else "dog")
    assert len(inst["images"]) == 24


def test_bad_list_falls_back_to_file_names(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(sample, root)
    (root / "annotations" / "list.txt").write_text("Abyssinian_1 x 1 1\n")
    out = tmp_path / "out"
    report = convert_oxford_pet(root, out)
    assert [(f.code, f.severity) for f in report.findings if f.severity == "error"] == [("bad_list", "error")]
    cats = json.loads((out / "instances.json").read_text())["categories"]
    assert [c["name"] for c in cats] == sorted(c["name"] for c in cats) and {c["supercategory"] for c in cats} == {""}
    # Species cannot be known without a list: every image is a located error, none crashes.
    report = convert_oxford_pet(root, tmp_path / "species", categories="species")
    assert sum(f.code == "unknown_species" for f in report.findings) == 24


def test_one_bad_list_line_is_a_row_and_the_rest_is_kept(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(sample, root)
    list_path = root / "annotations" / "list.txt"
    lines = list_path.read_text().splitlines()
    data = [i for i, line in enumerate(lines) if not line.startswith("#")]
    bad_index = data[3]
    bad_stem = lines[bad_index].split()[0]
    lines[bad_index] = f"{bad_stem} 1 cat 1"  # SPECIES must be a number
    list_path.write_text("\n".join(lines) + "\n")
    report = convert_oxford_pet(root, tmp_path / "out", categories="species")
    errors = [(f.code, f.message) for f in report.findings if f.severity == "error"]
    assert errors[0] == ("bad_list", f"line {bad_index + 1}: non-integer id in '{bad_stem} 1 cat 1'; line skipped")
    # The skipped line's image is then "not in the list": its species comes from the file name, the dataset's
    # own rule (a capital first letter is a cat), with a warning row; every other image keeps the list's species.
    assert [(Path(f.file).stem, f.severity) for f in report.findings if f.code == "not_in_list"] == [(bad_stem, "warning")]
    coco = json.loads((tmp_path / "out" / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    expected = {e.image: e.species_name for e in parse_pet_list("\n".join(lines[:bad_index] + lines[bad_index + 1:]), path="l")}
    expected[bad_stem] = "cat" if bad_stem[0].isupper() else "dog"
    got = {Path(coco_im["file_name"]).stem: coco["categories"][a["category_id"] - 1]["name"]
           for coco_im in coco["images"] for a in coco["annotations"] if a["image_id"] == coco_im["id"]}
    assert len(got) == 24 and got == {k: v for k, v in expected.items() if k in got}


def test_real_oxford_xmls_give_one_head_each(peers: Path) -> None:
    for path in sorted((peers / "tfds_oxford_pet" / "real_xmls").glob("*.xml")):
        data = path.read_bytes()
        width, height = (int(re.search(rf"<{t}>(\d+)</{t}>".encode(), data).group(1)) for t in ("width", "height"))
        records, findings = parse_head_boxes(data, path=str(path), width=width, height=height)
        assert len(records) == 1 and records[0].category in {"cat", "dog"}
        assert not [f for f in findings if f.severity != "info"], findings


def test_peer_fake_examples_through_oxford_pet(peers: Path, tmp_path: Path) -> None:
    fake = peers / "tfds_oxford_pet" / "fake_examples"
    report = convert_oxford_pet(fake, tmp_path / "out", split="trainval")
    errors = [f for f in report.findings if f.severity == "error"]
    assert len(errors) == 5 and all(f.code == "bad_trimap_channels" for f in errors)
    assert json.loads((tmp_path / "out" / "heads.json").read_text())["images"] == []

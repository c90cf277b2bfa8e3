"""The embedded sample: deterministic bytes, the Oxford-IIIT Pet layout, learnable pets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.core.pet_list import LIST_HEADER, parse_pet_list, parse_split_names
from segpipe.converters.voc_parse import parse_voc_xml
from segpipe.cli import main
from segpipe.demo.sample import OXFORD_PET_BREEDS, generate_sample


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = digests(generate_sample(tmp_path / "a", n_images=8, seed=3))
    b = digests(generate_sample(tmp_path / "b", n_images=8, seed=3))
    c = digests(generate_sample(tmp_path / "c", n_images=8, seed=4))
    assert a == b and len(a) == 8 * 3 + 3
    assert a != c


def test_layout_lists_and_xmls(tmp_path: Path) -> None:
    root = generate_sample(tmp_path / "s")
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    assert len(stems) == 24
    assert stems == sorted(p.stem for p in (root / "annotations" / "trimaps").glob("*.png"))
    assert stems == sorted(p.stem for p in (root / "annotations" / "xmls").glob("*.xml"))
    text = (root / "annotations" / "list.txt").read_text()
    assert tuple(text.splitlines()[:6]) == LIST_HEADER
    entries = parse_pet_list(text, path="list.txt")
    assert sorted(e.image for e in entries) == stems
    for e in entries:
        assert OXFORD_PET_BREEDS[e.class_id - 1] == e.breed
        assert e.species == (1 if e.breed[0].isupper() else 2)
    assert {e.species for e in entries} == {1, 2} and len({e.breed for e in entries}) >= 4
    trainval = parse_split_names((root / "annotations" / "trainval.txt").read_text())
    test = parse_split_names((root / "annotations" / "test.txt").read_text())
    assert sorted(trainval + test) == stems and not set(trainval) & set(test)
    assert {e.species for e in entries if e.image in test} == {1, 2}
    sizes = []
    for stem in stems:
        image = cv2.imread(str(root / "images" / f"{stem}.jpg"))
        h, w = image.shape[:2]
        sizes.append((w, h))
        assert 160 <= w <= 240 and 160 <= h <= 240
        doc = parse_voc_xml((root / "annotations" / "xmls" / f"{stem}.xml").read_bytes(), path=stem)
        assert doc.filename == f"{stem}.jpg" and doc.size == (w, h, 3)
        (obj,) = doc.objects
        assert obj.name == ("cat" if stem[0].isupper() else "dog") and obj.pose == "Frontal"
        assert obj.truncated is False and obj.difficult is False
        trimap = cv2.imread(str(root / "annotations" / "trimaps" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert trimap.shape == (h, w) and set(np.unique(trimap)) == {1, 2, 3}
        assert (trimap[int(obj.ymin) : int(obj.ymax), int(obj.xmin) : int(obj.xmax)] == 1).all()
        # The border band separates pet from background: no pet pixel touches a background pixel.
        pet, bg = trimap == 1, trimap == 2
        assert not (pet[:, 1:] & bg[:, :-1]).any() and not (pet[1:, :] & bg[:-1, :]).any()
    assert len(set(sizes)) > 2 and len(set(sizes)) < len(sizes)


def test_pets_are_easy_to_tell_from_background(tmp_path: Path) -> None:
    """A one-line colour rule already finds the pets; a tiny U-Net has an easy job."""
    root = generate_sample(tmp_path / "s", n_images=12)
    for path in sorted((root / "images").glob("*.jpg")):
        image = cv2.imread(str(path)).astype(int)
        trimap = cv2.imread(str(root / "annotations" / "trimaps" / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        guess = image[..., 2] > image[..., 0] + 40  # red above blue
        known = trimap != 3
        iou = (guess & (trimap == 1) & known).sum() / ((guess | (trimap == 1)) & known).sum()
        assert iou > 0.9, (path.name, iou)


def test_cli_sample(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sample", "-o", str(tmp_path / "s"), "--n-images", "6", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 6
    assert digests(tmp_path / "s") == digests(generate_sample(tmp_path / "t", n_images=6, seed=1))


@pytest.mark.parametrize("fmt", ["oxford-pet", "voc", "yolo", "labelme", "cvat", "voc-seg"])
def test_every_format_converts_back_to_the_same_pets(tmp_path: Path, fmt: str) -> None:
    """`segpipe sample --format F` then `segpipe convert F`: the same pets as the generator made, by stem: the
    species, the pet box (pixel corners), and the pet mask where the format holds masks."""
    import json

    from pycocotools import mask as mask_utils

    from segpipe.demo.sample import sample_pets

    src, out = tmp_path / "src", tmp_path / "out"
    written = CliRunner().invoke(main, ["sample", "-o", str(src), "--format", fmt, "--n-images", "6"])
    assert written.exit_code == 0 and f"segpipe convert {fmt}" in written.output, written.output
    extra = ["--categories", "species"] if fmt == "oxford-pet" else []
    result = CliRunner().invoke(main, ["convert", fmt, str(src), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    coco = json.loads((out / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_stem = {Path(im["file_name"]).stem: im for im in coco["images"]}
    pets = sample_pets(n_images=6)
    assert sorted(by_stem) == sorted(p.stem for p in pets)
    for pet in pets:
        (ann,) = [a for a in coco["annotations"] if a["image_id"] == by_stem[pet.stem]["id"]]
        assert names[ann["category_id"]] == pet.species_name, pet.stem
        x0, y0, x1, y1 = pet.box
        assert np.allclose(ann["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-3), (pet.stem, ann["bbox"], pet.box)
        if fmt in ("voc", "yolo"):
            assert "segmentation" not in ann
            continue
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), pet.mask), pet.stem


def test_the_command_offers_every_layout_the_generator_writes() -> None:
    from segpipe.cli.sample import SAMPLE_FORMATS as OFFERED
    from segpipe.demo.sample import SAMPLE_FORMATS

    assert OFFERED == SAMPLE_FORMATS

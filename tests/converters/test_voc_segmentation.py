"""Pascal VOC SegmentationClass/SegmentationObject PNGs -> semantic maps + COCO instances: palette indices
(not colours), RGB re-saves through the VOC colour map, XML boxes cross-checked, the Datumaro peer dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from segpipe.converters.voc_segmentation import VOC_CLASSES, voc_colormap
from tests.converters.format_helpers import codes, coco_masks, convert_under_seeds, rows, write_image
from tests.converters.test_voc import labelimg_xml

W, H = 24, 16
CAT, DOG, PERSON = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")


def palette_png(path: Path, values: np.ndarray, *, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgb:
        Image.fromarray(voc_colormap()[values]).save(path)
        return
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    # a palette whose colours do NOT follow the indices: only the indices may be read
    im.putpalette([v for i in range(256) for v in ((255 - i) % 256, (7 * i) % 256, 3)])
    im.save(path)


def maps() -> tuple[np.ndarray, np.ndarray]:
    cls = np.zeros((H, W), dtype=np.uint8)
    obj = np.zeros((H, W), dtype=np.uint8)
    cls[2:8, 3:10], obj[2:8, 3:10] = CAT, 1
    cls[9:15, 12:20], obj[9:15, 12:20] = DOG, 2
    cls[2:5, 15:22], obj[2:5, 15:22] = CAT, 3
    cls[1, :], obj[1, :] = 255, 255  # a void border line
    return cls, obj


def voc_root(root: Path, *, rgb: bool = False) -> Path:
    cls, obj = maps()
    write_image(root / "JPEGImages/2007_000001.jpg", width=W, height=H)
    palette_png(root / "SegmentationClass/2007_000001.png", cls, rgb=rgb)
    palette_png(root / "SegmentationObject/2007_000001.png", obj, rgb=rgb)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations/2007_000001.xml").write_bytes(labelimg_xml(filename="2007_000001.jpg", width=W, height=H, objects=[
        {"name": "cat", "box": (4, 3, 10, 8)}, {"name": "dog", "box": (13, 10, 20, 15)}, {"name": "dog", "box": (1, 1, 3, 3)}]))
    write_image(root / "JPEGImages/2007_000002.jpg", width=W, height=H)
    palette_png(root / "SegmentationClass/2007_000002.png", cls, rgb=rgb)
    return root


@pytest.mark.parametrize("rgb", [False, True], ids=["palette", "rgb"])
def test_objects_and_semantic_maps_match_the_pngs(tmp_path: Path, rgb: bool) -> None:
    root = voc_root(tmp_path / "voc", rgb=rgb)
    result = CliRunner().invoke(main, ["convert", "voc-seg", str(root), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    cls, obj = maps()
    coco, masks = coco_masks(tmp_path / "out")
    assert [c["name"] for c in coco.dataset["categories"]] == list(VOC_CLASSES[1:])
    got = masks["2007_000001.jpg"]
    assert [c for c, _ in got] == ["cat", "dog", "cat"]
    for k, (_, mask) in enumerate(got, start=1):
        assert np.array_equal(mask, obj == k)
    assert "2007_000002.jpg" not in masks and ("info", "semantic_only") in codes(tmp_path / "out")
    for stem in ("2007_000001", "2007_000002"):
        with Image.open(tmp_path / f"out/semantic/{stem}.png") as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), cls)
    assert (tmp_path / "out/semantic/classes.txt").read_text().split() == list(VOC_CLASSES)
    # the XML's 3rd object is a dog at (1,1)-(3,3); the masks say object 3 is a cat elsewhere
    found = {(r["code"], r["message"].split(":")[0]) for r in rows(tmp_path / "out")}
    assert ("class_mismatch", "object[2]") in found and ("box_mask_mismatch", "object[2] ('dog')") in found
    assert not any(m.startswith("object[0]") or m.startswith("object[1]") for _, m in found)


def test_bad_pngs_are_rows(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    cls, obj = maps()
    write_image(root / "JPEGImages/b1.jpg", width=W, height=H)
    (root / "SegmentationClass/b1.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    write_image(root / "JPEGImages/b2.jpg", width=W, height=H)
    palette_png(root / "SegmentationClass/b2.png", np.full((H, W), 40, dtype=np.uint8))
    write_image(root / "JPEGImages/b3.jpg", width=W + 1, height=H)
    palette_png(root / "SegmentationClass/b3.png", cls)
    write_image(root / "JPEGImages/b4.jpg", width=W, height=H)
    Image.fromarray(np.full((H, W, 3), 77, dtype=np.uint8)).save(root / "SegmentationClass/b4.png")
    write_image(root / "JPEGImages/b5.jpg", width=W, height=H)
    palette_png(root / "SegmentationClass/b5.png", np.zeros((H, W), dtype=np.uint8))
    palette_png(root / "SegmentationObject/b5.png", obj)
    palette_png(root / "SegmentationClass/nojpg.png", cls)
    palette_png(root / "SegmentationObject/orphan.png", obj)
    result = CliRunner().invoke(main, ["convert", "voc-seg", str(root), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
    errors = {(Path(r["file"]).name, r["code"]) for r in rows(tmp_path / "out") if r["severity"] == "error"}
    assert errors == {("b1.png", "corrupt_png"), ("b2.png", "class_out_of_range"), ("b3.png", "size_mismatch"),
                      ("b4.png", "unknown_colour"), ("b5.png", "object_without_class"), ("nojpg.png", "missing_image"),
                      ("orphan.png", "missing_class_png")}
    assert [im["file_name"] for im in json.loads((tmp_path / "out/instances.json").read_text())["images"]] == ["2007_000001.jpg"]


def test_datumaro_voc_dataset(peers: Path, tmp_path: Path) -> None:
    """Datumaro's VOC fixture stores the masks as RGB: class (0,128,0) = bicycle everywhere, one object (128,0,0)
    covering the image; its XML says object 1 is a cat at (1,2)-(3,4) and has a person with no mask."""
    root = peers / "datumaro/voc_dataset/voc_dataset1"
    result = CliRunner().invoke(main, ["convert", "voc-seg", str(root), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    coco, masks = coco_masks(tmp_path / "out")
    (name, mask), = masks["2007_000001.jpg"]
    assert name == "bicycle" and mask.all() and mask.shape == (10, 20)
    with Image.open(tmp_path / "out/semantic/2007_000001.png") as im:
        assert (np.asarray(im) == VOC_CLASSES.index("bicycle")).all()
    assert {("warning", "class_mismatch"), ("warning", "box_mask_mismatch"), ("warning", "object_without_mask")} <= set(codes(tmp_path / "out"))


def test_same_bytes_across_hash_seeds(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    first, second = convert_under_seeds(["voc-seg", str(root)], outs=[tmp_path / "o1", tmp_path / "o2"])
    assert first == second and first
    shutil.rmtree(tmp_path / "o1")


def grey4_png(path: Path, values: np.ndarray) -> None:
    """A 4-bit greyscale PNG written by hand (https://www.w3.org/TR/png/: IHDR bit depth 4, colour type 0, two
    pixels per byte, filter byte 0 per row): a layout tools such as Pillow read scaled to 0..255."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = values.shape
    padded = np.zeros((h, w + (w % 2)), dtype=np.uint8)
    padded[:, :w] = values
    rows_ = b"".join(b"\0" + bytes((padded[y, 0::2] << 4) | padded[y, 1::2]) for y in range(h))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 4, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows_)) + chunk(b"IEND", b""))


def test_a_4bit_grey_map_is_read_as_the_evaluators_read_it(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    values = np.zeros((H, W), dtype=np.uint8)
    values[3:9, 4:11] = 1  # aeroplane, object 1
    write_image(root / "JPEGImages/a.jpg", width=W, height=H)
    grey4_png(root / "SegmentationClass/a.png", values)
    grey4_png(root / "SegmentationObject/a.png", values)
    with Image.open(root / "SegmentationClass/a.png") as im:
        assert int(np.asarray(im).max()) == 17, "Pillow scales 4-bit grey: the reason the shared reader is used"
    result = CliRunner().invoke(main, ["convert", "voc-seg", str(root), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OK, result.output
    coco, masks = coco_masks(tmp_path / "out")
    assert [(c, bool(np.array_equal(m, values == 1))) for c, m in masks["a.jpg"]] == [("aeroplane", True)]
    with Image.open(tmp_path / "out/semantic/a.png") as im:
        assert np.array_equal(np.asarray(im), values)

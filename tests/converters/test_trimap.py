"""Trimaps -> COCO masks and semantic maps: policies, round trips through pycocotools, bad input, determinism."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from segpipe.converters import trimap as trimap_mod
from segpipe.core.errors import AnnotationError
from segpipe.converters.report import EXIT_SKIPPED_ERRORS, StrictModeError
from segpipe.converters.trimap import (
    BORDER_POLICIES,
    IGNORE_INDEX,
    SEMANTIC_CLASSES,
    TRIMAP_BACKGROUND,
    TRIMAP_BORDER,
    TRIMAP_PET,
    convert_trimap,
    decode_trimap,
    parse_trimap,
)

REPO = Path(__file__).resolve().parents[2]


def make_trimap(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random blob with a border band, values 1/2/3."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.15, 0.35) * min(h, w)
    d = np.hypot(yy - cy, xx - cx) - r * (1 + 0.2 * np.sin(3 * np.arctan2(yy - cy, xx - cx)))
    t = np.full((h, w), TRIMAP_BACKGROUND, np.uint8)
    t[d < -1] = TRIMAP_PET
    t[np.abs(d) <= 1] = TRIMAP_BORDER
    return t


def png_bytes(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def write_pair(root: Path, stem: str, trimap: np.ndarray, *, size: tuple[int, int] | None = None, ext: str = ".jpg") -> None:
    (root / "trimaps").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "trimaps" / f"{stem}.png").write_bytes(png_bytes(trimap))
    w, h = size or (trimap.shape[1], trimap.shape[0])
    ok, buf = cv2.imencode(ext, np.full((h, w, 3), 120, np.uint8))
    (root / "images" / f"{stem}{ext}").write_bytes(buf.tobytes())


def report_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "conversion_report.csv").read_text(encoding="utf-8"))))


def expected_pet(trimap: np.ndarray, border: str) -> np.ndarray:
    pet = trimap == TRIMAP_PET
    return pet | (trimap == TRIMAP_BORDER) if border == "foreground" else pet


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    trimaps = {}
    for i, breed in enumerate(["Bengal", "Bengal", "pug", "beagle", "Persian"]):
        stem = f"{breed}_{i + 1}"
        trimaps[stem] = make_trimap(rng, int(rng.integers(20, 50)), int(rng.integers(20, 50)))
        write_pair(tmp_path, stem, trimaps[stem])
    return tmp_path, trimaps


def test_parse_trimap_policies() -> None:
    t = np.array([[1, 2, 3], [3, 1, 2]], np.uint8)
    expected_sem = {"ignore": [[1, 0, 255], [255, 1, 0]], "foreground": [[1, 0, 1], [1, 1, 0]], "background": [[1, 0, 0], [0, 1, 0]]}
    for border in BORDER_POLICIES:
        sem, pet = parse_trimap(t, border=border, path="t.png")
        assert sem.dtype == np.uint8 and sem.tolist() == expected_sem[border]
        assert pet.dtype == bool and pet.flags.f_contiguous
        np.testing.assert_array_equal(pet, expected_pet(t, border))
    assert IGNORE_INDEX == 255 and SEMANTIC_CLASSES == ("background", "pet")


def test_parse_trimap_rejects_values_and_channels() -> None:
    with pytest.raises(AnnotationError) as err:
        parse_trimap(np.array([[0, 1], [4, 2]], np.uint8), border="ignore", path="a.png")
    assert err.value.path == "a.png" and err.value.field == "pixels" and "0 (1 px)" in err.value.reason and "4 (1 px)" in err.value.reason
    with pytest.raises(AnnotationError) as err:
        parse_trimap(np.ones((2, 2, 4), np.uint8), border="ignore", path="b.png")
    assert err.value.field == "channels"
    with pytest.raises(ValueError):
        parse_trimap(np.ones((2, 2), np.uint8), border="sideways", path="c.png")
    # 16-bit trimaps are fine when their values are.
    sem, _ = parse_trimap(np.array([[1, 3]], np.uint16), border="ignore", path="d.png")
    assert sem.tolist() == [[1, 255]]


def _png(width: int, height: int, depth: int, color_type: int, rows: list[bytes], plte: bytes = b"") -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    if plte:
        body += chunk(b"PLTE", plte)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows))) + chunk(b"IEND", b"")


def test_decode_trimap_keeps_stored_values() -> None:
    # 2-bit grey: decoders stretch 0..3 to 0..255; the stored values come back.
    assert decode_trimap(_png(4, 1, 2, 0, [bytes([0b00011011])]), path="g.png").tolist() == [[0, 1, 2, 3]]
    # Palette PNG: indices, not the palette colours (cv2 would give BGR).
    pal = Image.fromarray(np.array([[1, 2, 3]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert decode_trimap(buf.getvalue(), path="p.png").tolist() == [[1, 2, 3]]
    # RGBA stays RGBA (IMREAD_UNCHANGED): parse_trimap rejects it, nothing silently drops channels.
    assert decode_trimap(png_bytes(np.ones((3, 3, 4), np.uint8)), path="rgba.png").shape == (3, 3, 4)
    good = png_bytes(np.ones((30, 30), np.uint8))
    for bad in (good[: len(good) // 2], b"GIF89a" + good[6:], b""):
        with pytest.raises(AnnotationError) as err:
            decode_trimap(bad, path="x.png")
        assert err.value.code == "corrupt_trimap"


@pytest.mark.parametrize("border", BORDER_POLICIES)
def test_masks_round_trip_through_pycocotools(dataset: tuple[Path, dict[str, np.ndarray]], border: str) -> None:
    root, trimaps = dataset
    out = root / "out"
    report = convert_trimap(root / "trimaps", out, images=root / "images", border=border)
    assert not report.has_errors
    coco = COCO(str(out / "instances.json"))
    assert [im["file_name"] for im in coco.dataset["images"]] == sorted(f"{s}.jpg" for s in trimaps)
    assert [c["name"] for c in coco.dataset["categories"]] == ["Bengal", "Persian", "beagle", "pug"]
    for im in coco.dataset["images"]:
        stem = im["file_name"][:-4]
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        expected = expected_pet(trimaps[stem], border)
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        assert ann["area"] == expected.sum() and ann["iscrowd"] == 0
        assert coco.cats[ann["category_id"]]["name"] == stem.rsplit("_", 1)[0]
        ys, xs = np.nonzero(expected)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        semantic = cv2.imread(str(out / "semantic" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert semantic.dtype == np.uint8 and semantic.ndim == 2
        np.testing.assert_array_equal(semantic == 1, expected)
        np.testing.assert_array_equal(semantic == IGNORE_INDEX, (trimaps[stem] == TRIMAP_BORDER) & (border == "ignore"))
    assert (out / "semantic" / "classes.txt").read_text() == "background\npet\n"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "trimap" and Path(meta["image_root"]) == (root / "images").resolve()


def test_empty_pet_and_bad_inputs_are_located_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    good = make_trimap(rng, 30, 40)
    write_pair(tmp_path, "pug_1", good)
    write_pair(tmp_path, "pug_2", np.full((30, 40), TRIMAP_BACKGROUND, np.uint8))  # no pet
    write_pair(tmp_path, "pug_3", np.where(good == 2, 0, good).astype(np.uint8))  # value 0
    write_pair(tmp_path, "pug_4", np.dstack([good] * 4))  # RGBA
    write_pair(tmp_path, "pug_5", good, size=(41, 30))  # size mismatch
    write_pair(tmp_path, "pug_6", good)
    (tmp_path / "trimaps" / "pug_6.png").write_bytes(png_bytes(good)[:60])  # truncated PNG
    write_pair(tmp_path, "pug_7", good)
    (tmp_path / "images" / "pug_7.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")  # corrupt image
    (tmp_path / "trimaps" / "pug_8.png").write_bytes(png_bytes(good))  # no image
    write_pair(tmp_path, "pug_9", good)
    write_pair(tmp_path, "pug_9", good, ext=".png")  # duplicate stem, two images
    write_pair(tmp_path, "pug_10", good)
    (tmp_path / "trimaps" / "pug_10.png").unlink()  # image without trimap
    (tmp_path / "trimaps" / "._pug_1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork: ignored
    out = tmp_path / "out"
    report = convert_trimap(tmp_path / "trimaps", out, images=tmp_path / "images")
    assert report.exit_code() == EXIT_SKIPPED_ERRORS
    rows = {(Path(r["file"]).name, r["severity"], r["code"]) for r in report_rows(out)}
    expected = {
        ("pug_2.png", "warning", "empty_pet"),
        ("pug_3.png", "error", "bad_trimap_values"),
        ("pug_4.png", "error", "bad_trimap_channels"),
        ("pug_5.png", "error", "size_mismatch"),
        ("pug_6.png", "error", "corrupt_trimap"),
        ("pug_7.jpg", "error", "unreadable_image"),
        ("pug_8.png", "error", "missing_image"),
        ("pug_9.jpg", "error", "duplicate_stem"),
        ("pug_10.jpg", "warning", "unannotated"),
    }
    assert expected <= rows, expected - rows
    assert not any(name.startswith("._") for name, _, _ in rows)
    coco = COCO(str(out / "instances.json"))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == ["pug_1.jpg", "pug_2.jpg"]
    assert len(coco.dataset["annotations"]) == 1  # the empty pet keeps its image, with no annotation
    assert sorted(p.name for p in (out / "semantic").iterdir()) == ["classes.txt", "pug_1.png", "pug_2.png"]


def test_strict_stops_at_first_error(tmp_path: Path) -> None:
    write_pair(tmp_path, "pug_1", np.zeros((5, 5), np.uint8))
    with pytest.raises(StrictModeError):
        convert_trimap(tmp_path / "trimaps", tmp_path / "out", images=tmp_path / "images", strict=True)


def test_process_pool_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    for i in range(12):
        write_pair(tmp_path, f"{'Bengal' if i % 2 else 'pug'}_{i}", make_trimap(rng, 24, 32))
    write_pair(tmp_path, "pug_99", np.zeros((24, 32), np.uint8))  # an error row from a worker
    serial = tmp_path / "serial"
    convert_trimap(tmp_path / "trimaps", serial, images=tmp_path / "images", workers=1)
    monkeypatch.setattr(trimap_mod, "MIN_IMAGES_FOR_POOL", 2)
    pooled = tmp_path / "pooled"
    convert_trimap(tmp_path / "trimaps", pooled, images=tmp_path / "images", workers=2)
    for name in ("instances.json", "conversion_report.csv", "semantic/pug_0.png"):
        assert (serial / name).read_bytes() == (pooled / name).read_bytes()


def test_same_bytes_across_processes_and_hash_seeds(dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = dataset
    code = (
        "import sys; from pathlib import Path; from segpipe.converters.trimap import convert_trimap; "
        "convert_trimap(Path(sys.argv[1]) / 'trimaps', Path(sys.argv[2]), images=Path(sys.argv[1]) / 'images')"
    )
    outputs = []
    for seed in ("0", "12345"):
        out = root / f"out_{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(root), str(out)], check=True, cwd=REPO, env=env)
        outputs.append((out / "instances.json").read_bytes())
    assert outputs[0] == outputs[1]


def test_peer_fake_examples_are_rejected_with_clear_rows(peers: Path, tmp_path: Path) -> None:
    fake = peers / "tfds_oxford_pet" / "fake_examples"
    out = tmp_path / "out"
    report = convert_trimap(fake / "annotations" / "trimaps", out, images=fake / "images")
    trimaps = sorted((fake / "annotations" / "trimaps").glob("*.png"))
    errors = {Path(f.file).name: f for f in report.findings if f.severity == "error"}
    assert sorted(errors) == [p.name for p in trimaps]
    for f in errors.values():
        # RGBA, every value 0, and sizes that differ from the images: each is a reason to reject.
        assert f.code == "bad_trimap_channels" and "4 (RGBA)" in f.message
    assert any("size: trimap is" in f.message for f in errors.values())
    assert json.loads((out / "instances.json").read_text())["images"] == []
    assert report.exit_code() == EXIT_SKIPPED_ERRORS


def test_non_utf8_file_names_are_refused_with_a_row(tmp_path: Path) -> None:
    stem = os.fsdecode(b"pug_\xff\xfe")  # undecodable bytes arrive as lone surrogates
    write_pair(tmp_path, stem, make_trimap(np.random.default_rng(5), 20, 20))
    write_pair(tmp_path, "pug_1", np.zeros((4, 4), np.uint8))  # an error row beside it
    write_pair(tmp_path, "pug_2", make_trimap(np.random.default_rng(6), 20, 20))
    out = tmp_path / "out"
    report = convert_trimap(tmp_path / "trimaps", out, images=tmp_path / "images")
    coco = COCO(str(out / "instances.json"))
    assert [im["file_name"] for im in coco.dataset["images"]] == ["pug_2.jpg"]
    assert not (out / "semantic" / f"{stem}.png").exists()
    odd = [(r["file"].rsplit("/", 1)[-1], r["code"]) for r in report_rows(out) if "udc" in r["file"]]
    assert sorted(odd) == [("pug_\\udcff\\udcfe.jpg", "non_utf8_name"), ("pug_\\udcff\\udcfe.png", "non_utf8_name")]
    assert [r["severity"] for r in report_rows(out) if r["file"].endswith("pug_1.png")] == ["error"]
    assert report.has_errors


def test_a_247_byte_file_name_converts(tmp_path: Path) -> None:
    """The longest legal names (255 bytes) leave no room for a temporary suffix: the temporary twin must still fit."""
    rng = np.random.default_rng(3)
    long_stem = "Bengal_" + "x" * 236  # 243 bytes; "<stem>.png" is 247
    trimaps = {long_stem: make_trimap(rng, 24, 30), "pug_1": make_trimap(rng, 20, 26)}
    for stem, t in trimaps.items():
        write_pair(tmp_path, stem, t, ext=".png")
    assert len(f"{long_stem}.png".encode()) == 247
    out = tmp_path / "out"
    report = convert_trimap(tmp_path / "trimaps", out, images=tmp_path / "images")
    assert report.exit_code() == 0, report.findings
    written = cv2.imread(str(out / "semantic" / f"{long_stem}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written == 1, expected_pet(trimaps[long_stem], "ignore"))
    assert sorted(p.name for p in (out / "semantic").iterdir() if p.name.startswith(".")) == []
    coco = COCO(str(out / "instances.json"))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == sorted([f"{long_stem}.png", "pug_1.png"])

"""The compiled label-map path (segpipe.core._labelmap): PNG rows unfiltered here and confusion counted in C
give exactly what OpenCV/libpng, Pillow and cv2.calcHist give, on every filter type, on malformed files (where
the same error comes out, naming the file) and through threads; the report bytes never depend on the path, the
number of threads or the order the files were written in."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segpipe.cli import main
from segpipe.demo.sample import sample_pets
from segpipe.core import label_maps
from segpipe.evaluators.semantic.confusion import confusion_update
from segpipe.core.errors import EvaluationError
from segpipe.core.label_maps import decode_plain_png, read_label_map
from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs

ABSENT_OK_ENV = "SEGPIPE_KERNEL_ABSENT_OK"  # the same switch as the instance kernel's build test (test_kernel.py)
BUILT = label_maps.HELPER  # taken at import, before any test switches paths
ZLIB = label_maps._zlib_inflate
LIBDEFLATE = label_maps._libdeflate_inflater()
N = 21


@pytest.fixture()
def compiled(monkeypatch: pytest.MonkeyPatch) -> Any:
    if BUILT is None:
        pytest.skip("the compiled label-map helper is not built or SEGPIPE_NO_KERNEL is set")
    monkeypatch.setattr(label_maps, "HELPER", BUILT)
    return BUILT


@pytest.fixture(params=["zlib", "libdeflate"])
def inflater(request: pytest.FixtureRequest, compiled: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once per inflater: the two must give the same bytes (or both refuse)."""
    if request.param == "libdeflate" and LIBDEFLATE is None:
        pytest.skip("the deflate package (libdeflate) is not installed")
    monkeypatch.setattr(label_maps, "INFLATE", ZLIB if request.param == "zlib" else LIBDEFLATE)
    return str(request.param)


def test_helper_is_built() -> None:
    if os.environ.get(ABSENT_OK_ENV, "") not in ("", "0"):
        pytest.skip(f"{ABSENT_OK_ENV} is set: this install may lack the compiled helpers")
    module = importlib.import_module("segpipe.core._labelmap")  # ImportError: the build failed or was skipped
    if os.environ.get("SEGPIPE_NO_KERNEL", "") in ("", "0"):
        assert BUILT is module


# ---------------------------------------------------------------- an independent PNG writer (the specification's filters)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filtered_row(kind: int, row: list[int], up: list[int]) -> bytes:
    """One row filtered as https://www.w3.org/TR/png/#9Filter-types defines it (one byte per pixel)."""
    out = []
    for x, value in enumerate(row):
        left = row[x - 1] if x else 0
        upleft = up[x - 1] if x else 0
        predictor = [0, left, up[x], (left + up[x]) // 2, _paeth(left, up[x], upleft)][kind] if kind < 5 else 0
        out.append((value - predictor) % 256)
    return bytes([kind]) + bytes(out)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(labels: np.ndarray, *, filters: list[int], colour: int = 0, before_idat: tuple[bytes, ...] = (),
              idat_parts: int = 1, after_iend: bytes = b"") -> bytes:
    height, width = labels.shape
    rows, up = [], [0] * width
    for y in range(height):
        row = [int(v) for v in labels[y]]
        rows.append(filtered_row(filters[y % len(filters)], row, up))
        up = row
    stream = zlib.compress(b"".join(rows), 9)
    step = -(-len(stream) // idat_parts)
    idats = b"".join(chunk(b"IDAT", stream[i:i + step]) for i in range(0, len(stream), step))
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
    plte = chunk(b"PLTE", bytes(range(48))) if colour == 3 else b""
    return label_maps.PNG_SIGNATURE + ihdr + plte + b"".join(before_idat) + idats + chunk(b"IEND", b"") + after_iend


def labels_for(seed: int, shape: tuple[int, int] = (23, 37), n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocky = cv2.resize(rng.integers(0, n, (3, 4), dtype=np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
    noise = rng.random(shape) < 0.2
    blocky[noise] = rng.integers(0, 256, int(noise.sum()), dtype=np.uint8)
    return blocky


def opencv_pixels(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 3, 2, 1, 0, 2, 4, 3]])
def test_every_filter_type_decodes_to_the_pixels_libpng_gives(inflater: str, filters: list[int]) -> None:
    # Widths around the 16-byte blocks of the vectorised Sub and Up rows, and single rows and columns.
    for seed, shape in enumerate([(23, 37), (1, 1), (1, 16), (3, 17), (2, 33), (9, 1), (4, 64)]):
        labels = labels_for(seed, shape=shape)
        data = png_bytes(labels, filters=filters, idat_parts=1 + seed % 3)
        decoded = decode_plain_png(data)
        assert decoded is not None and decoded.dtype == np.uint8
        np.testing.assert_array_equal(decoded, labels)
        np.testing.assert_array_equal(decoded, opencv_pixels(data))


def test_files_pillow_and_opencv_write_decode_as_they_read_them(inflater: str) -> None:
    """Pillow's adaptive filtering (None, Sub, Up and Paeth rows show up; Average is covered by the writer above)
    and OpenCV's Sub rows, on noisy maps, gradients and the demo's trimaps; palette indices as Pillow gives them."""
    y, x = np.mgrid[0:40, 0:64]
    maps = [labels_for(seed, shape=(31 + seed, 64 - seed)) for seed in range(8)]
    maps += [((x * 3 + y * 5) % 256).astype(np.uint8), ((x // 8 + y // 8) % 5 * 40).astype(np.uint8)]
    maps += [pet.trimap for pet in sample_pets(n_images=2, seed=7)]
    seen_filters: set[int] = set()
    for labels in maps:
        for data in (encode_pillow(labels, "L"), cv2.imencode(".png", labels)[1].tobytes()):
            np.testing.assert_array_equal(decode_plain_png(data), opencv_pixels(data))
            seen_filters |= row_filters(data)
        for transparency in (None, 3):
            data = encode_pillow(labels, "P", transparency=transparency)
            with Image.open(io.BytesIO(data)) as im:
                np.testing.assert_array_equal(decode_plain_png(data), np.asarray(im))
    assert {0, 1, 2, 4} <= seen_filters


def encode_pillow(labels: np.ndarray, mode: str, transparency: int | None = None) -> bytes:
    im = Image.fromarray(labels, mode=mode)
    if mode == "P":
        im.putpalette(list(range(120)))  # 40 colours (8-bit indices), fewer than the indices used: Pillow returns them all
    buf = io.BytesIO()
    im.save(buf, format="PNG", **({} if transparency is None else {"transparency": transparency}))
    return buf.getvalue()


def row_filters(data: bytes) -> set[int]:
    width, height = struct.unpack(">II", data[16:24])
    pos, stream = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            stream += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(stream)
    return {raw[y * (width + 1)] for y in range(height)}


@pytest.mark.parametrize("extra", [b"tEXt", b"gAMA", b"sBIT", b"pHYs"])
def test_inert_chunks_decode_as_opencv_reads_them(inflater: str, extra: bytes) -> None:
    labels = labels_for(4)
    data = png_bytes(labels, filters=[4, 1], before_idat=(chunk(extra, b"\x00\x00\xb1\x8f" if extra == b"gAMA" else b"\x08"),))
    np.testing.assert_array_equal(decode_plain_png(data), opencv_pixels(data))


@pytest.mark.parametrize("case", ["bad filter byte", "bad crc", "after iend", "truncated stream", "too many rows",
                                  "split idat", "grey trns", "interlaced", "16-bit", "unknown critical chunk"])
def test_anything_unusual_goes_to_opencv_and_reads_or_fails_exactly_as_before(
    inflater: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    labels = labels_for(5)
    data = png_bytes(labels, filters=[2])
    height, width = labels.shape
    stream = zlib.compress(b"".join(filtered_row(0, [int(v) for v in row], [0] * width) for row in labels))
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    iend = chunk(b"IEND", b"")
    if case == "bad filter byte":
        data = png_bytes(labels, filters=[2, 5])
    elif case == "bad crc":
        data = data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]
    elif case == "after iend":
        data += b"junk"
    elif case == "truncated stream":
        data = label_maps.PNG_SIGNATURE + ihdr + chunk(b"IDAT", stream[:-9]) + iend
    elif case == "too many rows":  # the header declares one row fewer than the stream holds
        data = label_maps.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height - 1, 8, 0, 0, 0, 0)) + \
            chunk(b"IDAT", stream) + iend
    elif case == "split idat":  # another chunk between two IDATs
        data = label_maps.PNG_SIGNATURE + ihdr + chunk(b"IDAT", stream[:20]) + chunk(b"tEXt", b"k\x00v") + \
            chunk(b"IDAT", stream[20:]) + iend
    elif case == "grey trns":
        data = png_bytes(labels, filters=[2], before_idat=(chunk(b"tRNS", b"\x00\x03"),))
    elif case == "interlaced":
        data = label_maps.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)) + \
            chunk(b"IDAT", stream) + iend
    elif case == "16-bit":
        data = cv2.imencode(".png", labels.astype(np.uint16))[1].tobytes()
    elif case == "unknown critical chunk":
        data = png_bytes(labels, filters=[2], before_idat=(chunk(b"ABCD", b"x"),))
    assert decode_plain_png(data) is None
    assert_same_outcome(tmp_path / "map.png", data, monkeypatch)


def outcome(path: Path) -> tuple[str, Any]:
    try:
        labels = read_label_map(path)
    except EvaluationError as err:  # Pillow's messages hold an object's address: the same message, another address
        return "error", (err.path, err.field, re.sub(r"0x[0-9a-f]+", "0x?", err.reason))
    return "pixels", (labels.dtype.str, labels.shape, hashlib.sha256(labels.tobytes()).hexdigest())


def assert_same_outcome(path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_label_map gives the same pixels, or the same error naming the same file, with and without the helper."""
    path.write_bytes(data)
    fast = outcome(path)
    monkeypatch.setattr(label_maps, "HELPER", None)
    slow = outcome(path)
    monkeypatch.setattr(label_maps, "HELPER", BUILT)
    assert fast == slow


def _valid_files() -> list[bytes]:
    labels = labels_for(6, shape=(9, 13))
    return [png_bytes(labels, filters=[4, 3, 1]), png_bytes(labels, filters=[2], colour=3, idat_parts=3),
            encode_pillow(labels, "L")]


VALID = _valid_files()


@settings(max_examples=150, deadline=None)
@given(which=st.integers(0, len(VALID) - 1), edits=st.lists(st.tuples(st.integers(8, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
       fix_crcs=st.booleans())
def test_fuzzed_files_read_or_fail_the_same_with_and_without_the_helper(which: int, edits: list[tuple[int, int]], fix_crcs: bool) -> None:
    """Random byte edits, with the CRCs left wrong (the chunk check refuses) or recomputed (the header fields, the
    zlib stream and the filter bytes are what is tested then)."""
    if BUILT is None:
        pytest.skip("the compiled label-map helper is not built")
    data = bytearray(VALID[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    if fix_crcs:
        data = bytearray(recompute_crcs(bytes(data)))
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(label_maps, "HELPER", BUILT)
        assert_same_outcome(Path(tmp) / "fuzzed.png", bytes(data), monkeypatch)


def recompute_crcs(data: bytes) -> bytes:
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 12 + length > len(data):
            break
        body = data[pos + 4:pos + 8 + length]
        out += data[pos:pos + 8 + length] + struct.pack(">I", zlib.crc32(body))
        pos += 12 + length
    return bytes(out + data[pos:])


# ---------------------------------------------------------------- counting


@pytest.mark.parametrize(("n", "ignore"), [(N, 255), (2, 255), (256, 1000), (5, 1000), (200, 250)])
def test_compiled_counts_equal_calchist_counts(compiled: Any, monkeypatch: pytest.MonkeyPatch, n: int, ignore: int) -> None:
    rng = np.random.default_rng(n)
    for shape in [(64, 80), (1, 3), (0, 5), (7,), (3, 5, 7)]:
        gt = rng.integers(0, n, shape, dtype=np.uint16).astype(np.uint8)
        pred = rng.integers(0, n, shape, dtype=np.uint16).astype(np.uint8)
        if ignore < 256 and gt.size:
            gt.reshape(-1)[::7] = ignore
            pred.reshape(-1)[::5] = ignore
        fast = confusion_update(gt, pred, num_classes=n, ignore_index=ignore)
        monkeypatch.setattr(label_maps, "HELPER", None)
        slow = confusion_update(gt, pred, num_classes=n, ignore_index=ignore)
        monkeypatch.setattr(label_maps, "HELPER", compiled)
        np.testing.assert_array_equal(fast, slow)
        assert fast.dtype == np.int64 and fast.sum() == (gt != ignore).sum()


@pytest.mark.parametrize("where", ["gt", "pred", "pred where gt is ignored"])
def test_compiled_counts_name_out_of_range_values_as_before(compiled: Any, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    gt = np.zeros((4, 6), np.uint8)
    pred = np.zeros((4, 6), np.uint8)
    if where == "gt":
        gt[1, 2] = 9
    elif where == "pred":
        pred[3, 3] = 77
    else:
        gt[0, 0], pred[0, 0] = 255, 40
    errors = []
    for helper in (compiled, None):
        monkeypatch.setattr(label_maps, "HELPER", helper)
        with pytest.raises(EvaluationError) as info:
            confusion_update(gt, pred, num_classes=3, path="x.png")
        errors.append((info.value.path, info.value.field, info.value.reason))
    assert errors[0] == errors[1]


def test_histogram_stays_exact_beyond_float32_counts_on_both_paths(compiled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    size = (1 << 24) + 3
    gt = np.zeros(size, dtype=np.uint8)
    pred = np.zeros(size, dtype=np.uint8)
    pred[-1] = 1
    for helper in (compiled, None):
        monkeypatch.setattr(label_maps, "HELPER", helper)
        matrix = confusion_update(gt, pred, num_classes=2)
        assert matrix[0, 0] == size - 1 and matrix[0, 1] == 1 and matrix.sum() == size


# ---------------------------------------------------------------- folders, threads and report bytes


def write_folder(root: Path, *, count: int, order: list[int]) -> tuple[Path, Path]:
    """`count` GT/prediction pairs (Pillow-, OpenCV- and palette-written, one prediction missing), files created
    in `order`."""
    for sub in ("gt", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in order:
        labels = labels_for(100 + i, shape=(40, 56), n=6)
        labels[labels >= 6] = 255
        pred = np.roll(labels, 3, axis=1)
        pred[pred == 255] = (i % 6) if i % 4 else 255
        writers = [lambda a: encode_pillow(a, "L"), lambda a: cv2.imencode(".png", a)[1].tobytes(),
                   lambda a: encode_pillow(a, "P")]
        (root / "gt" / f"m{i:03d}.png").write_bytes(writers[i % 3](labels))
        if i != 5:
            (root / "pred" / f"m{i:03d}.png").write_bytes(writers[(i + 1) % 3](pred))
    return root / "gt", root / "pred"


def report_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_threads_and_file_order_never_change_the_counts_or_the_report_bytes(
    compiled: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    count = 24
    data = tmp_path / "data"
    gt_dir, pred_dir = write_folder(data, count=count, order=list(range(count)))
    serial = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=[f"c{i}" for i in range(6)], workers=1)
    monkeypatch.setattr(label_maps, "HELPER", None)
    reference = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=[f"c{i}" for i in range(6)], workers=1)
    monkeypatch.setattr(label_maps, "HELPER", compiled)
    for workers in (2, 3, 8):
        threaded = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=[f"c{i}" for i in range(6)], workers=workers)
        np.testing.assert_array_equal(threaded.confusion.to_numpy(), serial.confusion.to_numpy())
        assert threaded.per_image.equals(serial.per_image)
    np.testing.assert_array_equal(serial.confusion.to_numpy(), reference.confusion.to_numpy())
    assert serial.per_image.equals(reference.per_image) and serial.per_class.equals(reference.per_class)

    outputs = []
    for run, (workers, helper, order) in enumerate([(1, compiled, None), (2, compiled, None), (4, compiled, "reversed"),
                                                    (3, None, "shuffled"), (2, compiled, "shuffled")]):
        if order is not None:  # the same folder written again, files created in another order
            for path in [*gt_dir.iterdir(), *pred_dir.iterdir()]:
                path.unlink()
            files = list(range(count))[::-1] if order == "reversed" else list(np.random.default_rng(run).permutation(count))
            write_folder(data, count=count, order=[int(i) for i in files])
        monkeypatch.setattr(label_maps, "HELPER", helper)
        out = tmp_path / f"report{run}"
        result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir), "-o", str(out),
                                           "--classes", ",".join(f"c{i}" for i in range(6)), "--workers", str(workers),
                                           "--no-html", "--allow-partial"])
        assert result.exit_code == 0, result.output
        outputs.append(report_bytes(out))
    assert all(o == outputs[0] for o in outputs[1:]) and "confusion.csv" in outputs[0]


def test_a_bad_file_among_many_is_named_the_same_by_every_path(compiled: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gt_dir, pred_dir = write_folder(tmp_path, count=12, order=list(range(12)))
    good = (pred_dir / "m007.png").read_bytes()
    (pred_dir / "m007.png").write_bytes(good[:40] + bytes([good[40] ^ 0xFF]) + good[41:])  # one corrupt byte (a CRC no longer matches)
    cv2.imwrite(str(pred_dir / "m009.png"), np.zeros((40, 55), np.uint8))  # wrong size
    errors = []
    for helper, workers in ((compiled, 1), (compiled, 4), (None, 1)):
        monkeypatch.setattr(label_maps, "HELPER", helper)
        with pytest.raises(EvaluationError) as info:
            evaluate_semantic_dirs(gt_dir, pred_dir, class_names=[f"c{i}" for i in range(6)], workers=workers)
        errors.append((info.value.path, info.value.field, re.sub(r"0x[0-9a-f]+", "0x?", info.value.reason)))
    assert errors[0] == errors[1] == errors[2]
    assert errors[0][0].endswith("m007.png") and "m009.png" in errors[0][2]


def test_counts_equal_hotcocos_semantic_evaluation(compiled: Any, tmp_path: Path) -> None:
    """hotcoco (Rust, its own PNG decoder) on the same files: the same confusion matrix."""
    semantic = pytest.importorskip("hotcoco.semantic")
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for i in range(10):
        labels = labels_for(200 + i, shape=(48, 64), n=N)
        labels[labels >= N] = 255
        pred = np.roll(labels, 2, axis=0)
        pred[pred == 255] = 0  # hotcoco refuses a predicted ignore value
        (gt_dir / f"p{i}.png").write_bytes(encode_pillow(labels, "L") if i % 2 else cv2.imencode(".png", labels)[1].tobytes())
        (pred_dir / f"p{i}.png").write_bytes(encode_pillow(pred, "L"))
    ours = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=[f"c{i}" for i in range(N)], workers=2)
    theirs = semantic.SemanticEval(N, ignore_index=255)
    theirs.update_folders(str(gt_dir), str(pred_dir))
    np.testing.assert_array_equal(ours.confusion.iloc[:, 1:N + 1].to_numpy(), theirs.confusion().astype(np.int64))

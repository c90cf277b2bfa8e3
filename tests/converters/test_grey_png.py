"""The 8-bit greyscale PNG decoder against libpng (cv2.imdecode), the reference: whenever it answers, the pixels
are libpng's; it declines everything else. Files from OpenCV and Pillow (whose adaptive filters mix all five
filter types), extra chunks, and mutated or truncated bytes (hypothesis)."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from segpipe.converters.grey_png import decode_grey_png


def _libpng(data: bytes) -> np.ndarray | None:
    decoded: np.ndarray | None = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return decoded


def _blocky(seed: int, h: int, w: int, classes: int = 21) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, classes, size=(max(1, h // 8), max(1, w // 8)), dtype=np.uint8)
    labels: np.ndarray = cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST)
    labels[rng.random((h, w)) < 0.02] = 255
    return labels


def _pillow_png(labels: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(labels, mode="L").save(buf, format="PNG", **save)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _raw_png(rows: list[bytes], *, width: int, height: int, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"".join(rows))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


OPENCV = [cv2.imencode(".png", _blocky(s, h, w))[1].tobytes() for s, (h, w) in enumerate([(512, 512), (375, 500), (1, 1), (3, 17)])]


@pytest.mark.parametrize("data", OPENCV, ids=["512", "500x375", "1x1", "17x3"])
def test_opencv_label_maps_decode_to_libpngs_pixels(data: bytes) -> None:
    ours = decode_grey_png(data)
    assert ours is not None and ours.dtype == np.uint8 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, _libpng(data))


def test_rows_without_filter_and_mixed_none_and_sub_rows() -> None:
    labels = _blocky(7, 6, 10)
    none_rows = [b"\x00" + row.tobytes() for row in labels]
    sub_rows = [b"\x01" + bytes(np.diff(row, prepend=np.uint8(0)).astype(np.uint8)) for row in labels]
    for rows in (none_rows, sub_rows, [none_rows[i] if i % 2 else sub_rows[i] for i in range(6)]):
        data = _raw_png(rows, width=10, height=6)
        ours = decode_grey_png(data)
        assert ours is not None
        np.testing.assert_array_equal(ours, labels)
        np.testing.assert_array_equal(ours, _libpng(data))


def test_pillow_files_decode_like_libpng_or_are_declined() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Software", "labelling tool")
    for seed in range(20):
        labels = _blocky(seed, 40 + seed, 30 + 2 * seed)
        for data in (_pillow_png(labels), _pillow_png(labels, optimize=True), _pillow_png(labels, pnginfo=text)):
            ours = decode_grey_png(data)
            if ours is not None:
                np.testing.assert_array_equal(ours, _libpng(data))


def test_what_libpng_must_decode_is_declined() -> None:
    labels = _blocky(1, 8, 8)
    rows = [b"\x00" + row.tobytes() for row in labels]
    palette = io.BytesIO()
    Image.fromarray(labels, mode="P").save(palette, format="PNG")
    declined = {
        "colour": cv2.imencode(".png", np.dstack([labels] * 3))[1].tobytes(),
        "16-bit": cv2.imencode(".png", labels.astype(np.uint16))[1].tobytes(),
        "palette": palette.getvalue(),
        "tRNS": _raw_png(rows, width=8, height=8, extra=_chunk(b"tRNS", b"\x00\x05")),
        "Up filter": _raw_png([b"\x02" + r[1:] for r in rows], width=8, height=8),
        "bad CRC": OPENCV[0][:-5] + bytes([OPENCV[0][-5] ^ 1]) + OPENCV[0][-4:],
        "short data": _raw_png(rows[:-1], width=8, height=8),
        "truncated": OPENCV[0][: len(OPENCV[0]) // 2],
        "trailing bytes": OPENCV[0] + b"junk",
    }
    for name, data in declined.items():
        assert decode_grey_png(data) is None, name


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(OPENCV[1:]), cut=st.integers(min_value=0, max_value=4000),
       flips=st.lists(st.tuples(st.integers(min_value=0, max_value=3999), st.integers(min_value=0, max_value=255)), max_size=3))
def test_mutated_files_never_get_pixels_libpng_would_not_give(base: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(base[:cut] if cut < len(base) else base)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    ours = decode_grey_png(bytes(data))
    if ours is not None:
        reference = _libpng(bytes(data))
        assert reference is not None
        np.testing.assert_array_equal(ours, reference)

"""The plain-JPEG header reader against Pillow, the reference: whenever it answers, Pillow opens the same
bytes with the same size and no orientation; otherwise it declines and Pillow decides. Mutated and truncated
files (hypothesis) must never get an answer Pillow would not give."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segpipe.core.errors import AnnotationError
from segpipe.core.images import read_image_size
from segpipe.core.jpeg_header import plain_jpeg_size


def _pillow_jpeg(mode: str, size: tuple[int, int], **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90 if mode == "L" else None).save(buf, format="JPEG", **save)
    return buf.getvalue()


def _pillow_answer(data: bytes) -> tuple[int, int] | None:
    """Pillow's displayed size (EXIF orientation applied), or None when it cannot open the bytes."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            orientation = im.getexif().get(274, 1)
    except Exception:
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _exif_rotated(data: bytes) -> bytes:
    exif = Image.Exif()
    exif[274] = 6  # rotated 90 degrees: width and height swap
    with Image.open(io.BytesIO(data)) as im:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


PLAIN = [
    _pillow_jpeg("RGB", (64, 48)),
    _pillow_jpeg("L", (31, 7), quality=50),
    _pillow_jpeg("RGB", (640, 480), progressive=True),
    _pillow_jpeg("CMYK", (20, 10)),
    _pillow_jpeg("RGB", (33, 17), comment=b"annotated", icc_profile=b"\x00" * 200),
    cv2.imencode(".jpg", np.zeros((375, 500, 3), np.uint8))[1].tobytes(),
]


@pytest.mark.parametrize("data", PLAIN, ids=["rgb", "grey", "progressive", "cmyk", "comment-icc", "opencv"])
def test_plain_jpegs_get_pillows_size(data: bytes) -> None:
    assert plain_jpeg_size(data) is not None
    assert plain_jpeg_size(data) == _pillow_answer(data)


def test_exif_jpegs_are_left_to_pillow_which_applies_the_orientation() -> None:
    rotated = _exif_rotated(_pillow_jpeg("RGB", (64, 48)))
    assert plain_jpeg_size(rotated) is None
    assert _pillow_answer(rotated) == (48, 64)


def test_read_image_size_answers_like_pillow_on_disk(tmp_path: Path) -> None:
    for i, data in enumerate([*PLAIN, _exif_rotated(PLAIN[0])]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(data)
        assert read_image_size(path) == _pillow_answer(data)


def test_a_truncated_jpeg_is_still_pillows_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(PLAIN[0][:40])
    with pytest.raises(AnnotationError) as caught:
        read_image_size(path)
    assert caught.value.code == "unreadable_image"


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(PLAIN), cut=st.integers(min_value=0, max_value=700),
       flips=st.lists(st.tuples(st.integers(min_value=0, max_value=699), st.integers(min_value=0, max_value=255)), max_size=3))
def test_mutated_jpegs_never_get_an_answer_pillow_would_not_give(base: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(base[:cut] if cut < len(base) else base)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    answer = plain_jpeg_size(bytes(data))
    if answer is not None:
        assert answer == _pillow_answer(bytes(data))

"""8-bit greyscale PNGs decoded without libpng: the common case of a label map, about twice as fast.

A label map written by OpenCV (`cv2.imwrite`, segpipe's own outputs and most training code) is an 8-bit
greyscale PNG whose rows all use the "Sub" filter, or none. Decoding it is one zlib inflate and, per row, a
running sum of bytes modulo 256 (PNG specification, filter type 1: https://www.w3.org/TR/png/#9Filter-types).
libpng does the same through a call per row; here the inflate is one `zlib.decompress` and the running sums of
all rows come from one `cv2.integral` into work arrays the thread reuses (both release the GIL, so decoding
threads scale). Every other file
(colour, palette, other depths, interlacing, the Up/Average/Paeth filters, unknown chunks, a bad checksum,
anything unusual) returns None and the caller decodes it as before, so results never differ from libpng's.
Chunk layout: https://www.w3.org/TR/png/#5Chunk-layout.
"""

from __future__ import annotations

import threading
import zlib

import cv2
import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _DEPTH_8 = 0, 8
_FILTER_NONE, _FILTER_SUB = 0, 1
# Chunks that cannot change the decoded values of an 8-bit grey image as OpenCV reads it (text, time,
# physical size). tRNS, gAMA, sBIT and anything unknown go to libpng.
_INERT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs"})
# cv2.integral sums in int32: exact while 255 * width * height stays below 2**31.
_MAX_PIXELS = (2**31 - 1) // 255
_SCRATCH_MAX_PIXELS = 4_000_000  # a thread keeps its work arrays (8 bytes a pixel) for maps up to this size
_THREAD_SCRATCH = threading.local()


def decode_grey_png(data: bytes) -> np.ndarray | None:
    """The HxW uint8 pixels of a plain 8-bit greyscale PNG, or None when libpng must decode it.

    >>> import cv2, numpy as np
    >>> m = np.array([[0, 1, 1], [255, 255, 2]], dtype=np.uint8)
    >>> decode_grey_png(cv2.imencode(".png", m)[1].tobytes()).tolist()
    [[0, 1, 1], [255, 255, 2]]
    """
    if not data.startswith(_SIGNATURE):
        return None
    pos, end = len(_SIGNATURE), len(data)
    view = memoryview(data)  # slices without copies
    size: tuple[int, int] | None = None
    idat: list[memoryview] = []
    prev_kind = b""
    while pos + 12 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        body_end = pos + 8 + length
        if body_end + 4 > end or zlib.crc32(view[pos + 4:body_end]) != int.from_bytes(data[body_end:body_end + 4], "big"):
            return None  # truncated, or a bad checksum: libpng reports it
        body = view[pos + 8:body_end]
        pos = body_end + 4
        if size is None and kind != b"IHDR":
            return None  # IHDR must come first
        if kind == b"IHDR":
            if size is not None or length != 13 or bytes(body[8:13]) != bytes((_DEPTH_8, _GREY, 0, 0, 0)):
                return None  # not 8-bit grey, or another compression/filter method, or interlaced
            size = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")  # width, height
        elif kind == b"IDAT":
            if idat and prev_kind != b"IDAT":
                return None  # IDAT chunks must follow IHDR and each other
            idat.append(body)
        elif kind == b"IEND":
            if pos != end or not idat or size is None:
                return None
            return _unfilter(b"".join(idat), width=size[0], height=size[1])
        elif kind not in _INERT_CHUNKS or idat:
            return None  # a chunk that may matter, or anything after the image data
        prev_kind = kind
    return None


def _scratch(*, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 work arrays for one decode, reused by the calling thread for maps of the same size: fresh
    megabyte-sized arrays cost a page fault per 4 KiB, which made the decode slower than libpng's."""
    if height * width > _SCRATCH_MAX_PIXELS:
        return np.empty((height + 1, width + 1), np.int32), np.empty((height, width), np.int32)
    held: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = getattr(_THREAD_SCRATCH, "arrays", None)
    if held is None or held[0] != (height, width):
        held = (height, width), np.empty((height + 1, width + 1), np.int32), np.empty((height, width), np.int32)
        _THREAD_SCRATCH.arrays = held
    return held[1], held[2]


def _unfilter(compressed: bytes, *, width: int, height: int) -> np.ndarray | None:
    if width == 0 or height == 0 or width * height > _MAX_PIXELS:
        return None
    expected = height * (width + 1)  # a filter-type byte before each row
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected)
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        return None  # short, long or unfinished image data: libpng's call
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    filters = rows[:, 0]
    pixels = rows[:, 1:]
    sub = filters == _FILTER_SUB
    if not (sub | (filters == _FILTER_NONE)).all():
        return None
    if not sub.any():
        return pixels.copy()
    # Row-wise running sums: the integral image minus itself one row up; the uint8 cast keeps them modulo 256.
    integral, difference = _scratch(height=height, width=width)
    integral = cv2.integral(pixels, sum=integral, sdepth=cv2.CV_32S)  # fills `integral` (the result is that array)
    np.subtract(integral[1:, 1:], integral[:-1, 1:], out=difference)
    summed = difference.astype(np.uint8)
    if sub.all():
        return summed
    return np.where(sub[:, None], summed, pixels)

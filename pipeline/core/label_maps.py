"""The one reader of semantic label maps (class index per pixel) for every command.

A label map is a PNG whose pixel values are class indices. PNG stores those in several ways, and a plain
`cv2.imread` gets two of them wrong without a word:

- palette PNGs (colour type 3; Pascal VOC's `SegmentationClass` files): OpenCV expands the palette to BGR
  colours. The class is the palette *index*, so those files are read with Pillow, which returns the indices.
- greyscale PNGs with 1, 2 or 4 bits per pixel (`Image.fromarray(bool_mask).save(...)` writes 1 bit):
  libpng scales them to 0..255 on the way to 8 bits, so a 1-bit mask reads as 0/255 and 255 is the ignore
  index. The scale factor is undone here (255 / (2**bits - 1) is exact for 1, 2 and 4 bits).
- 8- and 16-bit greyscale are read as stored (uint8 / uint16).

Colour maps (RGB, RGBA, grey + alpha) are refused with a message that says how to convert them: a colour is
not a class index, and guessing a colour -> class table would score the wrong classes silently.
PNG colour types and bit depths: https://www.w3.org/TR/png/#6Colour-values

The common case, an 8-bit greyscale or palette PNG, non-interlaced and well formed (chunk order and CRCs
checked, https://www.w3.org/TR/png/#5ChunkOrdering), is decoded here when the compiled helper
(`segpipe.core._labelmap`) is built: the IDAT stream is inflated in one call (libdeflate through the
`deflate` package when installed, else zlib; both release the GIL) and the row filters are undone in C. That is
the same pixels OpenCV/libpng or Pillow return, in a third of their CPU or less (benchmarks/eval_semantic.py).
Anything else, and any file that fails one of those checks, goes to OpenCV/Pillow, which decode it or give the
error they always gave.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from types import ModuleType
from typing import Callable

import cv2
import numpy as np

from segpipe.core.errors import AnnotationError, EvaluationError
from segpipe.core.images import declared_image_size, read_input_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEADER_BYTES = 26  # signature, IHDR length and type, width, height, bit depth, colour type
GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6  # IHDR colour types
COLOUR_TYPE_NAMES = {RGB: "RGB", GREY_ALPHA: "greyscale + alpha", RGBA: "RGBA"}
CONVERT_HINT = (
    "label maps must hold one class index per pixel: save a single-channel PNG (8/16-bit greyscale, "
    "or a palette PNG whose indices are the classes), e.g. map each colour to its class index with numpy and "
    "write PIL.Image.fromarray(indices.astype('uint8')).save(path)"
)


def png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None when `data` is not a PNG.

    >>> import struct
    >>> png_header(PNG_SIGNATURE + struct.pack(">I4sIIBB", 13, b"IHDR", 4, 3, 1, 0))
    (1, 0)
    """
    if len(data) < PNG_HEADER_BYTES or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Class indices of a label-map image (2-D uint8, or uint16 for 16-bit PNGs). Thread-safe (no shared state).

    Raises EvaluationError naming the file for unreadable files and colour images."""
    path = Path(path)
    try:
        # Python reads the bytes: cv2.imread crashes on names that are not UTF-8, and only a regular file
        # within the size limit is read; the declared pixel count is checked before anything is decoded.
        # The real format and size come from the header whatever the extension (a TIFF named .png too).
        data = read_input_bytes(path)
        header = png_header(data[:PNG_HEADER_BYTES])
        declared_image_size(path, data)
    except AnnotationError as err:
        raise EvaluationError(path, err.field or "png", err.reason) from err
    if header is not None and header[1] in COLOUR_TYPE_NAMES:
        raise EvaluationError(path, "channels", f"is a {COLOUR_TYPE_NAMES[header[1]]} PNG, not a label map; {CONVERT_HINT}")
    if header is not None and header[0] == 8 and header[1] in (GREY, PALETTE):
        plain = decode_plain_png(data)
        if plain is not None:
            return plain
    if header is not None and header[1] == PALETTE:
        return _palette_indices(data, path=path)
    try:
        labels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)  # GIL released: threads scale
    except cv2.error as err:  # a header that parsed but a body OpenCV refuses
        raise EvaluationError(path, "png", f"cannot be decoded as an image: {err.err or err}") from err
    if labels is None:
        raise EvaluationError(path, "png", "cannot be read or decoded as an image")
    if labels.ndim != 2:
        raise EvaluationError(path, "channels", f"label maps must be single-channel, got {labels.shape[2]} channels; {CONVERT_HINT}")
    if header is not None and header[0] < 8:  # libpng scaled 1/2/4-bit grey to 0..255: undo it exactly
        labels = labels // (255 // ((1 << header[0]) - 1))
    return labels


def _load_helper() -> ModuleType | None:
    if os.environ.get("SEGPIPE_NO_KERNEL", "") not in ("", "0"):  # the compiled kernel's switch (kernel.py)
        return None
    try:
        from segpipe.core import _labelmap
    except ImportError:
        return None
    module: ModuleType = _labelmap
    return module


def _zlib_inflate(stream: bytes, size: int) -> bytes | None:
    """The one zlib stream of `stream`, exactly `size` bytes with nothing after it, or None."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream, size)
    except zlib.error:
        return None
    return raw if len(raw) == size and inflater.eof and not inflater.unused_data else None


def _libdeflate_inflater() -> Callable[[bytes, int], bytes | bytearray | None] | None:
    try:
        import deflate  # libdeflate (https://github.com/ebiggers/libdeflate): about 2x zlib's inflate speed
    except ImportError:
        return None

    def inflate(stream: bytes, size: int) -> bytes | bytearray | None:
        try:
            raw = deflate.zlib_decompress(stream, size)
        except (deflate.DeflateError, ValueError, MemoryError):
            return None
        return raw if len(raw) == size else None

    return inflate


HELPER: ModuleType | None = _load_helper()
"""The compiled row unfilter and pair counter; None: OpenCV/Pillow decode and cv2.calcHist counts (tests set this)."""
INFLATE: Callable[[bytes, int], bytes | bytearray | None] = _libdeflate_inflater() or _zlib_inflate
"""The zlib inflater of the fast path (tests set this to compare libdeflate with zlib)."""

# Chunks that change no pixel value as OpenCV (IMREAD_UNCHANGED) and Pillow return them: text, physical size,
# time, colour-space hints (neither applies gamma or ICC profiles to label maps), significant bits, background.
# Any other chunk sends the file to the general decoder.
_INERT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"pHYs", b"tIME", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD",
                           b"hIST", b"sPLT", b"eXIf", b"oFFs", b"pCAL", b"sCAL"})
_MAX_SIDE = (1 << 31) - 1  # the PNG limit on width and height


def decode_plain_png(data: bytes) -> np.ndarray | None:
    """Pixels of an 8-bit greyscale or palette-index PNG, non-interlaced, whose chunks are in order with correct
    CRCs and whose IDAT stream inflates to exactly the rows the header declares with valid filter bytes; None for
    any other file (the caller decodes it with OpenCV/Pillow) or when the compiled helper is not built."""
    helper = HELPER
    if helper is None or len(data) < 8 + 25 or not data.startswith(PNG_SIGNATURE):
        return None
    view = memoryview(data)
    pos, size = 8, len(data)
    width = height = colour = 0
    idat: list[memoryview] = []
    idat_done = has_palette = False
    while True:
        if pos + 12 > size:
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > size or zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            return None
        if pos == 8:
            if kind != b"IHDR" or length != 13:
                return None
            width, height, depth, colour, method, filtering, interlace = struct.unpack_from(">IIBBBBB", data, pos + 8)
            if (depth != 8 or colour not in (GREY, PALETTE) or (method, filtering, interlace) != (0, 0, 0)
                    or not 0 < width <= _MAX_SIDE or not 0 < height <= _MAX_SIDE):
                return None
        elif kind == b"IDAT":
            if idat_done or (colour == PALETTE and not has_palette):
                return None
            idat.append(view[pos + 8 : end - 4])
        elif kind == b"IEND":
            if length != 0 or not idat or end != size:
                return None
            break
        else:
            idat_done = bool(idat)
            if kind == b"PLTE" and colour == PALETTE and not has_palette and not idat:
                has_palette = True
            elif not (kind in _INERT_CHUNKS or (kind == b"tRNS" and colour == PALETTE and has_palette and not idat)):
                return None
        pos = end
    if colour == PALETTE and not _pillow_takes(width * height):
        return None
    raw = INFLATE(b"".join(idat), height * (width + 1))
    if raw is None:
        return None
    labels = np.empty((height, width), dtype=np.uint8)
    return labels if helper.unfilter(raw=raw, out=labels, width=width, height=height) else None


def _pillow_takes(pixels: int) -> bool:
    """Whether Pillow opens an image of this many pixels (it refuses over twice MAX_IMAGE_PIXELS: a palette file
    that large keeps Pillow's error)."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS is None or pixels <= 2 * Image.MAX_IMAGE_PIXELS


def _palette_indices(data: bytes, *, path: Path) -> np.ndarray:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode != "P":  # Pillow keeps palette PNGs in mode P (1/2/4-bit ones included)
                raise EvaluationError(path, "png", f"palette PNG decoded as mode {im.mode}, expected P")
            return np.asarray(im, dtype=np.uint8).copy()
    except EvaluationError:
        raise
    except Exception as err:  # any decoder failure names the file
        raise EvaluationError(path, "png", f"cannot be decoded as an image: {type(err).__name__}: {err}") from err


def read_label_map_or_none(path: Path | None) -> np.ndarray | None:
    """`read_label_map`, or None when the file is absent or not a readable label map (report thumbnails)."""
    if path is None or not path.is_file():
        return None
    try:
        return read_label_map(path)
    except EvaluationError:
        return None


__all__ = ["read_label_map", "read_label_map_or_none", "png_header", "decode_plain_png", "CONVERT_HINT"]

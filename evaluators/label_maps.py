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
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from segpipe.converters.errors import AnnotationError
from segpipe.converters.images import declared_image_size, read_input_bytes
from segpipe.evaluators.errors import EvaluationError

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
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
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


__all__ = ["read_label_map", "read_label_map_or_none", "png_header", "CONVERT_HINT"]

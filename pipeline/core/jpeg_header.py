"""The size of a plain JPEG from its first bytes, without Pillow: the common case of a converter's image read.

Pillow's `Image.open` parses the markers two bytes at a time through a file object and builds a whole image
object: about 0.15 ms an image, as much as parsing the annotation itself. Most dataset JPEGs (libjpeg,
OpenCV, Pillow output) hold only JFIF/ICC application data, tables, one 8-bit frame header and a scan. For
exactly those files this module reads the frame header directly; every other file (EXIF or XMP, which can
rotate the image; MPO; 12-bit or lossless frames; fill bytes; anything unusual or truncated) returns None,
and the caller asks Pillow, so that the answer and the error messages never differ from Pillow's.
Marker layout: ITU-T T.81 Annex B (https://www.w3.org/Graphics/JPEG/itu-t81.pdf), table B.1.
"""

from __future__ import annotations

HEAD_BYTES = 64 * 1024  # the markers before the first scan of a camera-less JPEG fit easily
_SOI = b"\xff\xd8\xff"
_SOS = 0xDA
_DQT = 0xDB
# Baseline, extended sequential and progressive Huffman frames: what encoders write. Lossless, hierarchical
# and arithmetic-coded frames go to Pillow.
_PLAIN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
# Segments Pillow reads without interpreting anything that could change the size or fail: Huffman tables,
# restart interval, comments, and application data other than APP1 (EXIF/XMP: orientation), APP13 (Photoshop
# resources, whose parser can fail) and APP0/APP2/APP14, which are checked below.
_SKIPPED = frozenset({0xC4, 0xDD, 0xFE, *range(0xE3, 0xED), 0xEF})
_APP0, _APP2, _APP14 = 0xE0, 0xE2, 0xEE
_COMPONENT_COUNTS = frozenset({1, 3, 4})  # grey, YCbCr/RGB, CMYK: the layer counts Pillow opens


def plain_jpeg_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of a plain JPEG from its first bytes, or None when Pillow must decide.

    >>> plain_jpeg_size(b"not a jpeg") is None
    True
    """
    if not head.startswith(_SOI):
        return None
    pos, end, size = 2, len(head), None
    while pos + 4 <= end:
        if head[pos] != 0xFF:
            return None  # junk between segments: Pillow skips it, this reader does not guess
        marker = head[pos + 1]
        length = int.from_bytes(head[pos + 2:pos + 4], "big")
        body = head[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None  # truncated within the head, or a marker without a length (fill bytes, RSTn)
        if marker == _SOS:
            return size
        if marker in _PLAIN_FRAMES:
            if size is not None or len(body) < 6 or body[0] != 8 or body[5] not in _COMPONENT_COUNTS:
                return None  # a second frame, or one Pillow refuses or maps differently
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            if width == 0 or height == 0:
                return None
            size = width, height
        elif marker == _DQT:
            if not _tables_complete(body):
                return None
        elif marker == _APP0:
            if body.startswith(b"JFIF") and len(body) < 12:
                return None  # Pillow reads the JFIF version and density from these bytes
        elif marker == _APP2:
            if body.startswith(b"MPF\x00") or (body.startswith(b"ICC_PROFILE\x00") and len(body) < 14):
                return None  # a multi-picture file (Pillow opens it as MPO), or an ICC chunk without its sequence bytes
        elif marker == _APP14:
            if body.startswith(b"Adobe") and len(body) < 12:
                return None  # Pillow reads the Adobe transform flag from these bytes
        elif marker not in _SKIPPED:
            return None
        pos += 2 + length
    return None


def _tables_complete(body: bytes) -> bool:
    """True when a DQT segment holds whole tables (64 entries of 1 or 2 bytes each, after a precision byte)."""
    pos = 0
    while pos < len(body):
        precision = 1 if body[pos] >> 4 == 0 else 2
        pos += 1 + 64 * precision
        if pos > len(body):
            return False
    return True

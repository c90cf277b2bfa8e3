"""Finding images by stem and reading their size from the header (EXIF orientation applied).

Formats are recognised by content, not by extension: the real Oxford-IIIT Pet dataset has GIF and PNG
files named `.jpg`, and `.mat` files in `images/` (skipped because their extension is not an image's).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from segpipe.core.errors import AnnotationError
from segpipe.core.jpeg_header import HEAD_BYTES, plain_jpeg_size

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# EXIF orientations 5..8 are rotations by 90 or 270 degrees: width and height swap.
_EXIF_ORIENTATION_TAG = 274
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


# Limits on hostile sizes, far above any real dataset (the largest Oxford-IIIT Pet / Pascal VOC files are a
# few MB and a few Mpx); each can be raised through the environment variable named beside it.
# The pixel default is Pillow's own decompression-bomb threshold
# (https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.open, MAX_IMAGE_PIXELS).
MAX_IMAGE_PIXELS_DEFAULT = 178_956_970
MAX_IMAGE_PIXELS_ENV = "SEGPIPE_MAX_IMAGE_PIXELS"
MAX_FILE_BYTES_DEFAULT = 256 * 1024 * 1024  # one annotation or label-map file
MAX_FILE_BYTES_ENV = "SEGPIPE_MAX_FILE_BYTES"


def configured_limit(env: str, default: int) -> int:
    """The limit set in `env` (a positive integer), else `default`; read at each call so a run can set it."""
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {env}: expected a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"environment variable {env}: expected a positive integer, got {text!r}")
    return value


def check_pixel_count(path: str | os.PathLike[str], *, width: int, height: int) -> None:
    """Refuse (AnnotationError "image_too_large") a declared size over the pixel limit, before any decoding."""
    limit = configured_limit(MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS_DEFAULT)
    if width * height > limit:
        raise AnnotationError(path, "size", f"{width}x{height} = {width * height} pixels is over the limit of {limit} "
                                            f"(raise it with {MAX_IMAGE_PIXELS_ENV} if the image is genuine)", code="image_too_large")


def read_input_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an input file, which must be a regular file under the size limit. A FIFO, a device
    (`/dev/zero` behind a symlink) or a huge file is an AnnotationError, never a hang or a memory blow-up."""
    limit = configured_limit(MAX_FILE_BYTES_ENV, MAX_FILE_BYTES_DEFAULT)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore the flag).
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise AnnotationError(path, "", "not a regular file (a device, FIFO or socket); only regular files are read", code="not_regular_file")
            if st.st_size > limit:
                raise AnnotationError(path, "", f"{st.st_size} bytes is over the limit of {limit} (raise it with {MAX_FILE_BYTES_ENV})", code="file_too_large")
            # Sized by the file, not the limit: read(limit + 1) would allocate the limit (256 MiB) per file.
            data = fh.read(st.st_size + 1)
            if len(data) > st.st_size:  # grew since fstat: read on, up to just past the limit
                data += fh.read(limit + 1 - len(data))
    except FileNotFoundError as err:
        raise AnnotationError(path, "", "file not found", code="missing_file") from err
    except OSError as err:
        raise AnnotationError(path, "", f"cannot read: {err.strerror or err}", code="unreadable_file") from err
    if len(data) > limit:  # grew while being read
        raise AnnotationError(path, "", f"over the limit of {limit} bytes (raise it with {MAX_FILE_BYTES_ENV})", code="file_too_large")
    return data


def declared_image_size(path: str | os.PathLike[str], data: bytes) -> tuple[int, int]:
    """(width, height) an image file's header declares, recognised by content whatever its extension (a TIFF
    named .png is a TIFF), checked against the pixel limit before anything is decoded.

    The one size check in front of every decoder of whole images and label maps. A format Pillow cannot
    identify is refused rather than handed to OpenCV, whose readers (Radiance HDR, PFM, ...) would allocate
    what the file declares before any check here could see it. Raises AnnotationError: "unreadable_image"
    for an empty, truncated or unknown file, "image_too_large" over the limit.
    """
    from PIL import Image

    if not data:
        raise AnnotationError(path, "", "empty file (0 bytes), not an image", code="unreadable_image")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise AnnotationError(path, "", "truncated PNG (no IHDR header)", code="unreadable_image")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    width, height = im.size
        except Image.DecompressionBombError as err:
            raise AnnotationError(path, "size", f"too many pixels: {err}", code="image_too_large") from err
        except Exception as err:  # Pillow raises several types for unknown or broken headers
            raise AnnotationError(path, "", f"not an image format that can be read safely: {type(err).__name__}: {err}",
                                  code="unreadable_image") from err
    check_pixel_count(path, width=width, height=height)
    return width, height


def decode_image_file(path: str | os.PathLike[str]) -> Any:
    """An image or label map decoded as stored (cv2.IMREAD_UNCHANGED), or None when it does not decode.

    The bytes are read by Python, not by `cv2.imread`: OpenCV converts the path to a C string and crashes on
    a name that is not valid UTF-8 (a lone surrogate from os.fsdecode). The declared size is checked
    against the pixel limit before decoding (`declared_image_size`), so a small file cannot expand into
    gigabytes. Raises AnnotationError for a file that is not regular, too big, empty, of an unknown format
    or over the pixel limit.
    """
    import cv2
    import numpy as np

    data = read_input_bytes(path)
    declared_image_size(path, data)
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # a header that parsed but a body OpenCV refuses
        return None


NON_UTF8_REASON = ("file name is not valid UTF-8; skipped: reports, Parquet tables and OpenCV need UTF-8 names, so "
                   "rename it (e.g. `convmv -f latin1 -t utf8`)")


def is_utf8_name(name: str) -> bool:
    """False for a name with undecodable bytes (they reach Python as lone surrogates, PEP 383).

    >>> is_utf8_name("café.png"), is_utf8_name(os.fsdecode(b"caf\\xe9.png"))
    (True, False)
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ImageIndex:
    """Image files under one or more roots, keyed by stem. Ambiguous stems keep every candidate."""

    by_stem: dict[str, tuple[Path, ...]]

    def candidates(self, stem: str) -> tuple[Path, ...]:
        return self.by_stem.get(stem, ())


def is_hidden_name(name: str) -> bool:
    """Hidden files and folders are not inputs: .DS_Store, macOS `._x.jpg` forks, .ipynb_checkpoints, .git.

    One rule for every converter and for the pipeline's dataset fingerprint (pipeline/cache/fingerprints.py), so
    that `segpipe convert` and `segpipe run` see the same files and a file that changes the output always
    changes the cache key.
    """
    return name.startswith(".")


def walk_input_files(root: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """Regular files under `root`, sorted, hidden names (files or folders) skipped."""
    root = Path(root)
    if not recursive:
        return sorted(p for p in root.iterdir() if p.is_file() and not is_hidden_name(p.name))
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden_name(d))  # pruned: never descended into
        here = Path(dirpath)
        found.extend(here / f for f in filenames if not is_hidden_name(f) and (here / f).is_file())
    return sorted(found)


def index_images(roots: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> ImageIndex:
    found: dict[str, list[Path]] = defaultdict(list)
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for p in walk_input_files(root, recursive=recursive):
            if is_image_name(p.name):
                found[p.stem].append(p)
    return ImageIndex(by_stem={k: tuple(sorted(v)) for k, v in found.items()})


def read_image_size(path: str | os.PathLike[str], *, data: bytes | None = None) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation; reads the header only (of `data`, the
    image's bytes held in memory, when given: `path` then only names it in errors).

    Raises AnnotationError(code="unreadable_image") for missing, empty or undecodable files.
    """
    return read_image_header(path, data=data)[0]


def _read_head(path: str | os.PathLike[str]) -> bytes:
    """The first HEAD_BYTES of a regular file; one open and one fstat (O_NONBLOCK: a FIFO must not block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AnnotationError(path, "", "not a regular file (a device, FIFO or socket); only regular files are read", code="not_regular_file")
        return os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)


def read_image_header(path: str | os.PathLike[str], *, data: bytes | None = None) -> tuple[tuple[int, int], bytes]:
    """(width, height) as displayed, and the file's first bytes (up to 64 KiB), for callers that also
    recognise the format by content: one read serves both (`data`: the bytes held in memory, as for
    `read_image_size`). Raises as `read_image_size`."""
    from PIL import Image, UnidentifiedImageError

    try:
        head = _read_head(path) if data is None else data[:HEAD_BYTES]
        plain = plain_jpeg_size(head)
        # Above Pillow's own bomb threshold, Pillow's refusal and its message stay the answer.
        if plain is not None and (Image.MAX_IMAGE_PIXELS is None or plain[0] * plain[1] <= Image.MAX_IMAGE_PIXELS):
            check_pixel_count(path, width=plain[0], height=plain[1])
            return plain, head  # no EXIF segment, hence no orientation to apply
        with warnings.catch_warnings():
            # Pillow warns above its own threshold; our limit (check_pixel_count) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                width, height = im.size
                orientation = _orientation(im)
    except FileNotFoundError as err:
        raise AnnotationError(path, "", "image file not found", code="missing_image") from err
    except Image.DecompressionBombError as err:  # Pillow refuses above twice its threshold, before our check
        raise AnnotationError(path, "size", f"too many pixels: {err}", code="image_too_large") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise AnnotationError(path, "", f"unreadable image: {err}", code="unreadable_image") from err
    check_pixel_count(path, width=int(width), height=int(height))
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return (int(width), int(height)), head


def _orientation(im: Any) -> int:
    """EXIF orientation without decoding pixels. For PNG, `getexif()` would read past IDAT (a full decode,
    ~1 ms an image), so only an eXIf chunk placed before the image data is honoured there."""
    from PIL import Image

    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(_EXIF_ORIENTATION_TAG, 1))
        if im.format in ("JPEG", "TIFF", "WEBP", "MPO"):
            return int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block does not make the image unreadable
        return 1
    return 1

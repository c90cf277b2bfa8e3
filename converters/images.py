"""Finding images by stem and reading their size from the header (EXIF orientation applied).

Formats are recognised by content, not by extension: the real Oxford-IIIT Pet dataset has GIF and PNG
files named `.jpg`, and `.mat` files in `images/` (skipped because their extension is not an image's).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from segpipe.converters.errors import AnnotationError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# EXIF orientations 5..8 are rotations by 90 or 270 degrees: width and height swap.
_EXIF_ORIENTATION_TAG = 274
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


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


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation; reads the header only.

    Raises AnnotationError(code="unreadable_image") for missing, empty or undecodable files.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = _orientation(im)
    except FileNotFoundError as err:
        raise AnnotationError(path, "", "image file not found", code="missing_image") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise AnnotationError(path, "", f"unreadable image: {err}", code="unreadable_image") from err
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return int(width), int(height)


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

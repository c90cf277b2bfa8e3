"""The converted dataset directory layout that `segpipe convert` writes and every later stage reads.

    OUT/instances.json        COCO (ids per converters.coco); image `file_name` relative to `image_root`
    OUT/dataset.json          {"format", "image_root" (absolute), "source", "options"}: where images live
    OUT/semantic/<stem>.png   single-channel label maps (0 background, 255 ignore), trimap-based formats only
    OUT/semantic/classes.txt  semantic class names in index order (`background`, `pet`)
    OUT/heads.json            oxford-pet only: head boxes from the XMLs (categories cat, dog)
    OUT/conversion_report.csv file, severity, code, message
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from converters.atomic_write import atomic_write_text

INSTANCES_FILE = "instances.json"
DATASET_META_FILE = "dataset.json"
SEMANTIC_DIR = "semantic"
SEMANTIC_CLASSES_FILE = "classes.txt"
HEADS_FILE = "heads.json"


@dataclass(frozen=True)
class DatasetDir:
    root: Path

    @property
    def instances(self) -> Path:
        return self.root / INSTANCES_FILE

    @property
    def semantic(self) -> Path:
        return self.root / SEMANTIC_DIR

    @property
    def semantic_classes(self) -> Path:
        return self.root / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE

    def meta(self) -> dict[str, Any]:
        path = self.root / DATASET_META_FILE
        if not path.is_file():
            # Any COCO file with its images beside it: images are looked up relative to the directory.
            return {"format": "coco", "image_root": str(self.root.resolve()), "options": {}}
        return json.loads(path.read_text(encoding="utf-8"))

    @property
    def image_root(self) -> Path:
        return Path(self.meta()["image_root"])

    def image_path(self, file_name: str) -> Path | None:
        """The image of a COCO `file_name`, or None when the name points outside `image_root`."""
        return resolve_image_path(self.image_root, file_name)


def resolve_image_path(root: str | os.PathLike[str], file_name: str) -> Path | None:
    """`root / file_name`, or None when that would leave `root`: an absolute name, a `..` part, or a path
    that resolves (symlinks followed) outside `root.resolve()`.

    A COCO file is untrusted input: without this check a GT could make reports embed, and audits hash,
    any file the user can read.

    >>> resolve_image_path(Path("/data/images"), "../../etc/passwd") is None
    True
    """
    root = Path(root)
    # Both spellings: a Windows-made `..\\x.png` or `C:\\x.png` must not slip through as one odd POSIX name.
    posix, windows = PurePosixPath(file_name), PureWindowsPath(file_name)
    if not file_name or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        return None
    path = root / file_name
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):  # NUL byte in the name, symlink loop: not a usable image path
        return None
    return path if inside else None


def write_dataset_meta(out: str | os.PathLike[str], *, format: str, image_root: str | os.PathLike[str], options: dict[str, Any]) -> Path:
    meta = {"format": format, "image_root": str(Path(image_root).resolve()), "options": options}
    return atomic_write_text(Path(out) / DATASET_META_FILE, json.dumps(meta, sort_keys=True, indent=2) + "\n")

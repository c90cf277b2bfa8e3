"""The converted dataset directory layout that `segpipe convert` writes and every later stage reads.

    OUT/instances.json        COCO (ids per segpipe.converters.coco); image `file_name` relative to `image_root`
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
from typing import Any, Mapping

from segpipe.core.atomic_write import atomic_write_text
from segpipe.core.layout import (  # the dataset layout's names, re-exported for its readers
    DATASET_META_FILE as DATASET_META_FILE,
    HEADS_FILE as HEADS_FILE,
    IGNORE_INDEX as IGNORE_INDEX,
    INSTANCES_FILE as INSTANCES_FILE,
    SEMANTIC_CLASSES_FILE as SEMANTIC_CLASSES_FILE,
    SEMANTIC_DIR as SEMANTIC_DIR,
)


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
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return meta

    @property
    def image_root(self) -> Path:
        return Path(self.meta()["image_root"])

    def image_path(self, file_name: str) -> Path | None:
        """The image of a COCO `file_name`, or None when the name points outside `image_root`."""
        return resolve_image_path(self.image_root, file_name)


def resolve_image_path(root: str | os.PathLike[str], file_name: str) -> Path | None:
    """`root / file_name`, or None when the name itself climbs out of `root`: an absolute name or a `..` part
    (either spelling), or a name the OS cannot use (a NUL byte).

    A COCO file is untrusted input: without this check a GT could make reports embed, and audits hash, any
    file the user can read. Where a symlink *inside* the root points is not checked: links are placed by
    whoever owns the dataset folder (datasets are often symlink farms into a shared image store), and a COCO
    file cannot create one.

    >>> resolve_image_path(Path("/data/images"), "../../etc/passwd") is None
    True
    """
    root = Path(root)
    # Both spellings: a Windows-made `..\\x.png` or `C:\\x.png` must not slip through as one odd POSIX name.
    posix, windows = PurePosixPath(file_name), PureWindowsPath(file_name)
    if not file_name or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        return None
    if "\x00" in file_name:
        return None
    return root / file_name


def write_dataset_meta(out: str | os.PathLike[str], *, format: str, image_root: str | os.PathLike[str], options: dict[str, Any]) -> Path:
    meta = {"format": format, "image_root": str(Path(image_root).resolve()), "options": options}
    return atomic_write_text(Path(out) / DATASET_META_FILE, json.dumps(meta, sort_keys=True, indent=2) + "\n")


def remove_stale_semantic_maps(semantic: Path, *, keep: set[str]) -> list[Path]:
    """Delete the `*.png` label maps in `semantic` whose name is not in `keep` (a previous run's maps of
    images this run skipped or left out: `evaluate semantic` scores every map in the folder). Returns the
    removed paths, sorted; classes.txt and other files stay."""
    removed = sorted(p for p in semantic.glob("*.png") if p.name not in keep and p.is_file())
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def discard_outputs(out: Path) -> None:
    """Remove OUT's instances.json, heads.json and semantic label maps after a --strict abort, so that no
    earlier run's output can be mistaken for this run's. The report and dataset.json stay."""
    for name in (INSTANCES_FILE, HEADS_FILE):
        (out / name).unlink(missing_ok=True)
    if (out / SEMANTIC_DIR).is_dir():
        remove_stale_semantic_maps(out / SEMANTIC_DIR, keep=set())


def parse_class_names(text: str) -> list[str]:
    """Class names in index order from a comma list or a classes file's text (one per line; blank lines and
    `#` comment lines skipped). The one reading of `--classes` for `segpipe infer`, `run` and `evaluate semantic`.

    >>> parse_class_names("background, pet")
    ['background', 'pet']
    >>> parse_class_names("# VOC\\nroad\\nsidewalk\\n\\n")
    ['road', 'sidewalk']
    """
    separator = "\n" if "\n" in text.strip() or "," not in text else ","
    names = (name.strip() for name in text.split(separator))
    return [name for name in names if name and not (separator == "\n" and name.startswith("#"))]


def parse_class_lines(text: str) -> list[str]:
    """A classes file: one name a line (commas are part of a name), blank and `#` comment lines skipped.

    >>> parse_class_lines("# Oxford-IIIT Pet\\nbackground\\npet\\n")
    ['background', 'pet']
    """
    names = (line.strip() for line in text.splitlines())
    return [name for name in names if name and not name.startswith("#")]


def read_class_names_file(path: str | os.PathLike[str]) -> list[str]:
    """The one reader of class files (`semantic/classes.txt`, `--classes FILE`) for every command.
    Raises OSError/UnicodeDecodeError for unreadable files (callers name the option)."""
    return parse_class_lines(Path(path).read_bytes().decode("utf-8-sig"))


def is_existing_file(value: str) -> bool:
    """`Path(value).is_file()` that is False, not OSError, for strings no file system accepts as a name
    (a 150-name comma list is longer than NAME_MAX)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


def class_names_option(value: str) -> list[str]:
    """`--classes`: an existing file (one name a line), else a comma list (a single name is a one-item list)."""
    return read_class_names_file(value) if is_existing_file(value) else parse_class_names(value)


def coco_image_root(json_path: Path, coco: Mapping[str, Any]) -> Path:
    """Where the images of a bare COCO file live: the folder (of those below) holding most of its first images.

    The json's folder, an `images/` folder beside it, or the COCO and Datumaro layouts
    ROOT/annotations/instances_<split>.json with ROOT/<split>/ or ROOT/images/<split>/; the json's folder when none has any.
    """
    here = json_path.parent
    split = json_path.stem.split("_", 1)[1] if "_" in json_path.stem else json_path.stem
    candidates = [here, here / "images", here.parent / "images" / split, here.parent / split, here.parent / "images", here.parent]
    names = [str(im.get("file_name", "")) for im in (coco.get("images") or [])[:20] if isinstance(im, dict)]
    found = [sum(p is not None and p.is_file() for p in (resolve_image_path(c, n) for n in names)) if c.is_dir() else 0 for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (found[i], -i))
    return candidates[best] if found[best] > 0 else here

"""The files one conversion reads: everything found under its folders (a walk of the disk), or a given list.

A given list is how `segpipe run` converts one shard of a dataset: the shard's own annotations and images
plus the dataset-wide files (class lists, list.txt), with the converter's code unchanged and every path
(COCO `file_name`s, report rows) the dataset's own. The converters ask this object instead of the disk
wherever a folder's content decides what is converted (walks, "is there an XML for this image?"); the
folders named on the command line are still checked on disk.

>>> files = InputFiles(["/d/src/a.xml", "/d/src/sub/b.xml", "/d/src/._a.xml", "/d/images/a.jpg"])
>>> [p.as_posix() for p in files.walk(Path("/d/src"))]
['/d/src/a.xml', '/d/src/sub/b.xml']
>>> files.is_file(Path("/d/images/a.jpg")), files.is_file(Path("/d/images/b.jpg")), files.is_dir(Path("/d/src/sub"))
(True, False, True)
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from segpipe.core.images import ImageIndex, is_hidden_name, is_image_name, walk_input_files


class InputFiles:
    """`InputFiles()` reads folders from disk; `InputFiles(paths)` sees only `paths` (each one joined the way
    the converter joins it: a dataset root / the file's relative path)."""

    def __init__(self, files: Iterable[str | os.PathLike[str]] | None = None) -> None:
        self._listed: frozenset[str] | None = None
        self._folders: frozenset[str] = frozenset()
        if files is not None:
            listed = frozenset(str(Path(f)) for f in files)
            self._listed = listed
            self._folders = frozenset(str(parent) for name in listed for parent in Path(name).parents)

    @property
    def listed(self) -> bool:
        """True when the conversion sees a given list rather than the disk."""
        return self._listed is not None

    def walk(self, root: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
        """Files under `root`, sorted, hidden names skipped: what segpipe.core.images.walk_input_files
        gives, restricted to the list when there is one."""
        if self._listed is None:
            return walk_input_files(root, recursive=recursive)
        prefix = str(Path(root)).rstrip(os.sep) + os.sep
        found: list[Path] = []
        for name in self._listed:
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split(os.sep)
            if (recursive or len(parts) == 1) and not any(is_hidden_name(part) for part in parts):
                found.append(Path(name))
        return sorted(found)

    def is_file(self, path: str | os.PathLike[str]) -> bool:
        return Path(path).is_file() if self._listed is None else str(Path(path)) in self._listed

    def is_dir(self, path: str | os.PathLike[str]) -> bool:
        return Path(path).is_dir() if self._listed is None else str(Path(path)) in self._folders

    def index_images(self, roots: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> ImageIndex:
        """Image files under the roots by stem, as segpipe.core.images.index_images finds them."""
        found: dict[str, list[Path]] = defaultdict(list)
        for root in roots:
            if not Path(root).is_dir():
                continue
            for p in self.walk(root, recursive=recursive):
                if is_image_name(p.name):
                    found[p.stem].append(p)
        return ImageIndex(by_stem={k: tuple(sorted(v)) for k, v in found.items()})



def input_files(files: Iterable[str | os.PathLike[str]] | InputFiles | None) -> InputFiles:
    """The `files` argument of the `*_conversion` functions: None reads the folders, else only these files."""
    return files if isinstance(files, InputFiles) else InputFiles(files)

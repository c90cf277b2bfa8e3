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
from pathlib import Path
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

    def image_path(self, file_name: str) -> Path:
        return self.image_root / file_name


def write_dataset_meta(out: str | os.PathLike[str], *, format: str, image_root: str | os.PathLike[str], options: dict[str, Any]) -> Path:
    meta = {"format": format, "image_root": str(Path(image_root).resolve()), "options": options}
    return atomic_write_text(Path(out) / DATASET_META_FILE, json.dumps(meta, sort_keys=True, indent=2) + "\n")

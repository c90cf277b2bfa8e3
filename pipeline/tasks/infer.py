"""Inference of one shard, as a content-addressed unit run inside an evaluation group task.

A shard's inference reads *its own* image files, mapped onto the dataset's label space
(segpipe.inference.images.infer_images); never the annotations, so editing an XML or a trimap does not
rerun it. Its key hashes the shard's images, the label space, the checkpoint and the inference options:
adding an image elsewhere in the dataset leaves it alone. The unit folder,
`.cache/infer/<checkpoint>/<options>/<key>/`, holds `pred/` (the predictions), `images.json` (the
predicted file names in id order: result image ids are positions in it) and `unreadable_images.csv`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

from segpipe.core.atomic_write import atomic_write_text
from segpipe.cache.fingerprints import combine_keys

PRED_DIR = "pred"
IMAGES_FILE = "images.json"
SKIPPED_FILE = "unreadable_images.csv"
INFER_UNITS = "infer"


def infer_unit_key(*, version: str, checkpoint_digest: str, options_digest: str, labels_digest: str, images_key: str) -> str:
    # "images": units that infer on their image list (earlier ones read an images-only COCO index).
    return combine_keys("infer-shard/images", version, checkpoint_digest, options_digest, labels_digest, images_key)


def infer_unit_kind(*, checkpoint_digest: str, options_digest: str) -> str:
    return f"{INFER_UNITS}/{checkpoint_digest[:16]}/{options_digest}"


def write_unit_images(directory: Path, *, file_names: Sequence[str], unreadable: Sequence[tuple[str, str]]) -> None:
    """images.json (the predicted images, in id order) and unreadable_images.csv (file, reason) of a unit."""
    atomic_write_text(directory / IMAGES_FILE, json.dumps({"file_names": list(file_names)}, sort_keys=True) + "\n")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("file", "reason"), *unreadable])
    atomic_write_text(directory / SKIPPED_FILE, buf.getvalue())


def read_unit_images(directory: Path) -> dict[int, str]:
    """Result image id -> file name, for a unit's predictions."""
    names = json.loads((directory / IMAGES_FILE).read_text(encoding="utf-8"))["file_names"]
    return {i: str(name) for i, name in enumerate(names, start=1)}

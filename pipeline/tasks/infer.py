"""Inference of one shard, as a content-addressed unit run inside an evaluation group task.

Inference depends on the images and the checkpoint only, never on annotations: editing an XML or a
trimap must not rerun it. So a shard's inference reads a small images-only COCO index of *its own*
images (sizes read from headers, ids by sorted file name within the shard) plus the label space
(category names and semantic classes, which map model outputs to dataset ids). Its key hashes the
shard's images, the label space, the checkpoint and the inference options: adding an image elsewhere in
the dataset leaves it alone. Folders: `.cache/infer/<checkpoint>/<options>/<key>/{index,pred}/`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.coco import dumps_coco
from segpipe.converters.dataset_layout import INSTANCES_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR, write_dataset_meta
from segpipe.converters.errors import AnnotationError
from segpipe.converters.images import read_image_size
from segpipe.cache.fingerprints import combine_keys

INDEX_DATASET = "index"
PRED_DIR = "pred"
SKIPPED_FILE = "unreadable_images.csv"
INFER_UNITS = "infer"


def build_index_coco(*, sizes: list[tuple[str, int, int]], label_space: Mapping[str, Any]) -> dict[str, Any]:
    """COCO with images only (ids by sorted file name) and the label space's categories. Pure."""
    images = [
        {"id": i, "file_name": name, "width": w, "height": h}
        for i, (name, w, h) in enumerate(sorted(sizes), start=1)
    ]
    categories = [{**c, "id": i} for i, c in enumerate(label_space.get("categories", []), start=1)]
    return {"images": images, "annotations": [], "categories": categories}


def infer_unit_key(*, version: str, checkpoint_digest: str, options_digest: str, labels_digest: str, images_key: str) -> str:
    return combine_keys("infer-shard", version, checkpoint_digest, options_digest, labels_digest, images_key)


def infer_unit_kind(*, checkpoint_digest: str, options_digest: str) -> str:
    return f"{INFER_UNITS}/{checkpoint_digest[:16]}/{options_digest}"


def write_shard_index(*, directory: Path, image_root: Path, names: Sequence[str], label_space: Mapping[str, Any]) -> int:
    """The shard's images-only dataset dir under `directory`; unreadable images are listed, not indexed.
    Returns the number of readable images."""
    out = directory / INDEX_DATASET
    sizes: list[tuple[str, int, int]] = []
    skipped: list[tuple[str, str]] = []
    for name in names:
        try:
            width, height = read_image_size(image_root / name)
        except AnnotationError as err:  # a broken image is left out of inference, and said so
            skipped.append((name, str(err)))
            continue
        sizes.append((name, width, height))
    atomic_write_bytes(out / INSTANCES_FILE, dumps_coco(build_index_coco(sizes=sizes, label_space=label_space)))
    write_dataset_meta(out, format="image-index", image_root=image_root, options={})
    semantic = label_space.get("semantic_classes")
    if semantic:
        atomic_write_text(out / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE, "".join(f"{n}\n" for n in semantic))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("file", "reason"), *skipped])
    atomic_write_text(directory / SKIPPED_FILE, buf.getvalue())
    return len(sizes)

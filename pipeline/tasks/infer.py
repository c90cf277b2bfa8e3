"""Inference as Luigi tasks: an image index, then one task per (checkpoint, shard of images) (issue 5).

Inference must depend on the images and the checkpoint only, never on annotations: editing an XML or a
trimap must not rerun it. So inference does not read the converted dataset; it reads an *image index*
dataset dir built from the image files alone (sizes read from headers) plus the label space (category
names and semantic classes, which map model outputs to dataset ids). Its key hashes the images'
manifest and the label space; each shard's key adds the shard's images, the checkpoint's sha256 and the
inference options. Output paths follow `.cache/infer/<ckpt>/<images>/<opts>/shard-NNNNN-<key>/`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.coco import dumps_coco
from segpipe.converters.dataset_layout import INSTANCES_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR, write_dataset_meta
from segpipe.converters.errors import AnnotationError
from segpipe.converters.images import read_image_size
from segpipe.tasks import stages
from segpipe.cache.input_check import Expected, inputs_unchanged
from segpipe.cache.targets import CachedTask
from segpipe.runner.gpu_slots import gpu_slot
from segpipe.runner.shards import read_plan
from segpipe.tasks.convert import spec_from_json

INDEX_DATASET = "dataset"
PRED_DIR = "pred"
SKIPPED_FILE = "unreadable_images.csv"


def build_index_coco(*, sizes: list[tuple[str, int, int]], label_space: dict[str, Any]) -> dict[str, Any]:
    """COCO with images only (ids by sorted file name) and the label space's categories. Pure."""
    images = [
        {"id": i, "file_name": name, "width": w, "height": h}
        for i, (name, w, h) in enumerate(sorted(sizes), start=1)
    ]
    categories = [{**c, "id": i} for i, c in enumerate(label_space.get("categories", []), start=1)]
    return {"images": images, "annotations": [], "categories": categories}


class ImageIndex(CachedTask):
    """The images of the dataset as a COCO dataset dir without annotations (what inference reads)."""

    kind = "images"

    def compute(self) -> None:
        data = self.data
        image_root = Path(data["image_root"])
        out = self.fresh_directory() / INDEX_DATASET
        sizes: list[tuple[str, int, int]] = []
        skipped: list[tuple[str, str]] = []
        for name in read_plan(data["plan"])["image_names"]:
            try:
                width, height = read_image_size(image_root / name)
            except AnnotationError as err:  # a broken image is left out of inference, and said so
                skipped.append((name, str(err)))
                continue
            sizes.append((name, width, height))
        coco = build_index_coco(sizes=sizes, label_space=data["label_space"])
        atomic_write_bytes(out / INSTANCES_FILE, dumps_coco(coco))
        write_dataset_meta(out, format="image-index", image_root=image_root, options={})
        semantic = data["label_space"].get("semantic_classes")
        if semantic:
            atomic_write_text(out / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE, "".join(f"{n}\n" for n in semantic))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([("file", "reason"), *skipped])
        atomic_write_text(out.parent / SKIPPED_FILE, buf.getvalue())
        self.finish(images=len(sizes), unreadable=len(skipped))


class InferShard(CachedTask):
    """Run one checkpoint over one shard of the image index."""

    kind = "infer"

    def subdir(self) -> str:
        return "/".join([*self.data["path_parts"], f"shard-{int(self.data['shard']):05d}-{self.key}"])

    def requires(self) -> ImageIndex:
        key, payload = self.data["index"]
        return ImageIndex(key=key, cache=self.cache, payload=payload)

    def compute(self) -> None:
        data = self.data
        index_dir = self.requires().output().directory / INDEX_DATASET
        coco = json.loads((index_dir / INSTANCES_FILE).read_bytes())
        ids_by_name = {im["file_name"]: int(im["id"]) for im in coco["images"]}
        names = read_plan(data["plan"])["shards"][int(data["shard"])]["image_names"]
        image_ids = sorted(ids_by_name[n] for n in names if n in ids_by_name)
        out = self.fresh_directory() / PRED_DIR
        plan = read_plan(data["plan"])
        prefix = spec_from_json(plan["spec"]).image_prefix()
        image_root = Path(self.requires().data["image_root"])
        # The images this shard reads, and the checkpoint, must be what the key fingerprinted.
        inputs: list[Expected] = [(image_root / str(path)[len(prefix):], int(size), str(sha))
                                  for path, size, sha in plan["shards"][int(data["shard"])]["entries"]
                                  if str(path).startswith(prefix) and str(path)[len(prefix):] in ids_by_name]
        if data.get("checkpoint_sha256"):
            inputs.append((Path(data["checkpoint"]), None, str(data["checkpoint_sha256"])))
        with inputs_unchanged(inputs, cache=Path(str(self.cache))):
            if image_ids and data.get("devices"):
                # `--devices`: whichever listed GPU is free; the key says only "cuda", as the outputs do not
                # depend on which.
                with gpu_slot(self.cache, data["devices"]) as gpu:
                    self._infer(out=out, index_dir=index_dir, image_ids=image_ids,
                                options={**data["options"], "device": f"cuda:{gpu}"})
            elif image_ids:
                self._infer(out=out, index_dir=index_dir, image_ids=image_ids, options=data["options"])
            else:
                out.mkdir(parents=True, exist_ok=True)
        self.finish(images=len(image_ids))

    def _infer(self, *, out: Path, index_dir: Path, image_ids: list[int], options: dict[str, Any]) -> None:
        data = self.data
        stages.infer_shard(
            model=data["model"], checkpoint=Path(data["checkpoint"]), dataset=index_dir, out=out,
            image_ids=image_ids, options=options, loader_workers=data.get("loader_workers"),
            checkpoint_sha256=data.get("checkpoint_sha256"),
        )

"""The stubbed per-shard work of benchmarks/pipeline_scale.py: nothing is decoded or computed, every
shard still writes the files the next stage reads (conversion: a COCO file and one label map per image;
inference: one small file per shard, where the engine writes one label map per image). Not a benchmark
(imported by pipeline_scale.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core.atomic_write import atomic_write_text
from segpipe.converters.conversion_output import Conversion, ConversionOutputs
from segpipe.core.images import is_image_name
from segpipe.inference.images import ImagesInference
from segpipe.plan.formats import DatasetSpec
from segpipe.tasks import evaluate as tasks_evaluate
from segpipe.tasks.evaluate import SEMANTIC_EVAL, write_shard_stats
from segpipe.tasks.infer import read_unit_images

STUB = {"ms_per_image": 0.05, "slept": 0.0}


def stub_seconds(*, reset: bool = False) -> float:
    """Seconds the stub inference slept in this process (since the last reset)."""
    if reset:
        STUB["slept"] = 0.0
    return STUB["slept"]


def _convert(self: DatasetSpec, *, files: Any, options: Any) -> Conversion:
    """The shard's images as a COCO dict, from its own file list, and one label map per image, as the
    converters make them (never decoded here)."""
    root = self.image_root().resolve()
    stems = sorted(Path(p).stem for p in files if Path(p).parent.resolve() == root and is_image_name(Path(p).name))
    images = [{"id": i, "file_name": f"{stem}.jpg", "width": 8, "height": 8} for i, stem in enumerate(stems, start=1)]
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "pet", "supercategory": "pet"}]}
    outputs = ConversionOutputs(semantic_classes=("background", "pet"),
                                label_maps={f"{stem}.png": b"label map of %s" % stem.encode() for stem in stems})
    return Conversion(format=self.format, image_root=self.image_root(), options={}, coco=coco, findings=(), outputs=outputs)


def _infer(session: Any, *, image_root: Path, names: Any, label_space: Any, out: Path, progress: Any = None) -> ImagesInference:
    n = len(names)
    seconds = n * STUB["ms_per_image"] / 1000
    time.sleep(seconds)
    STUB["slept"] += seconds
    atomic_write_text(out / "meta.json", json.dumps({"task": "semantic", "n_images": n}) + "\n")
    return ImagesInference(file_names=tuple(sorted(names)), unreadable=(), summary=None)


def _evaluate(*, directory: Path, infer_dir: Path, merged: Path, gt_key: str, iou_type: str) -> dict[str, Any]:
    n = len(read_unit_images(infer_dir))
    confusion = np.array([[40 * n, 3 * n, 0], [2 * n, 20 * n, 0]], dtype=np.int64)
    write_shard_stats(directory, stats={SEMANTIC_EVAL: {"confusion": confusion, "per_image": [], "notes": [],
                                                        "class_names": ["background", "pet"]}})
    return {"images": n}


def install_stubs(*, ms_per_image: float) -> None:
    STUB["ms_per_image"] = ms_per_image
    DatasetSpec.convert = _convert  # type: ignore[method-assign]
    tasks_evaluate.infer_images = _infer  # type: ignore[assignment]
    tasks_evaluate.evaluate_shard = _evaluate  # type: ignore[assignment]

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

from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.coco import dumps_coco
from segpipe.tasks import convert as tasks_convert, evaluate as tasks_evaluate, stages
from segpipe.tasks.evaluate import SEMANTIC_EVAL, write_shard_stats

STUB = {"ms_per_image": 0.05, "slept": 0.0}


def stub_seconds(*, reset: bool = False) -> float:
    """Seconds the stub inference slept in this process (since the last reset)."""
    if reset:
        STUB["slept"] = 0.0
    return STUB["slept"]


def _materialize(*, spec: Any, shard: Any, globals_: Any, dest: Path) -> Any:
    return shard  # no view to link: the stub converter reads the shard's stems


def _convert(*, spec: Any, out: Path, options: Any) -> None:
    images = [{"id": i, "file_name": f"{stem}.jpg", "width": 8, "height": 8} for i, stem in enumerate(sorted(spec.stems), start=1)]
    atomic_write_bytes(out / "instances.json", dumps_coco({"images": images, "annotations": [],
                                                           "categories": [{"id": 1, "name": "pet", "supercategory": "pet"}]}))
    atomic_write_text(out / "semantic" / "classes.txt", "background\npet\n")
    for stem in spec.stems:  # one label map per image, as the converters write (never decoded here)
        atomic_write_bytes(out / "semantic" / f"{stem}.png", b"label map of %s" % stem.encode())
    atomic_write_text(out / "conversion_report.csv", "file,severity,code,message\n")


def _index(*, directory: Path, image_root: Path, names: Any, label_space: Any) -> int:
    images = [{"id": i, "file_name": n, "width": 8, "height": 8} for i, n in enumerate(sorted(names), start=1)]
    atomic_write_bytes(directory / "index" / "instances.json", dumps_coco({"images": images, "annotations": [], "categories": []}))
    atomic_write_text(directory / "index" / "images.txt", "".join(f"{n}\n" for n in names))
    return len(names)


class _Session:
    def run(self, *, dataset: Path, out: Path, progress: Any = None) -> None:
        n = len((dataset / "images.txt").read_text(encoding="utf-8").splitlines())
        seconds = n * STUB["ms_per_image"] / 1000
        time.sleep(seconds)
        STUB["slept"] += seconds
        atomic_write_text(out / "meta.json", json.dumps({"task": "semantic", "n_images": n}) + "\n")


def _evaluate(*, directory: Path, infer_dir: Path, merged: Path, gt_key: str, iou_type: str) -> dict[str, Any]:
    n = len((infer_dir / "index" / "images.txt").read_text(encoding="utf-8").splitlines())
    confusion = np.array([[40 * n, 3 * n, 0], [2 * n, 20 * n, 0]], dtype=np.int64)
    write_shard_stats(directory, stats={SEMANTIC_EVAL: {"confusion": confusion, "per_image": [], "notes": [],
                                                        "class_names": ["background", "pet"]}})
    return {"images": n}


def install_stubs(*, ms_per_image: float) -> None:
    STUB["ms_per_image"] = ms_per_image
    tasks_convert.materialize_shard_source = _materialize  # type: ignore[assignment]
    stages.convert_dataset = _convert  # type: ignore[assignment]
    stages.inference_session = lambda **_: _Session()  # type: ignore[assignment]
    tasks_evaluate.write_shard_index = _index  # type: ignore[assignment]
    tasks_evaluate.evaluate_shard = _evaluate  # type: ignore[assignment]

"""`segpipe run`'s task graph at scale: tasks created, graph-building time, scheduler overhead, no-op rerun,
rerun after one changed image — at 1,000 / 10,000 / 100,000 images x 20 checkpoints.

STAND-IN, clearly: no image files exist and nothing is decoded. The dataset is a synthetic manifest (one
image + one trimap entry per stem, as `build_manifest` would list them), and the per-shard work is stubbed:
conversion writes an images-only COCO per shard, inference sleeps a fixed time per image
(`--ms-per-image`), evaluation writes a fixed confusion matrix. Everything else is the real thing: the
shard plan, the typed tasks, `segpipe.runner.driver.run_graph` (three `luigi.build` phases with the local
scheduler), the content-addressed shard units, the per-shard ground truth of the merge, the reports'
merge and the leaderboard. Not included: fingerprinting the files (a stat per file with a warm stat cache).

Scheduler overhead = wall time of the run minus the time spent inside tasks' run() (Luigi's
PROCESSING_TIME events; in-process with one worker).

    python benchmarks/pipeline_scale.py                       # 1,000, 10,000, 100,000 images x 20 checkpoints
    python benchmarks/pipeline_scale.py --quick               # 1,000 images x 3 checkpoints
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import luigi
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from segpipe.cache.fingerprints import ManifestEntry, package_version  # noqa: E402
from segpipe.converters.atomic_write import atomic_write_text  # noqa: E402
from segpipe.converters.conversion_output import Conversion, ConversionOutputs  # noqa: E402
from segpipe.inference.images import ImagesInference  # noqa: E402
from segpipe.runner.config import RunSettings  # noqa: E402
from segpipe.runner import driver  # noqa: E402
from segpipe.runner.shards import DatasetSpec, plan_shards  # noqa: E402
from segpipe.tasks import convert as tasks_convert, evaluate as tasks_evaluate  # noqa: E402
from segpipe.tasks.infer import read_unit_images  # noqa: E402
from segpipe.cache.targets import CachedTask, execution_run_id  # noqa: E402
from segpipe.tasks.evaluate import SEMANTIC_EVAL, write_shard_stats  # noqa: E402

PROCESSING = {"seconds": 0.0, "tasks": 0}
STUB = {"ms_per_image": 0.05, "slept": 0.0}


@CachedTask.event_handler(luigi.Event.PROCESSING_TIME)
def _processing_time(task: luigi.Task, seconds: float) -> None:
    PROCESSING["seconds"] += seconds
    PROCESSING["tasks"] += 1


def _stub_convert(self: DatasetSpec, *, files: Any, options: Any) -> Conversion:
    """The shard's images as a COCO dict, from its file list alone (the stand-in dataset has no files)."""
    stems = sorted(p.stem for p in files if p.parent.name == "images")
    images = [{"id": i, "file_name": f"{stem}.jpg", "width": 8, "height": 8} for i, stem in enumerate(stems, start=1)]
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "pet", "supercategory": "pet"}]}
    return Conversion(format=self.format, image_root=self.image_root(), options={}, coco=coco, findings=(),
                      outputs=ConversionOutputs(semantic_classes=("background", "pet")))


@contextlib.contextmanager
def _no_input_check(files: Any, *, cache: Path) -> Iterator[None]:
    yield  # no files exist in the stand-in: nothing to compare with the fingerprints


def _stub_infer(session: Any, *, image_root: Path, names: Any, label_space: Any, out: Path, progress: Any = None) -> ImagesInference:
    n = len(names)
    seconds = n * STUB["ms_per_image"] / 1000
    time.sleep(seconds)
    STUB["slept"] += seconds
    atomic_write_text(out / "meta.json", json.dumps({"task": "semantic", "n_images": n}) + "\n")
    return ImagesInference(file_names=tuple(sorted(names)), unreadable=(), summary=None)


def _stub_evaluate(*, directory: Path, infer_dir: Path, merged: Path, gt_key: str, iou_type: str) -> dict[str, Any]:
    n = len(read_unit_images(infer_dir))
    confusion = np.array([[40 * n, 3 * n, 0], [2 * n, 20 * n, 0]], dtype=np.int64)
    write_shard_stats(directory, stats={SEMANTIC_EVAL: {"confusion": confusion, "per_image": [], "notes": [],
                                                        "class_names": ["background", "pet"]}})
    return {"images": n}


def install_stubs() -> None:
    DatasetSpec.convert = _stub_convert  # type: ignore[method-assign]
    tasks_evaluate.infer_images = _stub_infer  # type: ignore[assignment]
    tasks_evaluate.evaluate_shard = _stub_evaluate  # type: ignore[assignment]
    tasks_evaluate.inputs_unchanged = _no_input_check  # type: ignore[assignment]
    tasks_convert.inputs_unchanged = _no_input_check  # type: ignore[assignment]


def manifest(n_images: int, *, changed: int | None = None) -> tuple[ManifestEntry, ...]:
    """What build_manifest would list for an Oxford-IIIT Pet tree of n images (one trimap each)."""
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    rows = [ManifestEntry("root/annotations/list.txt", 10, sha("list"))]
    for i in range(n_images):
        stem = f"img_{i:06d}"
        version = "v2" if i == changed else "v1"
        rows.append(ManifestEntry(f"root/images/{stem}.jpg", 1000, sha(stem + version)))
        rows.append(ManifestEntry(f"root/annotations/trimaps/{stem}.png", 100, sha(stem + "trimap")))
    return tuple(sorted(rows))


def run_once(settings: RunSettings, *, spec: DatasetSpec, entries: tuple[ManifestEntry, ...], checkpoints: list[Any]) -> tuple[float, float, Any]:
    """(wall seconds, seconds inside task run(), outcome) of one run over the stand-in dataset."""
    PROCESSING.update(seconds=0.0, tasks=0)
    started = time.perf_counter()
    plan = plan_shards(entries, spec=spec, shard_size=settings.shard_size)
    with execution_run_id():  # as run_pipeline does: the run log tells this run's work from earlier runs'
        outcome = driver.run_graph(settings, spec=spec, plan=plan, checkpoints=checkpoints, version=package_version(),
                                   outcome=driver.RunOutcome())
    wall = time.perf_counter() - started
    if outcome.exit_code != 0:
        raise SystemExit(f"run failed: {outcome.failed or outcome.exit_code}")
    return wall, float(PROCESSING["seconds"]), outcome


def graph_size(settings: RunSettings, *, spec: DatasetSpec, entries: tuple[ManifestEntry, ...], checkpoints: list[Any]) -> tuple[int, float]:
    """(tasks in the graph, seconds to plan and build it), on a converted cache (as every run past phase 1)."""
    started = time.perf_counter()
    plan = plan_shards(entries, spec=spec, shard_size=settings.shard_size)
    merge = driver.build_convert_tasks(spec=spec, plan=plan, settings=settings, version=package_version(), cache=str(settings.cache))
    reports = [driver.build_checkpoint_tasks(ckpt=c, merge=merge, settings=settings, version=package_version()) for c in checkpoints]
    seconds = time.perf_counter() - started
    return len(driver.walk_graph([merge, *reports])) + 1, seconds  # + the leaderboard


def per_checkpoint(ran: list[str], family: str, checkpoints: list[Any]) -> int:
    return max((sum(1 for t in ran if t.startswith(f"{family}_{c.name}_")) for c in checkpoints), default=0)


def bench(n_images: int, *, n_checkpoints: int, workers: int, shard_size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="segpipe-scale-") as tmp:
        root = Path(tmp) / "pets"
        spec = DatasetSpec(format="oxford-pet", root=root)
        settings = RunSettings(dataset=root, format="oxford-pet", model="unet", checkpoints=(), out=Path(tmp) / "out",
                               cache_dir=Path(tmp).resolve() / "cache", shard_size=shard_size, workers=workers, html=False)
        checkpoints = [driver.CheckpointInput(name=f"ckpt{j:02d}", path=Path(tmp) / f"ckpt{j:02d}.pt",
                                              sha256=hashlib.sha256(f"c{j}".encode()).hexdigest(),
                                              key=hashlib.sha256(f"c{j}".encode()).hexdigest()) for j in range(n_checkpoints)]
        for c in checkpoints:  # never loaded (the stub session ignores it); the report header dates it
            c.path.write_bytes(c.name.encode())
        entries = manifest(n_images)
        STUB["slept"] = 0.0
        first, inside, outcome = run_once(settings, spec=spec, entries=entries, checkpoints=checkpoints)
        slept = STUB["slept"]
        tasks, build_s = graph_size(settings, spec=spec, entries=entries, checkpoints=checkpoints)
        noops = [run_once(settings, spec=spec, entries=entries, checkpoints=checkpoints)[0] for _ in range(3)]
        changed_wall, _, changed = run_once(settings, spec=spec, entries=manifest(n_images, changed=n_images // 2), checkpoints=checkpoints)
        overhead = first - inside if workers == 1 else float("nan")
        print(f"{n_images:>7,} images x {n_checkpoints} checkpoints, shard size {shard_size}, {workers} worker(s):")
        print(f"  tasks created: {tasks} ({len(outcome.groups)} scheduling groups ran; "
              f"{sum(1 for t in outcome.ran if t.startswith('InferShard'))} inference shards)")
        print(f"  graph building (plan + tasks, converted cache): {build_s:.2f} s")
        print(f"  first run: {first:.1f} s, of which inside tasks {inside:.1f} s (stub inference sleeping {slept:.1f} s);"
              f" scheduler overhead {overhead:.1f} s = {overhead / first:.1%} of the run")
        if slept > 0:
            real_run = first - slept + n_images * n_checkpoints * 0.005  # the stub's sleep replaced by 5 ms/image
            print(f"  same overhead against real inference at 5 ms/image: {overhead / real_run:.1%}")
        print(f"  no-op rerun: median {sorted(noops)[1]:.2f} s (of 3: {', '.join(f'{t:.2f}' for t in noops)})")
        print(f"  one image changed: {changed_wall:.1f} s; per checkpoint at most "
              f"{per_checkpoint(changed.ran, 'InferShard', checkpoints)} inference and "
              f"{per_checkpoint(changed.ran, 'EvalShard', checkpoints)} evaluation shard(s) rerun; "
              f"{len(changed.groups)} scheduling groups ran")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--ms-per-image", type=float, default=0.05, help="stub inference time per image")
    parser.add_argument("--quick", action="store_true", help="1,000 images x 3 checkpoints (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.checkpoints = [1_000], 3
    STUB["ms_per_image"] = args.ms_per_image
    install_stubs()
    print("STAND-IN: synthetic manifest, no image files, stubbed per-shard work; real plan, tasks, scheduler, cache.")
    for n in args.images:
        bench(n, n_checkpoints=args.checkpoints, workers=args.workers, shard_size=args.shard_size)


if __name__ == "__main__":
    main()

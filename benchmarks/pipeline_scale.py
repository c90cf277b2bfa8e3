"""`segpipe run` at scale: tasks created, fingerprinting and graph-building time, scheduler overhead,
no-op rerun, rerun after one changed image — at 1,000 / 10,000 / 100,000 images x 20 checkpoints, with one
worker, `--workers N` (forked worker processes) or several `segpipe run` processes on one luigid.

STAND-IN, clearly: the dataset is real files (an Oxford-IIIT-Pet-shaped tree, one tiny image file and one
tiny trimap file per stem, plus list.txt), but nothing is decoded: the per-shard work is stubbed
(conversion writes an images-only COCO per shard, inference sleeps a fixed time per image
(`--ms-per-image`), evaluation writes a fixed confusion matrix). Everything else is the real thing:
`segpipe.runner.driver.run_pipeline` (one scandir pass with the stat cache, the shard plan, the typed tasks,
three `luigi.build` phases, the input checks, the content-addressed shard units, the reports' merge, the
leaderboard and the publishing into OUT).

Scheduler overhead = wall time of the run minus the time spent inside tasks' run() (Luigi's
PROCESSING_TIME events, appended to a file by every worker process), divided by the number of workers.

    python benchmarks/pipeline_scale.py                       # 1,000, 10,000, 100,000 images x 20 checkpoints
    python benchmarks/pipeline_scale.py --images 100000 --workers 2
    python benchmarks/pipeline_scale.py --images 100000 --luigid --processes 2
    python benchmarks/pipeline_scale.py --quick               # 1,000 images x 3 checkpoints
    python benchmarks/pipeline_scale.py --images 100000 --keep /tmp/segpipe-scale   # then again with other flags
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import luigi

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from segpipe.cache.fingerprints import STAT_CACHE_FILE, StatCache, scan_dataset  # noqa: E402
from segpipe.cache.targets import CachedTask  # noqa: E402
from segpipe.runner import driver  # noqa: E402
from segpipe.runner.config import RunSettings  # noqa: E402
from segpipe.plan.shards import DatasetSpec, plan_shards  # noqa: E402
from benchmarks.scale_stubs import install_stubs, stub_seconds  # noqa: E402
from benchmarks.scale_scheduling import fork_cost_ms, luigid_server, torch_import_cost_ms  # noqa: E402

PROCESSING_ENV = "SEGPIPE_BENCH_PROCESSING_LOG"


@CachedTask.event_handler(luigi.Event.PROCESSING_TIME)
def _processing_time(task: luigi.Task, seconds: float) -> None:
    """Appended to a file: with --workers N the tasks run (and this handler fires) in forked processes."""
    path = os.environ.get(PROCESSING_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{seconds!r}\n".encode("ascii"))
        finally:
            os.close(fd)


def write_dataset(root: Path, n_images: int) -> None:
    """An Oxford-IIIT-Pet-shaped tree of tiny files (the stubs never decode them)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    (root / "annotations" / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n", encoding="utf-8")
    for i in range(n_images):
        (root / "images" / f"img_{i:06d}.jpg").write_bytes(b"jpg %d" % i)
        (root / "annotations" / "trimaps" / f"img_{i:06d}.png").write_bytes(b"png %d" % i)


def run_once(settings: RunSettings, *, processes: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `segpipe run` (or `processes` of them at once, on one luigid): wall seconds, seconds inside
    tasks' run() (all processes), what ran."""
    log = tmp / "processing.log"
    log.unlink(missing_ok=True)
    os.environ[PROCESSING_ENV] = str(log)
    started = time.perf_counter()
    if processes == 1:
        results = [_one_run(settings)]
    else:  # separate interpreters, each with its own OUT, one shared cache, as on several hosts
        procs = [subprocess.Popen([sys.executable, __file__, "--one-run", json.dumps(_settings_json(replace(settings, out=tmp / f"out{k}"))),
                                   "--ms-per-image", str(args.ms_per_image)], stdout=subprocess.PIPE, text=True)
                 for k in range(processes)]
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - started
    for r in results:
        if r["exit_code"] != 0:
            raise SystemExit(f"run failed: {r['failed'] or r['exit_code']}")
    inside = sum(float(x) for x in log.read_text().split()) if log.is_file() else 0.0
    ran = sorted({t for r in results for t in r["ran"]})
    groups = sorted({t for r in results for t in r["groups"]})
    return {"wall": wall, "inside": inside, "ran": ran, "groups": groups}


def _settings_json(settings: RunSettings) -> dict[str, Any]:
    return {"dataset": str(settings.dataset), "checkpoints": list(settings.checkpoints), "out": str(settings.out),
            "cache_dir": str(settings.cache_dir), "shard_size": settings.shard_size, "workers": settings.workers,
            "scheduler_url": settings.scheduler_url}


def _settings(data: dict[str, Any]) -> RunSettings:
    return RunSettings(dataset=Path(data["dataset"]), format="oxford-pet", model="unet", checkpoints=tuple(data["checkpoints"]),
                       out=Path(data["out"]), cache_dir=Path(data["cache_dir"]), shard_size=int(data["shard_size"]),
                       workers=int(data["workers"]), scheduler_url=data["scheduler_url"], html=False)


def _one_run(settings: RunSettings) -> dict[str, Any]:
    outcome = driver.run_pipeline(settings)
    return {"exit_code": outcome.exit_code, "failed": outcome.failed, "ran": outcome.ran, "groups": outcome.groups}


def graph_times(settings: RunSettings) -> tuple[int, float, float]:
    """(tasks in the graph, seconds to fingerprint the dataset with the warm stat cache, seconds to plan and
    build the tasks), on a converted cache (as every run past phase 1)."""
    from segpipe.cache.fingerprints import package_version

    spec = DatasetSpec(format="oxford-pet", root=settings.dataset.resolve())
    cache = settings.cache.resolve()
    started = time.perf_counter()
    scan = scan_dataset(spec.roots(), stat_cache=StatCache(cache / "fingerprints" / STAT_CACHE_FILE), exclude=[settings.out, cache])
    scanned = time.perf_counter()
    plan = plan_shards(scan.manifest, spec=spec, shard_size=settings.shard_size)
    merge = driver.build_convert_tasks(spec=spec, plan=plan, settings=settings, version=package_version(), cache=str(cache))
    paths = driver.expand_checkpoints(settings.checkpoints)
    reports = [driver.build_checkpoint_tasks(ckpt=driver.CheckpointInput(name=p.stem, path=p, sha256="0" * 64, key="0" * 64),
                                             merge=merge, settings=settings, version=package_version()) for p in paths]
    built = time.perf_counter()
    return len(driver.walk_graph([merge, *reports])) + 1, scanned - started, built - scanned  # + the leaderboard


def per_checkpoint(ran: list[str], family: str, n_checkpoints: int) -> int:
    return max((sum(1 for t in ran if t.startswith(f"{family}_ckpt{j:02d}_")) for j in range(n_checkpoints)), default=0)


def bench(n_images: int, *, args: argparse.Namespace, scheduler_url: str | None) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(args.keep) / f"n{n_images}" if args.keep else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segpipe-scale-")))
        root = tmp / "pets"
        kept = (tmp / "cache" / "leaderboard").is_dir()  # a finished earlier run there: its first run is not redone
        if not kept:
            write_dataset(root, n_images)
            for j in range(args.checkpoints):  # never loaded (the stub session ignores them); hashed and dated
                (tmp / "ckpts" / f"ckpt{j:02d}.pt").parent.mkdir(exist_ok=True)
                (tmp / "ckpts" / f"ckpt{j:02d}.pt").write_bytes(b"checkpoint %d" % j)
        settings = RunSettings(dataset=root, format="oxford-pet", model="unet", checkpoints=(str(tmp / "ckpts" / "*.pt"),),
                               out=tmp / "out", cache_dir=tmp.resolve() / "cache", shard_size=args.shard_size,
                               workers=args.workers, scheduler_url=scheduler_url, html=False)
        workers = args.workers * args.processes
        stub_seconds(reset=True)
        first = run_once(settings, processes=args.processes, tmp=tmp, args=args)  # with --keep over a kept cache: a warm-up
        tasks, scan_s, build_s = graph_times(settings)
        noops = [run_once(settings, processes=args.processes, tmp=tmp, args=args)["wall"] for _ in range(3)]
        victim = root / "images" / f"img_{n_images // 2:06d}.jpg"
        victim.write_bytes(b"edited %d" % time.time_ns())  # new content on every run of the benchmark
        changed = run_once(settings, processes=args.processes, tmp=tmp, args=args)
        overhead = first["wall"] - first["inside"] / workers
        mode = (f"{args.processes} `segpipe run` processes on one luigid, {args.workers} worker(s) each" if args.processes > 1
                else f"{args.workers} worker(s), {'luigid' if scheduler_url else 'local scheduler'}")
        print(f"{n_images:>7,} images x {args.checkpoints} checkpoints, shard size {args.shard_size}, {mode}:")
        print(f"  tasks created: {tasks} ({len(first['groups'])} scheduling groups ran; "
              f"{sum(1 for t in first['ran'] if t.startswith('InferShard'))} inference shards)")
        print(f"  fingerprinting {2 * n_images + 1:,} files (one scan, warm stat cache): {scan_s:.2f} s; "
              f"graph building (plan + tasks, converted cache): {build_s:.2f} s")
        if kept:
            print(f"  first run: not measured (cache kept in {tmp} by an earlier run; warm-up run {first['wall']:.1f} s)")
        else:
            print(f"  first run: {first['wall']:.1f} s, inside tasks {first['inside']:.1f} s over {workers} worker(s);"
                  f" overhead {overhead:.1f} s = {overhead / first['wall']:.1%} of the run")
            slept = stub_seconds() if args.processes == 1 and args.workers == 1 else n_images * args.checkpoints * args.ms_per_image / 1000
            real_run = first["wall"] + (n_images * args.checkpoints * 0.005 - slept) / workers  # the stub's sleep replaced by 5 ms/image
            print(f"  same overhead against real inference at 5 ms/image: {overhead / real_run:.1%}")
        print(f"  no-op rerun: median {statistics.median(noops):.2f} s (of 3: {', '.join(f'{t:.2f}' for t in noops)})")
        print(f"  one image changed: {changed['wall']:.1f} s; per checkpoint at most "
              f"{per_checkpoint(changed['ran'], 'InferShard', args.checkpoints)} inference and "
              f"{per_checkpoint(changed['ran'], 'EvalShard', args.checkpoints)} evaluation shard(s) rerun; "
              f"{len(changed['groups'])} scheduling groups ran")
        if args.fork_cost:
            one, two = fork_cost_ms(tmp / "fork", n_tasks=64)
            print(f"  per trivial task, in this process (plan and graph in memory): {one:.1f} ms with 1 worker (no fork), "
                  f"{two:.1f} ms with 2 workers (a fork per task)")
            cold, warm = torch_import_cost_ms(tmp / "imports", n_tasks=8)
            print(f"  per task importing torch, 2 workers, fresh interpreter: {cold:.0f} ms; "
                  f"{warm:.0f} ms once the parent preloaded it (as segpipe run does before forking workers that infer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="Luigi workers per `segpipe run` process")
    parser.add_argument("--processes", type=int, default=1, help="`segpipe run` processes at once (needs --luigid when > 1)")
    parser.add_argument("--luigid", action="store_true", help="start a luigid on 127.0.0.1 and schedule through it")
    parser.add_argument("--fork-cost", action="store_true", help="also time trivial and torch-importing tasks with 1 and 2 workers")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--ms-per-image", type=float, default=0.05, help="stub inference time per image")
    parser.add_argument("--quick", action="store_true", help="1,000 images x 3 checkpoints (smoke run)")
    parser.add_argument("--keep", help="work in DIR/n<images> and keep it; a finished run found there is reused "
                        "(its first run is not measured again: the run is a warm-up)")
    parser.add_argument("--one-run", help=argparse.SUPPRESS)  # internal: one process of --processes N
    args = parser.parse_args()
    install_stubs(ms_per_image=args.ms_per_image)
    if args.one_run:
        print(json.dumps(_one_run(_settings(json.loads(args.one_run)))))
        return
    if args.processes > 1 and not args.luigid:
        parser.error("--processes N > 1 needs --luigid (processes share work only through a central scheduler)")
    if args.quick:
        args.images, args.checkpoints = [1_000], 3
    print("STAND-IN: tiny real files, nothing decoded, stubbed per-shard work; real fingerprinting, plan, tasks, scheduler, cache.")
    for n in args.images:
        if args.luigid:
            with luigid_server() as url:
                bench(n, args=args, scheduler_url=url)
        else:
            bench(n, args=args, scheduler_url=None)


if __name__ == "__main__":
    main()

"""What a rerun of `segpipe run` costs against the first run.

A generated Oxford-IIIT-Pet-style dataset (default 2,000 images) and 3 tiny U-Net checkpoints (random
weights: the benchmark measures the pipeline, not the model). Timed, in this order, all in one cache:

1. first run (everything: convert shards, merge, image index, inference, evaluation, leaderboard);
2. no-op rerun, in-process (median of --repeats) and as a fresh `segpipe run` process (start-up included);
3. one annotation changed (one trimap edited): its conversion shard, the merge and the evaluations;
4. one checkpoint added: its inference and evaluation, and the leaderboard.

Ratios are against the first run of the same process. Target: no-op rerun < 5% of the first run.

    python benchmarks/pipeline_incremental.py            # 2,000 images, shard size 256
    python benchmarks/pipeline_incremental.py --quick    # 200 images, shard size 64 (smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from segpipe.runner.config import RunSettings  # noqa: E402
from segpipe.runner.driver import run_pipeline  # noqa: E402
from segpipe.demo.sample import generate_sample  # noqa: E402

CARD = {"task": "semantic", "class_names": ["background", "pet"], "unet": {"depth": 1, "width": 2}}


def make_checkpoint(path: Path, *, seed: int) -> None:
    import torch

    from segpipe.inference.unet import UNet

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(UNet(num_classes=2, depth=1, base_width=2).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(CARD), encoding="utf-8")


def timed_run(settings: RunSettings) -> tuple[float, int, int]:
    started = time.perf_counter()
    outcome = run_pipeline(settings)
    elapsed = time.perf_counter() - started
    if outcome.exit_code != 0:
        raise SystemExit(f"run failed (exit {outcome.exit_code}): {outcome.failed}")
    return elapsed, len(outcome.ran), len(outcome.cached)


def cli_noop(settings: RunSettings) -> float:
    args = ["run", "--dataset", str(settings.dataset), "--format", "oxford-pet", "--model", "unet",
            "--checkpoints", settings.checkpoints[0], "-o", str(settings.out), "--shard-size", str(settings.shard_size),
            "--device", "cpu", "--loader-workers", "0", "--no-html"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from segpipe.cli import main; main()", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or "ran: 0 task(s)" not in proc.stdout:
        raise SystemExit(f"CLI no-op rerun did work or failed:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return elapsed


def edit_one_trimap(root: Path) -> None:
    path = sorted((root / "annotations" / "trimaps").glob("*.png"))[len(list((root / "annotations" / "trimaps").glob("*.png"))) // 2]
    from PIL import Image

    trimap = np.array(Image.open(path))
    trimap[:2, :2] = 3
    Image.fromarray(trimap).save(path, format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images, shard size 64")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--shard-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="no-op reruns timed (median)")
    parser.add_argument("--html", action="store_true", help="also render the HTML pages (matplotlib)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data here instead of a temp dir")
    args = parser.parse_args()
    n_images = args.images or (200 if args.quick else 2000)
    shard_size = args.shard_size or (64 if args.quick else 256)
    with tempfile.TemporaryDirectory() as tmp_name:
        work = args.workdir or Path(tmp_name)
        t0 = time.perf_counter()
        dataset = generate_sample(work / "pets", n_images=n_images, seed=0)
        for seed in range(3):
            make_checkpoint(work / "ckpts" / f"m{seed}.pt", seed=seed)
        print(f"dataset: {n_images} images, 3 checkpoints, shard size {shard_size} (generated in {time.perf_counter() - t0:.1f} s)")
        settings = RunSettings(dataset=dataset, format="oxford-pet", model="unet", checkpoints=(str(work / "ckpts" / "*.pt"),),
                               out=work / "out", shard_size=shard_size, infer={"device": "cpu"}, html=args.html)
        first, ran, _ = timed_run(settings)
        print(f"first run:               {first:8.2f} s  ({ran} tasks ran)")
        noops = [timed_run(settings) for _ in range(args.repeats)]
        if any(r for _, r, _ in noops):
            raise SystemExit("the no-op rerun ran tasks")
        noop = statistics.median(t for t, _, _ in noops)
        print(f"no-op rerun (in-process):{noop:8.2f} s  ratio {noop / first:.4f}  (target < 0.05; median of {args.repeats})")
        cli = statistics.median(cli_noop(settings) for _ in range(args.repeats))
        print(f"no-op rerun (segpipe run process, start-up included): {cli:.2f} s  ratio {cli / first:.4f}")
        edit_one_trimap(dataset)
        changed, ran, _ = timed_run(settings)
        print(f"one annotation changed:  {changed:8.2f} s  ratio {changed / first:.4f}  ({ran} tasks ran)")
        make_checkpoint(work / "ckpts" / "m3.pt", seed=3)
        added, ran, _ = timed_run(settings)
        print(f"one checkpoint added:    {added:8.2f} s  ratio {added / first:.4f}  ({ran} tasks ran)")


if __name__ == "__main__":
    main()

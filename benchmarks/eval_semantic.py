"""Semantic evaluation speed: confusion_update vs the mmseg/torchvision bincount pattern, and end to end.

    .venv/bin/python benchmarks/eval_semantic.py            # issue 3 sizes: 2,000 pairs of 512x512, 21 classes
    .venv/bin/python benchmarks/eval_semantic.py --quick    # smoke run

1. In memory, on the same decoded arrays: `confusion_update` against the anchor
   `np.bincount(n * gt[keep] + pred[keep], minlength=n * n)` with `keep = gt != ignore` (mmseg's
   `intersect_and_union`, torchvision references' `ConfusionMatrix.update`). Median of repeats per batch,
   identical matrices checked.
2. End to end including PNG decoding: `evaluate_semantic_dirs` with 1 and all workers, the anchor as a
   sequential decode + bincount loop, and the `segpipe evaluate semantic` CLI (process start included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.evaluators.confusion import IGNORE_INDEX, confusion_update  # noqa: E402
from segpipe.evaluators.semantic import evaluate_semantic_dirs, read_label_map  # noqa: E402

BATCH = 100  # pairs held in memory at once for the in-memory comparison


def make_pair(rng: np.random.Generator, *, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocky GT regions (compress like real label maps), ignore borders, a prediction that is mostly right."""
    cells = max(2, size // 32)
    gt = cv2.resize(rng.integers(0, n, (cells, cells), dtype=np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    gt[rng.integers(0, size):, : rng.integers(0, size // 8)] = IGNORE_INDEX
    shift = rng.integers(-6, 7, 2)
    pred = np.roll(gt, shift=tuple(int(s) for s in shift), axis=(0, 1))
    noise = rng.random((size, size)) < 0.05
    pred[noise] = rng.integers(0, n, int(noise.sum()), dtype=np.uint8)
    pred[pred == IGNORE_INDEX] = 0
    return gt, pred


def anchor_update(gt: np.ndarray, pred: np.ndarray, *, n: int) -> np.ndarray:
    keep = gt != IGNORE_INDEX
    return np.bincount(n * gt[keep].astype(np.int64) + pred[keep], minlength=n * n).reshape(n, n)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    return median_times([fn], repeats)[0]


def median_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function; repeats alternate between them so load drifts hit all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def cpu_and_wall(fn: Callable[[], object]) -> tuple[float, float]:
    """Process CPU seconds (all threads) and wall seconds of one call: CPU/wall near 2 means two busy cores."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_in_memory(*, n_images: int, size: int, n: int, repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ours_total = anchor_total = 0.0
    ours_matrix = np.zeros((n, n + 1), np.int64)
    anchor_matrix = np.zeros((n, n), np.int64)
    for start in range(0, n_images, BATCH):
        pairs = [make_pair(rng, size=size, n=n) for _ in range(min(BATCH, n_images - start))]
        ours, anchor = median_times([lambda: [confusion_update(g, p, num_classes=n) for g, p in pairs],
                                     lambda: [anchor_update(g, p, n=n) for g, p in pairs]], repeats)
        ours_total += ours
        anchor_total += anchor
        ours_matrix += sum(confusion_update(g, p, num_classes=n) for g, p in pairs)
        anchor_matrix += sum(anchor_update(g, p, n=n) for g, p in pairs)
    identical = np.array_equal(ours_matrix[:, :n], anchor_matrix) and not ours_matrix[:, n].any()
    print(f"in memory, {n_images} pairs {size}x{size}, {n} classes (median of {repeats} per batch of {BATCH}):")
    print(f"  anchor bincount(n*gt[keep]+pred[keep]) {anchor_total:8.3f} s  ({anchor_total / n_images * 1e3:.3f} ms/pair)")
    print(f"  confusion_update                       {ours_total:8.3f} s  ({ours_total / n_images * 1e3:.3f} ms/pair)")
    print(f"  speed-up {anchor_total / ours_total:.2f}x   identical matrices: {identical}")
    if not identical:
        raise SystemExit("matrices differ")


def write_dataset(root: Path, *, n_images: int, size: int, n: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir()
    for i in range(n_images):
        gt, pred = make_pair(rng, size=size, n=n)
        cv2.imwrite(str(root / "gt" / f"{i:05d}.png"), gt)
        cv2.imwrite(str(root / "pred" / f"{i:05d}.png"), pred)
    return root / "gt", root / "pred"


def anchor_end_to_end(gt_dir: Path, pred_dir: Path, *, n: int) -> np.ndarray:
    total = np.zeros((n, n), np.int64)
    for gt_path in sorted(gt_dir.glob("*.png")):
        total += anchor_update(read_label_map(gt_path), read_label_map(pred_dir / gt_path.name), n=n)
    return total


def bench_end_to_end(*, n_images: int, size: int, n: int, repeats: int, seed: int) -> None:
    names = [f"class{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="segpipe-bench-") as tmp:
        gt_dir, pred_dir = write_dataset(Path(tmp), n_images=n_images, size=size, n=n, seed=seed)
        cores = os.cpu_count() or 1
        anchor, one, every = median_times([
            lambda: anchor_end_to_end(gt_dir, pred_dir, n=n),
            lambda: evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, workers=1),
            lambda: evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, workers=cores),
        ], repeats)
        cpu, wall = cpu_and_wall(lambda: evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, workers=cores))
        report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, workers=cores)
        same = np.array_equal(report.confusion.iloc[:, 1:n + 1].to_numpy(), anchor_end_to_end(gt_dir, pred_dir, n=n))
        cli = [sys.executable, "-c", "from segpipe.cli import main; main()", "evaluate", "semantic", "--gt", str(gt_dir), "--pred",
               str(pred_dir), "-o", str(Path(tmp) / "report"), "--classes", ",".join(names)]
        repo = str(Path(__file__).resolve().parents[1])
        cli_time = median_time(lambda: subprocess.run(cli, check=True, capture_output=True, cwd=repo), repeats)
    print(f"end to end incl. PNG decoding, {n_images} pairs, {cores} cores (median of {repeats}):")
    print(f"  anchor: sequential cv2.imread + bincount    {anchor:7.3f} s")
    print(f"  evaluate_semantic_dirs workers=1            {one:7.3f} s  ({anchor / one:.2f}x anchor)")
    print(f"  evaluate_semantic_dirs workers={cores}            {every:7.3f} s  ({anchor / every:.2f}x anchor, "
          f"{one / every:.2f}x workers=1)   same matrix as anchor: {same}")
    print(f"  cores busy (CPU s / wall s, workers={cores})   {cpu:.3f} / {wall:.3f} = {cpu / wall:.2f}"
          f"   (below {cores} when other processes hold the cores: see `uptime` load {os.getloadavg()[0]:.1f})")
    print(f"  segpipe evaluate semantic (whole CLI)       {cli_time:7.3f} s  ({n_images / cli_time:.0f} pairs/s)")
    print(f"  mIoU {report.metric('mIoU'):.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n_images = args.images or (100 if args.quick else 2000)
    size = args.size or (256 if args.quick else 512)
    repeats = args.repeats or (3 if args.quick else 5)
    bench_in_memory(n_images=n_images, size=size, n=args.classes, repeats=repeats, seed=0)
    bench_end_to_end(n_images=n_images, size=size, n=args.classes, repeats=max(1, repeats - 2), seed=1)


if __name__ == "__main__":
    main()

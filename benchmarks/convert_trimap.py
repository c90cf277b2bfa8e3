"""Benchmark: trimaps + JPEGs -> instances.json + semantic PNGs, against a bare cv2 read/write loop.

    python benchmarks/convert_trimap.py            # 3,000 trimaps of 500x375
    python benchmarks/convert_trimap.py --quick    # 200, for a smoke run

The anchor is a single-process `cv2.imread(trimap, IMREAD_UNCHANGED)` + `cv2.imwrite(png)` loop over the
same files in the same run; the target is for the conversion (using all cores) to cost at most 1.5x that loop.
Each figure is the median of the repeats, measured interleaved so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.converters.trimap import MIN_IMAGES_FOR_POOL, convert_trimap  # noqa: E402

WIDTH, HEIGHT = 500, 375
PROTOTYPES = 32  # distinct pets; the rest are byte copies under other names (generation stays quick)


def make_dataset(root: Path, *, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "trimaps").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    protos = []
    for _ in range(min(n, PROTOTYPES)):
        cy, cx, r = rng.uniform(120, 250), rng.uniform(150, 350), rng.uniform(60, 150)
        d = np.hypot(yy - cy, xx - cx) - r * (1 + 0.15 * np.sin(5 * np.arctan2(yy - cy, xx - cx)))
        trimap = np.full((HEIGHT, WIDTH), 2, np.uint8)
        trimap[d < -3] = 1
        trimap[np.abs(d) <= 3] = 3
        image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (0, 0), 3)
        protos.append((cv2.imencode(".png", trimap)[1].tobytes(), cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()))
    for i in range(n):
        png, jpg = protos[i % len(protos)]
        (root / "trimaps" / f"pet_{i:05d}.png").write_bytes(png)
        (root / "images" / f"pet_{i:05d}.jpg").write_bytes(jpg)


def bare_loop(root: Path, out: Path) -> float:
    out.mkdir(parents=True)
    start = time.perf_counter()
    for path in sorted((root / "trimaps").iterdir()):
        cv2.imwrite(str(out / path.name), cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    return time.perf_counter() - start


def conversion(root: Path, out: Path, *, workers: int | None) -> float:
    start = time.perf_counter()
    report = convert_trimap(root / "trimaps", out, images=root / "images", workers=workers)
    elapsed = time.perf_counter() - start
    if report.has_errors:
        raise RuntimeError(f"benchmark data gave error rows: {report.findings[:3]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images, 2 repeats")
    parser.add_argument("--n", type=int, default=None, help="number of images [3000; 200 with --quick]")
    parser.add_argument("--repeats", type=int, default=None, help="repeats [5; 2 with --quick]")
    parser.add_argument("--workers", type=int, default=None, help="conversion processes [all cores]")
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 3000)
    repeats = args.repeats or (2 if args.quick else 5)
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="segpipe-bench-trimap-") as tmp:
        root = Path(tmp)
        make_dataset(root / "data", n=n)
        bare, conv, serial = [], [], []
        for _ in range(repeats):
            for out in (root / "bare", root / "conv", root / "serial"):
                shutil.rmtree(out, ignore_errors=True)
            bare.append(bare_loop(root / "data", root / "bare"))
            conv.append(conversion(root / "data", root / "conv", workers=workers))
            serial.append(conversion(root / "data", root / "serial", workers=1))
        tb, tc, ts = (statistics.median(v) for v in (bare, conv, serial))
    print(f"trimap conversion, {n} images {WIDTH}x{HEIGHT}, median of {repeats} repeats, {os.cpu_count()} cores")
    print(f"  bare cv2.imread+cv2.imwrite loop : {tb:7.3f} s  {n / tb:8.1f} images/s")
    print(f"  convert_trimap, workers={workers:<2}        : {tc:7.3f} s  {n / tc:8.1f} images/s  ratio {tc / tb:.2f}x (target <= 1.5x)")
    if n < MIN_IMAGES_FOR_POOL:
        print(f"  (fewer than {MIN_IMAGES_FOR_POOL} images: convert_trimap runs in-process whatever --workers says)")
    print(f"  convert_trimap, workers=1         : {ts:7.3f} s  {n / ts:8.1f} images/s  ratio {ts / tb:.2f}x")


if __name__ == "__main__":
    main()

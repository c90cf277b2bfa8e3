"""Benchmark `convert_voc` against a bare defusedxml parse loop over the same files.

    .venv/bin/python benchmarks/convert_voc.py            # 10,000 LabelImg XMLs, 1-8 boxes each
    .venv/bin/python benchmarks/convert_voc.py --quick    # 500 XMLs, smoke run

Every XML has a tiny JPEG (64×48, ~0.7 kB) beside it, so the conversion pays for what it really does per
file: find the image by stem, read its header for the size (EXIF applied), and check the boxes against
it. The anchor only reads and parses each XML (`open().read()` + `defusedxml.ElementTree.fromstring`),
so the ratio is the whole cost of conversion (walk, image headers, COCO assembly, JSON and report
writing) over parsing alone. Times are medians of `--repeats` interleaved runs with a warm page cache;
CPU seconds (this process plus the pool's workers) are printed beside wall time because a shared
machine's load changes the wall-clock figures of the process pool most.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from defusedxml.ElementTree import fromstring  # noqa: E402
from PIL import Image  # noqa: E402

from segpipe.converters.voc import convert_voc  # noqa: E402

WIDTH, HEIGHT = 64, 48
NAMES = ("cat", "dog", "person", "car", "bicycle", "bottle", "chair", "bird")


def labelimg_xml(*, stem: str, boxes: list[tuple[str, int, int, int, int]]) -> str:
    objects = "".join(
        f"\t<object>\n\t\t<name>{n}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>{int(i % 5 == 0)}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
        f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for i, (n, x0, y0, x1, y1) in enumerate(boxes)
    )
    return (f"<annotation>\n\t<folder>images</folder>\n\t<filename>{stem}.jpg</filename>\n"
            f"\t<path>/home/annotator/images/{stem}.jpg</path>\n\t<source>\n\t\t<database>Unknown</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{WIDTH}</width>\n\t\t<height>{HEIGHT}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{objects}</annotation>\n")


def generate(root: Path, *, n: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 140, 60)).save(buf, format="JPEG", quality=80)
    jpeg = buf.getvalue()
    paths = []
    for i in range(n):
        folder = root / f"batch{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"img_{i:06d}"
        boxes = []
        for _ in range(rng.randint(1, 8)):
            x0, y0 = rng.randint(0, WIDTH - 8), rng.randint(0, HEIGHT - 8)
            boxes.append((rng.choice(NAMES), x0, y0, rng.randint(x0 + 1, WIDTH), rng.randint(y0 + 1, HEIGHT)))
        xml = folder / f"{stem}.xml"
        xml.write_text(labelimg_xml(stem=stem, boxes=boxes), encoding="utf-8")
        (folder / f"{stem}.jpg").write_bytes(jpeg)
        paths.append(xml)
    return sorted(paths)


def bare_parse(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            fromstring(fh.read())


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall0, cpu_seconds() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 files instead of 10,000")
    parser.add_argument("-n", type=int, default=None, help="number of XMLs (default 10,000; 500 with --quick)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="process-pool size for convert_voc")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.n or (500 if args.quick else 10_000)
    root = Path(tempfile.mkdtemp(prefix="bench_voc_"))
    try:
        load = os.getloadavg()
        t0 = time.perf_counter()
        paths = generate(root / "src", n=n)
        print(f"generated {n} LabelImg XMLs + {WIDTH}×{HEIGHT} JPEGs in {time.perf_counter() - t0:.1f} s under {root}")
        bare_parse(paths)  # warm the page cache for both contenders
        out = root / "out"
        contenders: dict[str, Callable[[], object]] = {
            "bare defusedxml parse loop": lambda: bare_parse(paths),
            "convert_voc workers=1": lambda: convert_voc(root / "src", out, workers=1),
            f"convert_voc workers={args.workers}": lambda: convert_voc(root / "src", out, workers=args.workers),
        }
        # Interleaved repeats, so that load from other processes hits every contender alike.
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                samples[name].append(measure(fn))
        wall = {name: statistics.median(w for w, _ in runs) for name, runs in samples.items()}
        cpu = {name: statistics.median(c for _, c in runs) for name, runs in samples.items()}
        report = convert_voc(root / "src", out, workers=1)
        if report.findings:
            raise SystemExit(f"unexpected findings: {report.findings[:3]}")
        tracemalloc.start()
        convert_voc(root / "src", out, workers=1)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        anchor = "bare defusedxml parse loop"
        print(f"load average at start {load[0]:.1f} on {os.cpu_count()} CPUs; medians of {args.repeats} interleaved runs")
        for name in contenders:
            ratio = "" if name == anchor else f"  ratio {wall[name] / wall[anchor]:.2f}x (CPU {cpu[name] / cpu[anchor]:.2f}x)"
            print(f"{name:<28s}: {wall[name]:7.3f} s wall {cpu[name]:7.3f} s CPU {n / wall[name]:7.0f} files/s{ratio}")
        print("target: conversion <= 1.5x the bare parse (wall)")
        print(f"peak memory: traced Python heap of one serial conversion {traced_peak / 2**20:.1f} MiB; "
              f"max RSS main process {self_rss:.0f} MiB, largest worker {child_rss:.0f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

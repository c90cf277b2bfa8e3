"""Label-map decoding speed: segpipe's reader against a plain `cv2.imread(IMREAD_UNCHANGED)` (the anchor).

    .venv/bin/python benchmarks/label_maps.py           # 300 maps of 512x512, 21 classes, per PNG encoding
    .venv/bin/python benchmarks/label_maps.py --quick   # smoke run

For 8-bit greyscale the reader adds one header check to the same OpenCV decode, so the ratio should be ~1.
Palette and 1-bit maps are compared with the anchor on their 8-bit twins (OpenCV cannot return their indices),
which prices what reading them correctly costs. Median of repeats, same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.core.label_maps import read_label_map  # noqa: E402


def write_maps(folder: Path, *, count: int, size: int, mode: str, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    n = 2 if mode == "1" else 21
    for i in range(count):
        cells = rng.integers(0, n, (size // 32, size // 32), dtype=np.uint8)
        labels = cv2.resize(cells, (size, size), interpolation=cv2.INTER_NEAREST)
        path = folder / f"{i:05d}.png"
        im = Image.fromarray(labels.astype(bool)) if mode == "1" else Image.fromarray(labels, mode="L")
        if mode == "P":
            im = Image.fromarray(labels, mode="P")
            im.putpalette([c for k in range(256) for c in (k, 255 - k, (7 * k) % 256)])
        im.save(path)
        paths.append(path)
    return paths


def median_seconds(fn: Callable[[], object], *, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, size, repeats = (30, 256, 3) if args.quick else (300, 512, 5)
    with tempfile.TemporaryDirectory() as tmp:
        maps = {mode: write_maps(Path(tmp) / mode, count=count, size=size, mode=mode) for mode in ("L", "P", "1")}
        anchor = median_seconds(lambda: [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in maps["L"]], repeats=repeats)
        print(f"{count} maps {size}x{size}; anchor cv2.imread on 8-bit L: {anchor / count * 1e3:.3f} ms/map (median of {repeats})")
        for mode in ("L", "P", "1"):
            t = median_seconds(lambda mode=mode: [read_label_map(p) for p in maps[mode]], repeats=repeats)
            print(f"read_label_map {mode:>1}: {t / count * 1e3:.3f} ms/map, {t / anchor:.2f}x the anchor")


if __name__ == "__main__":
    main()

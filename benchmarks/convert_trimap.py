"""Benchmark: trimaps + JPEGs -> instances.json + semantic PNGs, against a bare loop doing the same by hand.

    python benchmarks/convert_trimap.py                  # 1,000 and 4,000 trimaps of 500x375
    python benchmarks/convert_trimap.py --quick          # 200, one size, for a smoke run
    python benchmarks/convert_trimap.py --sizes 3000

The anchor, "bare loop", is a short single-process script producing the same outputs: `cv2.imread` of each
trimap, a lookup table to the semantic map and the pet mask, pycocotools RLE of the mask, `cv2.imwrite`
of the map, and one `json.dump` of the COCO file. segpipe also reads each image's header (size check),
checks values and channels, writes atomically and reports findings. globox reads no masks, so it has no
line here. `convert_oxford_pet` converts the same files laid out as Oxford-IIIT Pet, plus one head-box XML per
image (which the bare loop does not read). `convert_trimap` is timed in one process (workers=1) and with its process pool, and the CLI in a
fresh process (start-up and imports included). Figures are medians of interleaved repeats; CPU seconds
include the CLI's process; the pool's workers are forked by a forkserver, whose CPU getrusage cannot see
(printed n/a), so the pool is judged by wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import compare  # noqa: E402
from segpipe.converters.oxford_pet import convert_oxford_pet  # noqa: E402
from segpipe.converters.trimap import MIN_IMAGES_FOR_POOL, convert_trimap  # noqa: E402

WIDTH, HEIGHT = 500, 375
HEAD_XML = ("<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            "<object><name>dog</name><pose>Frontal</pose><truncated>0</truncated><difficult>0</difficult>"
            "<bndbox><xmin>180</xmin><ymin>100</ymin><xmax>320</xmax><ymax>230</ymax></bndbox></object></annotation>")
PROTOTYPES = 32  # distinct pets; the rest are byte copies under other names (generation stays quick)


def make_dataset(root: Path, *, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "annotations" / "trimaps").mkdir(parents=True)
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
    (root / "annotations" / "xmls").mkdir(parents=True)
    for i in range(n):
        png, jpg = protos[i % len(protos)]
        (root / "annotations" / "trimaps" / f"pet_{i:05d}.png").write_bytes(png)
        (root / "images" / f"pet_{i:05d}.jpg").write_bytes(jpg)
        (root / "annotations" / "xmls" / f"pet_{i:05d}.xml").write_text(HEAD_XML.format(stem=f"pet_{i:05d}", w=WIDTH, h=HEIGHT), encoding="utf-8")


def bare_loop(root: Path, out: Path) -> None:
    """Read, map, RLE-encode and write every trimap, then dump the COCO file once."""
    semantic_lut = np.array([0, 1, 0, 255] + [0] * 252, np.uint8)
    pet_lut = np.array([0, 1, 0, 0] + [0] * 252, np.uint8)
    (out / "semantic").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, path in enumerate(sorted((root / "annotations" / "trimaps").iterdir()), start=1):
        trimap = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(out / "semantic" / path.name), cv2.LUT(trimap, semantic_lut))
        rle = mask_utils.encode(np.asfortranarray(cv2.LUT(trimap, pet_lut)))
        images.append({"id": i, "file_name": path.stem + ".jpg", "width": trimap.shape[1], "height": trimap.shape[0]})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": float(mask_utils.area(rle)),
                            "bbox": mask_utils.toBbox(rle).tolist(), "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    with open(out / "instances.json", "w", encoding="utf-8") as fh:
        json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "pet"}]}, fh)


def conversion(root: Path, out: Path, *, workers: int | None) -> None:
    report = convert_trimap(root / "annotations" / "trimaps", out, images=root / "images", workers=workers)
    if report.has_errors:
        raise RuntimeError(f"benchmark data gave error rows: {report.findings[:3]}")


def oxford_pet(root: Path, out: Path) -> None:
    report = convert_oxford_pet(root, out, workers=1)
    if report.has_errors:
        raise RuntimeError(f"benchmark data gave error rows: {report.findings[:3]}")


def cli(root: Path, out: Path) -> None:
    exe = Path(sys.executable).with_name("segpipe")
    subprocess.run([str(exe), "convert", "trimap", str(root / "annotations" / "trimaps"), "--images", str(root / "images"), "-o", str(out), "--workers", "1"],
                   check=True, stdout=subprocess.DEVNULL)


def run_size(tmp: Path, *, n: int, repeats: int, workers: int) -> None:
    data = tmp / f"data{n}"
    make_dataset(data, n=n)
    print(f"\ntrimap conversion, {n} images {WIDTH}x{HEIGHT}")
    bare_loop(data, tmp / "warm")  # warm the page cache for every contender
    pooled = f"segpipe convert_trimap workers={workers}"
    compare({
        "bare loop (read+map+RLE+write)": lambda: bare_loop(data, tmp / "bare"),
        "segpipe convert_trimap workers=1": lambda: conversion(data, tmp / "serial", workers=1),
        pooled: lambda: conversion(data, tmp / "pool", workers=workers),
        "segpipe convert trimap --workers 1 (CLI)": lambda: cli(data, tmp / "cli"),
        "segpipe convert_oxford_pet workers=1": lambda: oxford_pet(data, tmp / "pet"),
    }, repeats=repeats, n=n, unit="images", cpu_unseen=frozenset({pooled} if workers > 1 and n >= MIN_IMAGES_FOR_POOL else ()))
    if n < MIN_IMAGES_FOR_POOL:
        print(f"(fewer than {MIN_IMAGES_FOR_POOL} images: convert_trimap runs in-process whatever workers says)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 images, one size")
    parser.add_argument("--sizes", default="1000,4000", help="comma-separated numbers of images [1000,4000]")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats [3]")
    parser.add_argument("--workers", type=int, default=None, help="conversion processes [all cores]")
    args = parser.parse_args()
    sizes = [200] if args.quick else [int(v) for v in args.sizes.split(",")]
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="segpipe-bench-trimap-") as tmp:
        for n in sizes:
            run_size(Path(tmp), n=n, repeats=args.repeats, workers=workers)
    print("target: segpipe convert trimap <= 1.5x the bare loop")


if __name__ == "__main__":
    main()

"""Benchmark `segpipe convert voc` against a bare loop doing the same job by hand, and against globox.

    .venv/bin/python benchmarks/convert_voc.py                 # 2,000 and 8,000 LabelImg XMLs, 1-8 boxes each
    .venv/bin/python benchmarks/convert_voc.py --quick         # 300 XMLs, smoke run
    .venv/bin/python benchmarks/convert_voc.py --sizes 10000   # other sizes

Every XML has a tiny JPEG (64×48, ~0.7 kB) beside it. The anchor, "bare loop", is what a short script does
for the same output: walk the folder, parse each XML with defusedxml, read the image's size from its header
with Pillow, build the COCO dicts and `json.dump` them once. segpipe does more per file (checks every
box and tag, reports findings, EXIF orientation, atomic writes of three files). globox (if installed,
`pip install globox`) reads the XMLs (taking the size from `<size>`, not the image) and writes COCO.
`segpipe convert voc` is timed both in-process (`convert_voc`) and as the CLI in a fresh process, whose
figure includes interpreter start-up and imports. Times are medians of `--repeats` interleaved runs with a
warm page cache; CPU seconds include child processes.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from defusedxml.ElementTree import fromstring  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.timing import compare  # noqa: E402
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


def bare_loop(src: Path, out: Path) -> None:
    """Parse every XML (defusedxml), read its image's header (Pillow), write one COCO JSON."""
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    categories: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".xml"):
                continue
            xml = os.path.join(dirpath, name)
            with open(xml, "rb") as fh:
                root = fromstring(fh.read())
            image = xml[:-4] + ".jpg"
            with Image.open(image) as im:
                width, height = im.size
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": os.path.relpath(image, src), "width": width, "height": height})
            for obj in root.iter("object"):
                box = obj.find("bndbox")
                x0, y0, x1, y1 = (float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr]
                label = obj.findtext("name") or ""
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": categories.setdefault(label, len(categories) + 1),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "instances.json", "w", encoding="utf-8") as fh:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": i, "name": n} for n, i in categories.items()]}, fh)


def globox_loop(src: Path, out: Path) -> None:
    import globox

    out.mkdir(parents=True, exist_ok=True)
    globox.AnnotationSet.from_pascal_voc(src, recursive=True).save_coco(out / "instances.json", auto_ids=True)


def cli(src: Path, out: Path) -> None:
    exe = Path(sys.executable).with_name("segpipe")
    subprocess.run([str(exe), "convert", "voc", str(src), "-o", str(out), "--workers", "1"], check=True, stdout=subprocess.DEVNULL)


def run_size(root: Path, *, n: int, repeats: int, workers: int) -> None:
    t0 = time.perf_counter()
    src = root / f"src{n}"
    generate(src, n=n)
    print(f"\n{n} LabelImg XMLs + {WIDTH}×{HEIGHT} JPEGs generated in {time.perf_counter() - t0:.1f} s")
    bare_loop(src, root / "warm")  # warm the page cache for every contender
    entries: dict[str, Callable[[], object]] = {
        "bare loop (defusedxml+Pillow+json)": lambda: bare_loop(src, root / "bare"),
        "segpipe convert_voc workers=1": lambda: convert_voc(src, root / "serial", workers=1),
        f"segpipe convert_voc workers={workers}": lambda: convert_voc(src, root / "pool", workers=workers),
        "segpipe convert voc (CLI process)": lambda: cli(src, root / "cli"),
    }
    if importlib.util.find_spec("globox") is not None:
        entries["globox from_pascal_voc+save_coco"] = lambda: globox_loop(src, root / "globox")
    else:
        print("globox is not installed (pip install globox): its line is left out")
    compare(entries, repeats=repeats, n=n, unit="files")
    report = convert_voc(src, root / "serial", workers=1)
    if report.findings:
        raise SystemExit(f"unexpected findings: {report.findings[:3]}")
    tracemalloc.start()
    convert_voc(src, root / "serial", workers=1)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"traced Python heap of one serial conversion: {traced_peak / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 files, one size")
    parser.add_argument("--sizes", default="2000,8000", help="comma-separated numbers of XMLs [2000,8000]")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="process-pool size for convert_voc")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [300] if args.quick else [int(v) for v in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench_voc_"))
    try:
        for n in sizes:
            run_size(root, n=n, repeats=args.repeats, workers=args.workers)
        print("target: segpipe convert voc <= 1.5x the bare loop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

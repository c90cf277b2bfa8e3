"""Benchmark `segpipe convert yolo` against a bare parse loop over the same label files, and globox
(`AnnotationSet.from_yolo_v5` + `save_coco`) when it is installed (it reads boxes only).

    .venv/bin/python benchmarks/convert_yolo.py            # 5,000 images, 1-8 boxes + 0-2 polygons each
    .venv/bin/python benchmarks/convert_yolo.py --quick    # 300 images, smoke run

Ultralytics layout (images/train, labels/train, data.yaml) with tiny JPEGs (64×48). The anchor reads each
label file and turns every line into floats; the ratio is the whole cost of conversion (walk, image
headers, polygon rasterisation + RLE, COCO assembly, JSON and report writing) over that.
"""

from __future__ import annotations

import io
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from benchmarks.timing import compare, size_args  # noqa: E402
from segpipe.converters.yolo import convert_yolo  # noqa: E402

WIDTH, HEIGHT = 64, 48
NAMES = ("cat", "dog", "person", "car")


def generate(root: Path, *, n: int, polygons: bool, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 140, 60)).save(buf, format="JPEG", quality=80)
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    (root / "data.yaml").write_text("names: [" + ", ".join(NAMES) + "]\n", encoding="utf-8")
    labels = []
    for i in range(n):
        stem = f"{i:06d}"
        (root / f"images/train/{stem}.jpg").write_bytes(buf.getvalue())
        lines = []
        for _ in range(rng.randint(1, 8)):
            w, h = rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5)
            lines.append(f"{rng.randrange(len(NAMES))} {rng.uniform(w / 2, 1 - w / 2):.6f} {rng.uniform(h / 2, 1 - h / 2):.6f} {w:.6f} {h:.6f}")
        for _ in range(rng.randint(0, 2) if polygons else 0):
            pts = " ".join(f"{rng.uniform(0, 1):.6f}" for _ in range(2 * rng.randint(3, 12)))
            lines.append(f"{rng.randrange(len(NAMES))} {pts}")
        path = root / f"labels/train/{stem}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        labels.append(path)
    return labels


def bare_parse(paths: list[Path]) -> None:
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            [float(t) for t in line.split()]


def main() -> None:
    n, repeats = size_args(__doc__, full=5000, quick=300)
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-yolo-"))
    try:
        mixed = generate(tmp / "mixed", n=n, polygons=True)
        print("boxes and polygons:")
        compare({"bare parse loop": lambda: bare_parse(mixed), "segpipe convert yolo": lambda: convert_yolo(tmp / "mixed", tmp / "out")},
                repeats=repeats, n=n, unit="images")
        boxes = generate(tmp / "boxes", n=n, polygons=False)
        entries = {"bare parse loop": lambda: bare_parse(boxes), "segpipe convert yolo": lambda: convert_yolo(tmp / "boxes", tmp / "out")}
        try:
            from globox import AnnotationSet

            # globox refuses polygon lines, so it is compared on boxes only.
            entries["globox from_yolo_v5 + save_coco"] = lambda: AnnotationSet.from_yolo_v5(
                tmp / "boxes/labels/train", image_folder=tmp / "boxes/images/train").save_coco(tmp / "globox.json", auto_ids=True)
        except ImportError:
            print("globox not installed: skipped")
        print("boxes only:")
        compare(entries, repeats=repeats, n=n, unit="images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

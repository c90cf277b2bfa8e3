"""Benchmark `segpipe convert labelme` against a bare `json.loads` loop over the same files, and globox
(`AnnotationSet.from_labelme(include_poly=True)` + `save_coco`, which keeps boxes only) when installed.

    .venv/bin/python benchmarks/convert_labelme.py            # 3,000 images, 1-6 rectangles + 1-3 polygons each
    .venv/bin/python benchmarks/convert_labelme.py --quick    # 200 images, smoke run
"""

from __future__ import annotations

import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from benchmarks.timing import compare, size_args  # noqa: E402
from segpipe.converters.labelme import convert_labelme  # noqa: E402

WIDTH, HEIGHT = 64, 48
NAMES = ("cat", "dog", "person", "car")


def generate(root: Path, *, n: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 140, 60)).save(buf, format="JPEG", quality=80)
    root.mkdir(parents=True)
    paths = []
    for i in range(n):
        stem = f"{i:06d}"
        (root / f"{stem}.jpg").write_bytes(buf.getvalue())
        shapes = []
        for _ in range(rng.randint(1, 6)):
            x0, y0 = rng.uniform(0, WIDTH - 5), rng.uniform(0, HEIGHT - 5)
            shapes.append({"label": rng.choice(NAMES), "shape_type": "rectangle", "group_id": None, "flags": {},
                           "points": [[x0, y0], [rng.uniform(x0 + 1, WIDTH), rng.uniform(y0 + 1, HEIGHT)]]})
        for _ in range(rng.randint(1, 3)):
            pts = [[rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)] for _ in range(rng.randint(3, 12))]
            shapes.append({"label": rng.choice(NAMES), "shape_type": "polygon", "group_id": None, "flags": {}, "points": pts})
        doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{stem}.jpg", "imageData": None,
               "imageHeight": HEIGHT, "imageWidth": WIDTH}
        path = root / f"{stem}.json"
        path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        paths.append(path)
    return paths


def bare_parse(paths: list[Path]) -> None:
    for p in paths:
        json.loads(p.read_bytes())


def main() -> None:
    n, repeats = size_args(__doc__, full=3000, quick=200)
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-labelme-"))
    try:
        files = generate(tmp / "ds", n=n)
        entries = {"bare json.loads loop": lambda: bare_parse(files), "segpipe convert labelme": lambda: convert_labelme(tmp / "ds", tmp / "out")}
        try:
            from globox import AnnotationSet

            entries["globox from_labelme + save_coco (boxes)"] = lambda: AnnotationSet.from_labelme(
                tmp / "ds", include_poly=True).save_coco(tmp / "globox.json", auto_ids=True)
        except ImportError:
            print("globox not installed: skipped")
        compare(entries, repeats=repeats, n=n, unit="images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark `segpipe convert voc-seg` against a bare decode loop (PIL: both PNGs of every image to arrays).
globox has no segmentation reader and Datumaro is not installed here, so the bare loop is the only anchor.

    .venv/bin/python benchmarks/convert_voc_seg.py            # 2,000 images of 160×120, 1-6 objects each
    .venv/bin/python benchmarks/convert_voc_seg.py --quick    # 150 images, smoke run

Each image has a palette SegmentationClass and SegmentationObject PNG and an XML whose boxes match the
objects; the conversion decodes both PNGs, writes the semantic map, RLE-encodes every object and
cross-checks the XML.
"""

from __future__ import annotations

import io
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.timing import compare, size_args  # noqa: E402
from segpipe.converters.voc_segmentation import VOC_CLASSES, convert_voc_segmentation  # noqa: E402

WIDTH, HEIGHT = 160, 120


def _png(values: np.ndarray) -> bytes:
    im = Image.fromarray(values, mode="P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def generate(root: Path, *, n: int, seed: int = 0) -> list[tuple[Path, Path]]:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 140, 60)).save(buf, format="JPEG", quality=80)
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations"):
        (root / sub).mkdir(parents=True)
    pairs = []
    for i in range(n):
        stem = f"2008_{i:06d}"
        (root / f"JPEGImages/{stem}.jpg").write_bytes(buf.getvalue())
        cls = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        obj = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        objects = []
        for k in range(1, rng.randint(1, 6) + 1):
            x0, y0 = rng.randrange(WIDTH - 20), rng.randrange(HEIGHT - 20)
            x1, y1 = rng.randrange(x0 + 5, WIDTH), rng.randrange(y0 + 5, HEIGHT)
            c = rng.randrange(1, len(VOC_CLASSES))
            cls[y0:y1, x0:x1], obj[y0:y1, x0:x1] = c, k
            cls[y0, x0:x1], obj[y0, x0:x1] = 255, 255
            objects.append((VOC_CLASSES[c], x0 + 1, y0 + 1, x1, y1))
        (root / f"SegmentationClass/{stem}.png").write_bytes(_png(cls))
        (root / f"SegmentationObject/{stem}.png").write_bytes(_png(obj))
        xml = "".join(f"<object><name>{c}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{x}</xmax><ymax>{y}</ymax></bndbox></object>"
                      for c, a, b, x, y in objects)
        (root / f"Annotations/{stem}.xml").write_text(f"<annotation><filename>{stem}.jpg</filename>{xml}</annotation>", encoding="utf-8")
        pairs.append((root / f"SegmentationClass/{stem}.png", root / f"SegmentationObject/{stem}.png"))
    return pairs


def bare_decode(pairs: list[tuple[Path, Path]]) -> None:
    for a, b in pairs:
        for p in (a, b):
            with Image.open(p) as im:
                np.asarray(im)


def main() -> None:
    n, repeats = size_args(__doc__, full=2000, quick=150)
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-vocseg-"))
    try:
        pairs = generate(tmp / "voc", n=n)
        compare({"bare PIL decode loop": lambda: bare_decode(pairs),
                 "segpipe convert voc-seg": lambda: convert_voc_segmentation(tmp / "voc", tmp / "out")},
                repeats=repeats, n=n, unit="images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

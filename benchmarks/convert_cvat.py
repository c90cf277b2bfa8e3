"""Benchmark `segpipe convert cvat` against a bare defusedxml parse of the same XML (walking every shape),
and globox (`AnnotationSet.from_cvat` + `save_coco`, boxes only) when installed.

    .venv/bin/python benchmarks/convert_cvat.py            # 3,000 images: boxes, polygons and CVAT-RLE masks
    .venv/bin/python benchmarks/convert_cvat.py --quick    # 200 images, smoke run
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
from segpipe.converters.cvat import convert_cvat  # noqa: E402

WIDTH, HEIGHT = 64, 48
NAMES = ("cat", "dog", "person", "car")


def generate(root: Path, *, n: int, masks: bool, seed: int = 0) -> Path:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 140, 60)).save(buf, format="JPEG", quality=80)
    (root / "images").mkdir(parents=True)
    parts = ["<annotations><version>1.1</version><meta><task><labels>",
             *(f"<label><name>{x}</name></label>" for x in NAMES), "</labels></task></meta>"]
    for i in range(n):
        name = f"{i:06d}.jpg"
        (root / "images" / name).write_bytes(buf.getvalue())
        parts.append(f'<image id="{i}" name="{name}" width="{WIDTH}" height="{HEIGHT}">')
        for _ in range(rng.randint(1, 6)):
            x0, y0 = rng.uniform(0, WIDTH - 5), rng.uniform(0, HEIGHT - 5)
            parts.append(f'<box label="{rng.choice(NAMES)}" occluded="0" source="manual" xtl="{x0:.2f}" ytl="{y0:.2f}" '
                         f'xbr="{rng.uniform(x0 + 1, WIDTH):.2f}" ybr="{rng.uniform(y0 + 1, HEIGHT):.2f}" z_order="0"/>')
        if masks:
            pts = ";".join(f"{rng.uniform(0, WIDTH):.2f},{rng.uniform(0, HEIGHT):.2f}" for _ in range(rng.randint(3, 12)))
            parts.append(f'<polygon label="{rng.choice(NAMES)}" occluded="0" source="manual" points="{pts}" z_order="0"/>')
            w, h = rng.randint(2, 20), rng.randint(2, 20)
            runs, left = [], w * h
            while left > 0:
                runs.append(min(left, rng.randint(1, 9)))
                left -= runs[-1]
            parts.append(f'<mask label="{rng.choice(NAMES)}" occluded="0" source="manual" rle="{", ".join(map(str, runs))}" '
                         f'left="{rng.randint(0, WIDTH - w)}" top="{rng.randint(0, HEIGHT - h)}" width="{w}" height="{h}" z_order="0"/>')
        parts.append("</image>")
    parts.append("</annotations>\n")
    (root / "annotations.xml").write_text("".join(parts), encoding="utf-8")
    return root / "annotations.xml"


def bare_parse(xml: Path) -> None:
    from defusedxml.ElementTree import fromstring

    root = fromstring(xml.read_bytes(), forbid_dtd=True)
    for image in root.iterfind("image"):
        for shape in image:
            shape.attrib.get("label")


def main() -> None:
    n, repeats = size_args(__doc__, full=3000, quick=200)
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-cvat-"))
    try:
        mixed = generate(tmp / "mixed", n=n, masks=True)
        print("boxes, polygons and masks:")
        compare({"bare defusedxml parse": lambda: bare_parse(mixed), "segpipe convert cvat": lambda: convert_cvat(mixed, tmp / "out")},
                repeats=repeats, n=n, unit="images")
        boxes = generate(tmp / "boxes", n=n, masks=False)
        entries = {"bare defusedxml parse": lambda: bare_parse(boxes), "segpipe convert cvat": lambda: convert_cvat(boxes, tmp / "out")}
        try:
            from globox import AnnotationSet

            entries["globox from_cvat + save_coco"] = lambda: AnnotationSet.from_cvat(boxes).save_coco(tmp / "globox.json", auto_ids=True)
        except ImportError:
            print("globox not installed: skipped")
        print("boxes only:")
        compare(entries, repeats=repeats, n=n, unit="images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

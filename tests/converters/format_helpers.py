"""Helpers for the YOLO / LabelMe / CVAT / VOC-segmentation tests: the independent reader (pycocotools
`COCO` + `annToMask`), report rows, and a determinism check across hash seeds."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.converters.test_voc import codes, rows, write_image  # noqa: F401 (re-exported)


def coco_masks(out: Path) -> tuple[Any, dict[str, list[tuple[str, np.ndarray | None]]]]:
    """Load OUT/instances.json with pycocotools and rasterise every annotation with annToMask:
    {file_name: [(category name, mask or None for a box without segmentation), ...]} in
    annotation id order."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "instances.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    for image_id in sorted(coco.getImgIds()):
        im = coco.loadImgs(image_id)[0]
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id])), key=lambda a: a["id"])
        found[im["file_name"]] = [(names[a["category_id"]], coco.annToMask(a).astype(bool) if "segmentation" in a else None) for a in anns]
    return coco, found


def rect(width: int, height: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Reference mask of the pixels [x0, x1) × [y0, y1), computed with numpy slicing."""
    m = np.zeros((height, width), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def convert_under_seeds(args: list[str], *, outs: list[Path]) -> list[bytes]:
    """Run `segpipe convert ...` in fresh interpreters with different PYTHONHASHSEEDs; instances.json bytes of each."""
    results = []
    for seed, out in zip(("0", "12345"), outs):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        script = "import sys; from segpipe.cli import main; sys.argv[0] = 'segpipe'; main()"
        subprocess.run([sys.executable, "-c", script, "convert", *args, "-o", str(out)], env=env, check=False, capture_output=True)
        results.append((out / "instances.json").read_bytes())
    return results

"""Benchmark: peak memory of `segpipe evaluate instances` on a results file with very many detections per image.

    .venv/bin/python benchmarks/eval_dense.py                 # 4 images, 12,756 detections each, median of 3
    .venv/bin/python benchmarks/eval_dense.py --quick         # 2 images, 3,000 detections each, 1 repeat
    .venv/bin/python benchmarks/eval_dense.py --images 8 --per-image 9000 --repeats 5

Data: images of 480x640, 80 classes (`--classes`), `--gt-per-image` RLE ellipse GT objects per image (a
crowded scene), and a dense detector's output: `--per-image` detections per image (compressed RLE masks, with
boxes), most of them low-score noise, as a model with no score threshold and no per-image cap writes. Printed for segm and bbox: median peak RSS and CPU
of segpipe's CLI (--no-html) and of a plain pycocotools script (COCO(), loadRes, evaluate, accumulate,
summarize) reading the same files, the ratio of peak RSS to pycocotools', and whether the 12 stats are equal.
segpipe's limit on detections per image (SEGPIPE_MAX_DETECTIONS_PER_IMAGE) is raised to `--per-image` here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval_instances import COCOEVAL_SCRIPT, _segpipe_stats  # noqa: E402  (benchmarks/ is the script's own folder)
from process_runs import SEGPIPE, medians, start_spawner  # noqa: E402
from segpipe.evaluators.instance.coco_results import MAX_DETECTIONS_PER_IMAGE_DEFAULT, MAX_DETECTIONS_PER_IMAGE_ENV  # noqa: E402

HEIGHT, WIDTH = 480, 640
_SHAPES = 64  # distinct masks per image; detections reuse them with jitter-free copies (the JSON holds each)


def _ellipse_rle(rng: np.random.Generator) -> dict[str, Any]:
    canvas = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    centre = (int(rng.uniform(0, WIDTH)), int(rng.uniform(0, HEIGHT)))
    axes = (int(rng.uniform(4, 120)), int(rng.uniform(4, 120)))
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    rle = mask_utils.encode(np.asfortranarray(canvas))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def generate(*, n_images: int, per_image: int, n_classes: int = 80, gt_per_image: int = 8, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A COCO ground truth and a results list with `per_image` detections on each image."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "height": HEIGHT, "width": WIDTH})
        shapes = [_ellipse_rle(rng) for _ in range(_SHAPES)]
        boxes = [[float(v) for v in mask_utils.toBbox(s)] for s in shapes]
        for k in range(gt_per_image):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.integers(1, n_classes + 1)),
                         "iscrowd": 0, "area": float(mask_utils.area(shapes[k % _SHAPES])), "bbox": boxes[k % _SHAPES], "segmentation": shapes[k % _SHAPES]})
        cats = rng.integers(1, n_classes + 1, size=per_image)
        picks = rng.integers(0, _SHAPES, size=per_image)
        scores = np.round(rng.random(per_image), 4)  # rounded: ties, so the stable order matters too
        for cat, pick, score in zip(cats.tolist(), picks.tolist(), scores.tolist()):
            results.append({"image_id": image_id, "category_id": cat, "score": score,
                            "segmentation": dict(shapes[pick]), "bbox": boxes[pick]})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images of 3,000 detections, one repeat (smoke run)")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--per-image", type=int, default=None)
    parser.add_argument("--classes", type=int, default=80, help="categories (80, as COCO)")
    parser.add_argument("--gt-per-image", type=int, default=None, help="GT objects per image (a crowded scene: 500)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n_images = args.images or (2 if args.quick else 4)
    per_image = args.per_image or (3000 if args.quick else 12_756)
    gt_per_image = args.gt_per_image or (100 if args.quick else 500)
    repeats = args.repeats or (1 if args.quick else 3)
    # The memory case is above segpipe's default limit on detections per image: raised for the commands run here
    # (the spawner passes its environment on).
    os.environ[MAX_DETECTIONS_PER_IMAGE_ENV] = str(max(per_image, MAX_DETECTIONS_PER_IMAGE_DEFAULT))
    start_spawner()
    with tempfile.TemporaryDirectory(prefix="segpipe-dense-") as tmp:
        root = Path(tmp)
        gt, results = generate(n_images=n_images, per_image=per_image, n_classes=args.classes,
                               gt_per_image=gt_per_image)
        gt_path, res_path, script = root / "gt.json", root / "results.json", root / "cocoeval_script.py"
        gt_path.write_text(json.dumps(gt), encoding="utf-8")
        res_path.write_text(json.dumps(results), encoding="utf-8")
        script.write_text(COCOEVAL_SCRIPT, encoding="utf-8")
        del gt, results
        print(f"data: {n_images} images {HEIGHT}x{WIDTH}, {per_image} detections each, {args.classes} classes, {gt_per_image} GT objects each "
              f"({res_path.stat().st_size / 2**20:.0f} MiB of results JSON); medians of {repeats}")
        for iou_type in ("segm", "bbox"):
            report = root / f"report-{iou_type}"
            commands = {
                "segpipe evaluate --no-html": [sys.executable, *SEGPIPE, "evaluate", "instances", "--gt", str(gt_path),
                                               "--pred", str(res_path), "-o", str(report), "--iou-type", iou_type, "--no-html"],
                "pycocotools script": [sys.executable, str(script), "pycocotools", str(gt_path), str(res_path), iou_type,
                                       str(root / f"pycocotools-{iou_type}.npz")],
            }
            table = medians(commands, repeats=repeats)
            ours, ref = table["segpipe evaluate --no-html"], table["pycocotools script"]
            same = bool(np.array_equal(_segpipe_stats(report), np.load(root / f"pycocotools-{iou_type}.npz")["stats"]))
            print(f"  {iou_type}: peak RSS segpipe {ours.peak_rss_mb:.0f} MB, pycocotools {ref.peak_rss_mb:.0f} MB "
                  f"(ratio {ours.peak_rss_mb / ref.peak_rss_mb:.2f}); CPU segpipe {ours.cpu_s:.1f}s, "
                  f"pycocotools {ref.cpu_s:.1f}s; 12 stats equal: {same}")


if __name__ == "__main__":
    main()

"""Benchmark: segpipe.evaluators.instance.evaluate_instances vs plain pycocotools COCOeval, same data, same run.

    .venv/bin/python benchmarks/eval_instances.py            # issue 3 sizes: 2,000 images 512x512
    .venv/bin/python benchmarks/eval_instances.py --quick    # smoke run

Data: 10 classes, 5-10 RLE ellipse instances per image, detections = jittered GT (some missed, some with a
wrong class) plus false positives. For each iou type it prints the median time of segpipe's whole
evaluate_instances (validation, IoU, matching, accumulate, tables) against pycocotools evaluate()+accumulate()
(loadRes and summarize not counted for pycocotools), the ratio, and whether the 12 stats are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segpipe.evaluators.instance import evaluate_instances  # noqa: E402

N_CLASSES = 10


def _ellipse_rle(*, size: int, cx: float, cy: float, ax: float, ay: float, angle: float) -> dict[str, Any]:
    canvas = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(canvas, (int(cx), int(cy)), (max(1, int(ax)), max(1, int(ay))), angle, 0, 360, 1, thickness=-1)
    rle = mask_utils.encode(np.asfortranarray(canvas))  # one mask at a time: never all decoded masks at once
    return {"size": [size, size], "counts": rle["counts"].decode("ascii")}


def generate(*, n_images: int, size: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "height": size, "width": size})
        for _ in range(int(rng.integers(5, 11))):
            cat = int(rng.integers(1, N_CLASSES + 1))
            shape = dict(cx=rng.uniform(0, size), cy=rng.uniform(0, size), ax=rng.uniform(4, 80), ay=rng.uniform(4, 80), angle=rng.uniform(0, 180))
            rle = _ellipse_rle(size=size, **shape)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                         "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "segmentation": rle})
            if rng.random() < 0.1:  # missed
                continue
            jit = {k: v * rng.uniform(0.85, 1.15) if k in ("ax", "ay") else v + rng.normal(0, 4) for k, v in shape.items()}
            det_cat = cat if rng.random() > 0.05 else int(rng.integers(1, N_CLASSES + 1))
            results.append(_result(image_id=image_id, cat=det_cat, rle=_ellipse_rle(size=size, **jit), score=rng.random()))
        for _ in range(int(rng.integers(1, 4))):  # false positives
            shape = dict(cx=rng.uniform(0, size), cy=rng.uniform(0, size), ax=rng.uniform(4, 60), ay=rng.uniform(4, 60), angle=rng.uniform(0, 180))
            results.append(_result(image_id=image_id, cat=int(rng.integers(1, N_CLASSES + 1)), rle=_ellipse_rle(size=size, **shape), score=rng.random() * 0.6))
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, N_CLASSES + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, results


def _result(*, image_id: int, cat: int, rle: dict[str, Any], score: float) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": cat, "score": float(score), "segmentation": rle,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


def _median_time(fn: Callable[[], Any], *, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _pycocotools(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str, *, repeats: int) -> tuple[float, np.ndarray]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        dets = [{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")} for r in copy.deepcopy(results)]
        coco_dt = coco_gt.loadRes(dets)
        times = []
        for _ in range(repeats):
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            start = time.perf_counter()
            ev.evaluate()
            ev.accumulate()
            times.append(time.perf_counter() - start)
        ev.summarize()
    return statistics.median(times), np.array(ev.stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n_images, repeats = (100, 1) if args.quick else (2000, 3)
    repeats = args.repeats or repeats
    start = time.perf_counter()
    gt, results = generate(n_images=n_images, size=512, seed=0)
    print(f"data: {n_images} images 512x512, {len(gt['annotations'])} GT, {len(results)} results, "
          f"{N_CLASSES} classes (generated in {time.perf_counter() - start:.1f}s); median of {repeats}")
    for iou_type in ("segm", "bbox"):
        ours_s, report = _median_time(lambda: evaluate_instances(gt, results, iou_type=iou_type), repeats=repeats)
        ref_s, ref_stats = _pycocotools(gt, results, iou_type, repeats=repeats)
        ours_stats = np.array(report.stats)
        identical = bool(np.array_equal(ours_stats, ref_stats))
        print(f"{iou_type}: segpipe {ours_s:.2f}s  pycocotools evaluate+accumulate {ref_s:.2f}s  "
              f"ratio {ref_s / ours_s:.2f}x  stats identical: {identical} (max |diff| {np.max(np.abs(ours_stats - ref_stats)):.1e})")


if __name__ == "__main__":
    main()

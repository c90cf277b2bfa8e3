"""Benchmark: one bootstrap replicate of AP/AP50 (segpipe.evaluators.analysis.bootstrap.instance_headline on the drawn
images' match records) against the anchor, re-running segpipe's full accumulate + summarize on the resampled
records, and against pycocotools COCOeval re-run on the resampled dataset; same data, same process.

    .venv/bin/python benchmarks/bootstrap.py            # 500 images, 10 classes
    .venv/bin/python benchmarks/bootstrap.py --quick    # smoke run

Prints medians of >= 3 timings per replicate and the ratios; the AP values must be identical.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_instances import generate  # noqa: E402
from segpipe.evaluators.analysis.bootstrap import ImageRows, _gather, instance_headline  # noqa: E402
from segpipe.evaluators.instance.evaluation import instance_update  # noqa: E402
from segpipe.evaluators.instance.accumulate import accumulate, summarize  # noqa: E402
from segpipe.evaluators.instance.stats import InstanceStats  # noqa: E402


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def _resampled_records(stats: InstanceStats, picks: np.ndarray, rows: ImageRows) -> InstanceStats:
    """The drawn images as records of their own (copy j of an image gets image id j), for the full accumulate."""
    det = _gather(rows.det_start, rows.det_end, picks)
    gt = _gather(rows.gt_start, rows.gt_end, picks)
    det_image = np.repeat(np.arange(len(picks)), rows.det_end[picks] - rows.det_start[picks])
    gt_image = np.repeat(np.arange(len(picks)), rows.gt_end[picks] - rows.gt_start[picks])
    return InstanceStats(
        iou_type=stats.iou_type, category_ids=stats.category_ids, category_names=stats.category_names,
        image_ids=np.arange(len(picks)), file_names=tuple(str(i) for i in range(len(picks))), det_image=det_image,
        det_category=stats.det_category[det], det_score=stats.det_score[det], det_rank=stats.det_rank[det],
        det_matched=stats.det_matched[det], det_ignored=stats.det_ignored[det], det_iou=stats.det_iou[det],
        gt_image=gt_image, gt_category=stats.gt_category[gt], gt_ignored=stats.gt_ignored[gt],
    )


def _pycocotools(gt: dict[str, Any], results: list[dict[str, Any]], picks: np.ndarray) -> float:
    ids = sorted(im["id"] for im in gt["images"])
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    res_by_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        res_by_image.setdefault(r["image_id"], []).append(r)
    images = {im["id"]: im for im in gt["images"]}
    new_images, anns, res = [], [], []
    for j, i in enumerate(picks):
        old = ids[int(i)]
        new_images.append({**images[old], "id": j + 1})
        anns += [{**a, "image_id": j + 1, "id": len(anns) + k + 1} for k, a in enumerate(by_image.get(old, []))]
        res += [{**r, "image_id": j + 1} for r in res_by_image.get(old, [])]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**gt, "images": new_images, "annotations": anns}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_images, size, repeats = (60, 128, 3) if args.quick else (500, 256, 5)
    gt, results = generate(n_images=n_images, size=size, seed=0)
    stats = instance_update(gt, results, iou_type="segm")
    rows = ImageRows.of(stats)
    picks = np.random.default_rng(0).integers(0, n_images, size=n_images)
    t_new, ours = _median(lambda: instance_headline(stats, picks, rows)["AP"], repeats)
    t_full, full = _median(lambda: summarize(accumulate(_resampled_records(stats, picks, rows)))["AP"], repeats)
    t_coco, coco = _median(lambda: _pycocotools(gt, results, picks), max(3, repeats // 2))
    print(f"{n_images} images, segm, one replicate (median of >= 3):")
    print(f"  instance_headline            {t_new * 1e3:9.1f} ms  AP {ours:.6f}")
    print(f"  full accumulate+summarize    {t_full * 1e3:9.1f} ms  AP {full:.6f}  ratio {t_full / t_new:6.1f}x")
    print(f"  pycocotools on the resample  {t_coco * 1e3:9.1f} ms  AP {coco:.6f}  ratio {t_coco / t_new:6.1f}x")
    print(f"  identical: {ours == full and abs(ours - coco) < 1e-12}")


if __name__ == "__main__":
    main()

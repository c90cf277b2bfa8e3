"""Benchmark: `segpipe evaluate instances`, whole command, beside plain pycocotools, faster-coco-eval and hotcoco.

    .venv/bin/python benchmarks/eval_instances.py                  # 2,000 and 8,000 images of 512x512, median of 3
    .venv/bin/python benchmarks/eval_instances.py --quick          # smoke run (100 and 400 images, 1 repeat)
    .venv/bin/python benchmarks/eval_instances.py --sizes 2000 --repeats 5
    .venv/bin/python benchmarks/eval_instances.py --detector       # detector scale: 100 detections per image
    .venv/bin/python benchmarks/eval_instances.py --detector --sizes 2000 --no-html-report-only
    .venv/bin/python benchmarks/eval_instances.py --detector --no-html-report-only --data-dir /tmp/bench \
        --baseline-python ../main/.venv/bin/python     # 2,000 and 8,000; another checkout's segpipe beside this one

Data: 10 classes, 5-10 RLE ellipse instances per image, detections = jittered GT (some missed, some with a
wrong class) plus false positives, written as gt.json / results.json. With --detector: images of 640x480,
3-11 GT per image and exactly 100 detections per image (a real detector's output: torchvision's
`detections_per_img`, COCO's maxDets), jittered GT and low-scoring false positives, 2,000 and 8,000 images. Every contender is a whole process that
reads those two files and prints the 12 stats: segpipe's CLI (with and without --no-html), a plain pycocotools
script (COCO(), loadRes, evaluate, accumulate, summarize), and the same script on faster-coco-eval and on
hotcoco when they are installed (`pip install faster-coco-eval hotcoco`; a note is printed otherwise). For segm
every script drops the results' `bbox` first, as segpipe does, so all compute the same numbers. Printed per size
and iou type: median CPU (user + system, process tree) and wall seconds, peak RSS, each time's ratio to
segpipe's, and whether segpipe's stats (and, in process, its precision/recall arrays) equal pycocotools'.
--baseline-python runs a second segpipe (the one that interpreter imports, e.g. another checkout's venv) on the
same files in the same run: before/after figures under the same load. --data-dir keeps the generated files
(generating 8,000 detector-scale images takes minutes) and reuses them when they are there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from process_runs import SEGPIPE, medians, print_table, start_spawner  # noqa: E402  (benchmarks/ is the script's own folder)
from segpipe.evaluators.instance.evaluation import evaluate_instances  # noqa: E402

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


def generate_detector(*, n_images: int, seed: int, height: int = 480, width: int = 640,
                      per_image: int = 100) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """3-11 GT ellipses per image and `per_image` detections each: jittered copies of the GT, the rest false positives."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []

    def rle_of(shape: dict[str, float]) -> dict[str, Any]:
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.ellipse(canvas, (int(shape["cx"]), int(shape["cy"])), (max(1, int(shape["ax"])), max(1, int(shape["ay"]))),
                    shape["angle"], 0, 360, 1, thickness=-1)
        rle = mask_utils.encode(np.asfortranarray(canvas))
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}

    def random_shape(max_axis: float) -> dict[str, float]:
        return dict(cx=rng.uniform(0, width), cy=rng.uniform(0, height), ax=rng.uniform(4, max_axis),
                    ay=rng.uniform(4, max_axis), angle=rng.uniform(0, 180))

    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "height": height, "width": width})
        shapes = []
        for _ in range(int(rng.integers(3, 12))):
            cat = int(rng.integers(1, N_CLASSES + 1))
            shape = random_shape(90)
            rle = rle_of(shape)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                         "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "segmentation": rle})
            shapes.append((cat, shape))
        for d in range(per_image):
            if d < 3 * len(shapes):  # up to three jittered copies of each GT (a detector's duplicates)
                cat, shape = shapes[d % len(shapes)]
                jit = {k: v * rng.uniform(0.85, 1.15) if k in ("ax", "ay") else v + rng.normal(0, 5) for k, v in shape.items()}
                det_cat = cat if rng.random() > 0.05 else int(rng.integers(1, N_CLASSES + 1))
                score = rng.random() if d < len(shapes) else rng.random() * 0.5
                results.append(_result(image_id=image_id, cat=det_cat, rle=rle_of(jit), score=score))
            else:
                results.append(_result(image_id=image_id, cat=int(rng.integers(1, N_CLASSES + 1)), rle=rle_of(random_shape(60)),
                                       score=rng.random() * 0.3))
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, N_CLASSES + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, results


def _result(*, image_id: int, cat: int, rle: dict[str, Any], score: float) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": cat, "score": float(score), "segmentation": rle,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


# One script for the three COCOeval look-alikes: argv = module, gt.json, results.json, iou type, stats .npz out.
COCOEVAL_SCRIPT = """
import contextlib, io, json, sys
import numpy as np
library, gt_path, res_path, iou_type, out = sys.argv[1:6]
if library == "pycocotools":
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
elif library == "faster_coco_eval":
    from faster_coco_eval import COCO
    from faster_coco_eval import COCOeval_faster as COCOeval
else:
    from hotcoco import COCO, COCOeval
with open(res_path, encoding="utf-8") as f:
    results = json.load(f)
if iou_type == "segm":  # loadRes would take the area from the box: drop it, as segpipe does
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
    ev = COCOeval(gt, gt.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
arrays = {"stats": np.asarray(ev.stats, dtype=float)}
if library == "pycocotools":
    arrays |= {"precision": ev.eval["precision"], "recall": ev.eval["recall"]}
np.savez(out, **arrays)
"""
LIBRARIES = ("pycocotools", "faster_coco_eval", "hotcoco")
# hotcoco at its fastest: it reads both files itself (no Python dict per result). For segm it reads a copy of the
# results without `bbox` (its loader would take the area from the box), so it computes the same numbers.
HOTCOCO_NATIVE_SCRIPT = """
import contextlib, io, sys
import numpy as np
from hotcoco import COCO, COCOeval
gt_path, res_path, iou_type, out = sys.argv[1:5]
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
    ev = COCOeval(gt, gt.load_res(res_path), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
np.savez(out, stats=np.asarray(ev.stats, dtype=float))
"""


def _segpipe_stats(report_dir: Path) -> np.ndarray:
    import pandas as pd

    return pd.read_parquet(report_dir / "summary.parquet")["value"].to_numpy()


def bench_size(*, n_images: int, repeats: int, root: Path, detector: bool = False, html: bool = True,
               data_dir: Path | None = None, baseline_python: str | None = None) -> None:
    start = time.perf_counter()
    data = (data_dir / f"{'detector' if detector else 'sparse'}-{n_images}") if data_dir is not None else root
    gt_path, res_path = data / "gt.json", data / "results.json"
    if data_dir is not None and gt_path.is_file() and res_path.is_file():
        gt, results = json.loads(gt_path.read_text(encoding="utf-8")), json.loads(res_path.read_text(encoding="utf-8"))
    else:
        gt, results = generate_detector(n_images=n_images, seed=0) if detector else generate(n_images=n_images, size=512, seed=0)
        data.mkdir(parents=True, exist_ok=True)
        gt_path.write_text(json.dumps(gt), encoding="utf-8")
        res_path.write_text(json.dumps(results), encoding="utf-8")
    shape = "640x480" if detector else "512x512"
    print(f"\ndata: {n_images} images {shape}, {len(gt['annotations'])} GT, {len(results)} results, {N_CLASSES} classes, "
          f"results.json {res_path.stat().st_size / 1e6:.0f} MB (generated in {time.perf_counter() - start:.1f}s); medians of {repeats}")
    script = root / "cocoeval_script.py"
    script.write_text(COCOEVAL_SCRIPT, encoding="utf-8")
    native_script = root / "hotcoco_native.py"
    native_script.write_text(HOTCOCO_NATIVE_SCRIPT, encoding="utf-8")
    res_nobox_path = root / "results-nobox.json"
    res_nobox_path.write_text(json.dumps([{k: v for k, v in r.items() if k != "bbox"} for r in results]), encoding="utf-8")
    libraries = [lib for lib in LIBRARIES if importlib.util.find_spec(lib) is not None]
    for lib in sorted(set(LIBRARIES) - set(libraries)):
        print(f"  note: {lib} is not installed: left out (pip install {lib.replace('_', '-')})")
    segpipe = [sys.executable, *SEGPIPE]
    for iou_type in ("segm", "bbox"):
        commands = {
            "segpipe evaluate --no-html": [*segpipe, "evaluate", "instances", "--gt", str(gt_path), "--pred", str(res_path),
                                           "-o", str(root / f"report-{iou_type}"), "--iou-type", iou_type, "--no-html"],
            "segpipe evaluate (+ report.html)": [*segpipe, "evaluate", "instances", "--gt", str(gt_path), "--pred", str(res_path),
                                                 "-o", str(root / f"report-html-{iou_type}"), "--iou-type", iou_type],
        } | ({
            "baseline segpipe --no-html": [baseline_python, *SEGPIPE, "evaluate", "instances", "--gt", str(gt_path), "--pred",
                                           str(res_path), "-o", str(root / f"report-baseline-{iou_type}"), "--iou-type", iou_type,
                                           "--no-html"],
        } if baseline_python else {}) | {
            f"{lib} script": [sys.executable, str(script), lib, str(gt_path), str(res_path), iou_type, str(root / f"{lib}-{iou_type}.npz")]
            for lib in libraries
        }
        if "hotcoco" in libraries:
            native_res = res_nobox_path if iou_type == "segm" else res_path
            commands["hotcoco (reads the files)"] = [sys.executable, str(native_script), str(gt_path), str(native_res), iou_type,
                                                     str(root / f"hotcoco_native-{iou_type}.npz")]
        if not html:
            del commands["segpipe evaluate (+ report.html)"]
        table = medians(commands, repeats=repeats)
        print_table(table, reference="segpipe evaluate --no-html", title=f"{iou_type}, {n_images} images (ratio = time / segpipe --no-html's)")
        ours = _segpipe_stats(root / f"report-{iou_type}")
        ref = np.load(root / f"pycocotools-{iou_type}.npz")
        same = {lib: bool(np.array_equal(np.load(root / f"{lib}-{iou_type}.npz")["stats"], ours))
                for lib in [*libraries, *(["hotcoco_native"] if "hotcoco" in libraries else [])]}
        in_process = evaluate_instances(gt, results, iou_type=iou_type)
        arrays_equal = np.array_equal(in_process.precision, ref["precision"]) and np.array_equal(in_process.recall, ref["recall"])
        if baseline_python:
            same["baseline segpipe"] = bool(np.array_equal(_segpipe_stats(root / f"report-baseline-{iou_type}"), ours))
        print(f"  segpipe's 12 stats equal to: {same}; precision/recall arrays identical to pycocotools: {arrays_equal}")
        if detector:
            ours_cpu, rss = table["segpipe evaluate --no-html"].cpu_s, table["segpipe evaluate --no-html"].peak_rss_mb
            goals = {"pycocotools script": 10.0, "faster_coco_eval script": 3.0}
            for name, times in goals.items():
                if name in table:
                    print(f"  goal: {times:.0f}x faster than {name}: {table[name].cpu_s / ours_cpu:.2f}x")
            for name in ("hotcoco script", "hotcoco (reads the files)"):
                if name in table:
                    print(f"  goal: CPU <= 1.5x {name}'s: {ours_cpu / table[name].cpu_s:.2f}x")
            print(f"  goal: peak RSS <= pycocotools': {rss:.0f} MB vs {table['pycocotools script'].peak_rss_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke run)")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None, help="comma list of image counts")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--detector", action="store_true",
                        help="detector scale: 640x480 images, 3-11 GT and 100 detections per image")
    parser.add_argument("--no-html-report-only", action="store_true", help="leave out the run that also writes report.html")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the generated files here and reuse them")
    parser.add_argument("--baseline-python", default=None,
                        help="also time the segpipe this interpreter imports (e.g. another checkout's .venv/bin/python)")
    args = parser.parse_args()
    sizes = args.sizes or ([100, 400] if args.quick else [2000, 8000])
    repeats = args.repeats or (1 if args.quick else 3)
    start_spawner()
    with tempfile.TemporaryDirectory(prefix="segpipe-bench-") as tmp:
        for n_images in sizes:
            bench_size(n_images=n_images, repeats=repeats, root=Path(tmp), detector=args.detector, html=not args.no_html_report_only,
                       data_dir=args.data_dir, baseline_python=args.baseline_python)


if __name__ == "__main__":
    main()

"""Semantic evaluation speed: confusion_update in memory, then whole commands beside the PNG-decode floor and hotcoco.

    .venv/bin/python benchmarks/eval_semantic.py            # 500 and 2,000 pairs of 512x512, 21 classes, median of 3
    .venv/bin/python benchmarks/eval_semantic.py --quick    # smoke run

1. In memory, on the same decoded arrays: `confusion_update` against the anchor
   `np.bincount(n * gt[keep] + pred[keep], minlength=n * n)` with `keep = gt != ignore` (mmseg's
   `intersect_and_union`, torchvision references' `ConfusionMatrix.update`). Median of repeats per batch,
   identical matrices checked.
2. Whole processes (see benchmarks/process_runs.py: CPU of the process tree, wall, peak RSS): `segpipe evaluate
   semantic --no-html` as installed (compiled label-map path; libdeflate when the `deflate` package is there), with
   zlib's inflate instead, on one thread, and with SEGPIPE_NO_KERNEL=1 (OpenCV/Pillow decode and cv2.calcHist: the
   path before the compiled one); with report.html; the decode floor (a script that only decodes every GT and
   predicted PNG with cv2, in one thread and in as many threads as cores, and with segpipe's own reader) and
   hotcoco's SemanticEval.update_folders when installed, at two sizes; segpipe's confusion matrix is checked
   against a sequential decode + bincount loop and against hotcoco's.
3. In one process, after the imports (what each tool does per pair, without interpreter start-up and imports):
   a bare `cv2.imread` loop over every GT and predicted file (one thread, and as many threads as cores),
   `evaluate_semantic_dirs` (all cores, one thread, and the OpenCV/calcHist path) and hotcoco's
   `update_folders`, CPU (this process, all threads) and wall, medians of repeats, ratios to hotcoco and to the
   cv2 loop.
4. The PNG decoders installed here, one thread, CPU per map on the same files (identical pixels checked).

hotcoco decodes with the `png` crate over rayon's threads; segpipe with threads over files (inflate and the
compiled loops release the GIL). Both use every core, so CPU compares the work and wall what a user waits for.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from process_runs import SEGPIPE, medians, print_table, start_spawner  # noqa: E402  (benchmarks/ is the script's own folder)
from segpipe.evaluators.semantic.confusion import IGNORE_INDEX, confusion_update  # noqa: E402
from segpipe.evaluators.semantic.evaluation import read_label_map  # noqa: E402

BATCH = 100  # pairs held in memory at once for the in-memory comparison


def make_pair(rng: np.random.Generator, *, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocky GT regions (compress like real label maps), ignore borders, a prediction that is mostly right."""
    cells = max(2, size // 32)
    gt = cv2.resize(rng.integers(0, n, (cells, cells), dtype=np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    gt[rng.integers(0, size):, : rng.integers(0, size // 8)] = IGNORE_INDEX
    shift = rng.integers(-6, 7, 2)
    pred = np.roll(gt, shift=tuple(int(s) for s in shift), axis=(0, 1))
    noise = rng.random((size, size)) < 0.05
    pred[noise] = rng.integers(0, n, int(noise.sum()), dtype=np.uint8)
    pred[pred == IGNORE_INDEX] = 0
    return gt, pred


def anchor_update(gt: np.ndarray, pred: np.ndarray, *, n: int) -> np.ndarray:
    keep = gt != IGNORE_INDEX
    return np.bincount(n * gt[keep].astype(np.int64) + pred[keep], minlength=n * n).reshape(n, n)


def median_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function; repeats alternate between them so load drifts hit all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def bench_in_memory(*, n_images: int, size: int, n: int, repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ours_total = anchor_total = 0.0
    ours_matrix = np.zeros((n, n + 1), np.int64)
    anchor_matrix = np.zeros((n, n), np.int64)
    for start in range(0, n_images, BATCH):
        pairs = [make_pair(rng, size=size, n=n) for _ in range(min(BATCH, n_images - start))]
        ours, anchor = median_times([lambda pairs=pairs: [confusion_update(g, p, num_classes=n) for g, p in pairs],
                                     lambda pairs=pairs: [anchor_update(g, p, n=n) for g, p in pairs]], repeats)
        ours_total += ours
        anchor_total += anchor
        ours_matrix += sum(confusion_update(g, p, num_classes=n) for g, p in pairs)
        anchor_matrix += sum(anchor_update(g, p, n=n) for g, p in pairs)
    identical = np.array_equal(ours_matrix[:, :n], anchor_matrix) and not ours_matrix[:, n].any()
    print(f"in memory, {n_images} pairs {size}x{size}, {n} classes (median of {repeats} per batch of {BATCH}):")
    print(f"  anchor bincount(n*gt[keep]+pred[keep]) {anchor_total:8.3f} s  ({anchor_total / n_images * 1e3:.3f} ms/pair)")
    print(f"  confusion_update                       {ours_total:8.3f} s  ({ours_total / n_images * 1e3:.3f} ms/pair)")
    print(f"  speed-up {anchor_total / ours_total:.2f}x   identical matrices: {identical}")
    if not identical:
        raise SystemExit("matrices differ")


def write_dataset(root: Path, *, n_images: int, size: int, n: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir()
    for i in range(n_images):
        gt, pred = make_pair(rng, size=size, n=n)
        cv2.imwrite(str(root / "gt" / f"{i:05d}.png"), gt)
        cv2.imwrite(str(root / "pred" / f"{i:05d}.png"), pred)
    return root / "gt", root / "pred"


# The decode floor: every GT and prediction PNG decoded, nothing else (argv: gt dir, pred dir, threads, decoder:
# "cv2" = cv2.imread, "segpipe" = segpipe's label-map reader, the same decoders segpipe evaluate uses).
DECODE_SCRIPT = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
gt, pred, threads, decoder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
paths = [os.path.join(d, f) for d in (gt, pred) for f in sorted(os.listdir(d)) if f.endswith(".png")]
if decoder == "cv2":
    import cv2
    read = lambda p: cv2.imread(p, cv2.IMREAD_UNCHANGED).shape
else:
    from segpipe.core.label_maps import read_label_map
    read = lambda p: read_label_map(p).shape
if threads == 1:
    list(map(read, paths))
else:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, paths))
"""
HOTCOCO_SCRIPT = """
import sys
from hotcoco.semantic import SemanticEval
ev = SemanticEval(int(sys.argv[3]), ignore_index=255)
ev.update_folders(sys.argv[1], sys.argv[2])
print(ev.stats)
"""


def compare_decoders(gt_dir: Path, *, limit: int) -> None:
    """CPU per map of the decoders installed here, one thread, on the same GT files."""
    from PIL import Image

    paths = sorted(gt_dir.glob("*.png"))[:limit]
    decoders: dict[str, Callable[[Path], np.ndarray]] = {
        "cv2.imread(IMREAD_UNCHANGED)": lambda p: cv2.imread(str(p), cv2.IMREAD_UNCHANGED),
        "cv2.imdecode(file bytes)": lambda p: cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED),
        "PIL Image.open + np.asarray": lambda p: np.asarray(Image.open(p)),
    }
    if importlib.util.find_spec("pyspng") is not None:  # libspng (https://libspng.org), when installed
        import pyspng

        decoders["pyspng.load(file bytes)"] = lambda p: pyspng.load(p.read_bytes())
    else:
        print("  note: pyspng is not installed: left out (pip install pyspng)")
    from segpipe.core import label_maps

    if label_maps.HELPER is not None:
        zlib_inflate, installed = label_maps._zlib_inflate, label_maps.INFLATE

        def with_zlib(p: Path) -> np.ndarray:
            label_maps.INFLATE = zlib_inflate
            try:
                return label_maps.decode_plain_png(p.read_bytes())  # type: ignore[return-value]
            finally:
                label_maps.INFLATE = installed

        decoders["segpipe decode_plain_png"] = lambda p: label_maps.decode_plain_png(p.read_bytes())  # type: ignore[arg-type,return-value]
        decoders["  same, zlib inflate"] = with_zlib
    reference = [decoders["cv2.imread(IMREAD_UNCHANGED)"](p) for p in paths]
    print(f"decoders, {len(paths)} GT maps, one thread (CPU ms per map, median of 3):")
    for name, decode in decoders.items():
        same = all(np.array_equal(decode(p), r) for p, r in zip(paths, reference))
        times = []
        for _ in range(3):
            start = time.process_time()
            for p in paths:
                decode(p)
            times.append(time.process_time() - start)
        print(f"  {name:<30} {statistics.median(times) / len(paths) * 1e3:6.3f} ms   same pixels: {same}")


def bench_end_to_end(*, n_images: int, size: int, n: int, repeats: int, seed: int, root: Path) -> tuple[Path, Path]:
    names = [f"class{i}" for i in range(n)]
    gt_dir, pred_dir = write_dataset(root, n_images=n_images, size=size, n=n, seed=seed)
    cores = os.cpu_count() or 1
    (root / "decode.py").write_text(DECODE_SCRIPT, encoding="utf-8")
    segpipe = [sys.executable, *SEGPIPE, "evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
               "--classes", ",".join(names)]
    zlib_only = "from segpipe.evaluators import label_maps as m; m.INFLATE = m._zlib_inflate; from segpipe.cli import main; main()"
    commands = {
        "segpipe evaluate --no-html": [*segpipe, "-o", str(root / "report"), "--no-html"],
        "  same, zlib inflate": [sys.executable, "-c", zlib_only, *segpipe[3:], "-o", str(root / "report-zlib"), "--no-html"],
        "  same, --workers 1": [*segpipe, "-o", str(root / "report-1"), "--no-html", "--workers", "1"],
        "  same, SEGPIPE_NO_KERNEL=1 (before)": ["env", "SEGPIPE_NO_KERNEL=1", *segpipe, "-o", str(root / "report-before"), "--no-html"],
        "segpipe evaluate (+ report.html)": [*segpipe, "-o", str(root / "report-html")],
        f"decode floor cv2, {cores} threads": [sys.executable, str(root / "decode.py"), str(gt_dir), str(pred_dir), str(cores), "cv2"],
        "decode floor cv2, 1 thread": [sys.executable, str(root / "decode.py"), str(gt_dir), str(pred_dir), "1", "cv2"],
        f"decode floor segpipe, {cores} threads": [sys.executable, str(root / "decode.py"), str(gt_dir), str(pred_dir), str(cores), "segpipe"],
    }
    if importlib.util.find_spec("hotcoco") is not None:
        (root / "hotcoco_semantic.py").write_text(HOTCOCO_SCRIPT, encoding="utf-8")
        commands["hotcoco SemanticEval.update_folders"] = [sys.executable, str(root / "hotcoco_semantic.py"), str(gt_dir), str(pred_dir), str(n)]
    else:
        print("  note: hotcoco is not installed: left out (pip install hotcoco)")
    table = medians(commands, repeats=repeats)
    print_table(table, reference="segpipe evaluate --no-html",
                title=f"whole commands, {n_images} pairs {size}x{size}, {n} classes, {cores} cores (ratio = time / segpipe --no-html's)")
    ours = table["segpipe evaluate --no-html"]
    others = [f"decode floor cv2, {cores} threads", "decode floor cv2, 1 thread", "hotcoco SemanticEval.update_folders"]
    for other in [o for o in others if o in table]:
        print(f"  segpipe --no-html / {other}: CPU {ours.cpu_s / table[other].cpu_s:.2f}x, wall {ours.wall_s / table[other].wall_s:.2f}x")
    import pandas as pd

    matrix = pd.read_parquet(root / "report" / "confusion.parquet").iloc[:, 1 : n + 1].to_numpy()
    print(f"  segpipe's confusion matrix equals a sequential cv2.imread + bincount loop: {np.array_equal(matrix, anchor_end_to_end(gt_dir, pred_dir, n=n))}")
    same = all((root / "report" / f.name).read_bytes() == f.read_bytes() for r in ("report-zlib", "report-1", "report-before")
               for f in sorted((root / r).iterdir()))
    print(f"  report files byte-identical with zlib, one thread and the path before: {same}")
    if not same:
        raise SystemExit("report files differ")
    return gt_dir, pred_dir


def bench_in_process(gt_dir: Path, pred_dir: Path, *, n: int, repeats: int) -> None:
    """Per-pair work after the imports, all in this process: CPU (every thread of it) and wall, medians."""
    from concurrent.futures import ThreadPoolExecutor

    from segpipe.core import label_maps
    from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs

    cores = os.cpu_count() or 1
    names = [f"class{i}" for i in range(n)]
    paths = [str(p) for d in (gt_dir, pred_dir) for p in sorted(d.glob("*.png"))]

    def imread_loop(threads: int) -> Callable[[], object]:
        def run() -> object:
            read = lambda p: cv2.imread(p, cv2.IMREAD_UNCHANGED).shape  # noqa: E731
            if threads == 1:
                return list(map(read, paths))
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(read, paths))
        return run

    def segpipe_eval(workers: int, helper: object) -> Callable[[], object]:
        def run() -> object:
            saved = label_maps.HELPER
            label_maps.HELPER = helper  # type: ignore[assignment]
            try:
                return evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, workers=workers).confusion
            finally:
                label_maps.HELPER = saved
        return run

    fns: dict[str, Callable[[], object]] = {
        "cv2.imread loop, 1 thread": imread_loop(1),
        f"cv2.imread loop, {cores} threads": imread_loop(cores),
        f"evaluate_semantic_dirs, {cores} threads": segpipe_eval(cores, label_maps.HELPER),
        "evaluate_semantic_dirs, 1 thread": segpipe_eval(1, label_maps.HELPER),
        f"  same, OpenCV + calcHist (before), {cores} threads": segpipe_eval(cores, None),
    }
    hotcoco_matrix = None
    if importlib.util.find_spec("hotcoco") is not None:
        from hotcoco.semantic import SemanticEval

        def hotcoco_run() -> object:
            nonlocal hotcoco_matrix
            ev = SemanticEval(n, ignore_index=IGNORE_INDEX)
            ev.update_folders(str(gt_dir), str(pred_dir))
            hotcoco_matrix = ev.confusion()
            return ev.stats

        fns["hotcoco update_folders"] = hotcoco_run
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # alternating, so load drift hits every entry alike
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    med = {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in fns}
    floor = med["cv2.imread loop, 1 thread"]
    ref = med.get("hotcoco update_folders")
    print(f"in one process, after imports, {len(paths) // 2} pairs (median of {repeats}; ratio = time / that entry's):")
    print(f"  {'':<46} {'CPU s':>7} {'wall s':>7} {'CPU/cv2 1t':>11} {'wall/cv2 1t':>12}"
          + (f" {'CPU/hotcoco':>12} {'wall/hotcoco':>13}" if ref else ""))
    for name, (c, w) in med.items():
        line = f"  {name:<46} {c:7.2f} {w:7.2f} {c / floor[0]:10.2f}x {w / floor[1]:11.2f}x"
        if ref:
            line += f" {c / ref[0]:11.2f}x {w / ref[1]:12.2f}x"
        print(line)
    if hotcoco_matrix is not None:
        ours = np.asarray(evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names).confusion.iloc[:, 1 : n + 1], dtype=np.int64)
        print(f"  segpipe's confusion matrix equals hotcoco's: {np.array_equal(ours, np.asarray(hotcoco_matrix, dtype=np.int64))}")


def anchor_end_to_end(gt_dir: Path, pred_dir: Path, *, n: int) -> np.ndarray:
    total = np.zeros((n, n), np.int64)
    for gt_path in sorted(gt_dir.glob("*.png")):
        total += anchor_update(read_label_map(gt_path), read_label_map(pred_dir / gt_path.name), n=n)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--images", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="comma list of pair counts for the end-to-end part")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    sizes = args.images or ([50, 200] if args.quick else [500, 2000])
    size = args.size or (256 if args.quick else 512)
    repeats = args.repeats or (1 if args.quick else 3)
    start_spawner()
    bench_in_memory(n_images=sizes[-1], size=size, n=args.classes, repeats=repeats, seed=0)
    for n_images in sizes:
        with tempfile.TemporaryDirectory(prefix="segpipe-bench-") as tmp:
            gt_dir, pred_dir = bench_end_to_end(n_images=n_images, size=size, n=args.classes, repeats=repeats, seed=1, root=Path(tmp))
            if n_images == sizes[-1]:
                bench_in_process(gt_dir, pred_dir, n=args.classes, repeats=repeats)
                compare_decoders(Path(tmp) / "gt", limit=200)


if __name__ == "__main__":
    main()

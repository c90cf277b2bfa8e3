"""Inference throughput: the tutorial loop vs `segpipe infer`'s engine vs a lean ceiling loop, same model,
checkpoint and images, interleaved repeats, medians.

    python benchmarks/infer.py            # deeplabv3_resnet50 @ 520 px, maskrcnn_resnet50_fpn @ 800x1066 (issue sizes)
    python benchmarks/infer.py --quick    # smoke run: 4 small images, 1 repeat
    python benchmarks/infer.py --device cuda --precisions fp32,bf16 --json bench.json   # what `make gpu-check` runs
    python benchmarks/infer.py --output-only   # the output stage alone: crop RLE threads vs full-mask pycocotools
    python benchmarks/infer.py --quick --repeats 5 --also-workers 1   # CPU: the engine with and without a decode process

Tutorial loop (the anchor): PIL -> ToTensor (-> Normalize for semantic) -> model one image at a time -> CPU.
Engine: `run_inference` (DataLoader decode workers, batching, on-device argmax/threshold, mask crops, RLE/PNG
writing in encoder threads, shards), once per precision. Ceiling: DataLoader workers, pinned memory, batches
(Mask R-CNN one image per call on the CPU, as the engine), channels_last for dense models, bf16 on CUDA,
argmax/threshold on the device, nothing copied back or written: what the model alone allows. The tutorial loop
keeps its own NCHW model.
Output stage: images/s of turning one run's predictions into COCO results (RLE), with the engine's encoder
threads, against one thread encoding full-size masks with pycocotools (the previous output stage).
Mask R-CNN runs with score threshold 0 (random weights score ~1/91), so every image carries 100 detections
and the mask post-processing is exercised, and at the images' own size in every loop (`--resize native`: the
sizes above are what the model sees, not upscaled to its 800-px default). On the CPU the engine decodes in the
main process (its default there); `--workers N` sets the engine's and the ceiling's decode processes. Model
construction is excluded everywhere. On CUDA, GPU busy % is torch.cuda.utilization() sampled every 0.2 s
(needs nvidia-ml-py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.converters.coco import CategoryRecord, ImageRecord, assemble_coco, write_coco  # noqa: E402
from segpipe.core.dataset_layout import write_dataset_meta  # noqa: E402

# (model, image sizes (w, h) cycled over the images, classes)
FULL = {"deeplabv3_resnet50": [(520, 520)], "maskrcnn_resnet50_fpn": [(1066, 800), (800, 1066)]}
QUICK = {"deeplabv3_resnet50": [(256, 256)], "maskrcnn_resnet50_fpn": [(400, 300), (300, 400)]}
# --tiny: the CPU test suite runs every loop of this script through benchmarks/gpu_check.py, so it cannot rot.
TINY = {"lraspp_mobilenet_v3_large": [(64, 64)], "maskrcnn_resnet50_fpn": [(96, 64)]}
NUM_CLASSES = {"deeplabv3_resnet50": 21, "maskrcnn_resnet50_fpn": 91, "lraspp_mobilenet_v3_large": 21}


def write_images(root: Path, *, n: int, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """A converted-dataset dir with `n` random-texture JPEGs (semantic classes: background + 20)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    records = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]  # blocky, so JPEG decode cost is realistic
        Image.fromarray(img).save(root / "img" / f"{i:05d}.jpg", quality=90)
        records.append(ImageRecord(file_name=f"{i:05d}.jpg", width=w, height=h))
    names = [f"c{k}" for k in range(1, 91)]
    write_coco(root / "instances.json", assemble_coco(images=records, categories=[CategoryRecord(c) for c in names]))
    (root / "semantic").mkdir()
    (root / "semantic" / "classes.txt").write_text("\n".join(["background", *names[:20]]) + "\n")
    write_dataset_meta(root, format="coco", image_root=root / "img", options={})
    return root


def naive_loop(model: Any, paths: list[Path], *, semantic: bool, device: Any) -> float:
    """images/s of the tutorial loop."""
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            img = TF.to_tensor(Image.open(path).convert("RGB"))
            if semantic:
                img = TF.normalize(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
                out = model(img[None].to(device))["out"].cpu()
                out.argmax(1)
            else:
                out = model([img.to(device)])
                [{k: v.cpu() for k, v in o.items()} for o in out]
    return len(paths) / (time.perf_counter() - start)


def ceiling_loop(model: Any, ds: Path, *, semantic: bool, device: Any, batch_size: int, workers: int | None) -> float:
    """images/s of a lean loop: loader workers, pinned memory, batches, bf16 on CUDA, nothing back or written."""
    import torch

    from segpipe.inference.data import ImageDataset, PlannedBatches, batches_plan, collate_samples, read_dataset

    info = read_dataset(ds)
    plan = batches_plan(images=info.images, task="semantic" if semantic else "instance", batch_size=batch_size, short_side=None)
    position = {e.image_id: k for k, e in enumerate(info.images)}
    loader = torch.utils.data.DataLoader(
        ImageDataset(info.images, short_side=None), batch_sampler=PlannedBatches([[position[e.image_id] for e in b] for b in plan]),
        collate_fn=collate_samples, num_workers=min(4, os.cpu_count() or 1) if workers is None else workers,
        pin_memory=device.type == "cuda",
    )
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(3, 1, 1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    start = time.perf_counter()
    with torch.inference_mode():
        for samples in loader:
            images = [s.image.to(device, non_blocking=True).float().div(255) for s in samples]
            with autocast:
                if semantic:
                    x = torch.stack([(im - mean) / std for im in images]).contiguous(memory_format=torch.channels_last)
                    model(x)["out"].argmax(1)
                else:
                    # One image per call on the CPU, as the engine (faster there than a batch).
                    for group in [images] if device.type != "cpu" else [[im] for im in images]:
                        for o in model(group):
                            _ = o["masks"] > 0.5  # the ceiling thresholds on the device too, like the engine
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(info.images) / (time.perf_counter() - start)


def output_stage(out_dir: Path, ds: Path, *, threads: int, max_images: int = 16) -> dict[str, float]:
    """images/s of the output stage on one engine run's predictions: the engine's crop RLE in `threads` threads vs
    one thread of pycocotools over full-size masks. Same results (checked)."""
    from concurrent.futures import ThreadPoolExecutor

    from pycocotools import mask as mask_utils

    from segpipe.inference.mask_rle import MaskCrop, encode_crop

    results = json.loads((out_dir / "results.json").read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in json.loads((ds / "instances.json").read_text())["images"]}
    by_image: dict[int, list[Any]] = {}
    keep = sorted({r["image_id"] for r in results})[:max_images]  # full-size pycocotools is slow: a sample of images
    results = [r for r in results if r["image_id"] in keep]
    for r in results:  # rebuild each image's predictions: tight crops and full-size masks of the decoded RLE
        full = mask_utils.decode(r["segmentation"])
        ys, xs = np.nonzero(full)
        crop = MaskCrop(0, 0, full[:0, :0]) if ys.size == 0 else MaskCrop(
            int(ys.min()), int(xs.min()), full[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy())
        by_image.setdefault(r["image_id"], []).append((crop, full, r["segmentation"]["counts"]))
    if not by_image:
        return {}

    def engine_image(items: list[Any], image_id: int) -> list[str]:
        h, w = sizes[image_id]
        return [encode_crop(c, height=h, width=w)["counts"] for c, _, _ in items]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        got = list(pool.map(engine_image, by_image.values(), by_image.keys()))
    engine = len(by_image) / (time.perf_counter() - start)
    start = time.perf_counter()
    old = [[mask_utils.encode(np.asfortranarray(f))["counts"].decode() for _, f, _ in items] for items in by_image.values()]
    single = len(by_image) / (time.perf_counter() - start)
    assert got == old == [[c for _, _, c in items] for items in by_image.values()], "output stage RLE differs"
    return {"output_images_per_s": engine, "output_single_thread_pycocotools_images_per_s": single,
            "detections_per_image": len(results) / len(by_image)}


class GpuSampler:
    """Samples torch.cuda.utilization() every 0.2 s in a thread (needs pynvml); None when unavailable."""

    def __init__(self, enabled: bool) -> None:
        self.samples: list[int] = []
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.2):
            try:
                self.samples.append(int(torch.cuda.utilization()))
            except Exception:
                return

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def synthetic_output_stage(*, n_images: int, detections: int, size: tuple[int, int], threads: int, repeats: int) -> dict[str, float]:
    """Output stage alone on Mask R-CNN-like masks (filled ellipses, 30-400 px, at random places): the engine's
    tight crops in `threads` threads vs one thread of pycocotools over full-size masks. Same strings (checked)."""
    import cv2
    from concurrent.futures import ThreadPoolExecutor

    from pycocotools import mask as mask_utils

    from segpipe.inference.mask_rle import MaskCrop, encode_crop

    w, h = size
    rng = np.random.default_rng(0)
    images = []
    for _ in range(n_images):
        items = []
        for _ in range(detections):
            full = np.zeros((h, w), np.uint8)
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.ellipse(full, (cx, cy), (int(rng.integers(15, 200)), int(rng.integers(15, 200))), float(rng.integers(0, 180)), 0, 360, 1, -1)
            ys, xs = np.nonzero(full)
            items.append((MaskCrop(int(ys.min()), int(xs.min()), full[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy()), full))
        images.append(items)

    def crops(items: list[Any]) -> list[str]:
        return [encode_crop(c, height=h, width=w)["counts"] for c, _ in items]

    engine, single = [], []
    for _ in range(repeats):  # interleaved
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            got = list(pool.map(crops, images))
        engine.append(n_images / (time.perf_counter() - start))
        start = time.perf_counter()
        ref = [[mask_utils.encode(np.asfortranarray(f))["counts"].decode() for _, f in items] for items in images]
        single.append(n_images / (time.perf_counter() - start))
    assert got == ref, "crop RLE differs from pycocotools"
    return {"output_images_per_s": statistics.median(engine), "output_single_thread_pycocotools_images_per_s": statistics.median(single)}


def bench_model(name: str, *, sizes: list[tuple[int, int]], n: int, repeats: int, device: str, batch_size: int,
                workers: int | None, precisions: list[str], tmp: Path, also_workers: int | None = None) -> dict[str, Any]:
    import torch

    from segpipe.inference import engine as infer_engine
    from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD
    from segpipe.inference.engine import resolve_device, run_inference
    from segpipe.inference.models import build_model, keep_box_coordinates_fp32, set_rcnn_resolution

    semantic = not name.startswith("maskrcnn")
    score_threshold = 0.05 if semantic else 0.0
    ds = write_images(tmp / f"{name}-ds", n=n, sizes=sizes)
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES[name])
    ckpt = tmp / f"{name}.pt"
    torch.save(model.state_dict(), ckpt)
    classes = None if semantic else ["__background__", *[f"c{k}" for k in range(1, 91)]]
    if not semantic:  # the engine runs Mask R-CNN with --resize native here; give the other loops the same model
        set_rcnn_resolution(model, resize="native", mean=IMAGENET_MEAN, std=IMAGENET_STD)
        model.roi_heads.score_thresh = score_threshold
        keep_box_coordinates_fp32(model)
    dev = resolve_device(device)
    tutorial_model = model.eval().to(dev)  # NCHW, as the tutorials write it
    # The ceiling runs dense models channels_last, as the engine does on both devices. Its own copy: with
    # channels_last weights even an NCHW input runs channels_last, which would give the tutorial loop the speed-up.
    model = copy.deepcopy(tutorial_model).to(memory_format=torch.channels_last) if semantic else tutorial_model
    paths = sorted((ds / "img").glob("*.jpg"))
    naive_loop(tutorial_model, paths[:1], semantic=semantic, device=dev)  # warm-up (allocator, kernels)
    for p in precisions:  # the engine's warm-up: first imports (cv2, tqdm), autocast kernels, one image
        run_inference(model=name, checkpoint=ckpt, dataset=ds, out=tmp / f"{name}-warm-{p}", classes=classes, device=device,
                      batch_size=batch_size, precision=p, workers=0, score_threshold=score_threshold, image_ids=[1], resize="native")
    # The engine's share outside the model's forward calls (decode, post-processing, encoder, shard files): its
    # models are built inside run_inference, so their forward is timed through the builder it calls.
    forward_seconds: list[float] = []
    real_build = infer_engine.build_model

    def timed_build(*args: Any, **kw: Any) -> Any:
        built = real_build(*args, **kw)
        forward = built.forward

        def timed_forward(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            out = forward(*a, **k)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            forward_seconds.append(time.perf_counter() - start)
            return out

        built.forward = timed_forward
        return built

    infer_engine.build_model = timed_build
    outside: list[float] = []
    loops = ["tutorial", *[f"engine_{p}" for p in precisions], "ceiling"]
    if also_workers is not None:  # the engine once more, with another number of decode processes, interleaved too
        loops.append(f"engine_{precisions[0]}_workers{also_workers}")
    speed: dict[str, list[float]] = {k: [] for k in loops}
    util: dict[str, list[float]] = {k: [] for k in loops}
    last_out: Path | None = None
    for r in range(repeats):  # interleaved: a drifting clock or a busy neighbour hits every loop alike
        for loop in loops:
            with GpuSampler(dev.type == "cuda") as sampler:
                if loop == "tutorial":
                    ips = naive_loop(tutorial_model, paths, semantic=semantic, device=dev)
                elif loop == "ceiling":
                    ips = ceiling_loop(model, ds, semantic=semantic, device=dev, batch_size=batch_size, workers=workers)
                else:
                    last_out = tmp / f"{name}-{loop}-{r}"
                    forward_seconds.clear()
                    summary = run_inference(model=name, checkpoint=ckpt, dataset=ds, out=last_out, classes=classes, device=device,
                                            batch_size=batch_size, precision=loop.split("_")[1],
                                            workers=also_workers if loop.endswith(f"_workers{also_workers}") else workers,
                                            score_threshold=score_threshold, resize="native")
                    ips = summary.images_per_second or 0.0
                    if loop == f"engine_{precisions[0]}" and ips:
                        outside.append(1 - sum(forward_seconds) * ips / (summary.n_processed - summary.n_resumed))
            speed[loop].append(ips)
            if sampler.mean() is not None:
                util[loop].append(float(sampler.mean()))
    infer_engine.build_model = real_build
    result: dict[str, Any] = {"model": name, "images": n, "sizes": sizes, "device": str(dev), "batch_size": batch_size,
                              "repeats": repeats, "score_threshold": score_threshold,
                              "engine_share_outside_forward": statistics.median(outside) if outside else None}
    for loop in loops:
        result[f"{loop}_images_per_s"] = statistics.median(speed[loop])
        result[f"{loop}_gpu_busy_percent"] = statistics.median(util[loop]) if util[loop] else None
    # Paired: each repeat's engine run against the tutorial run just before it, so a neighbour's load that comes
    # and goes between repeats cancels out; the median of those ratios.
    for loop in [k for k in loops if k.startswith("engine_")]:
        result[f"{loop}_vs_tutorial_paired"] = statistics.median(e / t for e, t in zip(speed[loop], speed["tutorial"]))
    for p in precisions:
        result[f"engine_{p}_vs_tutorial"] = result[f"engine_{p}_images_per_s"] / result["tutorial_images_per_s"]
        result[f"ceiling_vs_engine_{p}"] = result["ceiling_images_per_s"] / result[f"engine_{p}_images_per_s"]
    if also_workers is not None:
        extra = f"engine_{precisions[0]}_workers{also_workers}"
        result[f"{extra}_vs_tutorial"] = result[f"{extra}_images_per_s"] / result["tutorial_images_per_s"]
    if not semantic and last_out is not None:
        result.update(output_stage(last_out, ds, threads=infer_engine.ENCODER_THREADS))
    return result


def _line(row: dict[str, Any], precisions: list[str]) -> str:
    w, h = row["sizes"][0]
    head = f"{row['model']:24s} {w}x{h} x{row['images']} on {row['device']} (batch {row['batch_size']}): "
    parts = [f"tutorial {row['tutorial_images_per_s']:.2f} img/s"]
    for p in precisions:
        parts.append(f"engine {p} {row[f'engine_{p}_images_per_s']:.2f} img/s ({row[f'engine_{p}_vs_tutorial']:.2f}x tutorial, "
                     f"paired {row[f'engine_{p}_vs_tutorial_paired']:.2f}x)")
    for key in [k for k in row if "_workers" in k and k.endswith("_vs_tutorial")]:
        loop = key[: -len("_vs_tutorial")]
        parts.append(f"{loop.replace('_', ' ')} {row[f'{loop}_images_per_s']:.2f} img/s ({row[key]:.2f}x tutorial, "
                     f"paired {row[f'{loop}_vs_tutorial_paired']:.2f}x)")
    if row.get("engine_share_outside_forward") is not None:
        parts.append(f"engine {precisions[0]} outside the model's forward {100 * row['engine_share_outside_forward']:.1f}% of its time")
    parts.append(f"ceiling {row['ceiling_images_per_s']:.2f} img/s")
    busy = [f"{k.replace('_gpu_busy_percent', '')} {v:.0f}%" for k, v in row.items() if k.endswith("_gpu_busy_percent") and v is not None]
    if busy:
        parts.append("GPU busy " + ", ".join(busy))
    if "output_images_per_s" in row:
        parts.append(f"output stage {row['output_images_per_s']:.2f} img/s vs {row['output_single_thread_pycocotools_images_per_s']:.2f} "
                     f"single-thread full-mask pycocotools ({row['detections_per_image']:.0f} detections/image)")
    return head + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 small images, 1 repeat (smoke run)")
    parser.add_argument("--tiny", action="store_true", help="1 tiny image of lraspp and Mask R-CNN, 1 repeat (test suite)")
    parser.add_argument("--images", type=int, default=None, help="images per model (default 64; --quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="median of this many runs (default 3; --quick 1)")
    parser.add_argument("--models", default=None, help="comma-separated [default: deeplabv3_resnet50,maskrcnn_resnet50_fpn]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (as segpipe infer --device)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precisions", default="auto",
                        help="engine precisions, comma-separated (auto: fp32,bf16 on CUDA, fp32 on CPU); the tutorial loop is fp32")
    parser.add_argument("--workers", type=int, default=None, help="decode processes of the engine and the ceiling loop [default: the engine's]")
    parser.add_argument("--also-workers", type=int, default=None,
                        help="also run the engine with this many decode processes, interleaved (e.g. 1 on the CPU, where the default is 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs on a shared machine)")
    parser.add_argument("--output-only", action="store_true",
                        help="only the output stage (RLE of 100 masks per 1066x800 image), no model")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    n = args.images or (1 if args.tiny else 4 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick or args.tiny else 3)
    models = args.models or ",".join(sizes)
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    precisions = args.precisions.split(",") if args.precisions != "auto" else (["fp32", "bf16"] if cuda else ["fp32"])
    if args.output_only:
        from segpipe.inference.engine import ENCODER_THREADS

        w, h = FULL["maskrcnn_resnet50_fpn"][0]
        r = synthetic_output_stage(n_images=args.images or 8, detections=100, size=(w, h), threads=ENCODER_THREADS, repeats=repeats)
        print(f"output stage, {w}x{h}, 100 detections/image: crops in {ENCODER_THREADS} encoder thread(s) {r['output_images_per_s']:.2f} img/s, "
              f"single-thread full-mask pycocotools {r['output_single_thread_pycocotools_images_per_s']:.2f} img/s, "
              f"ratio {r['output_images_per_s'] / r['output_single_thread_pycocotools_images_per_s']:.2f}x")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="segpipe-bench-") as tmp:
        for name in models.split(","):
            row = bench_model(name, sizes=sizes[name], n=n, repeats=repeats, device=args.device, batch_size=args.batch_size,
                              workers=args.workers, precisions=precisions, tmp=Path(tmp), also_workers=args.also_workers)
            rows.append(row)
            print(_line(row, precisions), flush=True)
    if not cuda:
        print("note: no CUDA device here; these are CPU figures (GPU targets: engine >= 4x tutorial for DeepLabV3, >= 2x for Mask R-CNN; make gpu-check)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference throughput: the seeds' naive loop vs `segpipe infer`'s engine, same model/checkpoint/images.

    python benchmarks/infer.py            # issue 4 sizes: deeplabv3_resnet50 @ 520 px, maskrcnn_resnet50_fpn @ 800 px
    python benchmarks/infer.py --quick    # smoke run: 4 small images, 1 repeat

Naive loop (the anchor): PIL -> ToTensor (-> Normalize for semantic) -> model([img]) one image at a time -> CPU.
Engine: `run_inference` (DataLoader decode workers, batching, on-device argmax/threshold, RLE/PNG writing in a
thread, shards). Both use random weights saved as one checkpoint; images/s count the inference loop only
(model construction excluded on both sides). Prints images/s for both, the ratio (median of repeats) and,
on CUDA, how busy the GPU was (torch.cuda.utilization, if pynvml is installed).
"""

from __future__ import annotations

import argparse
import json
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
from segpipe.converters.dataset_layout import write_dataset_meta  # noqa: E402

# (model, image sizes (w, h) cycled over the images, classes)
FULL = {"deeplabv3_resnet50": [(520, 520)], "maskrcnn_resnet50_fpn": [(1066, 800), (800, 1066)]}
QUICK = {"deeplabv3_resnet50": [(256, 256)], "maskrcnn_resnet50_fpn": [(400, 300), (300, 400)]}
NUM_CLASSES = {"deeplabv3_resnet50": 21, "maskrcnn_resnet50_fpn": 91}


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
    """images/s of the seeds' loop."""
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


def bench_model(name: str, *, sizes: list[tuple[int, int]], n: int, repeats: int, device: str, batch_size: int,
                workers: int | None, precision: str, tmp: Path) -> dict[str, Any]:
    import torch

    from segpipe.inference.engine import resolve_device, run_inference
    from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD
    from segpipe.inference.models import build_model, set_native_resolution

    semantic = not name.startswith("maskrcnn")
    ds = write_images(tmp / f"{name}-ds", n=n, sizes=sizes)
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES[name])
    ckpt = tmp / f"{name}.pt"
    torch.save(model.state_dict(), ckpt)
    classes = None if semantic else ["__background__", *[f"c{k}" for k in range(1, 91)]]
    if not semantic:  # the engine runs Mask R-CNN at native size; give the naive loop the same transform
        set_native_resolution(model, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    dev = resolve_device(device)
    model = model.eval().to(dev)
    paths = sorted((ds / "img").glob("*.jpg"))
    naive_loop(model, paths[:1], semantic=semantic, device=dev)  # warm-up (allocator, kernels)
    naive, engine, util = [], [], []
    for r in range(repeats):
        naive.append(naive_loop(model, paths, semantic=semantic, device=dev))
        with GpuSampler(dev.type == "cuda") as sampler:
            summary = run_inference(model=name, checkpoint=ckpt, dataset=ds, out=tmp / f"{name}-out{r}", classes=classes,
                                    device=device, batch_size=batch_size, precision=precision, workers=workers)
        engine.append(summary.images_per_second or 0.0)
        util.append(sampler.mean())
    result = {
        "model": name, "images": n, "sizes": sizes, "device": str(dev), "precision": precision, "batch_size": batch_size,
        "naive_images_per_s": statistics.median(naive), "engine_images_per_s": statistics.median(engine),
        "gpu_util_percent": statistics.median([u for u in util if u is not None]) if any(u is not None for u in util) else None,
    }
    result["ratio"] = result["engine_images_per_s"] / result["naive_images_per_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 small images, 1 repeat (smoke run)")
    parser.add_argument("--images", type=int, default=None, help="images per model (default 64; --quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="median of this many runs (default 3; --quick 1)")
    parser.add_argument("--models", default="deeplabv3_resnet50,maskrcnn_resnet50_fpn")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="engine precision (auto: bf16 on CUDA, fp32 on CPU); the naive loop is always fp32")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs on a shared machine)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    n = args.images or (4 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 3)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="segpipe-bench-") as tmp:
        for name in args.models.split(","):
            row = bench_model(name, sizes=sizes[name], n=n, repeats=repeats, device=args.device, batch_size=args.batch_size,
                              workers=args.workers, precision=precision, tmp=Path(tmp))
            rows.append(row)
            util = f", GPU busy {row['gpu_util_percent']:.0f}%" if row["gpu_util_percent"] is not None else ""
            print(f"{name:24s} {row['sizes'][0][0]}x{row['sizes'][0][1]} x{n} on {row['device']} ({precision}, batch {args.batch_size}): "
                  f"naive {row['naive_images_per_s']:.3f} img/s, engine {row['engine_images_per_s']:.3f} img/s, "
                  f"ratio {row['ratio']:.2f}x{util}", flush=True)
    if not cuda:
        print("note: no CUDA device here; these are CPU figures (the GPU targets are 4x DeepLabV3, 2x Mask R-CNN)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

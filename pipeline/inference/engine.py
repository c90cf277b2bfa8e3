"""`run_inference`: a checkpoint over a converted dataset, batched on the device, streamed to disk in shards.

Pipeline per batch: DataLoader workers decode (uint8, pinned when on CUDA) -> `non_blocking` copy ->
normalise on the device -> forward under `inference_mode` (+ bf16/fp16 autocast, channels_last for dense
models on CUDA) -> argmax / mask threshold on the device -> uint8 to the CPU -> a single encoder thread does
RLE, PNG and shard writing while the device runs the next batch. A shard file is written atomically once
all of its images are done, so an interrupted run resumes from the last finished shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from segpipe.inference.checkpoints import (
    IMAGENET_MEAN, IMAGENET_STD, InferenceError, ModelCard, load_state_dict_into, parse_state_dict, read_checkpoint,
    read_model_card,
)
from segpipe.cache.fingerprints import file_sha256
from segpipe.inference.data import (
    ClassMapping, ImageDataset, PlannedBatches, Sample, batches_plan, check_semantic_outputs, class_mapping_compute,
    collate_samples, read_dataset, shards_plan,
)
from segpipe.inference.outputs import (
    MASK_THRESHOLD, InstancePrediction, SemanticPrediction, SkippedImage, component_results, instance_results,
    prepare_out_dir, read_plan_fingerprint, shard_path, skipped_row, start_fresh_plan, write_final_outputs, write_semantic_png,
    write_shard,
)
from segpipe.inference.mask_rle import crops_from_masks
from segpipe.inference.models import (
    INSTANCE, SEMANTIC, TORCHSCRIPT, build_model, drop_training_only_keys, keep_box_coordinates_fp32, load_torchscript, model_spec,
    set_native_resolution,
)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
SHARD_IMAGES = 256  # images per shard file: small enough to lose little on a crash, few enough files for 100k images
# Encoder threads (RLE, PNG, shard files). The RLE encoder is vectorised numpy and cv2.imencode releases the GIL,
# so a few threads overlap; more than 4 only compete with the DataLoader's decode workers for cores.
ENCODER_THREADS = max(1, min(4, (os.cpu_count() or 1) // 2))
MAX_BATCHES_IN_FLIGHT = 4  # encoder backlog per encoder thread before the device loop waits (bounds memory)


@dataclass(frozen=True)
class InferenceSummary:
    out: Path
    task: str
    n_images: int
    n_processed: int
    n_skipped: int
    images_per_second: float | None
    device: str
    precision: str
    batch_size: int  # after any OOM halving
    checkpoint_sha256: str


def resolve_device(device: str) -> Any:
    import torch

    if device not in DEVICES:
        raise InferenceError("--device", "device", f"must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InferenceError("--device", "device", "cuda requested but torch sees no CUDA device")
    return torch.device(device)


def run_with_oom_backoff(
    fn: Callable[[list[Sample]], list[Any]], samples: list[Sample], *, limit: int, on_oom: Callable[[], None] = lambda: None
) -> tuple[list[Any], list[SkippedImage], int]:
    """Run `fn` over `samples` in chunks of at most `limit`; on out-of-memory halve the chunk and retry.
    Returns (outputs, images that failed even alone, the new limit, kept for later batches)."""
    import torch

    outputs: list[Any] = []
    failed: list[SkippedImage] = []
    i = 0
    while i < len(samples):
        chunk = samples[i:i + limit]
        try:
            outputs.extend(fn(chunk))
        except torch.OutOfMemoryError as err:
            on_oom()
            if len(chunk) == 1:
                failed.append(SkippedImage(chunk[0].entry, "out_of_memory", f"out of memory at batch size 1: {str(err).splitlines()[0] if str(err) else ''}"))
            else:
                limit = (len(chunk) + 1) // 2  # halve, rounding up: 3 -> 2 -> 1
                continue
        i += len(chunk)
    return outputs, failed, limit


class DevicePredictor:
    """Forward pass and on-device post-processing; returns CPU uint8 masks / label maps."""

    def __init__(self, *, model: Any, task: str, device: Any, precision: str, mean: Sequence[float], std: Sequence[float],
                 mapping: ClassMapping, score_threshold: float) -> None:
        import torch

        self.torch = torch
        self.task, self.device, self.precision = task, device, precision
        self.score_threshold = score_threshold
        self.channels_last = device.type == "cuda" and task == SEMANTIC
        self.model = model.to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
        self.n_outputs = len(mapping.targets)
        lut_dtype = torch.uint8 if task == SEMANTIC else torch.int64
        self.lut = torch.tensor(mapping.targets, dtype=lut_dtype, device=device)
        self.want_confidence = any(c is not None for c in mapping.component_categories)

    def autocast(self) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = self.torch.bfloat16 if self.precision == "bf16" else self.torch.float16
        return self.torch.autocast(device_type=self.device.type, dtype=dtype)

    def __call__(self, samples: list[Sample]) -> list[Any]:
        with self.torch.inference_mode():
            return self.semantic(samples) if self.task == SEMANTIC else self.instance(samples)

    def semantic(self, samples: list[Sample]) -> list[SemanticPrediction]:
        torch = self.torch
        x = torch.stack([s.image.to(self.device, non_blocking=True) for s in samples])
        x = x.float().div(255).sub(self.mean).div(self.std)  # the same ops as ToTensor + Normalize
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            out = self.model(x)
        logits = (out["out"] if isinstance(out, dict) else out).float()
        if logits.ndim != 4 or logits.shape[1] != self.n_outputs:
            raise InferenceError("--model", "output", f"model gives shape {tuple(logits.shape)}, expected {self.n_outputs} class channels")
        index = logits.argmax(dim=1)
        labels = self.lut[index]
        conf = None
        if self.want_confidence:  # probability of the winning class = exp(max - logsumexp)
            conf = torch.exp(logits.gather(1, index[:, None])[:, 0] - torch.logsumexp(logits, dim=1)).half()
        sizes = [(s.entry.height, s.entry.width) for s in samples]
        if all(size == tuple(labels.shape[-2:]) for size in sizes):  # native size: one copy for the whole batch
            lab_cpu = labels.cpu().numpy()
            conf_cpu = conf.cpu().numpy() if conf is not None else None
            return [SemanticPrediction(s.entry, lab_cpu[i], None if conf_cpu is None else conf_cpu[i]) for i, s in enumerate(samples)]
        preds = []
        for i, (s, size) in enumerate(zip(samples, sizes)):  # --resize: back to each image's size, nearest neighbour
            lab = torch.nn.functional.interpolate(labels[i][None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
            c = None
            if conf is not None:
                c = torch.nn.functional.interpolate(conf[i][None, None].float(), size=size, mode="nearest")[0, 0].half().cpu().numpy()
            preds.append(SemanticPrediction(s.entry, lab.cpu().numpy(), c))
        return preds

    def instance(self, samples: list[Sample]) -> list[InstancePrediction]:
        images = [s.image.to(self.device, non_blocking=True).float().div(255) for s in samples]
        with self.autocast():
            outs = self.model(images)
        if isinstance(outs, tuple):  # scripted torchvision detectors return (losses, detections)
            outs = outs[1]
        preds = []
        for s, o in zip(samples, outs):
            keep = o["scores"] >= self.score_threshold
            # Threshold on the device, then copy only each mask's tight crop (not N full-size masks) to the CPU.
            masks = o["masks"][keep][:, 0] > MASK_THRESHOLD
            preds.append(InstancePrediction(
                s.entry, o["scores"][keep].float().cpu().numpy(), self.lut[o["labels"][keep]].cpu().numpy(),
                o["boxes"][keep].float().cpu().numpy(), crops_from_masks(masks),
            ))
        return preds


def load_model(*, name: str, task: str, checkpoint: Path, card: ModelCard, n_outputs: int, trust: bool,
               resize: int | None, mean: Sequence[float], std: Sequence[float], score_threshold: float) -> Any:
    if name == TORCHSCRIPT:
        return load_torchscript(checkpoint)
    model = build_model(name, num_classes=n_outputs, unet_depth=card.unet_depth, unet_width=card.unet_width,
                        unet_bilinear=card.unet_bilinear)
    state = parse_state_dict(read_checkpoint(checkpoint, trust=trust), path=checkpoint)
    state = drop_training_only_keys(state, model_keys=set(model.state_dict()))
    load_state_dict_into(model, state, path=checkpoint)
    if task == INSTANCE:
        set_native_resolution(model, resize=resize, mean=mean, std=std)
        # Filter inside the detector too: fewer boxes reach the (costly) mask head.
        model.roi_heads.score_thresh = score_threshold
        keep_box_coordinates_fp32(model)  # bf16/fp16 autocast must not round box coordinates
    return model.eval()


def plan_fingerprint(settings: dict[str, Any], shards: Sequence[Sequence[int]]) -> str:
    text = json.dumps({"settings": settings, "shards": [list(s) for s in shards]}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_inference(
    *, model: str, checkpoint: Path, dataset: Path, out: Path, num_classes: int | None = None,
    classes: Sequence[str] | None = None, device: str = "auto", batch_size: int = 4, precision: str = "fp32",
    score_threshold: float = 0.05, resize: int | None = None, trust_checkpoint: bool = False,
    image_ids: Sequence[int] | None = None, progress: bool = False, workers: int | None = None,
    shard_size: int = SHARD_IMAGES, checkpoint_sha256: str | None = None,
) -> InferenceSummary:
    """Run `model` with `checkpoint` over the converted `dataset`; write results.json, semantic/<stem>.png,
    inference_report.csv and meta.json into `out`. `image_ids` restricts the run to a subset (a shard);
    `checkpoint_sha256`, when the caller already hashed the file, saves reading it again."""
    import torch

    if precision not in PRECISIONS:
        raise InferenceError("--precision", "precision", f"must be one of {PRECISIONS}, got {precision!r}")
    if batch_size < 1 or shard_size < 1 or (resize is not None and resize < 1):
        raise InferenceError("--batch-size", "batch_size", "batch size, shard size and resize must be positive")
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise InferenceError(checkpoint, "", "checkpoint file not found")
    spec = model_spec(model)
    card = read_model_card(checkpoint)
    task = (card.task or SEMANTIC) if spec.name == TORCHSCRIPT else spec.task
    info = read_dataset(dataset, image_ids=image_ids)
    if out.resolve() == info.root.resolve():  # a fresh plan clears OUT/semantic/*.png: never the ground truth
        raise InferenceError(out, "-o", "the predictions dir must not be the dataset dir")
    # Class names map onto the dataset before any image is read (issue 4): an unknown name stops here.
    mapping = class_mapping_compute(task=task, names=classes if classes is not None else card.class_names,
                                    num_classes=num_classes if num_classes is not None else card.num_classes,
                                    dataset=info, source=str(card.path or "--classes"))
    if task == SEMANTIC:
        check_semantic_outputs(info.images, mapping=mapping, dataset=info.root)
    resize = resize if resize is not None else card.resize
    mean, std = card.mean or IMAGENET_MEAN, card.std or IMAGENET_STD
    dev = resolve_device(device)
    sha = checkpoint_sha256 or file_sha256(checkpoint)
    net = load_model(name=spec.name, task=task, checkpoint=checkpoint, card=card, n_outputs=len(mapping.targets),
                     trust=trust_checkpoint, resize=resize, mean=mean, std=std, score_threshold=score_threshold)
    predictor = DevicePredictor(model=net, task=task, device=dev, precision=precision, mean=mean, std=std, mapping=mapping,
                                score_threshold=score_threshold)

    batches = batches_plan(images=info.images, task=task, batch_size=batch_size, short_side=resize)
    shards = shards_plan(batches, shard_size=shard_size)
    settings = {"model": spec.name, "sha256": sha, "task": task, "targets": list(mapping.targets), "resize": resize,
                "mean": list(mean), "std": list(std), "precision": precision, "device_type": dev.type,
                "score_threshold": score_threshold, "outputs": list(mapping.output_names)}
    fingerprint = plan_fingerprint(settings, [[e.image_id for b in shard for e in b] for shard in shards])
    out = prepare_out_dir(out)
    if read_plan_fingerprint(out) != fingerprint:
        start_fresh_plan(out, fingerprint=fingerprint, n_shards=len(shards))
    pending = [i for i in range(len(shards)) if not shard_path(out, i).is_file()]

    categories = {t: c for t, c in zip(mapping.targets, mapping.component_categories) if c is not None}
    started = time.perf_counter()
    processed_now, limit = _stream(
        predictor, out=out, shards=shards, pending=pending, short_side=resize if task == SEMANTIC else None,
        workers=workers, batch_size=batch_size, categories=categories, score_threshold=score_threshold, progress=progress,
    )
    elapsed = time.perf_counter() - started
    ips = processed_now / elapsed if processed_now and elapsed > 0 else None
    unmapped = [n for n, t, c in zip(mapping.output_names, mapping.targets, mapping.component_categories) if t != 0 and c is None]
    meta = {**settings, "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": sha, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "images_per_second": ips, "images_this_run": processed_now, "seconds": elapsed, "batch_size": batch_size,
            "final_batch_size": limit, "dataset": str(info.root.resolve()), "n_images": len(info.images),
            "unmapped_component_classes": unmapped if task == SEMANTIC else [],
            "torch": torch.__version__, "model_card": str(card.path) if card.path else None}
    n_processed, n_skipped = write_final_outputs(out, n_shards=len(shards), meta=meta)
    return InferenceSummary(out=out, task=task, n_images=len(info.images), n_processed=n_processed, n_skipped=n_skipped,
                            images_per_second=ips, device=str(dev), precision=precision, batch_size=limit, checkpoint_sha256=sha)


def _stream(predictor: DevicePredictor, *, out: Path, shards: list[list[list[Any]]], pending: list[int], short_side: int | None,
            workers: int | None, batch_size: int, categories: dict[int, int], score_threshold: float, progress: bool,
            encoder_threads: int | None = None) -> tuple[int, int]:
    """The device loop over the pending shards; returns (images predicted, final batch-size limit)."""
    import torch
    from tqdm import tqdm

    entries = [e for i in pending for b in shards[i] for e in b]
    position = {e.image_id: k for k, e in enumerate(entries)}
    batch_shard = [(i, [position[e.image_id] for e in b]) for i in pending for b in shards[i]]
    n_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        ImageDataset(entries, short_side=short_side), batch_sampler=PlannedBatches([b for _, b in batch_shard]),
        collate_fn=collate_samples, num_workers=n_workers, pin_memory=predictor.device.type == "cuda",
    )
    on_oom = torch.cuda.empty_cache if predictor.device.type == "cuda" else (lambda: None)
    limit, processed = batch_size, 0
    shard_futures: dict[int, list[Future[Any]]] = {i: [] for i in pending}
    remaining = {i: sum(len(b) for b in shards[i]) for i in pending}
    in_flight: deque[Future[Any]] = deque()
    threads = ENCODER_THREADS if encoder_threads is None else max(1, encoder_threads)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="segpipe-encode") as encoder, \
            tqdm(total=len(entries), unit="img", disable=not progress) as bar:
        for (shard_index, _), samples in zip(batch_shard, loader):
            good = [s for s in samples if s.error is None]
            skipped = [SkippedImage(s.entry, s.code, s.error) for s in samples if s.error is not None]
            preds, failed, limit = run_with_oom_backoff(predictor, good, limit=limit, on_oom=on_oom)
            processed += len(preds)
            in_flight.append(encoder.submit(_encode_batch, out, preds, skipped + failed, categories, score_threshold))
            shard_futures[shard_index].append(in_flight[-1])
            remaining[shard_index] -= len(samples)
            if remaining[shard_index] == 0:  # queued after the shard's batches (FIFO): it only waits on started ones
                ids = [e.image_id for b in shards[shard_index] for e in b]
                in_flight.append(encoder.submit(_finish_shard, shard_path(out, shard_index), shard_futures.pop(shard_index), ids))
            while in_flight and (len(in_flight) > MAX_BATCHES_IN_FLIGHT * threads or in_flight[0].done()):
                in_flight.popleft().result()  # re-raises encoder errors here, early; bounds the backlog
            bar.update(len(samples))
        for fut in in_flight:
            fut.result()
    return processed, limit


def _encode_batch(out: Path, preds: list[Any], skipped: list[SkippedImage], categories: dict[int, int], score_threshold: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    for pred in preds:
        if isinstance(pred, SemanticPrediction):
            write_semantic_png(out, pred)
            results.extend(component_results(pred, categories=categories, score_threshold=score_threshold))
        else:
            results.extend(instance_results(pred))
    return results, [skipped_row(s) for s in skipped]


def _finish_shard(path: Path, futures: list[Future[Any]], image_ids: list[int]) -> None:
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for fut in futures:  # started before this (FIFO queue): done or running on another encoder thread
        r, s = fut.result()
        results.extend(r)
        skipped.extend(s)
    write_shard(path, results=results, skipped=skipped, image_ids=image_ids)

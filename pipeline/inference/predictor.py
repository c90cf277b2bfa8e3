"""The device side of inference: which device, the forward pass with on-device post-processing, and the
out-of-memory backoff. CUDA is initialised here (inside inference tasks) and nowhere else."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

from segpipe.inference.checkpoints import InferenceError, OPTIONS
from segpipe.inference.class_maps import ClassMapping
from segpipe.inference.data import Sample
from segpipe.inference.devices import DeviceError, parse_device
from segpipe.inference.mask_rle import crops_from_cpu_probabilities, crops_from_masks
from segpipe.inference.models import SEMANTIC
from segpipe.inference.outputs import MASK_THRESHOLD, InstancePrediction, SemanticPrediction, SkippedImage
from segpipe.inference.speed import compile_backbone


def resolve_device(device: str) -> Any:
    """A torch.device for `auto`, `cpu`, `cuda`, `cuda:N`; only here is CUDA initialised."""
    import torch

    try:
        device = parse_device(device)
    except DeviceError as err:
        raise InferenceError(OPTIONS, "device", err.reason) from err
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise InferenceError(OPTIONS, "device", f"{device} requested but torch sees {count} CUDA device(s) on this host; "
                                 f"use --device cpu, or an index below {count}")
    return torch.device(device)


def bind_device(device: Any) -> None:
    """Make `device` this process's current CUDA device. Work that uses the current device rather than a named
    one (the DataLoader's pin-memory thread, `torch.cuda.empty_cache`, `torch.cuda.synchronize()`) would
    otherwise open a second context on GPU 0, in every worker process of a `--devices` run.
    https://pytorch.org/docs/stable/generated/torch.cuda.set_device.html"""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the host allocator's RuntimeError (torch's CPU
    allocator raises a plain RuntimeError, "DefaultCPUAllocator: can't allocate memory", c10/core/impl/alloc_cpu.cpp)."""
    import torch

    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def _memory_line(err: BaseException) -> str:
    """The line of an error that says what could not be allocated (TorchScript wraps it in a traceback)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return next((ln for ln in lines if "allocate" in ln or "out of memory" in ln.lower()), lines[0] if lines else type(err).__name__)


def run_with_oom_backoff(
    fn: Callable[[list[Sample]], list[Any]], samples: list[Sample], *, limit: int, on_oom: Callable[[], None] = lambda: None
) -> tuple[list[Any], list[SkippedImage], int]:
    """Run `fn` over `samples` in chunks of at most `limit`; on out-of-memory (device or host) halve the chunk and
    retry. An image that runs out of memory alone is skipped with a row; the others are predicted.
    Returns (outputs, images that failed even alone, the new limit, kept for later batches)."""
    import torch

    outputs: list[Any] = []
    failed: list[SkippedImage] = []
    i = 0
    while i < len(samples):
        chunk = samples[i:i + limit]
        try:
            outputs.extend(fn(chunk))
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            on_oom()
            if len(chunk) == 1:
                failed.append(SkippedImage(chunk[0].entry, "out_of_memory", f"out of memory at batch size 1: {_memory_line(err)}"))
            else:
                limit = (len(chunk) + 1) // 2  # halve, rounding up: 3 -> 2 -> 1
                continue
        i += len(chunk)
    return outputs, failed, limit


class DevicePredictor:
    """Forward pass and on-device post-processing; returns CPU uint8 masks / label maps."""

    def __init__(self, *, model: Any, task: str, device: Any, precision: str, mean: Sequence[float], std: Sequence[float],
                 mapping: ClassMapping, score_threshold: float, compile: bool = False) -> None:
        import torch

        self.torch = torch
        self.task, self.device, self.precision = task, device, precision
        self.score_threshold = score_threshold
        # Dense models take channels_last on the CPU too: faster there as well (README "Speed", "Inference"). Logits
        # differ from NCHW by float rounding only.
        self.channels_last = task == SEMANTIC
        self.cudnn_benchmark = False  # set per run, from the plan's input shapes (segpipe.inference.speed)
        bind_device(device)
        self.model = model.to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            if isinstance(model, torch.jit.ScriptModule):
                raise InferenceError(OPTIONS, "compile", "a TorchScript model cannot be compiled again; leave out --compile")
            self.model = compile_backbone(self.model)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
        self.n_outputs = len(mapping.targets)
        lut_dtype = torch.uint8 if task == SEMANTIC else torch.int64
        self.lut = torch.tensor(mapping.targets, dtype=lut_dtype, device=device)
        self.want_confidence = any(c is not None for c in mapping.component_categories)
        # Dropped model classes take no part: argmax over the kept classes, detections of dropped ones discarded.
        kept = mapping.kept or (True,) * self.n_outputs
        self.kept = torch.tensor(kept, dtype=torch.bool, device=device)
        self.drop_logits = None if task != SEMANTIC or all(kept) else ~self.kept.view(1, -1, 1, 1)

    @property
    def one_call_per_batch(self) -> bool:
        """False where the model is called once per image of a batch (Mask R-CNN on the CPU, see `instance`)."""
        return self.task == SEMANTIC or self.device.type != "cpu"

    def forward_passes(self, n_images: int) -> int:
        """Model calls that predicting a batch of `n_images` makes (the run's mean batch size counts these)."""
        return 1 if self.one_call_per_batch else n_images

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
            raise InferenceError(OPTIONS, "model", f"model gives shape {tuple(logits.shape)}, expected {self.n_outputs} class channels")
        if self.drop_logits is not None:
            logits = logits.masked_fill(self.drop_logits, float("-inf"))
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
        # On the CPU one image per forward pass: a batched call was slower there (README "Speed", "Inference"), and
        # without padding to a batch-mate's size each image gets the detections of the tutorial's one-image
        # call. On CUDA the batch keeps the device busy.
        groups = [images] if self.one_call_per_batch else [[im] for im in images]
        outs = []
        for group in groups:
            with self.autocast():
                out = self.model(group)
            outs.extend(out[1] if isinstance(out, tuple) else out)  # scripted detectors return (losses, detections)
        preds = []
        for s, o in zip(samples, outs):
            keep = (o["scores"] >= self.score_threshold) & self.kept[o["labels"]]
            if self.device.type == "cpu":  # already in host memory: numpy, without copying the float masks first
                crops = crops_from_cpu_probabilities(o["masks"][:, 0].float().numpy(), keep.numpy(), threshold=MASK_THRESHOLD)
            else:  # threshold on the device, then copy only each mask's tight crop (not N full-size masks) to the CPU
                crops = crops_from_masks(o["masks"][keep][:, 0] > MASK_THRESHOLD)
            preds.append(InstancePrediction(
                s.entry, o["scores"][keep].float().cpu().numpy(), self.lut[o["labels"][keep]].cpu().numpy(),
                o["boxes"][keep].float().cpu().numpy(), crops,
            ))
        return preds

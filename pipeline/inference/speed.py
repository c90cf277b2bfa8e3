"""Settings that change how fast inference runs: loader workers, cuDNN autotuning, torch.compile.

- Loader workers: on a GPU, by default one fewer than the cores this process may run on (`os.sched_getaffinity`,
  which honours taskset/cgroup CPU sets where `os.cpu_count()` reports the whole host), at most 4: the main
  process feeds the GPU and needs a core of its own. On the CPU, none: the model's own threads already use
  every core, decoding is a small fraction of a CPU forward pass, and a decode process competing for the
  cores cost more than it overlapped (benchmarks/infer.py: Mask R-CNN 0.93x the tutorial loop with one
  worker on 2 cores, 1.14x without).
- `torch.backends.cudnn.benchmark` (CUDA only) times the convolution algorithms once per input shape and keeps
  the fastest: worth it when few shapes occur (a semantic plan of few sizes, e.g. with `--size-bucket`), a loss
  when nearly every batch has a new shape (native-size images of many sizes, Mask R-CNN). Algorithms may
  differ in their last bits, so it is on only where the run is on CUDA, where bits already depend on the GPU.
  https://pytorch.org/docs/stable/backends.html#torch.backends.cudnn.benchmark
- `compile=True` wraps the backbone (the whole model for a U-Net) in `torch.compile`; off by default: it
  costs compile time up front (tens of seconds), and fused kernels may round differently, so it is part of
  the inference key. https://pytorch.org/docs/stable/generated/torch.compile.html
"""

from __future__ import annotations

import os
from typing import Any, Sequence

MAX_LOADER_WORKERS = 4
# A plan with at most this many input shapes lets cuDNN autotune: each new shape costs one timing run.
CUDNN_BENCHMARK_MAX_SHAPES = 8


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_loader_workers(device_type: str, cores: int | None = None) -> int:
    """DataLoader decode workers when the user gives none.

    >>> [default_loader_workers("cuda", n) for n in (1, 2, 64)], default_loader_workers("cpu", 64)
    ([0, 1, 4], 0)
    """
    if device_type == "cpu":
        return 0
    return min(MAX_LOADER_WORKERS, max(0, (usable_cores() if cores is None else cores) - 1))


def few_input_shapes(shapes: Sequence[tuple[int, int]]) -> bool:
    """Whether a plan's distinct input shapes are few enough for cuDNN autotuning to pay off."""
    return 0 < len(set(shapes)) <= CUDNN_BENCHMARK_MAX_SHAPES


def set_cudnn_benchmark(device: Any, *, fixed_sizes: bool) -> bool:
    """Turn cuDNN autotuning on (CUDA, few input shapes) or off for this process; returns whether it is on."""
    import torch

    enabled = device.type == "cuda" and fixed_sizes
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = enabled
    return enabled


def compile_backbone(model: Any) -> Any:
    """`torch.compile` the part of `model` that does most of the work: `.backbone` for torchvision's
    segmentation models and Mask R-CNN (its transform, RPN and heads have data-dependent shapes, which would
    recompile often), the whole model otherwise (U-Net). Mutates and returns `model`."""
    import torch

    if hasattr(model, "backbone"):
        model.backbone = torch.compile(model.backbone)
        return model
    return torch.compile(model)

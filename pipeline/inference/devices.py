"""Device names for inference, checked before any task starts and without importing torch.

`--device` takes `auto`, `cpu`, `cuda` or `cuda:N` (torch's own spelling); `segpipe run --devices 0,1` gives
each inference task of a run one GPU of this host, one task per GPU at a time (segpipe.plan.gpu_slots).
Whether the GPU exists is checked only inside the inference task, where CUDA is initialised.
"""

from __future__ import annotations

import re

from segpipe.core.errors import SegpipeError

DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda(:(0|[1-9][0-9]*))?)")
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


# Where a device name comes from, when the caller does not say (the command line names its own flag).
OPTIONS_SOURCE = "inference options"


class DeviceError(SegpipeError, ValueError):
    """A device name segpipe does not accept; the reason says which ones it does."""


def parse_device(value: str, *, field: str = "device", source: str = OPTIONS_SOURCE) -> str:
    """The canonical device name.

    >>> parse_device(" CUDA:1 ")
    'cuda:1'
    >>> parse_device("gpu")
    Traceback (most recent call last):
    ...
    segpipe.inference.devices.DeviceError: inference options: device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N
    """
    text = str(value).strip().lower()
    if not DEVICE_PATTERN.fullmatch(text):
        raise DeviceError(source, field, f"{value!r} is not a device; use {DEVICE_HELP}")
    return text


def parse_devices(value: str | list[int] | tuple[int, ...], *, field: str = "devices", source: str = OPTIONS_SOURCE) -> tuple[int, ...]:
    """GPU indices of this host from `0,1`, `cuda:0,cuda:1` or a list of integers; no repeats.

    >>> parse_devices("0, cuda:2")
    (0, 2)
    """
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).split(",")
    out: list[int] = []
    for item in (i.strip().lower() for i in items):
        number = item[len("cuda:"):] if item.startswith("cuda:") else item
        if not number.isdigit():
            raise DeviceError(source, field, f"{item!r} is not a GPU index; give indices like 0,1 (or cuda:0,cuda:1)")
        if int(number) in out:
            raise DeviceError(source, field, f"GPU {int(number)} is listed twice")
        out.append(int(number))
    if not out:
        raise DeviceError(source, field, "no GPU index given; e.g. 0,1")
    return tuple(out)

"""One inference task per GPU at a time, across the worker processes of a run (`segpipe run --devices 0,1`).

Each GPU of the host has a lock file under the cache; an inference task takes the first free one with
`fcntl.flock` and holds it while it runs, so N worker processes over N GPUs keep every GPU busy and never
share one. A lock dies with its process (a killed worker frees its GPU). The host name is part of the file
name: a cache shared by several hosts does not make their GPUs wait for each other.
https://man7.org/linux/man-pages/man2/flock.2.html

With more than one worker, Luigi runs every task in a process of its own, forked for that task
(`TaskProcess`, https://github.com/spotify/luigi/blob/master/luigi/worker.py), so there is no long-lived
worker process to keep a device across tasks: each inference task opens one CUDA context, on the GPU its
slot names and no other (segpipe.inference.predictor.bind_device), loads the model once and runs all the
shards of its group there. The scheduling process never touches CUDA (a context there would be inherited
broken by every fork).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Iterator, Sequence

SLOTS_DIR = "gpu-slots"
POLL_SECONDS = 0.2  # how often a task waiting for a GPU tries the locks again


@contextlib.contextmanager
def gpu_slot(cache: str | os.PathLike[str], devices: Sequence[int], *, poll: float = POLL_SECONDS) -> Iterator[int]:
    """Hold one of `devices` (GPU indices) exclusively for the `with` block; waits while all are taken."""
    if not devices:
        raise ValueError("gpu_slot needs at least one GPU index")
    folder = Path(cache) / SLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace(os.sep, "_") or "host"
    while True:
        for index in devices:
            fd = os.open(folder / f"{host}-gpu{int(index)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield int(index)
                return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        time.sleep(poll)

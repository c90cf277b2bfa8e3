"""One writer per cache entry, whatever the scheduler: an exclusive lock file per entry.

Two `segpipe run` on the same cache without a shared luigid (an overnight cron job overlapping
yesterday's) each see a task as not done and would write the same directory at once, one emptying it
while the other fills it. Holding `CACHE/locks/<kind>/<entry>.lock` while computing makes the second one
wait; when it gets the lock it finds the first one's marker and reuses the result.

`fcntl.flock` locks belong to the open file: they vanish when the holder exits or is killed (no stale
lock to clean up), and on Linux NFS clients they are carried by the NFS lock manager
(https://man7.org/linux/man-pages/man2/flock.2.html, "NFS details").
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_DIR = "locks"


def entry_lock_path(cache: Path, relative_entry: str) -> Path:
    return cache / LOCK_DIR / f"{relative_entry}.lock"


@contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block; waits while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

"""One writer per cache entry, whatever the scheduler: an exclusive lock file per entry.

Two `segpipe run` on the same cache without a shared luigid (an overnight cron job overlapping
yesterday's) each see a task as not done and would write the same directory at once, one emptying it
while the other fills it. Holding `CACHE/locks/<kind>/<entry>.lock` while computing makes the second one
wait; when it gets the lock it finds the first one's marker and reuses the result.

`fcntl.flock` locks belong to the open file: they vanish when the holder exits or is killed (no stale
lock to clean up), and on Linux NFS clients they are carried by the NFS lock manager
(https://man7.org/linux/man-pages/man2/flock.2.html, "NFS details"). Two opens of one file are two
locks that exclude each other even in one process, so a lock path that is a symlink or a hard link to
another lock file would make a run wait on itself forever: such a path is refused (O_NOFOLLOW, link
count), never waited on. The holder writes who it is into the file; a run kept waiting says so after
WAIT_NOTICE_S seconds, naming that holder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from segpipe.core.errors import SegpipeError

LOCK_DIR = "locks"
WAIT_NOTICE_S = 5.0
_POLL_S = (0.05, 0.5)  # first and longest pause between two tries


class LockFileError(SegpipeError, OSError):
    """A lock path that cannot be a lock of its own (a symlink, a hard link, not a regular file)."""


def entry_lock_path(cache: Path, relative_entry: str) -> Path:
    return cache / LOCK_DIR / f"{relative_entry}.lock"


def _notice(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _open_lock_file(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise LockFileError(path, "", "the lock file is a symbolic link: a run could wait on itself forever; "
                                          "delete it (locks are plain files segpipe creates)") from err
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a hard link ({st.st_nlink} names for one file)"
        raise LockFileError(path, "", f"the lock file is {what}: a run could wait on itself forever; delete it")
    return fd


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process (it has not said who it is yet)"


@contextmanager
def entry_lock(path: Path, *, notice: Callable[[str], None] = _notice, notice_after: float = WAIT_NOTICE_S) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block; waits while another process holds
    it, and after `notice_after` seconds says (once) whom it waits for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(path)
    try:
        started = time.monotonic()
        pause, noticed = _POLL_S[0], False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if not noticed and time.monotonic() - started >= notice_after:
                notice(f"waiting for the cache lock {path}, held by {_holder(fd)}")
                noticed = True
            time.sleep(pause)
            pause = min(pause * 2, _POLL_S[1])
        try:
            me = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode("utf-8"), 0)
        except OSError:  # who holds it is a courtesy to waiters, never a reason to fail
            pass
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

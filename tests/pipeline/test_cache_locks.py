"""Cache entry locks: a lock path that would make a run wait on itself is refused, and a run kept waiting by
another says whom it waits for."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from segpipe.cache.entry_lock import LockFileError, entry_lock


def _within(seconds: float, fn) -> None:  # type: ignore[no-untyped-def]
    """Run fn in a thread; a hang fails the test instead of blocking it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung"
    if errors:
        raise errors[0]


def test_lock_files_linked_to_one_file_are_refused_not_a_self_deadlock(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "group.lock").write_text("")
    (locks / "unit.lock").symlink_to(locks / "group.lock")
    os.link(locks / "group.lock", locks / "other.lock")

    def nested(inner: str) -> None:
        with entry_lock(locks / "first.lock"), entry_lock(locks / inner):
            pass

    with pytest.raises(LockFileError, match="unit.lock: the lock file is a symbolic link: a run could wait on itself"):
        _within(10, lambda: nested("unit.lock"))
    with pytest.raises(LockFileError, match=r"group.lock: the lock file is a hard link \(2 names for one file\)"):
        _within(10, lambda: nested("group.lock"))
    _within(10, lambda: nested("fresh.lock"))  # plain lock files nest as before


def test_a_waiting_run_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "entry.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom segpipe.cache.entry_lock import entry_lock\n"
         "with entry_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(2.5)\n", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        notices: list[str] = []
        started = time.monotonic()
        with entry_lock(path, notice=notices.append, notice_after=0.5):
            waited = time.monotonic() - started
            assert path.read_text().startswith(f"pid {os.getpid()} on ")
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5 and len(notices) == 1, notices
    assert notices[0].startswith(f"waiting for the cache lock {path}, held by pid {holder.pid} on ")

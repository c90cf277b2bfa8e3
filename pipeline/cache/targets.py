"""Cache directories whose completeness is a marker file written last, so a run killed with -9 never looks complete.

Every cached step writes into `CACHE/<kind>/<key...>/`: each output file atomically (temporary sibling +
rename, segpipe.core.atomic_write) and, only after all of them, `_DONE.json`. `MarkerTarget.exists()`
checks the marker alone, so a run killed half-way leaves a directory that is simply not done: the rerun
overwrites it. The marker lists the entry's files (segpipe.cache.integrity); `exists()` checks them, so
a damaged entry is recomputed rather than trusted. Each entry is computed under its own lock
(segpipe.cache.entry_lock), so two runs sharing a cache never write one entry at once.

Luigi's own `temporary_path()` appends its suffix after the extension (`x.png-luigi-tmp-123`), which
breaks writers that infer the format from the name; our writers always get the final name's twin from
segpipe.core.atomic_write (which keeps the extension) or an explicit format.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import luigi

from segpipe.cache.entry_lock import entry_lock, entry_lock_path
from segpipe.cache.integrity import entry_inventory, inventory_mismatch, report_damage
from segpipe.core.atomic_write import atomic_write_text, temporary_sibling

MARKER_NAME = "_DONE.json"
INVENTORY_KEY = "_files"  # in the marker: {relative path: [size, sha256, mtime_ns, ctime_ns, inode]} of every file


class MarkerTarget(luigi.Target):
    """A cache directory that counts as existing once its completion marker is there."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def marker(self) -> Path:
        return self.directory / MARKER_NAME

    def exists(self) -> bool:
        """The marker is there and every file it lists is intact (else the entry counts as not done, and says so).

        An entry this process verified is not verified again while its marker and every folder holding its
        files keep their (size, mtime, ctime, inode): deleting, adding or renaming a file changes its folder.
        Luigi checks a task's dependencies before running it, so at 100,000 images the converted dataset
        (100,000 label maps) would otherwise be verified once per task. An in-place edit during the run is
        found by the next run, which verifies everything again (`forget_verified`)."""
        try:
            marker_stat = self.marker.stat()
        except OSError:
            return False
        if not stat.S_ISREG(marker_stat.st_mode):
            return False
        known = _VERIFIED.get(str(self.directory))
        if known is not None and known[0] == _signature(marker_stat) and _folder_signatures(self.directory, known[1]) == known[1]:
            return True
        try:
            marker = json.loads(self.marker.read_text(encoding="utf-8"))
            recorded = marker[INVENTORY_KEY]
            if not isinstance(recorded, dict):
                raise TypeError(f"{INVENTORY_KEY} is not a mapping")
        except (OSError, ValueError, TypeError, KeyError) as err:
            report_damage(self.directory, f"{self.marker}: unreadable completion marker ({type(err).__name__}: {err})")
            return False
        folders = _folder_signatures(self.directory, [(rel, ()) for rel in sorted({"", *(r.rpartition("/")[0] for r in recorded)})])
        problem = inventory_mismatch(self.directory, recorded, marker_ctime_ns=marker_stat.st_ctime_ns)
        if problem is not None:
            report_damage(self.directory, problem)
            return False
        # Taken before the files were verified, and only from folders untouched for a while: a change made in
        # the same clock tick as the folder's last one would keep its ctime (https://git-scm.com/docs/racy-git).
        if all(sig and sig[2] < time.time_ns() - QUIET_FOLDER_NS for _, sig in folders):
            _VERIFIED[str(self.directory)] = (_signature(marker_stat), folders)
        return True

    def read_marker(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.marker.read_text(encoding="utf-8"))
        data.pop(INVENTORY_KEY, None)
        return data


# Entries verified by this process (and inherited by the workers it forks), by folder: the marker's signature
# and each of the entry's folders' signatures (relative path, signature) when they were verified.
_VERIFIED: dict[str, tuple[tuple[int, ...], list[tuple[str, tuple[int, ...]]]]] = {}
QUIET_FOLDER_NS = 2_000_000_000  # a folder unchanged for 2 s is past any file system's timestamp tick


def forget_verified() -> None:
    """Verify every entry again from now on (a run starts with this: its checks never rest on an earlier run's)."""
    _VERIFIED.clear()


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _folder_signatures(directory: Path, folders: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...]]]:
    """Each folder's signature now (an empty one when it is gone)."""
    out = []
    for rel, _ in folders:
        try:
            out.append((rel, _signature(os.stat(directory / rel if rel else directory))))
        except OSError:
            out.append((rel, ()))
    return out


def prepare_directory(target: MarkerTarget) -> Path:
    """Make the target directory ready for a fresh write: a stale marker goes first, so that a run
    killed while rewriting never leaves the old marker vouching for new, partial files."""
    target.directory.mkdir(parents=True, exist_ok=True)
    target.marker.unlink(missing_ok=True)
    return target.directory


def write_marker(target: MarkerTarget, payload: Mapping[str, Any]) -> Path:
    """Write the completion marker, atomically, after every other output of the step; it lists them all."""
    record = {**dict(payload), INVENTORY_KEY: entry_inventory(target.directory, skip=MARKER_NAME)}
    text = json.dumps(record, sort_keys=True, indent=1) + "\n"
    return atomic_write_text(target.marker, text)


def link_or_copy(src: Path, dst: Path) -> None:
    """Place `src` at `dst` without a half-written state: a hard link when possible (cache files are
    never modified in place, only replaced), else a copy through a temporary sibling."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class CachedTask(luigi.Task):
    """A task whose output is `CACHE/<kind>/<subdir()>/`, a directory with a completion marker.

    Subclasses declare typed parameters: the significant ones are the content keys and the few values that
    say what the task is (checkpoint name, group index), so they land in `task_id` and luigid's
    visualiser shows them; `subdir()` derives the output folder from them alone, so `output()` and
    `requires()` never read a file (and `complete()` reads only the entry's own marker). `cache` is
    insignificant: moving the cache does not change what the task computes.

    Subclasses implement `compute()`. `run()` re-checks completeness first: with several workers on one
    luigid a task can be handed out again just after another worker finished it, and the content key
    makes the finished output valid for everyone.
    """

    kind: str = "task"
    # Written to the execution log under this name: "task" for steps that compute something, "group" for
    # pure scheduling units (whose work is logged per shard instead).
    log_as: str = "task"
    cache = luigi.Parameter(significant=False)

    def subdir(self) -> str:
        raise NotImplementedError

    def output(self) -> MarkerTarget:
        return MarkerTarget(Path(str(self.cache)) / self.kind / self.subdir())

    def compute(self) -> None:
        raise NotImplementedError

    def present(self) -> bool:
        """Whether the output's completion marker is there (one stat; `complete()` also verifies its files)."""
        return self.output().marker.is_file()

    def run(self) -> None:
        cache = Path(str(self.cache))
        with entry_lock(entry_lock_path(cache, f"{self.kind}/{self.subdir()}")):
            # Checked again under the lock: another run (or luigid worker) may have finished it while we waited.
            if self.complete():  # type: ignore[no-untyped-call]  # luigi's API is unannotated
                return
            log_execution(cache, task_id=self.task_id, kind=self.log_as)
            self.compute()

    def on_failure(self, exception: BaseException) -> str:
        """Keep the failure's one-line reason in the cache, where every worker's driver can read it."""
        reason = f"{type(exception).__name__}: {exception}".splitlines()[0][:500]
        failure_path(Path(str(self.cache)), task_id=self.task_id).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(failure_path(Path(str(self.cache)), task_id=self.task_id), reason + "\n")
        # luigi.Task.on_failure returns the traceback text luigid shows.
        message: str = super().on_failure(exception)  # type: ignore[no-untyped-call]  # luigi leaves it unannotated
        return message

    def fresh_directory(self) -> Path:
        """Empty the output directory (a killed earlier attempt may have left files) and return it."""
        target = self.output()
        if target.directory.exists():
            shutil.rmtree(target.directory)
        return prepare_directory(target)

    def finish(self, **extra: Any) -> None:
        params = {k: v for k, v in self.to_str_params(only_significant=True).items()}  # type: ignore[no-untyped-call]  # luigi's API is unannotated
        write_marker(self.output(), {"task": self.task_family, "params": params, "kind": self.kind, **extra})


EXECUTION_LOG = "executions.jsonl"
GROUP_LOG = "groups.jsonl"


# Set by the driver for the length of one `segpipe run` (inherited by forked Luigi workers), so that the
# run can tell the tasks it executed from those luigid handed it after another worker had finished them.
RUN_ID_ENV = "SEGPIPE_RUN_ID"


@contextmanager
def execution_run_id() -> Iterator[str]:
    """A fresh run id in the environment while the block runs (the previous value restored after)."""
    previous = os.environ.get(RUN_ID_ENV)
    run_id = uuid.uuid4().hex
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield run_id
    finally:
        if previous is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous


def log_execution(cache: Path, *, task_id: str, kind: str = "task") -> None:
    """Append one line per task or shard actually computed (O_APPEND: concurrent workers do not interleave
    lines). Scheduling groups go to their own log: the execution log lists work, one line per unit."""
    path = cache / "log" / (EXECUTION_LOG if kind != "group" else GROUP_LOG)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"task_id": task_id, "kind": kind, "pid": os.getpid(), "host": socket.gethostname(),
                       "time": time.time(), "run": os.environ.get(RUN_ID_ENV, "")}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def log_size(cache: Path, *, log: str = EXECUTION_LOG) -> int:
    """The log's length in bytes now: records appended later start at this offset (the log is append-only)."""
    try:
        return (cache / "log" / log).stat().st_size
    except FileNotFoundError:
        return 0


def read_executions(cache: Path, *, log: str = EXECUTION_LOG, since: int = 0) -> list[dict[str, Any]]:
    """The log's records (from byte offset `since`, a `log_size` taken earlier: the log grows with every run,
    and a run needs only its own records); a damaged line (a crash mid-write, an edit) is skipped and
    logged, never fatal."""
    path = cache / "log" / log
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(since)
        data = fh.read()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("task_id"), str):
            records.append(record)
        else:
            where = f"line {number}" if not since else f"line {number} after byte {since}"
            logging.getLogger("segpipe.cache").warning("%s: %s is not an execution record; skipped", path, where)
    return records


def failure_path(cache: Path, *, task_id: str) -> Path:
    return cache / "failures" / f"{task_id}.txt"


TaskT = TypeVar("TaskT", bound=CachedTask)


def new_task(cls: type[TaskT], **params: Any) -> TaskT:
    """`cls(**params)`. Luigi takes a task's parameters as keyword arguments and checks them itself (an unknown
    or missing one raises); mypy sees no constructor for them (luigi.Task's is unannotated, and its
    dataclass_transform counts only annotated class attributes), so the class is called as a plain factory."""
    factory: Callable[..., TaskT] = cls
    return factory(**params)

"""Progress of `segpipe run` that people can watch: one line per finished task, a running count and an ETA.

The reporter knows nothing of the task classes: it listens to Luigi's task events
(https://luigi.readthedocs.io/en/stable/api/luigi.event.html), which every `luigi.Task` fires:
DEPENDENCY_DISCOVERED / DEPENDENCY_PRESENT while a phase is scheduled (so the total is known before anything
runs), START / SUCCESS / FAILURE around each `run()`. With `--workers N` Luigi runs tasks in forked
processes, where those handlers fire; they only put plain tuples on a multiprocessing queue inherited
through the fork, and one thread of the driver's process turns them into lines, so the count and the ETA
stay in one place.

Inside a long task, `image_progress()` gives a callback for the per-image loop: it moves a tqdm bar (on a
terminal) and forwards the state to the scheduler with `set_status_message` / `set_progress_percentage`,
which luigid's visualiser shows (https://luigi.readthedocs.io/en/stable/luigi_patterns.html#monitoring-task-pipelines).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import luigi
from luigi.event import Event

# Human names of the pipeline's task families; an unknown family is shown as is.
STAGES: dict[str, str] = {
    "ConvertGroup": "convert", "ConvertMerge": "convert merge", "AuditTask": "audit",
    "EvalGroup": "infer+evaluate", "EvalReport": "report", "Leaderboard": "leaderboard",
}
# The scheduler is told about a task's per-image progress at most this often (each call is an RPC to luigid).
STATUS_INTERVAL_S = 1.0
# Off a terminal (a pipe, a log file, a CI job) a plain progress line is printed at the first image, at most this
# often after, and at the last one; SEGPIPE_PROGRESS_INTERVAL (seconds) changes it.
PLAIN_INTERVAL_S = 10.0
_STOP = "stop"


def describe(task: luigi.Task) -> dict[str, Any]:
    """What a person needs to recognise a task: its stage and, where it has them, checkpoint and group of
    shards (typed task parameters, segpipe.tasks)."""
    info: dict[str, Any] = {"stage": STAGES.get(task.task_family, task.task_family)}
    checkpoint = getattr(task, "checkpoint", None)
    if isinstance(checkpoint, str) and checkpoint:
        info["checkpoint"] = checkpoint
    group = getattr(task, "group", None)
    if isinstance(group, int):
        info["group"] = group
    return info


def format_seconds(seconds: float) -> str:
    """'4.2s', '3m05s', '1h02m' (rounded down to what a person reads at a glance).

    >>> format_seconds(4.21), format_seconds(185), format_seconds(3725)
    ('4.2s', '3m05s', '1h02m')
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class _Tally:
    family: dict[str, str] = field(default_factory=dict)  # task id -> family, every task scheduled so far
    finished: dict[str, str] = field(default_factory=dict)  # task id -> "ran" | "cached" | "failed"
    started: dict[str, float] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)  # family -> seconds of the tasks run

    def eta(self, *, workers: int) -> float | None:
        """Seconds left: each pending task costs its family's mean run time (else the mean of all runs)."""
        runs = [d for ds in self.durations.values() for d in ds]
        if not runs:
            return None
        fallback = sum(runs) / len(runs)
        left = [f for t, f in self.family.items() if t not in self.finished]
        total = sum(sum(self.durations[f]) / len(self.durations[f]) if self.durations.get(f) else fallback for f in left)
        return total / max(1, workers)


class RunProgress:
    """Context manager: while open, every Luigi task event of this process (and its forked workers) is
    reported. `echo` receives each human line (None: quiet); `jsonl` gets one JSON object per event."""

    def __init__(self, *, echo: Callable[[str], None] | None = None, jsonl: Path | None = None, workers: int = 1,
                 bars: bool = False) -> None:
        self.echo, self.jsonl_path, self.workers, self.bars = echo, jsonl, workers, bars
        self.tally = _Tally()
        self.interrupted = False  # Ctrl-C: the tasks left are "not run: interrupted", not blamed on a failure
        self._queue: Any = None
        self._thread: threading.Thread | None = None
        self._jsonl: TextIO | None = None
        self._handlers: list[tuple[str, Callable[..., None]]] = []
        self._failures_shown: set[tuple[Any, Any]] = set()
        self._cached: list[tuple[str, dict[str, Any]]] = []

    # -- events (may run in a forked worker process: only put plain data on the queue) --
    def _put(self, kind: str, task: luigi.Task, **extra: Any) -> None:
        self._queue.put((kind, task.task_id, task.task_family, describe(task), time.time(), extra))

    def _on_discovered(self, task: luigi.Task, dependency: luigi.Task) -> None:
        self._put("scheduled", task)
        self._put("scheduled", dependency)

    def _on_present(self, task: luigi.Task) -> None:
        # Luigi does not descend into a complete task: its whole upstream comes from the cache as well.
        seen, stack = set(), [task]
        while stack:
            t = stack.pop()
            if t.task_id not in seen:
                seen.add(t.task_id)
                self._put("cached", t)
                stack.extend(luigi.task.flatten(t.requires()))  # type: ignore[no-untyped-call]  # luigi's API is unannotated

    def _on_start(self, task: luigi.Task) -> None:
        _CURRENT["task"], _CURRENT["bars"], _CURRENT["reporter"] = task, self.bars, self
        self._put("start", task)

    def _on_success(self, task: luigi.Task) -> None:
        _close_bar()
        self._put("ran", task)

    def _on_failure(self, task: luigi.Task, error: Any = None) -> None:
        _close_bar()
        reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error or "failed")
        self._put("failed", task, reason=(reason.strip().splitlines() or ["failed"])[0][:300])

    # -- the driver's side --
    def _handle(self, kind: str, task_id: str, family: str, info: dict[str, Any], when: float, extra: dict[str, Any]) -> None:
        tally = self.tally
        tally.family.setdefault(task_id, family)
        if kind == "scheduled" or task_id in tally.finished:
            return
        if kind == "cached":
            # Held back until the phase is fully scheduled (the next task starts, or the run ends): the count
            # and the total are then right, and a cached rerun reads as one line, not hundreds.
            tally.finished[task_id] = kind
            self._cached.append((task_id, info))
            return
        self._flush_cached()
        if kind == "images":  # a running task's per-image progress, off a terminal: a plain line
            if self.echo is not None:
                self.echo(f"  {_what(info)}: {extra['text']}")
            return
        if kind == "start":
            tally.started[task_id] = when
            return
        seconds = when - tally.started[task_id] if task_id in tally.started else None
        if kind == "ran" and seconds is not None:
            tally.durations.setdefault(family, []).append(seconds)
        tally.finished[task_id] = kind
        record = {"event": kind, "task_id": task_id, **info, "seconds": None if seconds is None else round(seconds, 3),
                  **self._counts(), **extra}
        self._write(record)
        if self.echo is not None and not self._repeated_failure(record):
            self.echo(format_line(record))

    def _counts(self) -> dict[str, Any]:
        done, total = len(self.tally.finished), len(self.tally.family)
        eta = self.tally.eta(workers=self.workers) if done < total else 0.0
        return {"done": done, "total": total, "eta_seconds": None if eta is None else round(eta, 1)}

    def _write(self, record: dict[str, Any]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
            self._jsonl.flush()

    def _flush_cached(self) -> None:
        if not self._cached:
            return
        counts = self._counts()
        for task_id, info in self._cached:
            self._write({"event": "cached", "task_id": task_id, **info, "seconds": None, **counts})
        if self.echo is not None:
            stages = Counter(info["stage"] for _, info in self._cached)
            what = ", ".join(f"{s} x{n}" if n > 1 else s for s, n in sorted(stages.items()))
            self.echo(format_line({"event": "cached", "stage": f"{len(self._cached)} task(s): {what}", **counts}))
        self._cached = []

    def _report_never_run(self) -> None:
        """Luigi fires no event for a task whose upstream failed: say how many were left, once, at the end."""
        never = sorted(t for t in self.tally.family if t not in self.tally.finished)
        for task_id in never:
            self._write({"event": "not_run", "task_id": task_id, "stage": STAGES.get(self.tally.family[task_id], self.tally.family[task_id])})
        if never and self.echo is not None:
            why = "interrupted" if self.interrupted else "an upstream task failed (or another worker holds them)"
            self.echo(f"{len(never)} task(s) not run: {why}")

    def _repeated_failure(self, record: dict[str, Any]) -> bool:
        """A broken checkpoint fails each of its shards with the same reason: say it once."""
        if record["event"] != "failed":
            return False
        key = (record.get("checkpoint"), record.get("reason"))
        if key in self._failures_shown:
            return True
        self._failures_shown.add(key)
        return False

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item == _STOP:
                self._flush_cached()
                self._report_never_run()
                return
            self._handle(*item)

    def __enter__(self) -> "RunProgress":
        # Forked Luigi workers inherit this queue (Luigi's own result queue works the same way).
        self._queue = multiprocessing.get_context("fork").Queue()
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self._handlers = [(Event.DEPENDENCY_DISCOVERED, self._on_discovered), (Event.DEPENDENCY_PRESENT, self._on_present),
                          (Event.START, self._on_start), (Event.SUCCESS, self._on_success),
                          (Event.FAILURE, self._on_failure), (Event.PROCESS_FAILURE, self._on_failure),
                          (Event.TIMEOUT, self._on_failure)]
        for event, handler in self._handlers:
            luigi.Task.event_handler(event)(handler)  # type: ignore[no-untyped-call]  # luigi's API is unannotated
        self._thread = threading.Thread(target=self._drain, name="segpipe-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.interrupted = exc[0] is not None and issubclass(exc[0], KeyboardInterrupt)
        for event, handler in self._handlers:
            luigi.Task.remove_event_handler(event, handler)  # type: ignore[no-untyped-call]  # luigi's API is unannotated
        # A forked worker's last events reach the shared pipe when its queue's feeder thread is flushed, at the
        # latest when the worker exits: wait for the workers, so the stop marker is written after their events.
        for child in multiprocessing.active_children():
            child.join(timeout=10)
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        if self._jsonl is not None:
            self._jsonl.close()
        _CURRENT.clear()


def _what(record: dict[str, Any]) -> str:
    return " ".join([record["stage"], *(f"{k}={record[k]}" for k in ("checkpoint", "group", "shard") if k in record)])


def format_line(record: dict[str, Any]) -> str:
    """'[ 3/14] ran     infer checkpoint=unet_e03 shard=2  12.3s  | 11 left, ETA 2m10s'"""
    width = len(str(record["total"]))
    what = _what(record)
    took = f"  {format_seconds(record['seconds'])}" if record.get("seconds") is not None else ""
    left = record["total"] - record["done"]
    eta = "" if record.get("eta_seconds") is None or not left else f", ETA {format_seconds(record['eta_seconds'])}"
    tail = f"  | {left} left{eta}" if left else "  | all scheduled tasks done"
    reason = f"  {record['reason']}" if record.get("reason") else ""
    return f"[{record['done']:>{width}}/{record['total']}] {record['event']:<6} {what}{took}{reason}{tail}"


# The task running in this process (set by the START handler; Luigi runs one task at a time per process).
_CURRENT: dict[str, Any] = {}


def _close_bar() -> None:
    bar = _CURRENT.pop("bar", None)
    if bar is not None:
        bar.close()


def plain_interval() -> float:
    """PLAIN_INTERVAL_S, or the seconds SEGPIPE_PROGRESS_INTERVAL gives."""
    try:
        return max(0.0, float(os.environ.get("SEGPIPE_PROGRESS_INTERVAL", PLAIN_INTERVAL_S)))
    except ValueError:
        return PLAIN_INTERVAL_S


def rate_text(done: int, total: int, seconds: float) -> str:
    """What a plain progress line says: images done, the rate since the first image, the time left.

    >>> rate_text(6, 24, 12.0)
    '6/24 images, 0.50 images/s, ETA 36.0s'
    >>> rate_text(0, 24, 0.0)
    '0/24 images'
    """
    if done <= 0 or seconds <= 0:
        return f"{done}/{total} images"
    rate = done / seconds
    eta = "done" if done >= total else f"ETA {format_seconds((total - done) / rate)}"
    return f"{done}/{total} images, {rate:.2f} images/s, {eta}"


class _PlainLines:
    """Decides when a plain line is due: the first update, then at most once per interval, and the last one."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.last: float | None = None
        self.interval = plain_interval()

    def due(self, done: int, total: int) -> str | None:
        now = time.monotonic()
        if self.started is None or done == 0:  # the clock starts at the first report (the model is loaded by then)
            self.started = now
        if self.last is not None and done < total and now - self.last < self.interval:
            return None
        self.last = now
        return rate_text(done, total, now - self.started)


def _screen(stream: TextIO) -> tuple[int, int]:
    """tqdm's (ncols, nrows) for `stream`: a pseudo-terminal that reports no size (e.g. under `script`, or a
    CI runner's pty) gets 100 x 24, where tqdm would otherwise draw nothing at all."""
    try:
        size = os.get_terminal_size(stream.fileno())
        columns, lines = size.columns, size.lines
    except (OSError, ValueError, AttributeError):
        columns, lines = 0, 0
    return (columns if columns > 0 else 100), (lines if lines > 0 else 24)


class ImageProgress:
    """A `progress(done, total)` callback for `segpipe infer`: a tqdm bar (images done, images/s, ETA) when
    `stream` is a terminal, plain lines otherwise (see _PlainLines), nothing when `quiet`. `close()` ends it."""

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False, label: str = "infer") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.label = quiet, label
        self.tty = self.stream.isatty()
        self.bar: Any = None
        self.lines = _PlainLines()

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                ncols, nrows = _screen(self.stream)
                self.bar = tqdm(total=total, desc=self.label, unit="img", file=self.stream, ncols=ncols, nrows=nrows)
            if self.bar.total != total:
                self.bar.total = total
            self.bar.update(done - self.bar.n)
            return
        text = self.lines.due(done, total)
        if text is not None:
            print(f"{self.label}: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def image_progress() -> Callable[[int, int], None]:
    """A `progress(done, total)` callback for a per-image loop of the running task: a tqdm bar on a terminal
    (unless quiet), plain lines through the run's reporter otherwise (`_PlainLines`: they reach the driver's
    process from a forked worker too), and, at most once per STATUS_INTERVAL_S, the task's status and
    percentage in luigid."""
    task = _CURRENT.get("task")
    reporter = _CURRENT.get("reporter")
    last = [0.0]
    lines = _PlainLines()

    def update(done: int, total: int) -> None:
        bars = bool(_CURRENT.get("bars")) and sys.stderr.isatty()
        if not bars and task is not None and reporter is not None and reporter.echo is not None:
            text = lines.due(done, total)
            if text is not None:
                reporter._put("images", task, text=text)
        if bars:
            if "bar" not in _CURRENT:
                from tqdm import tqdm

                label = " ".join(str(v) for v in describe(task).values()) if task is not None else ""
                ncols, nrows = _screen(sys.stderr)
                _CURRENT["bar"] = tqdm(total=total, desc=label, unit="img", leave=False, ncols=ncols, nrows=nrows)
            bar = _CURRENT["bar"]
            if bar.total != total:  # a task looping over several shards learns its total as it goes
                bar.total = total
            bar.update(done - bar.n)
        now = time.monotonic()
        if task is not None and (now - last[0] >= STATUS_INTERVAL_S or done >= total):
            last[0] = now
            task.set_status_message(f"{done}/{total} images")
            task.set_progress_percentage(round(100 * done / max(1, total)))

    return update


class _HideLuigiLog(logging.Filter):
    """Drops Luigi's tracebacks of failed tasks (the progress line and the summary name each failure in one
    line); its warnings without a traceback, e.g. a scheduler it cannot reach, still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None and record.levelno >= logging.WARNING


@contextmanager
def luigi_log(*, verbose: bool) -> Iterator[None]:
    """Without `verbose`, Luigi's tracebacks (one per failed task) and its info lines are hidden: the progress
    lines and the run's summary say the same in one line each. A logger filter, not a level: Luigi sets the
    level of its logger itself the first time `luigi.build` runs."""
    logger = logging.getLogger("luigi-interface")
    hide = None if verbose else _HideLuigiLog()
    if hide is not None:
        logger.addFilter(hide)
    try:
        yield
    finally:
        if hide is not None:
            logger.removeFilter(hide)

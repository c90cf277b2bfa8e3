"""Running one phase of `segpipe run`'s graph with Luigi, and what it tells: the tasks this run computed,
those that were already in the cache, those another worker ran, and the failures (read from the cache, where
every worker writes them).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import luigi
from luigi.execution_summary import _summary_dict

from segpipe.cache.targets import EXECUTION_LOG, GROUP_LOG, RUN_ID_ENV, CachedTask, failure_path, read_executions
from segpipe.runner.config import RunSettings
from segpipe.tasks.convert import GroupTask
from segpipe.tasks.evaluate import CheckpointTask

# While another worker (on a shared luigid) is still running one of our goals, look again this often.
OTHER_WORKER_POLL_S = 0.5


@dataclass
class RunOutcome:
    ran: list[str] = field(default_factory=list)  # tasks and shards computed by this run (readable ids)
    cached: list[str] = field(default_factory=list)  # tasks whose output was complete before the run
    reused: list[str] = field(default_factory=list)  # shards found in the cache by the groups that ran
    groups: list[str] = field(default_factory=list)  # scheduling groups this run executed
    by_others: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # task_id -> reason
    failed_checkpoints: dict[str, str] = field(default_factory=dict)
    leaderboard: Path | None = None
    conversion_errors: int = 0
    skipped_inputs: list[str] = field(default_factory=list)  # "path: reason" of dataset files never read (FIFOs, ...)
    published: int = 0  # files written into OUT by this run
    exit_code: int = 0
    statuses: list[str] = field(default_factory=list)
    # Byte offsets of the execution and group logs when the run started: the run reads only what follows.
    log_start: dict[str, int] = field(default_factory=dict)


# In-process Luigi defaults (no global config files needed); a user's luigi.cfg still wins.
LUIGI_DEFAULTS: dict[tuple[str, str], str] = {
    ("worker", "wait_interval"): "0.2",  # how often a worker waiting on another one asks the scheduler again
    ("worker", "check_complete_on_run"): "true",  # a task must leave its marker, or it counts as failed
}


def configure_luigi() -> None:
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]  # luigi's config API is unannotated
    for (section, option), value in LUIGI_DEFAULTS.items():
        if not config.has_option(section, option):
            if not config.has_section(section):
                config.add_section(section)
            config.set(section, option, value)


# How long a run asks luigid again for goals it still remembers as done (its stable_done_cooldown_secs).
REMEMBERED_DONE_WAIT_S = 60.0


def worker_count(settings: RunSettings) -> int:
    return max(settings.workers, len(settings.devices))


# With more than one worker Luigi runs every task in a process forked for it (TaskProcess in
# https://github.com/spotify/luigi/blob/master/luigi/worker.py),
# which starts from the parent's memory: a module the parent has not imported is imported again by every
# task. Importing torch and torchvision costs ~3 s of CPU here, against ~0.03 s for a fork once they are
# imported (benchmarks/pipeline_scale.py --fork-cost).
# The engine imports torch lazily, inside its functions: the modules are named here.
PRELOADED_FOR_WORKERS = ("torch", "torchvision", "segpipe.inference.engine", "segpipe.evaluators.semantic.tables",
                         "segpipe.evaluators.instance.evaluation")


def preload_for_forked_workers() -> None:
    """Import what inference and evaluation tasks import, before forking workers that will run them. Importing
    torch does not initialise CUDA (only the inference inside a task does), so forked workers can still use it."""
    import importlib
    import sys

    fresh = "torch" not in sys.modules  # else this process may have run torch's thread pool already
    for name in PRELOADED_FOR_WORKERS:
        importlib.import_module(name)
    if fresh:
        from segpipe.inference.images import torch_imported_for_forks

        torch_imported_for_forks()


def _luigi_build(tasks: Sequence[luigi.Task], *, settings: RunSettings) -> luigi.execution_summary.LuigiRunResult:
    configure_luigi()
    kwargs: dict[str, Any] = {"workers": worker_count(settings), "detailed_summary": True, "log_level": "WARNING"}
    if settings.scheduler_url:
        kwargs["scheduler_url"] = settings.scheduler_url
    else:
        kwargs["local_scheduler"] = True
    # luigi.build is unannotated; with detailed_summary=True it returns a LuigiRunResult.
    result: luigi.execution_summary.LuigiRunResult = luigi.build(list(tasks), **kwargs)  # type: ignore[no-untyped-call]
    return result


def is_complete(task: luigi.Task) -> bool:
    return bool(task.complete())  # type: ignore[no-untyped-call]  # luigi.Task.complete is unannotated


def _is_present(task: luigi.Task) -> bool:
    return task.present() if isinstance(task, CachedTask) else is_complete(task)


def walk_graph(roots: Iterable[luigi.Task]) -> list[luigi.Task]:
    """Every task reachable from `roots` through requires(), once each (requires() never touches disk)."""
    seen: dict[str, luigi.Task] = {}
    stack = list(roots)
    while stack:
        task = stack.pop()
        if task.task_id in seen:
            continue
        seen[task.task_id] = task
        # luigi.task.flatten and Task.requires are unannotated: flatten lists the tasks a requires() returns.
        required: list[luigi.Task] = luigi.task.flatten(task.requires())  # type: ignore[no-untyped-call]
        stack.extend(required)
    return [seen[k] for k in sorted(seen)]


def run_phase(tasks: list[CachedTask], *, settings: RunSettings, outcome: RunOutcome) -> None:
    """Build `tasks` until each is done or failed (another worker on luigid may still hold some)."""
    first = True
    cache = Path(settings.cache)
    remembered = 0.0  # seconds waited on luigid's memory of finished tasks
    while True:
        result = _luigi_build(tasks, settings=settings)
        summary: dict[str, Any] = _summary_dict(result.worker)  # type: ignore[no-untyped-call]  # luigi's summary API is unannotated
        # Luigi counts a task as completed here even when its run() found another worker's output and returned:
        # the execution logs, tagged with this run's id, say what this run really computed (tasks and shards).
        run_id = os.environ.get(RUN_ID_ENV, "")
        since = outcome.log_start
        entries = [e for e in read_executions(cache, since=since.get(EXECUTION_LOG, 0)) if e.get("run") == run_id]
        executed = [e["task_id"] for e in entries]
        groups = [e["task_id"] for e in read_executions(cache, log=GROUP_LOG, since=since.get(GROUP_LOG, 0)) if e.get("run") == run_id]
        completed = sorted(summary.get("completed", set()), key=str)
        done_ids = {t.task_id for t in completed}
        # A task logs its execution before computing (so that a double run shows), a shard once it is done:
        # a task that failed did not run to the end and is not listed.
        _extend(outcome.ran, [e["task_id"] for e in entries if e.get("kind") == "unit" or e["task_id"] in done_ids])
        _extend(outcome.groups, [g for g in groups if g in done_ids])
        for task in completed:
            if task.task_id not in executed and task.task_id not in groups:
                _extend(outcome.by_others, [task.task_id])
            elif isinstance(task, GroupTask) and task.output().exists():
                _extend(outcome.reused, [str(u) for u in task.output().read_marker().get("reused", [])])
        if first:
            # Luigi does not descend into complete tasks; list those whose output is there. Below a complete
            # task, "there" is the completion markers (a group's and each of its shards'): a deleted folder
            # shows, while the files inside are verified only when a run reads them (verifying every shard's
            # files would read every prediction of every checkpoint on each no-op rerun).
            _extend(outcome.cached, [t.task_id for t in walk_graph(sorted(summary.get("already_done", set()), key=str))
                                     if t.task_id not in outcome.ran and t.task_id not in outcome.groups and _is_present(t)])
            first = False
        for task in sorted(summary.get("failed", set()), key=str):
            path = failure_path(cache, task_id=task.task_id)
            reason = path.read_text(encoding="utf-8").strip() if path.is_file() else "failed"
            outcome.failed[task.task_id] = reason
            if isinstance(task, CheckpointTask):
                outcome.failed_checkpoints.setdefault(str(task.checkpoint), f"{task.task_family}: {reason}")
        others = summary.get("run_by_other_worker", set())
        _extend(outcome.by_others, [t.task_id for t in sorted(others, key=str)])
        done = all(is_complete(t) for t in tasks)
        if not done and not others and not summary.get("failed") and settings.scheduler_url and remembered < REMEMBERED_DONE_WAIT_S:
            # luigid ignores a worker's "pending" for a task it saw finish less than stable_done_cooldown_secs
            # ago (10 s by default; luigi/scheduler.py add_task): a rerun right after a run whose outputs were
            # deleted is then left NOT_RUN. Asking again once the cooldown has passed reruns it.
            time.sleep(OTHER_WORKER_POLL_S)
            remembered += OTHER_WORKER_POLL_S
            continue
        if done or not others:
            # Statuses while another worker still held our goals say nothing; the final one counts.
            if not done:
                outcome.statuses.append(result.status.name)
            return
        time.sleep(OTHER_WORKER_POLL_S)


def _extend(bucket: list[str], items: Iterable[str]) -> None:
    for item in items:
        if item not in bucket:
            bucket.append(item)

"""Shard units: the cached pieces of work that run *inside* a Luigi task.

A Luigi task is a scheduling unit (a group of shards); the unit of caching is a shard. Each shard's
result lives in `CACHE/<kind>/<key>/` under its own content key, completed by the same marker protocol as
a task's output (segpipe.cache.targets: files first, marker last), so a killed or edited run recomputes
only the shards whose marker is missing. Every unit computed is logged in the execution log under a
readable id (`InferShard_m0_s00003_<key>`), which is what `run_log.json` reports as run.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from segpipe.cache.entry_lock import entry_lock, entry_lock_path
from segpipe.cache.targets import MARKER_NAME, MarkerTarget, log_execution, prepare_directory, write_marker


@dataclass(frozen=True)
class Unit:
    family: str  # ConvertShard, InferShard, EvalShard: what the run log calls it
    kind: str  # cache folder, e.g. "infer/shards"
    key: str  # content key: the folder's name
    label: str  # what it is, for people: checkpoint and shard ("m0_s00003")

    @property
    def unit_id(self) -> str:
        return f"{self.family}_{self.label}_{self.key}"

    @property
    def relative(self) -> str:
        return f"{self.kind}/{self.key}"


def unit_directory(cache: Path, kind: str, key: str) -> Path:
    return Path(cache) / kind / key


def units_exist(cache: Path, relatives: Iterable[str]) -> Iterable[bool]:
    """Whether each listed unit folder is still complete and intact (its marker and the files it lists)."""
    return (MarkerTarget(Path(cache) / rel).exists() for rel in relatives)


def units_present(cache: Path, relatives: Iterable[str]) -> Iterable[bool]:
    """Whether each listed unit folder still has its completion marker (one stat each; files not verified)."""
    base = os.fspath(cache)  # strings, not pathlib: ~20,000 units at 100,000 images x 20 checkpoints
    return (os.path.isfile(os.path.join(base, rel, MARKER_NAME)) for rel in relatives)


def ensure_unit(cache: Path, unit: Unit, compute: Callable[[Path], dict[str, Any] | None]) -> tuple[Unit, bool]:
    """Compute `unit` into its folder unless it is complete; returns (unit, computed now?). Under the entry's
    lock, as a task's output: two runs sharing a cache never write one shard at once."""
    target = MarkerTarget(unit_directory(cache, unit.kind, unit.key))
    with entry_lock(entry_lock_path(Path(cache), unit.relative)):
        if target.exists():
            return unit, False
        if target.directory.exists():  # a killed earlier attempt, or a damaged entry: start clean
            shutil.rmtree(target.directory)
        prepare_directory(target)
        extra = compute(target.directory) or {}
        write_marker(target, {"unit": unit.unit_id, **extra})
    # Logged once done: the run log lists the shards a run computed, not those it started and lost.
    log_execution(Path(cache), task_id=unit.unit_id, kind="unit")
    return unit, True


@dataclass
class UnitLog:
    """The units a group task vouches for, and which of them it computed or found in the cache."""

    units: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def add(self, result: tuple[Unit, bool]) -> None:
        unit, computed = result
        self.units.append(unit.relative)
        (self.computed if computed else self.reused).append(unit.unit_id)

    def marker(self) -> dict[str, Any]:
        return {"units": self.units, "computed": self.computed, "reused": self.reused}

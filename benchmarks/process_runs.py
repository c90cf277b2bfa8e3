"""Measuring whole commands the way a user pays for them: CPU of the process tree, wall time, peak RSS.

Each command runs in its own child process; `os.wait4` returns that child's resource usage (user + system CPU
of it and of the descendants it waited for, and its peak resident set), so tools that start worker processes
are charged for them too. Linux carries the high-water mark of the memory a process had before `exec` into
the new program's `ru_maxrss` (exec_mmap in https://github.com/torvalds/linux/blob/master/fs/exec.c), so a child forked from this
benchmark (hundreds of MB of generated data) would report at least that much; commands are therefore started by
a small spawner process (`python -S`, ~10 MB) that only forks, waits and reports. Repeats alternate between
the commands so that load drift on a shared machine hits all of them alike; medians are reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

SEGPIPE = ("-c", "from segpipe.cli import main; main()")  # `python -c` + these = the segpipe command

_SPAWNER = r"""
import json, os, subprocess, sys, tempfile, time
for line in sys.stdin:
    argv = json.loads(line)
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child never blocks on a full pipe
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime,
                      "wall": wall, "rss_kb": usage.ru_maxrss, "err": tail}), flush=True)
"""


@dataclass(frozen=True)
class Run:
    cpu_s: float
    wall_s: float
    peak_rss_mb: float


class Spawner:
    """A small process that runs commands one at a time and reports their resource usage."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-S", "-c", _SPAWNER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)

    def run(self, argv: Sequence[str]) -> Run:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(list(argv)) + "\n")
        self._proc.stdin.flush()
        out = json.loads(self._proc.stdout.readline())
        if out["rc"] != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({out['rc']}):\n{out['err']}")
        return Run(cpu_s=out["cpu"], wall_s=out["wall"], peak_rss_mb=out["rss_kb"] / 1024)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()


_SPAWNER_PROCESS: Spawner | None = None


def start_spawner() -> None:
    """Start the spawner now, while this process is still small (call it before generating data)."""
    global _SPAWNER_PROCESS
    if _SPAWNER_PROCESS is None:
        _SPAWNER_PROCESS = Spawner()


def medians(commands: dict[str, Sequence[str]], *, repeats: int) -> dict[str, Run]:
    """Median CPU, wall and peak RSS of each named command over `repeats` alternating runs."""
    start_spawner()
    assert _SPAWNER_PROCESS is not None
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            runs[name].append(_SPAWNER_PROCESS.run(argv))
    return {
        name: Run(cpu_s=statistics.median(r.cpu_s for r in rs), wall_s=statistics.median(r.wall_s for r in rs),
                  peak_rss_mb=statistics.median(r.peak_rss_mb for r in rs))
        for name, rs in runs.items()
    }


def print_table(results: dict[str, Run], *, reference: str, title: str) -> None:
    """One line per command; ratios are (that command's time) / (reference's time): > 1 means the reference is faster."""
    ref = results[reference]
    print(title)
    print(f"  {'command':<34} {'CPU s':>7} {'wall s':>7} {'peak RSS MB':>12} {'CPU ratio':>10} {'wall ratio':>11}")
    for name, r in results.items():
        print(f"  {name:<34} {r.cpu_s:7.2f} {r.wall_s:7.2f} {r.peak_rss_mb:12.0f} "
              f"{r.cpu_s / ref.cpu_s:9.2f}x {r.wall_s / ref.wall_s:10.2f}x")

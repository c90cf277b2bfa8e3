"""Interleaved repeat timing shared by the format benchmarks: medians of wall and CPU seconds, ratios
against the first (anchor) entry, printed in one table."""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Callable


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def compare(entries: dict[str, Callable[[], object]], *, repeats: int, n: int, unit: str,
            cpu_unseen: frozenset[str] = frozenset()) -> dict[str, float]:
    """Run every entry `repeats` times, interleaved (a load change hits all alike); print medians and the
    ratio of each to the first entry. An entry that raises is reported and left out. `cpu_unseen`: entries
    whose CPU time getrusage cannot see (workers forked by a forkserver are not our reaped children)."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in entries}
    failed: dict[str, str] = {}
    for _ in range(repeats):
        for name, fn in entries.items():
            if name in failed:
                continue
            try:
                samples[name].append(measure(fn))
            except Exception as err:  # a third-party reader refusing the data is a result, not a crash
                failed[name] = f"{type(err).__name__}: {err}"[:200]
    load = os.getloadavg()
    print(f"load average at start {load[0]:.1f} on {os.cpu_count()} CPUs; medians of {repeats} interleaved runs, {n} {unit}")
    wall = {k: statistics.median(w for w, _ in v) for k, v in samples.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in samples.items() if v}
    anchor = next(iter(entries))
    for name in entries:
        if name in failed:
            print(f"{name:<38s}: failed ({failed[name]})")
            continue
        if name in cpu_unseen:
            cpu_text, cpu_ratio = "    n/a  ", "  n/a"
        else:
            cpu_text, cpu_ratio = f"{cpu[name]:7.3f} s", f"{cpu[name] / cpu[anchor]:5.2f}x"
        ratio = "" if name == anchor else f"  {wall[name] / wall[anchor]:6.2f}x wall, {cpu_ratio} CPU of the {anchor}"
        print(f"{name:<38s}: {wall[name]:7.3f} s wall {cpu_text} CPU {n / wall[name]:8.0f} {unit}/s{ratio}")
    return wall


def size_args(doc: str | None, *, full: int, quick: int) -> tuple[int, int]:
    """The format benchmarks' command line (`--quick`, `-n`, `--repeats`): returns (images, repeats)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{quick} images instead of {full}")
    parser.add_argument("-n", type=int, default=None, help="number of images")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians are printed)")
    args = parser.parse_args()
    return args.n or (quick if args.quick else full), args.repeats

"""Scheduling helpers of benchmarks/pipeline_scale.py: a private luigid on 127.0.0.1, and the cost of a
trivial task with one worker (run in the worker's process) and with two (Luigi forks a process per task
when it has more than one worker). Not a benchmark (imported by pipeline_scale.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import luigi


@contextlib.contextmanager
def luigid_server() -> Iterator[str]:
    """A luigid bound to loopback, its state in a private temporary folder; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="segpipe-luigid-") as state, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
        probe.close()
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])",
             "--address", "127.0.0.1", "--port", str(port), "--state-path", f"{state}/state.pickle", "--logdir", state],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("luigid did not start") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait()


class _Touch(luigi.Task):
    path = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.path))

    def run(self) -> None:
        Path(str(self.path)).write_text("done\n", encoding="utf-8")


def fork_cost_ms(folder: Path, *, n_tasks: int) -> tuple[float, float]:
    """Wall milliseconds per trivial task with 1 worker and with 2 workers, in this process."""
    out = []
    for workers in (1, 2):
        tasks = [_Touch(path=str(folder / f"w{workers}" / f"{i}.txt")) for i in range(n_tasks)]
        (folder / f"w{workers}").mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        luigi.build(tasks, workers=workers, local_scheduler=True, log_level="WARNING")
        out.append((time.perf_counter() - started) * 1000 / n_tasks)
    return out[0], out[1]


class _ImportTorch(luigi.Task):
    """What the first inference of a task does before any compute: import torch and torchvision."""

    path = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.path))

    def run(self) -> None:
        import torchvision  # noqa: F401

        Path(str(self.path)).write_text("done\n", encoding="utf-8")


def _import_probe(folder: str, n_tasks: int, preload: bool) -> None:
    """In a fresh interpreter: ms per task importing torch, with 2 workers (a fork per task)."""
    if preload:
        from segpipe.runner.driver import preload_for_forked_workers

        preload_for_forked_workers()
    tasks = [_ImportTorch(path=f"{folder}/{i}.txt") for i in range(n_tasks)]
    Path(folder).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    luigi.build(tasks, workers=2, local_scheduler=True, log_level="WARNING")
    print((time.perf_counter() - started) * 1000 / n_tasks)


def torch_import_cost_ms(folder: Path, *, n_tasks: int) -> tuple[float, float]:
    """Wall ms per task importing torch with 2 workers: (parent never imported it, parent preloaded it as
    `segpipe run` does before forking workers that infer)."""
    out = []
    for preload in (False, True):
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
                f"from benchmarks.scale_scheduling import _import_probe; _import_probe({str(folder / str(preload))!r}, {n_tasks}, {preload})")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out[0], out[1]

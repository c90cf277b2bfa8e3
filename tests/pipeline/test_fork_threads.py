"""Torch's thread count in Luigi's forked workers (`segpipe run --workers N`): one thread where the parent
may have run torch's OpenMP pool (a fork would hang on it, https://github.com/pytorch/pytorch/issues/17199),
all of them where the parent only imported torch for its forks to inherit, as `segpipe run` does."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection

import pytest
import torch

from segpipe.inference import images


def _report_threads(conn: Connection) -> None:
    images._single_threaded_torch_after_fork()
    conn.send(torch.get_num_threads())
    conn.close()


def _threads_in_a_fork() -> int:
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_report_threads, args=(theirs,))
    child.start()
    threads = int(ours.recv())
    child.join(timeout=60)
    return threads


@pytest.fixture
def two_threads() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_fork_of_a_process_that_may_have_run_torch_uses_one_thread(two_threads: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_TORCH_IDLE_IN", None)
    assert _threads_in_a_fork() == 1


def test_a_fork_of_a_process_that_only_imported_torch_keeps_its_threads(two_threads: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_TORCH_IDLE_IN", os.getpid())
    assert _threads_in_a_fork() == 2


def test_the_run_preload_marks_torch_as_imported_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`preload_for_forked_workers` marks the process only when it imported torch itself."""
    from segpipe.runner.phases import preload_for_forked_workers

    monkeypatch.setattr(images, "_TORCH_IDLE_IN", None)
    preload_for_forked_workers()  # torch is already imported by this test process: it may have run torch
    assert images._TORCH_IDLE_IN is None


def test_the_run_preload_in_a_fresh_process_marks_it() -> None:
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from segpipe.runner.phases import preload_for_forked_workers\n"
            "assert 'torch' not in sys.modules\n"
            "preload_for_forked_workers()\n"
            "from segpipe.inference import images\n"
            "print(images._TORCH_IDLE_IN == os.getpid())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "True"

"""Shared test fixtures: the peer-fixture folder (skipped cleanly when absent), the gpu marker, and what keeps
`make test` quick on two cores (pytest-xdist workers, heavy files scheduled first, one torch thread per worker)."""

from __future__ import annotations

import os
from typing import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Fixtures shared with other projects live in ../shared/peers beside the checkout (never copied in); SEGPIPE_PEERS overrides it.
PEERS_DIR = Path(os.environ.get("SEGPIPE_PEERS", REPO_ROOT.parent / "shared" / "peers"))

# `make test` runs the suite on pytest-xdist workers, one per core. Each worker keeps its core busy, so torch
# in a worker, and in every process a test starts (the CLI, `segpipe run`, benchmarks/gpu_check.py), runs on
# one OpenMP thread: a pool sized to all the cores spin-waits for the core the other worker holds, costing
# CPU time for nothing (https://pytorch.org/docs/stable/notes/cpu_threading_torchscript_inference.html).
# Set before any test module imports torch; a value the user exported wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Files whose tests take the most CPU time (measured with --durations; each is a few CLI processes that import
# torch, or real model inference), run first: under `make test` (xdist, --dist loadfile, with the reordering
# by test count turned off) a long file started last would leave the other worker idle at the end.
# A file marked `slow` anywhere goes first as well.
HEAVY_FIRST = (
    "tests/test_readme_shell.py",
    "tests/pipeline/test_gpu_check.py",
    "tests/pipeline/test_run_progress.py",
    "tests/pipeline/test_run_incremental.py",
    "tests/pipeline/test_tutorial_journeys.py",
    "tests/pipeline/test_infer_speed.py",
    "tests/pipeline/test_run_luigid.py",
    "tests/pipeline/test_publish_shared_out.py",
    "tests/pipeline/test_box_precision.py",
    "tests/pipeline/test_non_utf8_names.py",
    "tests/pipeline/test_run_failures.py",
    "tests/pipeline/test_page_defects.py",
)


@pytest.fixture(scope="session")
def peers() -> Path:
    if not PEERS_DIR.is_dir():
        pytest.skip(f"peer fixtures not found at {PEERS_DIR} (set SEGPIPE_PEERS to their folder)")
    return PEERS_DIR


def _heavy_files_first(items: list[pytest.Item]) -> None:
    """Stable reorder, whole files at a time (a module's fixtures are still set up once): the files of
    HEAVY_FIRST in its order, then other files holding a `slow` test, then the rest in collection order."""
    def path(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow = {path(item) for item in items if item.get_closest_marker("slow")}
    rank = {name: n for n, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(path(item), len(rank) if path(item) in slow else len(rank) + 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _heavy_files_first(items)
    if not any("gpu" in item.keywords for item in items):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: no GPU tests
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker); none available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module", params=["kernel", "numpy"])
def both_evaluation_paths(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's tests once with the compiled kernel (segpipe.evaluators._kernel) and once on the numpy path.

    Module-scoped (hypothesis refuses function-scoped fixtures), so it sets and restores the switch itself.
    Use as `pytestmark = pytest.mark.usefixtures("both_evaluation_paths")`.
    """
    from segpipe.evaluators import kernel

    built = kernel.KERNEL
    if request.param == "kernel" and built is None:
        pytest.skip("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set (tests/evaluators/test_kernel.py says which)")
    kernel.KERNEL = built if request.param == "kernel" else None
    try:
        yield request.param
    finally:
        kernel.KERNEL = built

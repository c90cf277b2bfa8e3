"""Shared test fixtures: the peer-fixture folder (skipped cleanly when absent) and the gpu marker."""

from __future__ import annotations

import os
from typing import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Fixtures shared with other projects live in ../shared/peers beside the checkout (never copied in); SEGPIPE_PEERS overrides it.
PEERS_DIR = Path(os.environ.get("SEGPIPE_PEERS", REPO_ROOT.parent / "shared" / "peers"))


@pytest.fixture(scope="session")
def peers() -> Path:
    if not PEERS_DIR.is_dir():
        pytest.skip(f"peer fixtures not found at {PEERS_DIR} (set SEGPIPE_PEERS to their folder)")
    return PEERS_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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

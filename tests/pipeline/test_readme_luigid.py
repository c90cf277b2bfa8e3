"""The README's one-host luigid commands run as shown (paths and port moved into the test's own space)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.pipeline.pipeline_fixtures import REPO_ROOT
from tests.pipeline.test_run_luigid import LUIGID, _free_port, _wait_for_port


def _readme_luigid_lines() -> list[str]:
    text = (REPO_ROOT / "docs" / "several-machines.md").read_text(encoding="utf-8")
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("luigid "))
    # the luigid line and the set-up lines right above it (up to the comment that opens the snippet)
    before = []
    for ln in reversed(lines[:start]):
        if not ln:
            break
        before.insert(0, ln)
    return [*before, lines[start]]


@pytest.mark.skipif(not LUIGID.is_file(), reason="luigid not installed beside this Python")
def test_readme_luigid_commands_start_a_scheduler(tmp_path: Path) -> None:
    lines = _readme_luigid_lines()
    assert any(ln.startswith("mkdir -p") for ln in lines), lines  # luigid does not create its --logdir
    port = _free_port()
    script = "\n".join(lines).replace("~/.local/state/luigid", str(tmp_path / "luigid")).replace("8082", str(port))
    script = re.sub(r"^luigid ", f"exec {LUIGID} ", script, flags=re.M)
    proc = subprocess.Popen(["bash", "-ec", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ})
    try:
        _wait_for_port(port, proc=proc, timeout=60)
        assert (tmp_path / "luigid" / "log").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

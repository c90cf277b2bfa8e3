"""What the README promises about safety and limits matches the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")


def test_luigid_state_lives_in_a_private_folder() -> None:
    """luigid unpickles --state-path at start: the README must never put it where other users can write."""
    lines = [line.strip() for line in README.splitlines()]
    commands = [i for i, line in enumerate(lines) if line.startswith("luigid ")]
    assert commands
    for i in commands:
        args = shlex.split(lines[i])
        state = args[args.index("--state-path") + 1]
        assert not state.startswith(SHARED_FOLDERS), lines[i]
        folder = state.rsplit("/", 1)[0]
        private = [line for line in lines[:i] if re.fullmatch(rf"install -d -m 700 {re.escape(folder)}", line)]
        assert private, f"no `install -d -m 700 {folder}` before: {lines[i]}"
    assert "unpickles" in README

"""What the README promises about safety and limits matches the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The reference pages the README links to: luigid's set-up and the reliability guarantees live in docs/.
SEVERAL_MACHINES = (REPO / "docs" / "several-machines.md").read_text(encoding="utf-8")
RELIABILITY = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")


def test_luigid_state_lives_in_a_private_folder() -> None:
    """luigid unpickles --state-path at start: the README must never put it where other users can write."""
    lines = [line.strip() for line in SEVERAL_MACHINES.splitlines()]
    commands = [i for i, line in enumerate(lines) if line.startswith("luigid ")]
    assert commands
    for i in commands:
        args = shlex.split(lines[i])
        state = args[args.index("--state-path") + 1]
        assert not state.startswith(SHARED_FOLDERS), lines[i]
        folder = state.rsplit("/", 1)[0]
        private = [line for line in lines[:i] if re.fullmatch(rf"install -d -m 700 {re.escape(folder)}", line)]
        assert private, f"no `install -d -m 700 {folder}` before: {lines[i]}"
    assert "unpickles" in SEVERAL_MACHINES


def test_reliability_section_states_the_limits_the_code_enforces() -> None:
    from segpipe.core.images import (
        MAX_FILE_BYTES_DEFAULT, MAX_FILE_BYTES_ENV, MAX_IMAGE_PIXELS_DEFAULT, MAX_IMAGE_PIXELS_ENV,
    )
    from segpipe.cache.integrity import CHEAP_DIGEST_BYTES
    from segpipe.core.polygon_bounds import POLYGON_EXTENT_FACTOR
    from segpipe.inference.checkpoints import CARD_LIMITS, CHECKPOINT_INFLATE_FLOOR, CHECKPOINT_MAX_INFLATION

    section = RELIABILITY.split("# Reliability", 1)[1].split("\n## ", 1)[0]
    assert f"{MAX_IMAGE_PIXELS_DEFAULT:,}" in section and MAX_IMAGE_PIXELS_ENV in section
    assert f"{MAX_FILE_BYTES_DEFAULT // 2**20} MiB" in section and MAX_FILE_BYTES_ENV in section
    assert f"{CHECKPOINT_MAX_INFLATION}x the file size (above {CHECKPOINT_INFLATE_FLOOR // 2**20} MiB)" in section
    assert f"within {POLYGON_EXTENT_FACTOR} image sizes" in section
    assert f"files up to\n  {CHEAP_DIGEST_BYTES // 1024} KiB" in section
    for field, limit in CARD_LIMITS.items():
        shown = {"unet.depth": "depth", "unet.width": "width"}.get(field, field)
        assert f"{shown} ≤ {limit:,}" in section, field
    assert "--trust-checkpoint" in section and "TorchScript" in section

"""Every shell block of the README, and of docs/, runs as shown from the repository root: in order, against
the embedded sample, writing only into the folder the README names (which .gitignore covers). A block that
cannot run here (it downloads, or runs the whole suite or a benchmark) carries a marker line right above its
fence, `<!-- readme-test: skip (why) -->`, and the reason is required."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
SKIP = re.compile(r"<!-- readme-test: skip \((?P<why>[^)]+)\) -->")
OUT_FOLDER = "tutorial"


def shell_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason or None) of each ```bash block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i] == "```bash":
            end = lines.index("```", i + 1)
            marker = SKIP.fullmatch(lines[i - 1].strip()) if i else None
            blocks.append((i + 1, "\n".join(lines[i + 1:end]), marker["why"] if marker else None))
            i = end
        i += 1
    return blocks


def test_every_skipped_block_says_why_and_the_markers_sit_on_a_fence() -> None:
    for path in [REPO / "README.md", *DOCS]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if "readme-test" in line:
                assert SKIP.fullmatch(line.strip()), f"{path.name}:{n + 1}: malformed marker {line!r}"
                assert lines[n + 1] == "```bash", f"{path.name}:{n + 1}: a marker must sit right above a ```bash fence"


def test_the_readme_runs_most_of_its_blocks() -> None:
    blocks = shell_blocks(REPO / "README.md")
    ran = [b for b in blocks if b[2] is None]
    assert len(ran) >= 9 and len(blocks) - len(ran) <= 4, [(line, why) for line, _, why in blocks if why]
    assert all(OUT_FOLDER + "/" in code for _, code, _ in ran[1:])  # the sample block writes tutorial/ too
    assert "tutorial/" not in "".join(f"{code}\n" for _, code, why in blocks if why and "downloads torch" in why)


@pytest.mark.slow
def test_readme_and_docs_shell_blocks_run_as_shown(tmp_path: Path) -> None:
    segpipe = REPO / ".venv" / "bin" / "segpipe"
    if not segpipe.is_file():
        pytest.skip("no .venv/bin/segpipe in this checkout (make install creates it)")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{OUT_FOLDER}/x"], cwd=REPO)
    assert ignored.returncode == 0, f"{OUT_FOLDER}/ is not covered by .gitignore"
    # A stand-in for the repository root: the commands see .venv/ and pipeline/ where the README says, and
    # whatever they write lands here, not in the checkout.
    root = tmp_path / "root"
    root.mkdir()
    for name in (".venv", "pipeline"):
        (root / name).symlink_to(REPO / name)
    env = {**os.environ, "SEGPIPE_PROGRESS_INTERVAL": "3600"}
    timings = []
    for path in [REPO / "README.md", *DOCS]:
        for line, code, why in shell_blocks(path):
            if why is not None:
                continue
            started = time.monotonic()
            proc = subprocess.run(["bash", "-eo", "pipefail", "-c", code], cwd=root, env=env, text=True,
                                  capture_output=True, timeout=600)
            timings.append((round(time.monotonic() - started, 1), f"{path.name}:{line}"))
            assert proc.returncode == 0, f"{path.name}:{line} exited {proc.returncode}\n{code}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert sorted(p.name for p in root.iterdir()) == [".venv", "pipeline", OUT_FOLDER]  # nothing beside tutorial/
    tutorial = root / OUT_FOLDER
    # What the guide tells the reader to open exists.
    for page in ("report-e03/report.html", "nightly/leaderboard.html", "compare-e01-e03/compare.html",
                 "audit/audit.html", "compare-run/compare.html"):
        assert (tutorial / page).is_file(), page
    print(sorted(timings, reverse=True))

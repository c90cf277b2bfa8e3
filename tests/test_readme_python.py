"""The README's "From Python" example runs as written, and its numbers agree with the CLI's tables."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## 8. From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the From Python section should hold exactly one python example"
    return blocks[0]


def test_readme_python_example_runs(tmp_path: Path) -> None:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(_python_example(), str(README), "exec"), {"__name__": "readme_example"})
    finally:
        os.chdir(old)
    # The tables the example wrote are the ones it printed from: the API returns what the files hold.
    root = tmp_path / "tutorial" / "py"
    summary = pd.read_csv(root / "report" / "summary.csv").set_index("metric")["value"]
    assert f"{summary['mIoU']:.3f}" in out.getvalue()
    assert summary["mIoU"] > 0.9  # the best shipped demo checkpoint separates pet from background
    assert (root / "audit" / "findings.csv").is_file()
    assert (root / "converted" / "instances.json").is_file()
    # segpipe.run returns what the README says: a RunResult whose leaderboard is leaderboard.csv, best first.
    board = pd.read_csv(root / "nightly" / "leaderboard.csv")
    assert list(board["checkpoint"]) == ["unet_e03", "unet_e02", "unet_e01"]
    assert "exit code 0" in out.getvalue() and "unet_e03" in out.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tutorial"]  # the example writes only where it says

"""Comments and docstrings cite what a reader of the repository can open: a URL, an upstream issue.

Internal tracker numbers ("issue 5") and notes kept outside the repository are dead ends for that reader,
so the reason itself belongs in the comment.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("pipeline", "converters", "evaluators", "tests", "benchmarks")
UNREACHABLE = re.compile(r"\bissues? #?[0-9]|design\.md", re.IGNORECASE)


def _checked_files() -> list[Path]:
    files = []
    for folder in SOURCE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if path.suffix not in (".py", ".j2", ".c") or "__pycache__" in rel or path.name == Path(__file__).name:
                continue
            files.append(path)
    return files


def test_the_scan_sees_the_sources() -> None:
    names = {p.relative_to(REPO_ROOT).as_posix() for p in _checked_files()}
    assert {"converters/voc.py", "evaluators/semantic/tables.py", "pipeline/cli/run.py", "tests/conftest.py"} <= names


def test_comments_cite_nothing_a_reader_cannot_open() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in _checked_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if UNREACHABLE.search(line)
    ]
    assert not found, "say the reason itself or cite a public URL:\n" + "\n".join(found)

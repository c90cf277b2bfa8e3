"""Library errors name files and fields, never command-line flags: only the CLI (pipeline/cli) turns a
`SegpipeError(path, field, reason)` into a flag and an exit code. A scan of the source for error
constructors whose path or field is a literal flag (`"--device"`), or an empty literal path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("converters", "evaluators", "pipeline")
CLI = ROOT / "pipeline" / "cli"


def _library_files() -> list[Path]:
    return sorted(p for folder in LIBRARY for p in (ROOT / folder).rglob("*.py") if CLI not in p.parents)


def _literal(node: ast.expr) -> str | None:
    """The text a str literal or f-string starts with (None for anything else)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        head = node.values[0] if node.values else None
        return head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else ""
    return None


def _error_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name.endswith("Error") and len(node.args) >= 2:  # (path, field, reason): the SegpipeError shape
                calls.append(node)
    return calls


def flag_shaped(source: str) -> list[str]:
    """'line: what' for each error constructor whose path or field is a flag, or whose path is empty.

    >>> flag_shaped('raise InferenceError("--device", "", "bad")')
    ['1: path "--device"']
    >>> flag_shaped('raise AnnotationError(p, "--classes", "x")') + flag_shaped('raise AnnotationError("", "name", "x")')
    ['1: field "--classes"', '1: path ""']
    >>> flag_shaped('raise EvaluationError(path, "size", f"--x is {n}")')
    []
    """
    found = []
    for call in _error_calls(ast.parse(source)):
        path, field = (_literal(a) for a in call.args[:2])
        if path is not None and (path.startswith("-") or path == ""):
            found.append(f'{call.lineno}: path "{path}"')
        if field is not None and field.startswith("-"):
            found.append(f'{call.lineno}: field "{field}"')
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    import doctest
    import sys

    failures, _ = doctest.testmod(sys.modules[__name__], verbose=False)
    assert failures == 0


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_library_errors_name_files_and_fields_not_flags(path: Path) -> None:
    assert flag_shaped(path.read_text(encoding="utf-8")) == [], f"{path.relative_to(ROOT)}: give the file and the field; the CLI names flags"

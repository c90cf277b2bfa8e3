#!/usr/bin/env python3
"""mypy over segpipe as it installs: every file handed over with its module name from pyproject's package-dir.

mypy names a file's module after its folders (https://mypy.readthedocs.io/en/stable/running_mypy.html#mapping-file-paths-to-modules)
and cannot read setuptools' `package-dir`, so `mypy converters/` would check `converters.voc`, not
`segpipe.converters.voc`, and find none of its `segpipe.*` imports. An editable install does not help: the
default (PEP 660) one is an import hook mypy does not run (https://github.com/python/mypy/issues/13392) and
`editable_mode=strict` builds the same link tree as before (whose new files need a reinstall). mypy's build
API takes each source as (path, module) instead, the way `mypy -p` would find them in a tree that spells the
installed layout; the modules resolve one another by name and errors are reported at their repository paths.

Usage: python .ci/typecheck.py [mypy flags...]   (the configuration is pyproject.toml's [tool.mypy])
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

REPO = Path(__file__).resolve().parents[1]


def sources() -> list[BuildSource]:
    """One BuildSource per module of every package pyproject.toml lists, a stub (.pyi) in place of its module."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapping: dict[str, str] = conf["package-dir"]
    found: dict[str, Path] = {}
    for package in conf["packages"]:
        root = max((k for k in mapping if package == k or package.startswith(k + ".")), key=len)
        folder = REPO / mapping[root] / Path(*package[len(root):].split(".")[1:])
        for path in sorted(folder.glob("*.py")) + sorted(folder.glob("*.pyi")):  # a stub replaces its .py
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return [BuildSource(str(path.relative_to(REPO)), name) for name, path in sorted(found.items())]


def main() -> int:
    _, options = process_options(["--config-file", str(REPO / "pyproject.toml"), *sys.argv[1:]], require_targets=False)
    todo = sources()
    try:
        result = build.build(todo, options)
    except CompileError as err:
        result_messages = err.messages
        print("\n".join(result_messages), file=sys.stderr)
        return 2
    for line in result.errors:
        print(line)
    files = len({e.split(":", 1)[0] for e in result.errors if ": error:" in e})
    if any(": error:" in e for e in result.errors):
        print(f"Found errors in {files} file(s) (checked {len(todo)} source files)")
        return 1
    print(f"Success: no issues found in {len(todo)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The three folders install as one import package, `segpipe`, and nothing else lands in site-packages.

`pyproject.toml` lists the packages explicitly (a `package-dir` mapping cannot be discovered); this test
fails when a folder with an `__init__.py` is added without being listed, and runs every docstring example
of every installed module (the packages' doctests), importing them by their installed names only.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"segpipe": REPO / "pipeline", "segpipe.converters": REPO / "converters", "segpipe.evaluators": REPO / "evaluators"}


def _declared() -> tuple[dict[str, str], list[str]]:
    import tomllib

    conf = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    return conf["package-dir"], conf["packages"]


def _folders() -> list[str]:
    names = []
    for pkg, root in ROOTS.items():
        for init in sorted(root.rglob("__init__.py")):
            rel = init.parent.relative_to(root).parts
            if "__pycache__" not in rel:
                names.append(".".join((pkg, *rel)))
    return sorted(names)


def test_every_package_folder_is_installed() -> None:
    mapping, packages = _declared()
    assert {k: (REPO / v).resolve() for k, v in mapping.items()} == {k: v.resolve() for k, v in ROOTS.items()}
    assert sorted(packages) == _folders()


def test_no_generic_top_level_modules() -> None:
    import segpipe

    assert Path(segpipe.__file__).resolve().parent == ROOTS["segpipe"].resolve()
    for generic in ("pipeline", "converters", "evaluators"):
        spec = importlib.util.find_spec(generic) if generic not in sys.modules else None
        # Only the repository folder itself (on sys.path when pytest runs from the root) may answer.
        if spec is not None and spec.origin is not None:
            assert Path(spec.origin).resolve().is_relative_to(REPO)


def _modules() -> list[str]:
    mods = []
    for pkg in ROOTS:
        module = importlib.import_module(pkg)
        mods.append(pkg)
        # walk_packages follows the folders below each root; the mapped roots are listed above.
        mods.extend(info.name for info in pkgutil.walk_packages(module.__path__, prefix=pkg + "."))
    return sorted(set(mods))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert failures == 0, f"{name}: {failures} docstring example(s) failed (run it with -s to see them)"


def test_the_python_floor_is_the_same_in_pyproject_and_readme_and_true() -> None:
    """tomllib (3.11+) is imported at module level by infer, run and demo: the floor says 3.11, everywhere."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    floor = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert floor == ">=3.11"
    assert re.findall(r"Python ≥ (3\.\d+)", (root / "README.md").read_text(encoding="utf-8")) == ["3.11"]
    assert sys.version_info >= (3, 11)

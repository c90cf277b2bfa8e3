"""Imports go one way: each layer of segpipe imports only from the layers below it (docs/architecture.md).

The layers are read from the source with `ast`, so an import written inside a function (the lazy imports
that keep `import segpipe` cheap) counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folder -> import package (pyproject.toml's package-dir).
ROOTS = {"pipeline": "segpipe", "converters": "segpipe.converters", "evaluators": "segpipe.evaluators"}

# Lowest first. A module may import its own layer and any layer listed before it, never one after it.
LAYERS: list[tuple[str, ...]] = [
    # The ground floor, segpipe.core: errors, the on-disk names, atomic writes, image headers, label maps, geometry.
    ("segpipe.core",),
    # Formats and metrics: siblings on one floor that never import each other (SIBLINGS below).
    ("segpipe.converters", "segpipe.evaluators"),
    # Built on the metrics: the label audit and the analyses (TIDE, A/B, bootstrap, thresholds, class confusion).
    ("segpipe.evaluators.audit", "segpipe.evaluators.analysis"),
    ("segpipe.cache", "segpipe.reports"),
    ("segpipe.inference",),
    ("segpipe.demo",),
    # What a command does beyond its flags (report files, refusals, checks, the relabel task).
    ("segpipe.commands", "segpipe.prediction_checks", "segpipe.relabel"),
    ("segpipe.plan",),
    ("segpipe.tasks",),
    ("segpipe.runner",),
    ("segpipe.api", "segpipe"),
    ("segpipe.cli",),
]


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank >= 0, f"{module} is in no declared layer: add it to LAYERS and to docs/architecture.md"
    return rank


def module_name(path: Path, folder: str) -> str:
    parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([ROOTS[folder], *parts])


def imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            # `from segpipe import cli` imports the subpackage, not a name of segpipe/__init__.
            names.update(f"{target}.{alias.name}" for alias in node.names if target == "segpipe")
    return {name for name in names if name == "segpipe" or name.startswith("segpipe.")}


def edges() -> list[tuple[str, str, str]]:
    found = []
    for folder in ROOTS:
        for path in sorted((REPO / folder).rglob("*.py")):
            module = module_name(path, folder)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for target in imported(tree, module, path.name == "__init__.py"):
                found.append((str(path.relative_to(REPO)), module, target))
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = []
    for path, module, target in edges():
        if target == "segpipe" and module.startswith("segpipe."):
            wrong.append(f"{path}: imports the top-level segpipe package (the API); import the module itself")
            continue
        if layer_of(target) > layer_of(module):
            wrong.append(f"{path}: {module} imports {target}, a layer above it")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_a_violation() -> None:
    tree = ast.parse("def f():\n    from segpipe.cli.run import run\n")
    targets = imported(tree, "segpipe.tasks.report", False)
    assert targets == {"segpipe.cli.run"}
    assert layer_of("segpipe.cli.run") > layer_of("segpipe.tasks.report")


def test_every_module_is_in_a_declared_layer() -> None:
    for _path, module, target in edges():
        layer_of(module), layer_of(target)


def test_each_package_front_door_names_what_it_exports() -> None:
    """The core, converters and evaluators packages (and the evaluators' subpackages) declare their public names,
    and each one resolves."""
    import importlib

    for package in (
        "segpipe.core",
        "segpipe.converters",
        "segpipe.evaluators",
        "segpipe.evaluators.instance",
        "segpipe.evaluators.semantic",
        "segpipe.evaluators.audit",
        "segpipe.evaluators.analysis",
    ):
        module = importlib.import_module(package)
        assert module.__all__, package
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"


# Packages of one floor that stand side by side: neither imports the other (what they share is in segpipe.core).
SIBLINGS = [
    ("segpipe.converters", "segpipe.evaluators"),
    ("segpipe.evaluators.instance", "segpipe.evaluators.semantic"),
    ("segpipe.evaluators.audit", "segpipe.evaluators.analysis"),
]


def sibling_of(module: str, target: str) -> bool:
    """True when `module` and `target` are in two different packages of one SIBLINGS group."""
    def inside(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    return any(inside(module, a) and inside(target, b) for pair in SIBLINGS for a in pair for b in pair if a != b)


def test_siblings_do_not_import_each_other() -> None:
    wrong = [f"{path}: {module} imports {target}; move what they share to segpipe.core"
             for path, module, target in edges() if sibling_of(module, target)]
    assert not wrong, "\n".join(wrong)


def test_the_sibling_check_sees_a_violation() -> None:
    tree = ast.parse("def f():\n    from segpipe.evaluators.instance.coco_results import check_results\n")
    (target,) = imported(tree, "segpipe.converters.voc", False)
    assert sibling_of("segpipe.converters.voc", target)
    assert not sibling_of("segpipe.converters.voc", "segpipe.core.images")
    assert not sibling_of("segpipe.evaluators.instance.update", "segpipe.evaluators.kernel")
    assert sibling_of("segpipe.evaluators.semantic.boundary", "segpipe.evaluators.instance.overlaps")

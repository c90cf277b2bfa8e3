"""segpipe.evaluators: metrics and the label audit on in-memory data (no files named by flags, no printing).

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`), so importing
one evaluator does not import the others (nor pandas) — the shape of detectron2's `evaluation/__init__.py`,
lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "instance_update": "instance", "instance_compute": "instance", "InstanceReport": "instance",
    "evaluate_semantic_dirs": "semantic", "SemanticReport": "semantic_tables", "audit_dataset": "audit",
    "AuditResult": "audit", "tide_tables": "tide", "EvaluationError": "errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

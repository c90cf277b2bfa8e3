"""segpipe.evaluators: metrics and the label audit on in-memory data (no files named by flags, no printing).

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`), so importing
one evaluator does not import the others (nor pandas) — the shape of detectron2's `evaluation/__init__.py`,
lazily.
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "instance_update": "segpipe.evaluators.instance.evaluation",
    "instance_compute": "segpipe.evaluators.instance.evaluation",
    "InstanceReport": "segpipe.evaluators.instance.evaluation",
    "evaluate_semantic_dirs": "segpipe.evaluators.semantic.evaluation",
    "SemanticReport": "segpipe.evaluators.semantic.tables",
    "audit_dataset": "segpipe.evaluators.audit.dataset",
    "AuditResult": "segpipe.evaluators.audit.dataset",
    "tide_tables": "segpipe.evaluators.analysis.tide",
    "EvaluationError": "segpipe.core.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

"""segpipe.evaluators.audit: the label audit (format, geometry and model-assisted checks, one ranking).

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "audit_dataset": "segpipe.evaluators.audit.dataset",
    "AuditResult": "segpipe.evaluators.audit.dataset",
    "AuditFinding": "segpipe.evaluators.audit.findings",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

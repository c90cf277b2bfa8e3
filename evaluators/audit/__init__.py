"""segpipe.evaluators.audit: the label audit (format, geometry and model-assisted checks, one ranking).

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "audit_dataset": "segpipe.evaluators.audit.dataset",
    "AuditResult": "segpipe.evaluators.audit.dataset",
    "AuditFinding": "segpipe.evaluators.audit.findings",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""segpipe.evaluators.semantic: mIoU, Dice, pixel accuracy and boundary IoU from one int64 confusion matrix.

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "evaluate_semantic_dirs": "segpipe.evaluators.semantic.evaluation",
    "SemanticReport": "segpipe.evaluators.semantic.tables",
    "semantic_compute": "segpipe.evaluators.semantic.tables",
    "confusion_update": "segpipe.evaluators.semantic.confusion",
    "boundary_iou_dirs": "segpipe.evaluators.semantic.boundary",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

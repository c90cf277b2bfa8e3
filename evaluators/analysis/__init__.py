"""segpipe.evaluators.analysis: what is built on the scores: TIDE error types, model A vs B, paired bootstrap
intervals, per-threshold precision/recall and the cross-class confusion of an instance model.

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "tide_tables": "segpipe.evaluators.analysis.tide",
    "compare_instances": "segpipe.evaluators.analysis.comparison",
    "compare_semantic": "segpipe.evaluators.analysis.comparison",
    "paired_bootstrap": "segpipe.evaluators.analysis.bootstrap",
    "threshold_tables": "segpipe.evaluators.analysis.thresholds",
    "instance_confusion": "segpipe.evaluators.analysis.class_confusion",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

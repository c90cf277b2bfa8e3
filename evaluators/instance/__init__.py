"""segpipe.evaluators.instance: COCO mask/box mAP with pycocotools' numbers, as additive per-image records.

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "instance_update": "segpipe.evaluators.instance.evaluation",
    "instance_compute": "segpipe.evaluators.instance.evaluation",
    "InstanceReport": "segpipe.evaluators.instance.evaluation",
    "evaluate_instances": "segpipe.evaluators.instance.evaluation",
    "InstanceStats": "segpipe.evaluators.instance.stats",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

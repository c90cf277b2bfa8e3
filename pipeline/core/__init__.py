"""segpipe.core: the ground floor every other package stands on (it imports no other segpipe package).

The error family (`SegpipeError` and each stage's subclass), the on-disk names (`layout`), atomic writes,
the dataset folder (`dataset_layout`), image headers, size limits and file walks (`images`), the one
label-map reader, the one polygon geometry guard, the output-folder manifest and depth-limited JSON.

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "SegpipeError": "segpipe.core.errors",
    "AnnotationError": "segpipe.core.errors",
    "OptionError": "segpipe.core.errors",
    "EvaluationError": "segpipe.core.errors",
    "ArgumentError": "segpipe.core.errors",
    "atomic_write_bytes": "segpipe.core.atomic_write",
    "atomic_write_text": "segpipe.core.atomic_write",
    "DatasetDir": "segpipe.core.dataset_layout",
    "resolve_image_path": "segpipe.core.dataset_layout",
    "coco_image_root": "segpipe.core.dataset_layout",
    "read_image_size": "segpipe.core.images",
    "read_input_bytes": "segpipe.core.images",
    "walk_input_files": "segpipe.core.images",
    "read_label_map": "segpipe.core.label_maps",
    "polygons_rle": "segpipe.core.polygon_bounds",
    "polygons_mask": "segpipe.core.polygon_bounds",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

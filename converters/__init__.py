"""segpipe.converters: annotation formats in (and out), COCO in memory.

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`), so
`import segpipe.converters.voc` does not pay for every other format. The formats themselves are declared once,
in `FORMATS` (segpipe.converters.formats).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.front_door import lazy_attribute

_PUBLIC = {
    "FORMATS": "segpipe.converters.formats",
    "FormatSpec": "segpipe.converters.formats",
    "Conversion": "segpipe.converters.conversion_output",
    "ConversionReport": "segpipe.converters.report",
    "read_coco": "segpipe.converters.coco",
    "dumps_coco": "segpipe.converters.coco",
    "EXPORTERS": "segpipe.converters.export",
    "AnnotationError": "segpipe.core.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)

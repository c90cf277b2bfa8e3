"""segpipe.converters: annotation formats in (and out), COCO in memory.

The public surface is `__all__`; each name is imported on first use (PEP 562 module `__getattr__`), so
`import segpipe.converters.voc` does not pay for every other format. The formats themselves are declared once,
in `FORMATS` (segpipe.converters.formats).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "FORMATS": "formats", "FormatSpec": "formats", "Conversion": "conversion_output", "ConversionReport": "report",
    "read_coco": "coco", "dumps_coco": "coco", "EXPORTERS": "export", "AnnotationError": "errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

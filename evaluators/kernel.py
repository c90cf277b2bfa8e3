"""The compiled kernel (segpipe.evaluators._kernel, built from _kernel.c) when it is there and wanted, else None.

The kernel is optional: an install without a C compiler has none and every caller takes its numpy path, which
computes the same numbers. SEGPIPE_NO_KERNEL=1 (read once, at import) chooses the numpy path on purpose; tests
switch paths by setting `KERNEL` on this module, which callers read at call time.
"""

from __future__ import annotations

import os
from types import ModuleType

NO_KERNEL_ENV = "SEGPIPE_NO_KERNEL"


def _load() -> ModuleType | None:
    if os.environ.get(NO_KERNEL_ENV, "") not in ("", "0"):
        return None
    try:
        from segpipe.evaluators import _kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _kernel
    return module


KERNEL: ModuleType | None = _load()

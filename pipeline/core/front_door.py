"""The lazy front door of a package: its public names, each imported from its module on first use (PEP 562,
https://peps.python.org/pep-0562/), so that importing a package costs nothing until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def lazy_attribute(package: str, public: Mapping[str, str], name: str) -> Any:
    """`public[name]`'s attribute `name` (for a package's module `__getattr__`); AttributeError for any other name."""
    if name in public:
        return getattr(importlib.import_module(public[name]), name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")

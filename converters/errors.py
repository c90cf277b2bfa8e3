"""The one exception type of the converters package."""

from __future__ import annotations

import os


class AnnotationError(Exception):
    """A problem with one input file, located by path and field.

    >>> str(AnnotationError("a/b.xml", "object[0].bndbox.xmin", "not a number: 'abc'"))
    "a/b.xml: object[0].bndbox.xmin: not a number: 'abc'"
    """

    def __init__(self, path: str | os.PathLike[str], field: str, reason: str, *, code: str = "invalid") -> None:
        self.path = os.fspath(path)
        self.field = field
        self.reason = reason
        self.code = code
        super().__init__(f"{self.path}: {field}: {reason}" if field else f"{self.path}: {reason}")

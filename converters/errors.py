"""The one exception type of the converters package."""

from __future__ import annotations

import os

from segpipe.errors import SegpipeError


class AnnotationError(SegpipeError):
    """A problem with one input file, located by path and field.

    >>> str(AnnotationError("a/b.xml", "object[0].bndbox.xmin", "not a number: 'abc'"))
    "a/b.xml: object[0].bndbox.xmin: not a number: 'abc'"
    """

    def __init__(self, path: str | os.PathLike[str], field: str, reason: str, *, code: str = "invalid") -> None:
        super().__init__(path, field, reason)
        self.code = code

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


# What an option error names as its path: the options of a conversion, not a file.
CONVERSION_OPTIONS = "conversion options"


class OptionError(AnnotationError, ValueError):
    """A converter option outside its choices (a Python caller's mistake: the command line offers only the
    choices). Also a ValueError, as Python's own argument errors are.

    >>> str(OptionError("border", "must be one of ('ignore',), got 'x'"))
    "conversion options: border: must be one of ('ignore',), got 'x'"
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(CONVERSION_OPTIONS, field, reason, code="invalid_option")

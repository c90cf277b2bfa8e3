"""JSON reads bounded in nesting depth, for every JSON file a user hands in (COCO files, results, LabelMe
files, model cards).

Python's json parser recurses once per nesting level and stops at the interpreter's recursion limit with a
RecursionError (https://docs.python.org/3/library/exceptions.html#RecursionError), which the readers'
`except ValueError` does not catch: a 100,000-deep `[[[...]]]` became a traceback. Here it is a JSONDecodeError (a ValueError), so each
reader's own located error (file, field, reason) reports it. No real annotation file nests more than a few
levels; the bound is the parser's own.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any


class JsonTooDeepError(json.JSONDecodeError):
    """Nesting deeper than the parser can follow."""

    def __init__(self) -> None:
        message = f"nested too deeply (more than about {sys.getrecursionlimit()} levels of arrays/objects)"
        ValueError.__init__(self, message)
        self.msg, self.doc, self.pos, self.lineno, self.colno = message, "", 0, 1, 1

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (type(self), ())


def loads(text: str | bytes) -> Any:
    """json.loads, raising JsonTooDeepError (a ValueError) for nesting beyond the parser's depth.

    >>> loads("[[1]]")
    [[1]]
    >>> try:
    ...     loads("[" * 100_000 + "]" * 100_000)
    ... except ValueError as err:
    ...     print(err)
    nested too deeply (more than about 1000 levels of arrays/objects)
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonTooDeepError() from None


def load(fh: IO[bytes] | IO[str]) -> Any:
    """json.load with the bound of `loads`."""
    return loads(fh.read())

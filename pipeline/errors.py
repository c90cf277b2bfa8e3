"""The one base of every error segpipe raises about its inputs: `SegpipeError(path, field, reason)`.

Each package has its own subclass (`AnnotationError` for converters, `EvaluationError` for evaluators,
`InferenceError` for inference, `RunConfigError` for run settings) so callers can catch one stage or all of
segpipe at once. `path` is the file (or the in-memory input, such as "results") the problem is in and
`field` where in it; the command-line front end turns these into flags and exit codes, the library never
speaks of flags. This module imports nothing of segpipe, so every package may use it.

>>> err = SegpipeError("a/b.xml", "object[0].bndbox.xmin", "not a number: 'abc'")
>>> str(err), err.path, err.field
("a/b.xml: object[0].bndbox.xmin: not a number: 'abc'", 'a/b.xml', 'object[0].bndbox.xmin')
>>> str(SegpipeError("run.toml", "", "unreadable"))
'run.toml: unreadable'
"""

from __future__ import annotations

import os


class SegpipeError(Exception):
    """A problem with one input, located by path and field."""

    def __init__(self, path: str | os.PathLike[str], field: str, reason: str) -> None:
        self.path = os.fspath(path)
        self.field = field
        self.reason = reason
        super().__init__(f"{self.path}: {field}: {reason}" if field else f"{self.path}: {reason}")

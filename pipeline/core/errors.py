"""The one base of every error segpipe raises about its inputs: `SegpipeError(path, field, reason)`.

Each package has its own subclass (`AnnotationError` for converters, `EvaluationError` for evaluators,
`InferenceError` for inference, `RunConfigError` for run settings) so callers can catch one stage or all of
segpipe at once. `path` is the file (or the in-memory input, such as "results") the problem is in and
`field` where in it; the command-line front end turns these into flags and exit codes, the library never
speaks of flags. The converters' and evaluators' subclasses are
defined here, so that the readers they share in segpipe.core raise them. This module imports nothing of
segpipe, so every package may use it.

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


# The converters' errors.
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


# The evaluators' errors.
class EvaluationError(SegpipeError):
    """A problem with evaluation input (ground truth, results, label maps), located by path and field.

    >>> str(EvaluationError("results.json", "results[3].score", "missing"))
    'results.json: results[3].score: missing'
    """


# What an argument error names as its path: the evaluation's options, not a file.
EVALUATION_OPTIONS = "evaluation options"


class ArgumentError(EvaluationError, ValueError):
    """An evaluation argument that cannot be used (class names, class count, ignore index). Also a
    ValueError, as Python's own argument errors are.

    >>> str(ArgumentError("ignore_index", "1 is a class index (0..2)"))
    'evaluation options: ignore_index: 1 is a class index (0..2)'
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(EVALUATION_OPTIONS, field, reason)

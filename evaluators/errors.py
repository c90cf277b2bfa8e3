"""The one exception type of the evaluators package."""

from __future__ import annotations

from segpipe.errors import SegpipeError


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

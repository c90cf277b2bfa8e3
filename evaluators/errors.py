"""The one exception type of the evaluators package."""

from __future__ import annotations

from segpipe.errors import SegpipeError


class EvaluationError(SegpipeError):
    """A problem with evaluation input (ground truth, results, label maps), located by path and field.

    >>> str(EvaluationError("results.json", "results[3].score", "missing"))
    'results.json: results[3].score: missing'
    """

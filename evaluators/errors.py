"""The one exception type of the evaluators package."""

from __future__ import annotations

import os


class EvaluationError(Exception):
    """A problem with evaluation input (ground truth, results, label maps), located by path and field.

    >>> str(EvaluationError("results.json", "results[3].score", "missing"))
    'results.json: results[3].score: missing'
    """

    def __init__(self, path: str | os.PathLike[str], field: str, reason: str) -> None:
        self.path = os.fspath(path)
        self.field = field
        self.reason = reason
        super().__init__(f"{self.path}: {field}: {reason}" if field else f"{self.path}: {reason}")

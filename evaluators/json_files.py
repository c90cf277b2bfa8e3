"""Reading the JSON inputs of the evaluators (COCO files, results lists) with errors that name the file."""

from __future__ import annotations

import os
from typing import Any

from segpipe.converters import json_depth
from segpipe.evaluators.errors import EvaluationError


def read_json_file(path: str | os.PathLike[str], *, what: str, expect: type[list[Any]] | type[dict[str, Any]] | None = None) -> Any:
    """The parsed JSON of `path`; EvaluationError when it cannot be read, is not JSON, or is not `expect`.

    >>> read_json_file("/nonexistent.json", what="results")
    Traceback (most recent call last):
    ...
    segpipe.evaluators.errors.EvaluationError: /nonexistent.json: cannot read results JSON: [Errno 2] No such file or directory: '/nonexistent.json'
    """
    try:
        with open(path, "rb") as fh:
            data = json_depth.load(fh)  # a RecursionError on deep nesting becomes a ValueError
    except (OSError, ValueError) as err:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise EvaluationError(path, "", f"cannot read {what} JSON: {err}") from err
    if expect is not None and not isinstance(data, expect):
        kind = "a JSON list" if expect is list else "a JSON object"
        raise EvaluationError(path, "", f"{what} must be {kind}, got {type(data).__name__}")
    return data

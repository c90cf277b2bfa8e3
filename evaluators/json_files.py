"""Reading the JSON inputs of the evaluators (COCO files, results lists) with errors that name the file."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from segpipe.core import json_depth
from segpipe.core.errors import EvaluationError


def _load_orjson() -> ModuleType | None:
    # parses a 60 MB results list in about 0.6x json's time; optional: the standard library parses the same data
    try:
        return importlib.import_module("orjson")
    except ImportError:  # pragma: no cover - depends on the install
        return None


_ORJSON = _load_orjson()


def read_json_file(path: str | os.PathLike[str], *, what: str, expect: type[list[Any]] | type[dict[str, Any]] | None = None) -> Any:
    """The parsed JSON of `path`; EvaluationError when it cannot be read, is not JSON, or is not `expect`.

    >>> read_json_file("/nonexistent.json", what="results")
    Traceback (most recent call last):
    ...
    segpipe.core.errors.EvaluationError: /nonexistent.json: cannot read results JSON: [Errno 2] No such file or directory: '/nonexistent.json'
    """
    try:
        with open(path, "rb") as fh:
            data = _parse(fh.read())
    except (OSError, ValueError) as err:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise EvaluationError(path, "", f"cannot read {what} JSON: {err}") from err
    if expect is not None and not isinstance(data, expect):
        kind = "a JSON list" if expect is list else "a JSON object"
        raise EvaluationError(path, "", f"{what} must be {kind}, got {type(data).__name__}")
    return data


def _parse(raw: bytes) -> Any:
    """json.loads(raw), through orjson when it is there. orjson refuses what the standard library accepts (NaN and
    Infinity literals, integers beyond 64 bits, lone surrogates, UTF-16/32 input, nesting deeper than 1024 levels):
    any refusal is parsed again by json_depth.loads, so every file reads as json reads it and every error is its
    message (deep nesting included: json_depth turns json's RecursionError into a ValueError)."""
    if _ORJSON is not None:
        try:
            return _ORJSON.loads(raw)
        except _ORJSON.JSONDecodeError:
            pass
    return json_depth.loads(raw)

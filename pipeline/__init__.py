"""segpipe: segmentation annotations to COCO, checkpoints over datasets, pycocotools-exact scores, label audit.

The Python API (each function does what the CLI command of the same name does, and returns its tables):

>>> import segpipe
>>> sorted(segpipe.__all__)
['RunResult', 'SegpipeError', 'audit', 'convert', 'evaluate_instances', 'evaluate_semantic', 'infer', 'run', 'sample']

`segpipe.run(...)` returns a `RunResult` (`.leaderboard`, the rows of leaderboard.csv best first, and
`.exit_code`); its docstring has a worked example (segpipe.api.run).

Subpackages: `segpipe.converters` (annotation formats in, COCO out), `segpipe.evaluators` (metrics and the
label audit on in-memory data), `segpipe.inference` (models, checkpoints, the batched engine),
`segpipe.tasks` and `segpipe.runner` (the cached Luigi pipeline), `segpipe.cache` (fingerprints and
completion markers), `segpipe.reports` (tables and HTML pages), `segpipe.cli` (the `segpipe` command) and
`segpipe.demo` (the embedded sample and demo checkpoints).
"""

from __future__ import annotations

from typing import Any

from segpipe.core.errors import SegpipeError

__all__ = ["RunResult", "SegpipeError", "audit", "convert", "evaluate_instances", "evaluate_semantic", "infer",
           "run", "sample"]
_API = frozenset(__all__) - {"SegpipeError"}


def __getattr__(name: str) -> Any:
    # PEP 562: the API module (and through it pandas, torch...) is imported on first use only, so that
    # `segpipe --help` and the converters stay cheap to start.
    if name in _API:
        from segpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'segpipe' has no attribute {name!r}")

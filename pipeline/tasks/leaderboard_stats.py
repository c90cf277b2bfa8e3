"""What the leaderboard adds to one number per checkpoint: bootstrap intervals, the best checkpoint, and the
comparison of the best against the previous best.

Every checkpoint's headline metrics are recomputed on the same bootstrap draws of the images (seeded), from
the per-image statistics beside its report (instance match records, per-image confusion matrices), so a checkpoint's
interval and its paired difference to the best come without re-running inference or matching.

The previous best is the best of the checkpoints that come before the best one in natural order (epoch_2
before epoch_10): the record the best checkpoint beat when it appeared; when the best comes first, the
runner-up. This needs no memory of earlier runs, so a rerun gives the same files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from segpipe.core.atomic_write import atomic_write_text
from segpipe.reports.tables import write_report_dir

BEST_FILE = "best.json"
COMPARISON_DIR = "comparison"
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
HEADLINE = {"instance": ("AP", "AP50"), "semantic": ("mIoU", "mDice")}


def checkpoint_statistics(report_dir: Path) -> tuple[str, Any] | None:
    """The per-image statistics written beside a checkpoint's report (segpipe.reports.records), or None."""
    from segpipe.reports.records import read_records

    if not report_dir.is_dir():
        return None
    for evaluation in sorted(p for p in report_dir.iterdir() if p.is_dir()):
        found = read_records(evaluation)
        if found is not None:
            return found
    return None


def with_intervals(table: pd.DataFrame, *, report_dirs: Mapping[str, Path], out: Path) -> pd.DataFrame:
    """`add_intervals` with the statistics read from each checkpoint's report folder."""
    statistics = {name: found for name, d in report_dirs.items() if (found := checkpoint_statistics(d)) is not None}
    return add_intervals(table, statistics=statistics, report_dirs={n: report_dirs[n] for n in statistics}, out=out)


def _metric_fn(kind: str, records: Any) -> Any:
    from segpipe.evaluators.analysis.bootstrap import ImageRows, instance_headline, semantic_headline

    if kind == "instance":
        rows = ImageRows.of(records)
        return lambda picks: instance_headline(records, picks, rows)
    return lambda picks: semantic_headline(records[1], picks)


def _n_images(kind: str, records: Any) -> int:
    return len(records.image_ids) if kind == "instance" else len(records[0])


def add_intervals(table: pd.DataFrame, *, statistics: Mapping[str, tuple[str, Any]], report_dirs: Mapping[str, Path],
                  out: Path, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """The leaderboard with `<metric>_low/_high` per headline metric and the paired difference of the primary
    metric to the best checkpoint (`vs_best`, `vs_best_low/_high`, `significantly_worse`); writes best.json and
    the comparison folder of the best against the previous best into `out`."""
    from segpipe.evaluators.analysis.bootstrap import draw_images, interval_table, replicate_values

    ok = [str(c) for c, status in zip(table["checkpoint"], table["status"]) if status == "ok" and str(c) in statistics]
    kinds = {statistics[c][0] for c in ok}
    if len(kinds) != 1:
        return table
    kind = kinds.pop()
    metrics = HEADLINE[kind]
    sizes = {_n_images(kind, statistics[c][1]) for c in ok}
    if len(sizes) != 1:
        return table  # checkpoints scored on different image sets have no paired comparison
    draws = draw_images(sizes.pop(), replicates=replicates, seed=seed)
    values = {c: replicate_values(_metric_fn(kind, statistics[c][1]), draws, metrics=metrics) for c in ok}
    points = {c: _metric_fn(kind, statistics[c][1])(None) for c in ok}
    best = ok[0]  # the table is sorted best first
    tail = (1 - CONFIDENCE) / 2 * 100
    extra: dict[str, list[Any]] = {f"{m}_{b}": [] for m in metrics for b in ("low", "high")}
    extra |= {"vs_best": [], "vs_best_low": [], "vs_best_high": [], "significantly_worse": []}
    for name in table["checkpoint"].astype(str):
        v = values.get(name)
        for j, m in enumerate(metrics):
            lo, hi = np.percentile(v[:, j], [tail, 100 - tail]) if v is not None else (math.nan, math.nan)
            extra[f"{m}_low"].append(float(lo))
            extra[f"{m}_high"].append(float(hi))
        if v is None or name == best:
            for column in ("vs_best", "vs_best_low", "vs_best_high"):
                extra[column].append(math.nan)
            extra["significantly_worse"].append(pd.NA if v is None else False)
            continue
        d = v[:, 0] - values[best][:, 0]
        lo, hi = np.percentile(d, [tail, 100 - tail])
        extra["vs_best"].append(points[name][metrics[0]] - points[best][metrics[0]])
        extra["vs_best_low"].append(float(lo))
        extra["vs_best_high"].append(float(hi))
        extra["significantly_worse"].append(bool(hi < 0))
    table = table.assign(**extra)
    previous = _previous_best(ok, best)
    record = {"checkpoint": best, "report": f"checkpoints/{best}", "metric": metrics[0], "value": points[best][metrics[0]],
              "previous_best": previous, "previous_best_rule": "best of the checkpoints before it in natural order, else the runner-up"}
    if previous is not None:
        tables = {"intervals": interval_table(point_a=points[previous], point_b=points[best], values_a=values[previous],
                                              values_b=values[best], metrics=metrics, seed=seed, confidence=CONFIDENCE)}
        tables |= _delta_tables(kind, report_dirs[previous], report_dirs[best])
        from segpipe.evaluators.analysis.comparison import verdict

        write_report_dir(out / COMPARISON_DIR, tables, header={
            "command": "run", "A": previous, "B": best, "A_role": "previous best", "B_role": "best",
            "evaluation": "semantic" if kind == "semantic" else "instances", "replicates": replicates, "seed": seed,
            "confidence": CONFIDENCE, "verdict": verdict(tables["intervals"])})
        from segpipe.reports.compare_page import render_compare

        # rendered here, in the cache, so publishing mirrors it like every report (no gallery: OUT holds no predictions)
        render_compare(out / COMPARISON_DIR, dataset=None, predictions={})
    atomic_write_text(out / BEST_FILE, json.dumps(record, sort_keys=True, indent=1) + "\n")
    return table


def _previous_best(ok: list[str], best: str) -> str | None:
    from segpipe.reports.plots import natural_key

    before = [c for c in ok if natural_key(c) < natural_key(best)]  # `ok` is in leaderboard order: best first
    others = before or [c for c in ok if c != best]
    return others[0] if others else None


def _delta_tables(kind: str, a: Path, b: Path) -> dict[str, pd.DataFrame]:
    from segpipe.evaluators.analysis.compare import instance_image_scores, per_class_deltas, per_image_deltas
    from segpipe.reports.data import read_table

    metrics: tuple[str, ...]
    if kind == "semantic":
        a, b = a / "semantic", b / "semantic"
        key, image_key, metrics, rank = "class", "file", ("IoU", "Dice", "aAcc"), "IoU"
    else:
        a, b = next(p for p in sorted(a.iterdir()) if p.name in ("segm", "bbox")), next(p for p in sorted(b.iterdir()) if p.name in ("segm", "bbox"))
        key, image_key, metrics, rank = "category", "file_name", ("f1", "tp", "fp", "fn", "mean_iou"), "f1"
    def table(directory: Path, name: str) -> pd.DataFrame:
        found = read_table(directory, name)
        if found is None:  # every finished report writes both tables
            raise FileNotFoundError(f"{directory}: no {name} table")
        return found

    pa, pb = table(a, "per_image"), table(b, "per_image")
    if kind == "instance":
        pa, pb = instance_image_scores(pa), instance_image_scores(pb)
    return {"per_class_delta": per_class_deltas(table(a, "per_class"), table(b, "per_class"), key=key),
            "per_image_delta": per_image_deltas(pa, pb, key=image_key, metrics=metrics, rank_by=rank)}

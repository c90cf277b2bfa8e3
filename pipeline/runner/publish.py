"""Copying a run's results from the cache into OUT.

OUT/leaderboard.csv (+ .parquet, + leaderboard.html unless --no-html),
OUT/per_class_by_checkpoint.csv, OUT/checkpoints/<name>/<evaluation>/ (the evaluate reports),
OUT/conversion_report.csv and, with --audit, OUT/audit/; OUT/best.json with OUT/best/ (a copy of the best
checkpoint's reports at a path that does not change with its name) and OUT/comparison/ (the best against the
previous best, segpipe.tasks.leaderboard_stats). Only files whose bytes differ are rewritten, so
a no-op rerun writes nothing, and every write is a temporary sibling renamed into place.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from segpipe.core.atomic_write import write_bytes_if_changed
from segpipe.core.layout import CONVERSION_REPORT_FILE as REPORT_FILE_NAME
from segpipe.cache.targets import MARKER_NAME

CHECKPOINTS_DIR = "checkpoints"
AUDIT_DIR = "audit"
REPORT_SUBDIR = "report"
BEST_FILE = "best.json"
BEST_DIR = "best"
COMPARISON_DIR = "comparison"


def copy_if_changed(src: Path, dst: Path) -> bool:
    return write_bytes_if_changed(dst, src.read_bytes())


# `temporary_sibling`'s names (".<name>.tmp-<pid>-<n>[.ext]", or a digest for a long name): another run
# publishing into the same OUT is writing them right now. Only one left behind by a killed run (older than
# STALE_TEMPORARY_S) is removed.
_TEMPORARY_NAME = re.compile(r"^\..*\.tmp-\d+-\d+(\.[^.]*)?$")
STALE_TEMPORARY_S = 3600.0


def _is_live_temporary(path: Path) -> bool:
    if not _TEMPORARY_NAME.match(path.name):
        return False
    try:
        return time.time() - path.stat().st_mtime < STALE_TEMPORARY_S
    except FileNotFoundError:  # renamed into place meanwhile
        return True


def mirror_tree(src: Path, dst: Path) -> int:
    """Make `dst` hold exactly the files of `src` (marker excluded); returns how many files changed.
    Other writers' fresh temporary files are left alone: two runs may publish into one OUT at once."""
    wanted = {p.relative_to(src) for p in src.rglob("*") if p.is_file() and p.name != MARKER_NAME}
    changed = sum(copy_if_changed(src / rel, dst / rel) for rel in sorted(wanted))
    if dst.is_dir():
        for path in sorted(p for p in dst.rglob("*") if p.is_file()):
            if path.relative_to(dst) not in wanted and not _is_live_temporary(path):
                path.unlink(missing_ok=True)  # another run may have removed it first
                changed += 1
    return changed


def publish_outputs(
    *, out: Path, leaderboard_dir: Path, reports: dict[str, Path], merged_dir: Path, audit_dir: Path | None
) -> tuple[Path, int]:
    """Publish everything; returns OUT/leaderboard.csv and how many files changed."""
    changed = 0
    for path in sorted(p for p in leaderboard_dir.iterdir() if p.is_file() and p.name != MARKER_NAME):
        changed += copy_if_changed(path, out / path.name)
    checkpoints = out / CHECKPOINTS_DIR
    for name, report_dir in sorted(reports.items()):
        changed += mirror_tree(report_dir / REPORT_SUBDIR, checkpoints / name)
    if checkpoints.is_dir():  # a checkpoint gone from the run (or failed now) leaves no stale report
        for stale in sorted(p for p in checkpoints.iterdir() if p.is_dir() and p.name not in reports):
            shutil.rmtree(stale)
            changed += 1
    changed += _publish_best(out=out, leaderboard_dir=leaderboard_dir, reports=reports)
    if (merged_dir / REPORT_FILE_NAME).is_file():
        changed += copy_if_changed(merged_dir / REPORT_FILE_NAME, out / REPORT_FILE_NAME)
    if audit_dir is not None:
        changed += mirror_tree(audit_dir, out / AUDIT_DIR)
    return out / "leaderboard.csv", changed


def _publish_best(*, out: Path, leaderboard_dir: Path, reports: dict[str, Path]) -> int:
    """OUT/best/ and OUT/comparison/ mirrored from the cache; removed when this run has none (no stale best)."""
    sources: dict[str, Path] = {}
    best_file = leaderboard_dir / BEST_FILE
    if best_file.is_file():
        best = str(json.loads(best_file.read_text(encoding="utf-8")).get("checkpoint"))
        if best in reports:
            sources[BEST_DIR] = reports[best] / REPORT_SUBDIR
    elif (out / BEST_FILE).is_file():
        (out / BEST_FILE).unlink()
    if (leaderboard_dir / COMPARISON_DIR).is_dir():
        sources[COMPARISON_DIR] = leaderboard_dir / COMPARISON_DIR
    changed = 0
    for name in (BEST_DIR, COMPARISON_DIR):
        if name in sources:
            changed += mirror_tree(sources[name], out / name)
        elif (out / name).is_dir():
            shutil.rmtree(out / name)
            changed += 1
    return changed

"""What wrote an output folder: OUT/.segpipe.json names the command, the run it belongs to (a conversion's
format) and the entries of OUT it owns, and whether it finished.

Every command that writes a folder (`convert`, `infer`, `evaluate`, `compare`, `audit`) claims it first:
- a folder another command wrote (a conversion given as a report folder, predictions given as a dataset
  folder) is refused with a usage error: nothing is written or removed there;
- a folder the same command wrote before is reused, and the entries the earlier run owned that this one does
  not write are removed (a YOLO conversion into a folder that held an Oxford-IIIT Pet conversion removes that
  one's semantic/ and heads.json), so no later command reads a stale file as this run's;
- a folder written before manifests existed is recognised by its files (dataset.json, meta.json, header.json,
  findings.csv) and treated the same way.

`complete` is False while a command that writes for a long time (inference) has not finished: the readers of
predictions refuse such a folder unless told to take it partial.

This module imports nothing of segpipe but the error base and the file names, so converters may use it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from segpipe.core.errors import SegpipeError
from segpipe.core.layout import (
    CONVERSION_REPORT_FILE, DATASET_META_FILE, HEADS_FILE, INFERENCE_REPORT_FILE, INSTANCES_FILE, META_FILE,
    REPORT_HEADER_FILE, RESULTS_FILE, SEMANTIC_DIR,
)

MANIFEST_FILE = ".segpipe.json"
SHARDS_DIR = ".shards"  # segpipe.inference.outputs.SHARDS_DIR
EMBEDDED_IMAGES_DIR = "images"  # segpipe.converters.conversion_output.EMBEDDED_IMAGES_DIR

CONVERT, INFER, COMPARE, AUDIT, RUN, EXPORT = "convert", "infer", "compare", "audit", "run", "export"
EVALUATE_INSTANCES, EVALUATE_SEMANTIC = "evaluate instances", "evaluate semantic"
# What each command writes at most (a conversion's images/ only when its annotations embed the images).
OWNED: dict[str, tuple[str, ...]] = {
    CONVERT: (INSTANCES_FILE, HEADS_FILE, SEMANTIC_DIR, EMBEDDED_IMAGES_DIR, DATASET_META_FILE, CONVERSION_REPORT_FILE),
    INFER: (RESULTS_FILE, SEMANTIC_DIR, META_FILE, INFERENCE_REPORT_FILE, SHARDS_DIR),
}
# A folder written before manifests: the file that says which command wrote it, and what that command owned
# there (a legacy conversion's images/ may be the user's own images: it is never taken as owned).
LEGACY_SIGNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (DATASET_META_FILE, CONVERT, tuple(n for n in OWNED[CONVERT] if n != EMBEDDED_IMAGES_DIR)),
    (META_FILE, INFER, OWNED[INFER]),
    (SHARDS_DIR, INFER, OWNED[INFER]),
    ("findings.csv", AUDIT, ()),
    ("run_log.json", RUN, ()),
)


class OutputFolderError(SegpipeError):
    """OUT holds another command's outputs: a usage error (choose another folder), nothing was written."""


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of `folder`, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def recorded_owner(folder: Path) -> dict[str, Any] | None:
    """The manifest of `folder`, or for a folder written before manifests one inferred from its files."""
    folder = Path(folder)
    found = read_manifest(folder)
    if found is not None or not folder.is_dir():
        return found
    for sign, command, owns in LEGACY_SIGNS:
        if (folder / sign).exists():
            return {"command": command, "what": f"`segpipe {command}` (an earlier version)", "owns": list(owns), "complete": True}
    header = folder / REPORT_HEADER_FILE
    if header.is_file():
        try:
            command = str(json.loads(header.read_text(encoding="utf-8")).get("command", "evaluate"))
        except (OSError, ValueError, AttributeError):
            command = "evaluate"
        return {"command": command, "what": f"`segpipe {command}`", "owns": [], "complete": True}
    return None


def claim_output_folder(out: Path, *, command: str, what: str, owns: Sequence[str], complete: bool = True,
                        flag: str = "-o/--out", **extra: Any) -> Path:
    """Make `out` this command's: refuse a folder another command wrote, remove exactly the entries an
    earlier run of this command owned and this one does not write, then record `owns` (names directly under
    OUT) in the manifest. Returns `out`."""
    out = Path(out)
    earlier = check_output_folder(out, command=command, flag=flag)
    if earlier is not None:
        for name in sorted(set(earlier.get("owns") or ()) - set(owns)):
            _remove_owned(out, name)
    write_manifest(out, command=command, what=what, owns=owns, complete=complete, **extra)
    return out


def check_output_folder(out: Path, *, command: str, flag: str = "-o/--out") -> dict[str, Any] | None:
    """Refuse (OutputFolderError) a folder that holds another command's outputs; returns its recorded owner
    (None for a new or foreign-free folder). Writes nothing: commands call it before any work starts."""
    earlier = recorded_owner(Path(out))
    if earlier is not None and earlier["command"] != command:
        raise OutputFolderError(out, "", f"holds the outputs of {earlier.get('what') or earlier['command']}, not of "
                                f"`segpipe {command}`; give {flag} a new or empty folder (or delete that one) so that "
                                "no file of the other command is read as this one's")
    return earlier


def begin_rewrite(out: Path, *, command: str, what: str) -> set[str]:
    """For a command whose outputs are not a fixed list (an export writes one file per image): refuse a folder
    another command wrote, remove everything an earlier run of this command wrote there, and mark OUT
    unfinished. Returns the names OUT holds now (the user's own), for `finish_rewrite`."""
    claim_output_folder(out, command=command, what=what, owns=(), complete=False)
    return {p.name for p in Path(out).iterdir()}


def finish_rewrite(out: Path, *, command: str, what: str, before: set[str]) -> None:
    """Record what this run wrote (every name under OUT that was not there before it) and that it finished."""
    owns = [p.name for p in Path(out).iterdir() if p.name not in before and p.name != MANIFEST_FILE]
    write_manifest(out, command=command, what=what, owns=owns, complete=True)


def write_manifest(out: Path, *, command: str, what: str, owns: Sequence[str], complete: bool, **extra: Any) -> None:
    from segpipe.core.atomic_write import atomic_write_text

    Path(out).mkdir(parents=True, exist_ok=True)
    data = {"command": command, "what": what, "owns": sorted(set(owns)), "complete": complete, **extra}
    atomic_write_text(Path(out) / MANIFEST_FILE, json.dumps(data, sort_keys=True, indent=1) + "\n")


def mark_complete(out: Path) -> None:
    """Record that the command writing `out` finished (its manifest, if it has one)."""
    found = read_manifest(out)
    if found is not None and found.get("complete") is not True:
        write_manifest(out, **{**found, "complete": True})


def _remove_owned(out: Path, name: str) -> None:
    """Remove OUT/name, an entry of the earlier run's manifest: a plain name only (a manifest is a file
    anyone could edit; it never reaches outside OUT)."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or name == MANIFEST_FILE:
        return
    path = out / name
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def prediction_folder_of(path: Path) -> Path:
    """The folder `segpipe infer` wrote, given that folder, its results.json or its semantic/ folder."""
    path = Path(path)
    if path.is_file() or path.suffix.lower() == ".json" or (path.name == SEMANTIC_DIR and not (path / MANIFEST_FILE).exists()):
        return path.parent
    return path


def is_partial_prediction(path: Path) -> bool:
    """True when `path` (an infer folder, its results.json or semantic/) belongs to an inference that has not
    finished: its manifest says so, or (written before manifests) it has shards and no meta.json."""
    folder = prediction_folder_of(path)
    found = read_manifest(folder)
    if found is not None:
        return found.get("command") == INFER and found.get("complete") is not True
    return (folder / SHARDS_DIR).is_dir() and not (folder / META_FILE).is_file()


def merge_manifests(parts: Sequence[Path], out: Path) -> None:
    """The manifest of a dataset merged from conversions of its shards (`segpipe run`): the first one's, owning
    what any of them owned, so the merged folder reads as the one conversion of the whole dataset would."""
    found = [m for m in (read_manifest(p) for p in parts) if m is not None]
    if found:
        owns = sorted({str(n) for m in found for n in m.get("owns") or ()})
        write_manifest(out, **{**found[0], "owns": owns, "complete": all(m.get("complete") is True for m in found)})

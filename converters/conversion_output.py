"""The common end of every folder converter: per-file outcomes in, OUT/instances.json, dataset.json and
conversion_report.csv out, with `--strict` handled once.

Each format module supplies the per-file work (pure `parse_*` plus a read of the image header); this
module gathers the outcomes, orders the categories and writes the outputs atomically.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Mapping, Sequence

from segpipe.converters.coco import CategoryRecord, ImageRecord, assemble_coco, write_coco
from segpipe.converters.dataset_layout import INSTANCES_FILE, discard_outputs, write_dataset_meta
from segpipe.converters.errors import AnnotationError
from segpipe.converters.images import read_image_size
from segpipe.converters.report import REPORT_FILE_NAME, ConversionReport, Finding, StrictModeError, display_path, write_report


@dataclass(frozen=True)
class FileOutcome:
    """What one annotation file gave: an image record (None when the image is left out) and findings."""

    record: ImageRecord | None
    findings: tuple[Finding, ...] = ()
    names: tuple[str, ...] = ()  # labels seen, for the category order when no class list is declared


def row(file: str | os.PathLike[str], severity: str, code: str, message: str) -> Finding:
    """A finding whose file name and message survive CSV/UTF-8 (undecodable bytes escaped)."""
    return Finding(file=display_path(file), severity=severity, code=code, message=display_path(message))  # type: ignore[arg-type]


def image_size(image: str | os.PathLike[str], *, annotation: str | os.PathLike[str], declared: tuple[int, int] | None) -> tuple[tuple[int, int] | None,
    list[Finding]]:
    """(width, height) from the image header, or None with an error row; a warning when the annotation
    file declares another size (the image's wins, as for VOC)."""
    try:
        width, height = read_image_size(image)
    except AnnotationError as err:
        return None, [row(image, "error", err.code, f"{err.reason}; {os.path.basename(os.fspath(annotation))} is skipped")]
    if declared is not None and tuple(declared) != (width, height):
        hint = " (swapped: EXIF orientation?)" if tuple(declared) == (height, width) else ""
        return (width, height), [row(annotation, "warning", "size_mismatch",
            f"the annotation says {declared[0]}×{declared[1]}, the image is {width}×{height}{hint}; the image's size is used")]
    return (width, height), []


def path_inside(root: Path, rel: str) -> Path | None:
    """`root / rel` for a path read from an annotation file, or None when it would leave `root`: absolute, a
    `..` part (either slash), or a folder that resolves (symlinks followed) outside `root`.

    The file itself may be a symlink: `segpipe run` converts shard views whose images are symlinks to the
    dataset, and a link the user placed among their own files is theirs to place. A folder link out of the
    root is refused, so an annotation cannot reach, say, /etc through `link/passwd`.

    >>> path_inside(Path("/data"), "../etc/passwd") is None, path_inside(Path("/data"), "a/b.jpg")
    (True, PosixPath('/data/a/b.jpg'))
    """
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if not rel or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        return None
    path = Path(root) / rel
    return path if _folder_inside(str(path.parent), str(root)) else None


@functools.lru_cache(maxsize=4096)
def _folder_inside(folder: str, root: str) -> bool:
    """Cached per folder: resolving costs a few syscalls per path part, and a dataset has few folders."""
    try:
        return Path(folder).resolve().is_relative_to(Path(root).resolve())
    except (OSError, ValueError, RuntimeError):  # NUL byte in the name, symlink loop
        return False


def skipped_for_errors(outcome_findings: Sequence[Finding], *, path: str | os.PathLike[str]) -> Finding | None:
    """The info row saying an image is left out because some of its objects are unusable: an image kept with
    objects missing would turn correct detections into false positives (the VOC converter's rule)."""
    bad = sum(f.severity == "error" for f in outcome_findings)
    if not bad:
        return None
    return row(path, "info", "image_skipped", f"{bad} unusable object(s): the image is left out rather than kept partially annotated")


def collect(outcomes: Iterable[FileOutcome], *, report: ConversionReport) -> tuple[list[ImageRecord], set[str]]:
    records: list[ImageRecord] = []
    names: set[str] = set()
    for outcome in outcomes:
        report.extend(outcome.findings)
        names.update(outcome.names)
        if outcome.record is not None:
            records.append(outcome.record)
    return records, names


def categories_for(declared: Sequence[str] | None, names: Iterable[str]) -> list[CategoryRecord]:
    """Declared order when a class list is given, else sorted names (ids never depend on file order)."""
    ordered = list(declared) if declared is not None else sorted(set(names))
    return [CategoryRecord(name=n) for n in ordered]


def write_conversion(out: Path, *, report: ConversionReport, format: str, image_root: Path, options: Mapping[str, Any],
                     build: Callable[[], dict[str, Any] | None]) -> ConversionReport:
    """Run `build` (returns the COCO dict, or None when nothing can be converted: the report says why) and
    write OUT's files. Under --strict the first error row raises StrictModeError after the report so far is
    written and OUT's converted outputs are removed, so no earlier run's output passes for this one's."""
    out = Path(out)
    _folder_inside.cache_clear()  # folder checks are cached within one conversion only: a folder may become a link later
    try:
        coco = build()
    except StrictModeError:
        write_report(out / REPORT_FILE_NAME, report.findings)
        discard_outputs(out)
        raise
    if coco is None:
        discard_outputs(out)
    else:
        write_coco(out / INSTANCES_FILE, coco)
        report.note_written(coco)
    write_dataset_meta(out, format=format, image_root=image_root, options=dict(options))
    write_report(out / REPORT_FILE_NAME, report.findings)
    return report


def assemble(records: Sequence[ImageRecord], *, categories: Sequence[CategoryRecord]) -> dict[str, Any]:
    return assemble_coco(images=records, categories=categories)

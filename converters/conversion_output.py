"""The common end of every converter: per-file outcomes in, a `Conversion` (the COCO dict, label maps,
findings, in memory) out, with `--strict` handled once; `write_conversion_dir` is the one writer of a
converted dataset dir (OUT/instances.json, semantic/, dataset.json, conversion_report.csv).

Each format module supplies the per-file work (pure `parse_*` plus a read of the image header) as a
`*_conversion` function over the files it is given; its `convert_*` is `write_conversion_dir` over it.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.coco import CategoryRecord, ImageRecord, assemble_coco, write_coco
from segpipe.core.dataset_layout import (
    HEADS_FILE, INSTANCES_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR, discard_outputs, remove_stale_semantic_maps, write_dataset_meta,
)
from segpipe.core.errors import AnnotationError
from segpipe.core.images import read_image_size
from segpipe.converters.report import REPORT_FILE_NAME, ConversionReport, Finding, StrictModeError, display_path, write_report

# Where images embedded in annotation files (LabelMe's imageData) are written: OUT/images/<file_name>.
EMBEDDED_IMAGES_DIR = "images"


@dataclass(frozen=True)
class FileOutcome:
    """What one annotation file gave: an image record (None when the image is left out) and findings."""

    record: ImageRecord | None
    findings: tuple[Finding, ...] = ()
    names: tuple[str, ...] = ()  # labels seen, for the category order when no class list is declared


def row(file: str | os.PathLike[str], severity: str, code: str, message: str) -> Finding:
    """A finding whose file name and message survive CSV/UTF-8 (undecodable bytes escaped)."""
    return Finding(file=display_path(file), severity=severity, code=code, message=display_path(message))  # type: ignore[arg-type]


def image_size(image: str | os.PathLike[str], *, annotation: str | os.PathLike[str], declared: tuple[int, int] | None,
               data: bytes | None = None) -> tuple[tuple[int, int] | None, list[Finding]]:
    """(width, height) from the image header (of `data` when the image is held in memory), or None with an
    error row; a warning when the annotation file declares another size (the image's wins, as for VOC)."""
    try:
        width, height = read_image_size(image, data=data)
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

    The file itself may be a symlink: a link the user placed among their own files is theirs to place
    (datasets are often symlink farms into a shared image store). A folder link out of the root is refused,
    so an annotation cannot reach, say, /etc through `link/passwd`.

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


@dataclass
class ConversionOutputs:
    """What a conversion produces besides instances.json, held in memory until a writer puts it in OUT."""

    label_maps: dict[str, bytes] = field(default_factory=dict)  # "<stem>.png" -> single-channel PNG bytes
    semantic_classes: tuple[str, ...] | None = None  # semantic/classes.txt, in index order
    heads: dict[str, Any] | None = None  # heads.json (Oxford-IIIT Pet head boxes)
    images: dict[str, bytes] = field(default_factory=dict)  # images the annotations embed, by file_name under OUT/images/
    # Set by a writer (see `streamed_label_maps`): label maps go to it as they are made instead of into
    # `label_maps`, so a large dataset's maps are never all in memory and their writes overlap the work.
    stream: Callable[[str, bytes], None] | None = None
    streamed: set[str] = field(default_factory=set)

    def add_label_map(self, name: str, data: bytes) -> None:
        if self.stream is None:
            self.label_maps[name] = data
        else:
            self.stream(name, data)
            self.streamed.add(name)

    def label_map_names(self) -> set[str]:
        return set(self.label_maps) | self.streamed


@contextmanager
def streamed_label_maps(out: Path) -> Iterator[ConversionOutputs]:
    """Outputs whose label maps are written to OUT/semantic/ as the conversion makes them, so a large
    dataset's maps are never all in memory. Each map is renamed into place (a kill never leaves half a map)
    but not fsynced one by one: a flush per map was a third of a trimap conversion's time
    (benchmarks/convert_trimap.py). A map lost to a power cut is caught later: `segpipe run` checks every
    small output's sha256 against its completion marker before trusting a cached conversion."""
    from segpipe.core.out_manifest import CONVERT, check_output_folder

    check_output_folder(Path(out), command=CONVERT)  # before a map lands in another command's semantic/
    semantic = Path(out) / SEMANTIC_DIR
    made: list[bool] = []

    def write(name: str, data: bytes) -> None:
        if not made:
            semantic.mkdir(parents=True, exist_ok=True)
            made.append(True)
        atomic_write_bytes(semantic / name, data, durable=False)  # our own output failing to write is not bad input: it raises

    yield ConversionOutputs(stream=write)


@dataclass(frozen=True)
class Conversion:
    """One conversion, in memory: the COCO dict (None when nothing could be converted: the findings say
    why), the label maps and other outputs, the findings (conversion report rows) and dataset.json's
    content. `aborted` is set when `strict` stopped at the first error row: the findings are those so far,
    and nothing else of it is to be written."""

    format: str
    image_root: Path | None  # None: the embedded images, written under OUT/images/
    options: dict[str, Any]
    coco: dict[str, Any] | None
    findings: tuple[Finding, ...]
    outputs: ConversionOutputs = field(default_factory=ConversionOutputs)
    aborted: StrictModeError | None = None

    def report(self) -> ConversionReport:
        return ConversionReport(findings=list(self.findings))


def run_conversion(*, report: ConversionReport, format: str, image_root: Path | None, options: Mapping[str, Any],
                   build: Callable[[ConversionOutputs], dict[str, Any] | None], outputs: ConversionOutputs | None = None) -> Conversion:
    """Run `build` (fills the outputs, returns the COCO dict or None) into a Conversion; a --strict stop
    becomes `aborted`, so a caller holding several conversions decides what to do with it. `outputs`: where
    label maps go (in memory by default)."""
    _folder_inside.cache_clear()  # folder checks are cached within one conversion only: a folder may become a link later
    outputs = ConversionOutputs() if outputs is None else outputs
    try:
        coco = build(outputs)
    except StrictModeError as stop:
        return Conversion(format=format, image_root=image_root, options=dict(options), coco=None, findings=tuple(report.findings), aborted=stop)
    return Conversion(format=format, image_root=image_root, options=dict(options), coco=coco, findings=tuple(report.findings), outputs=outputs)


def write_conversion_dir(out: Path, conversion: Conversion) -> ConversionReport:
    """Write a Conversion as a converted dataset dir: instances.json, heads.json, semantic/ (stale maps of an
    earlier run removed), images/, dataset.json, conversion_report.csv. An aborted (--strict) conversion
    writes its report so far, removes OUT's converted outputs so that no earlier run's output passes for
    this one's, and raises its StrictModeError."""
    from segpipe.core.layout import DATASET_META_FILE
    from segpipe.core.out_manifest import CONVERT, claim_output_folder

    out = Path(out)
    what = f"a {conversion.format} conversion (`segpipe convert {conversion.format}`)"
    outputs = conversion.outputs
    if conversion.aborted is not None:
        claim_output_folder(out, command=CONVERT, what=what, owns=(REPORT_FILE_NAME, DATASET_META_FILE), complete=False)
        write_report(out / REPORT_FILE_NAME, conversion.findings)
        discard_outputs(out)
        raise conversion.aborted
    # What this conversion writes; whatever an earlier conversion into OUT owned beyond it (an Oxford-IIIT Pet
    # conversion's semantic/ and heads.json under a YOLO one) is removed: `evaluate semantic --gt OUT` would
    # score those stale maps.
    owns = [REPORT_FILE_NAME, DATASET_META_FILE]
    if conversion.coco is not None:
        owns.append(INSTANCES_FILE)
        if outputs.heads is not None:
            owns.append(HEADS_FILE)
    if outputs.semantic_classes is not None or outputs.streamed:
        owns.append(SEMANTIC_DIR)
    if outputs.images:
        owns.append(EMBEDDED_IMAGES_DIR)
    claim_output_folder(out, command=CONVERT, what=what, owns=owns)
    for name, data in sorted(outputs.images.items()):
        atomic_write_bytes(out / EMBEDDED_IMAGES_DIR / name, data)
    if outputs.semantic_classes is not None:
        semantic = out / SEMANTIC_DIR
        semantic.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(outputs.label_maps.items()):  # not fsynced one by one: see streamed_label_maps
            atomic_write_bytes(semantic / name, data, durable=False)
        remove_stale_semantic_maps(semantic, keep=outputs.label_map_names())
        atomic_write_text(semantic / SEMANTIC_CLASSES_FILE, "".join(f"{c}\n" for c in outputs.semantic_classes))
    if conversion.coco is None:
        discard_outputs(out)
    else:
        write_coco(out / INSTANCES_FILE, conversion.coco)
        if outputs.heads is not None:
            write_coco(out / HEADS_FILE, outputs.heads)
    image_root = out / EMBEDDED_IMAGES_DIR if conversion.image_root is None else conversion.image_root
    write_dataset_meta(out, format=conversion.format, image_root=image_root, options=conversion.options)
    write_report(out / REPORT_FILE_NAME, conversion.findings)
    report = conversion.report()
    if conversion.coco is not None:
        report.note_written(conversion.coco)
    return report


def assemble(records: Sequence[ImageRecord], *, categories: Sequence[CategoryRecord]) -> dict[str, Any]:
    return assemble_coco(images=records, categories=categories)

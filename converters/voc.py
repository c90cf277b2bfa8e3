"""LabelImg / Pascal VOC XML folders -> COCO (`segpipe convert voc`).

    SRC/**/<stem>.xml  +  the image <stem>.<any image extension, any case>
        beside the XML (no --images; image_root = SRC), or anywhere under --images (image_root = --images,
        preferring the image whose folder mirrors the XML's folder under SRC)

The XML's `<filename>`, `<folder>` and `<path>` are never used to open anything: `<path>` is the
annotator's absolute path on another machine, and `<filename>` may hold `../` (path traversal) or
simply name another image (mmdetection's test data has 000001.xml saying 000002.jpg). A disagreeing
`<filename>` is a warning row; the image is always the one named like the XML.
"""

from __future__ import annotations

import gc
import os
import posixpath
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from segpipe.converters.coco import AnnotationRecord, CategoryRecord, ImageRecord, assemble_coco
from segpipe.converters.conversion_output import Conversion, ConversionOutputs, run_conversion, write_conversion_dir
from segpipe.core.errors import AnnotationError, OptionError
from segpipe.core.images import NON_UTF8_REASON, is_hidden_name, is_image_name, is_utf8_name, read_image_size, read_input_bytes
from segpipe.converters.input_files import InputFiles, input_files
from segpipe.converters.report import ConversionReport, Finding, Severity, display_path
from segpipe.converters.shapes import box_polygon
from segpipe.converters.voc_parse import VocDocument, VocObject, check_filename, check_size, parse_voc_xml, voc_objects_to_annotations

__all__ = [
    "VocDocument", "VocObject", "parse_voc_xml", "voc_objects_to_annotations", "read_classes_file",
    "check_filename", "check_size", "match_images", "ignore_difficult_boxes", "convert_voc", "voc_conversion",
]

VOC_FORMAT = "voc"
XML_EXTENSION = ".xml"
# Below this many XMLs a process pool costs more to start than it saves.
PARALLEL_MIN_FILES = 1000
# `difficult` boxes count as objects unless the user asks otherwise; `ignore` writes them as
# COCOeval ignore regions (iscrowd 1): neither a hit nor a miss, and detections on them are no false positive.
DIFFICULT_POLICIES: tuple[str, ...] = ("count", "ignore")
ISCROWD_IGNORE_REGION = 1


def read_classes_file(path: str | os.PathLike[str]) -> list[str]:
    """LabelImg's `classes.txt` / `predefined_classes.txt`: one name per line, blank lines skipped.

    Raises AnnotationError for an unreadable file, a file with no names, or a name listed twice.
    """
    try:
        text = read_input_bytes(path).decode("utf-8-sig")
    except AnnotationError as err:
        raise AnnotationError(path, "", f"cannot read the classes file: {err.reason}", code="invalid_classes") from err
    except UnicodeDecodeError as err:
        raise AnnotationError(path, "", f"cannot read the classes file: {err}", code="invalid_classes") from err
    names: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in first_line:
            raise AnnotationError(path, f"line {number}", f"class {name!r} listed twice (first on line {first_line[name]})", code="invalid_classes")
        first_line[name] = number
        names.append(name)
    if not names:
        raise AnnotationError(path, "", "no class names in the classes file", code="invalid_classes")
    return names


def ignore_difficult_boxes(records: Sequence[AnnotationRecord]) -> list[AnnotationRecord]:
    """The records with every `difficult` box turned into an ignore region (iscrowd 1); new records, the
    input is not changed."""
    return [replace(r, iscrowd=ISCROWD_IGNORE_REGION) if r.attributes.get("difficult") else r for r in records]


def _row(*, file: str, severity: Severity, code: str, message: str) -> Finding:
    """A finding whose message may quote file names: undecodable bytes are escaped, as in `file`."""
    return Finding(file=display_path(file), severity=severity, code=code, message=display_path(message))


def _escaped(finding: Finding) -> Finding:
    return _row(file=finding.file, severity=finding.severity, code=finding.code, message=finding.message)


def _split(rel: str) -> tuple[str, str]:
    """'a/b/x.jpg' -> ('a/b', 'x')."""
    parent, name = posixpath.split(rel)
    return parent, posixpath.splitext(name)[0]


def match_images(*, xmls: Sequence[str], images: Sequence[str], beside: bool, src: Path, image_root: Path) -> tuple[dict[str, str | None], list[Finding]]:
    """Pair XMLs with images by stem (relative POSIX paths in, no disk access).

    Returns {xml: image or None (missing)} for the XMLs to convert, and the findings: several images
    for one stem (warning, the first in sorted order wins), two XMLs for one image (error, the later
    XML in sorted order is skipped), images with no XML (`unannotated`, left out).
    """
    by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rel in images:
        parent, stem = _split(rel)
        by_key[(parent if beside else "", stem)].append(rel)
    image_of: dict[str, str | None] = {}
    owner: dict[str, str] = {}
    claimed: set[str] = set()
    findings: list[Finding] = []
    for xml in sorted(xmls):
        parent, stem = _split(xml)
        candidates = sorted(by_key.get((parent if beside else "", stem), ()))
        pool = [c for c in candidates if posixpath.dirname(c) == parent] or candidates
        claimed.update(pool)
        if not pool:
            image_of[xml] = None
            continue
        chosen = pool[0]
        if len(pool) > 1:
            others = ", ".join(pool[1:])
            findings.append(_row(file=str(src / xml), severity="warning", code="duplicate_stem",
                message=f"several images named {stem}.*: {chosen}, {others}; using {chosen}"))
        if chosen in owner:
            findings.append(_row(file=str(src / xml), severity="error", code="duplicate_annotation",
                message=f"image {chosen} is already annotated by {owner[chosen]}; this XML is skipped"))
            continue
        owner[chosen] = xml
        image_of[xml] = chosen
    for rel in sorted(images):
        if rel not in claimed:
            findings.append(_row(file=str(image_root / rel), severity="warning", code="unannotated",
                message="image has no XML annotation; left out of instances.json"))
    return image_of, findings


def _walk_files(root: Path, *, keep: Callable[[str], bool], files: InputFiles) -> list[str]:
    """Relative POSIX paths of the files under `root` (among `files` when listed) whose name passes `keep`, sorted."""
    if files.listed:
        return sorted(p.relative_to(root).as_posix() for p in files.walk(root) if keep(p.name))
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden_name(d))  # as segpipe.core.images.walk_input_files
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else Path(rel_dir).as_posix() + "/"
        found.extend(prefix + name for name in filenames if keep(name) and not is_hidden_name(name))
    return sorted(found)


def _is_xml_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() == XML_EXTENSION


@dataclass(frozen=True)
class _Job:
    xml: str  # path to open
    image: str | None  # path to open; None when no image was found
    file_name: str | None  # COCO file_name, relative to the image root
    one_based: bool
    class_names: tuple[str, ...] | None
    where: str  # where the image was looked for, for the missing-image message
    ignore_difficult: bool = False
    size_from_xml: bool = False  # a missing image is converted with the XML's <size> (box-only datasets)
    rectangle_segmentation: bool = False
    stem_path: str = ""  # the XML's path under SRC without extension: the file_name of a missing image


@dataclass(frozen=True)
class _Outcome:
    record: ImageRecord | None
    findings: tuple[Finding, ...]
    names: tuple[str, ...]


def _category_checker(class_names: tuple[str, ...] | None) -> Callable[[str], str]:
    if class_names is None:
        return lambda name: name
    allowed = frozenset(class_names)

    def category_of(name: str) -> str:
        if name not in allowed:
            raise AnnotationError("declared classes", "name", f"label {name!r} is not in the classes file")
        return name

    return category_of


def _error(path: str, code: str, message: str) -> Finding:
    return _row(file=path, severity="error", code=code, message=message)


def _convert_one(job: _Job) -> _Outcome:
    """Read one XML and its image header; the unit of work of the process pool."""
    xml_path = job.xml
    try:
        data = read_input_bytes(xml_path)  # regular files under the size limit only
    except AnnotationError as err:
        return _Outcome(None, (_error(xml_path, "unreadable_xml" if err.code == "unreadable_file" else err.code, err.reason),), ())
    try:
        doc = parse_voc_xml(data, path=xml_path)
    except AnnotationError as err:
        return _Outcome(None, (_error(xml_path, err.code, f"{err.field}: {err.reason}" if err.field else err.reason),), ())
    findings: list[Finding] = list(doc.findings)
    names = tuple(sorted({o.name for o in doc.objects if not o.problem}))
    category_of = _category_checker(job.class_names)
    width_height: tuple[int, int] | None = None
    file_name = job.file_name
    if job.image is None and job.size_from_xml and doc.size is not None:
        width_height = doc.size[0], doc.size[1]
        file_name = job.stem_path + _image_extension(doc.filename)
        findings.append(_row(file=xml_path, severity="warning", code="size_from_xml",
            message=f"no image {job.where}: size {width_height[0]}×{width_height[1]} taken from <size>, file_name {file_name} (--size-from-xml)"))
    elif job.image is None:
        hint = " and no <size> to take the size from" if job.size_from_xml else ""
        findings.append(_error(xml_path, "missing_image", f"no image named {_split(xml_path)[1]}.<image extension> {job.where}{hint}; the XML is skipped"))
    else:
        try:
            width_height = read_image_size(job.image)
        except AnnotationError as err:
            findings.append(_error(job.image, err.code, f"{err.reason}; {posixpath.basename(xml_path)} is skipped"))
    if width_height is None:
        findings.extend(map(_escaped, check_filename(doc, image_name=None, path=xml_path)))
        # Still check the boxes against the XML's own <size>, so every problem of the file is located now.
        if doc.size is not None:
            findings.extend(voc_objects_to_annotations(doc, width=doc.size[0], height=doc.size[1], one_based=job.one_based, path=xml_path,
                category_of=category_of)[1])
        return _Outcome(None, tuple(findings), names)
    width, height = width_height
    findings.extend(check_size(doc, width=width, height=height, path=xml_path))
    findings.extend(map(_escaped, check_filename(doc, image_name=posixpath.basename(job.image or file_name or ""), path=xml_path)))
    records, box_findings = voc_objects_to_annotations(doc, width=width, height=height, one_based=job.one_based, path=xml_path, category_of=category_of)
    findings.extend(box_findings)
    bad = sum(f.severity == "error" for f in box_findings)
    if bad:
        # One bad box drops the whole image, not just the box: an image kept with some of its objects
        # missing turns correct detections of those objects into false positives and lowers mAP for
        # the model, not the labels. Leaving it out costs only that image.
        findings.append(_row(file=xml_path, severity="info", code="image_skipped",
            message=f"{bad} unusable object(s): the image is left out rather than kept partially annotated"))
        return _Outcome(None, tuple(findings), names)
    if job.ignore_difficult:
        records = ignore_difficult_boxes(records)
    if job.rectangle_segmentation:
        records = [replace(r, segmentation=[box_polygon(r.bbox)]) for r in records]
    if not records:
        findings.append(_row(file=xml_path, severity="info", code="no_objects", message="no <object>: kept as a negative image (no annotations)"))
    record = ImageRecord(file_name=file_name or "", width=width, height=height, annotations=tuple(records))
    return _Outcome(record, tuple(findings), names)


def _image_extension(filename: str | None) -> str:
    """The extension of `<filename>` when it names an image (only the extension is used, never the path), else .jpg."""
    ext = posixpath.splitext((filename or "").replace("\\", "/"))[1]
    return ext if is_image_name("x" + ext) else ".jpg"


def _pick_workers(workers: int | None, n_jobs: int) -> int:
    if workers is not None:
        return max(1, workers)
    return 1 if n_jobs < PARALLEL_MIN_FILES else max(1, os.cpu_count() or 1)


def _run_jobs(jobs: Sequence[_Job], *, workers: int) -> Iterator[_Outcome]:
    """Outcomes in job order; a process pool with large chunks when `workers` > 1."""
    if workers <= 1:
        yield from map(_convert_one, jobs)
        return
    chunksize = max(1, min(512, len(jobs) // (workers * 4)))
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(_convert_one, jobs, chunksize=chunksize)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring its state afterwards.

    A conversion allocates millions of small acyclic objects (elements, records, findings) that stay
    alive until the JSON is written; the collector rescans them again and again and frees nothing:
    about a fifth of the run time on 10,000 files. Forked workers inherit the paused state.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_coco(src: Path, image_root: Path, *, beside: bool, class_names: list[str] | None, one_based: bool, ignore_difficult: bool,
                size_from_xml: bool, rectangle_segmentation: bool,
                workers: int | None, report: ConversionReport, progress: bool, files: InputFiles) -> dict[str, Any]:
    if image_root == src:  # one walk for both
        found = _walk_files(src, keep=lambda name: _is_xml_name(name) or is_image_name(name), files=files)
        xmls = [rel for rel in found if _is_xml_name(rel)]
        images = [rel for rel in found if not _is_xml_name(rel)]
    else:
        xmls = _walk_files(src, keep=_is_xml_name, files=files)
        images = _walk_files(image_root, keep=is_image_name, files=files)
    # Names that are not UTF-8 are refused here, with a row: reports, Parquet and OpenCV downstream need UTF-8.
    report.extend(_row(file=str(src / rel), severity="error", code="non_utf8_name", message=NON_UTF8_REASON) for rel in xmls if not is_utf8_name(rel))
    report.extend(_row(file=str(image_root / rel), severity="error", code="non_utf8_name", message=NON_UTF8_REASON) for rel in images if not is_utf8_name(rel))
    xmls, images = [r for r in xmls if is_utf8_name(r)], [r for r in images if is_utf8_name(r)]
    image_of, match_findings = match_images(xmls=xmls, images=images, beside=beside, src=src, image_root=image_root)
    report.extend(match_findings)
    where = "beside the XML" if beside else f"under {image_root}"
    jobs = [
        _Job(xml=os.path.join(src, xml), image=None if img is None else os.path.join(image_root, img), file_name=img, one_based=one_based,
             class_names=None if class_names is None else tuple(class_names), where=where, ignore_difficult=ignore_difficult,
             size_from_xml=size_from_xml, rectangle_segmentation=rectangle_segmentation, stem_path=posixpath.splitext(xml)[0])
        for xml, img in sorted(image_of.items())
    ]
    records: list[ImageRecord] = []
    names: set[str] = set()
    outcomes = _run_jobs(jobs, workers=_pick_workers(workers, len(jobs)))
    if progress:
        from tqdm import tqdm

        outcomes = iter(tqdm(outcomes, total=len(jobs), desc="convert voc", unit="xml", disable=None))
    try:
        for outcome in outcomes:
            report.extend(outcome.findings)
            names.update(outcome.names)
            if outcome.record is not None:
                records.append(outcome.record)
    finally:
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()
    # Without a classes file, names come from every readable object, including those of images left
    # out: fixing one broken file must not renumber the categories of the whole dataset.
    ordered = class_names if class_names is not None else sorted(names)
    return assemble_coco(images=records, categories=[CategoryRecord(name=n) for n in ordered])


def convert_voc(
    src: Path,
    out: Path,
    *,
    images: Path | None = None,
    classes: Path | None = None,
    one_based: bool = False,
    difficult: str = "count",
    strict: bool = False,
    workers: int | None = None,
    progress: bool = False,
    size_from_xml: bool = False,
    rectangle_segmentation: bool = False,
) -> ConversionReport:
    """Convert every `*.xml` under `src` to `out/instances.json` (+ dataset.json, conversion_report.csv).

    `difficult`: `count` keeps difficult boxes as objects, `ignore` writes them with iscrowd 1 (COCOeval
    ignore regions). `size_from_xml`: an XML whose image is absent is converted with its `<size>` (warning row;
    file_name = the XML's path with the extension of `<filename>`), as box-only datasets need.
    `rectangle_segmentation`: every box also gets its rectangle as a polygon `segmentation`. `workers`: processes reading XMLs and image
    headers (None: all cores from 1,000 files up, else 1).
    `progress`: a tqdm bar on stderr (shown only on a terminal). Raises AnnotationError before
    converting anything when `src`/`images` is not a directory or the classes file is unusable (a
    usage error), and StrictModeError under `strict` after writing the report so far and removing OUT's
    converted outputs (instances.json, heads.json, semantic maps) so that none is mistaken for this run's.
    """
    conversion = voc_conversion(src, images=images, classes=classes, one_based=one_based, difficult=difficult, strict=strict, workers=workers,
                                progress=progress, size_from_xml=size_from_xml, rectangle_segmentation=rectangle_segmentation)
    return write_conversion_dir(Path(out), conversion)


def voc_conversion(
    src: Path,
    *,
    files: Iterable[str | os.PathLike[str]] | None = None,
    images: Path | None = None,
    classes: Path | None = None,
    one_based: bool = False,
    difficult: str = "count",
    strict: bool = False,
    workers: int | None = None,
    progress: bool = False,
    size_from_xml: bool = False,
    rectangle_segmentation: bool = False,
) -> Conversion:
    """The XMLs under `src` and their images (only `files` of them when they are listed) in memory: COCO dict
    and findings. The options are convert_voc's."""
    if difficult not in DIFFICULT_POLICIES:
        raise OptionError("difficult", f"must be one of {DIFFICULT_POLICIES}, got {difficult!r}")
    src, listing = Path(src), input_files(files)
    image_root = Path(images) if images is not None else src
    for field, folder in (("", src), ("images", image_root)):
        if not folder.is_dir():
            raise AnnotationError(folder, field, f"{'the image folder' if field else 'the source'} is not a directory", code="missing_source")
    class_names = read_classes_file(classes) if classes is not None else None
    report = ConversionReport(strict=strict)

    def build(outputs: ConversionOutputs) -> dict[str, Any]:
        with _gc_paused():
            return _build_coco(src, image_root, beside=images is None, class_names=class_names, one_based=one_based,
                               ignore_difficult=difficult == "ignore", size_from_xml=size_from_xml,
                               rectangle_segmentation=rectangle_segmentation, workers=workers, report=report, progress=progress, files=listing)

    options = {"source": str(src.resolve()), "classes": None if classes is None else str(Path(classes).resolve()),
               "one_based": one_based, "difficult": difficult,
               "size_from_xml": size_from_xml, "rectangle_segmentation": rectangle_segmentation}
    return run_conversion(report=report, format=VOC_FORMAT, image_root=image_root, options=options, build=build)


"""Oxford-IIIT-Pet-style trimaps to COCO instance masks and semantic label maps.

Trimap values: 1 pet, 2 background, 3 border (https://www.robots.ox.ac.uk/~vgg/data/pets/). The border policy decides what
border pixels become: `ignore` (255 in the semantic map, not part of the pet mask), `foreground` or
`background`. Anything outside {1, 2, 3} is bad input (tensorflow-datasets' fake test trimaps, for one, are RGBA and all 0).
Decoding and encoding run per image in a process pool; the main process only assembles the COCO file.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from segpipe.converters.coco import AnnotationRecord, ImageRecord, assemble_coco, mask_annotation
from segpipe.converters.conversion_output import Conversion, ConversionOutputs, run_conversion, streamed_label_maps, write_conversion_dir
from segpipe.core.errors import AnnotationError, OptionError
from segpipe.core.images import NON_UTF8_REASON, check_pixel_count, is_utf8_name, read_image_header, read_input_bytes
from segpipe.converters.input_files import InputFiles, input_files
from segpipe.converters.pet_categories import CATEGORY_LEVELS, PetCategories, pet_categories  # noqa: F401 (CATEGORY_LEVELS: re-exported for callers of segpipe.converters.trimap)
from segpipe.core.pet_list import parse_pet_list_lines
from segpipe.converters.report import ConversionReport, Finding
from segpipe.core.layout import IGNORE_INDEX

TRIMAP_PET = 1
TRIMAP_BACKGROUND = 2
TRIMAP_BORDER = 3
BORDER_POLICIES: tuple[str, ...] = ("ignore", "foreground", "background")
SEMANTIC_CLASSES: tuple[str, ...] = ("background", "pet")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE, _PNG_GRAY = 3, 0
# Below this many images a pool costs more to start (forkserver + importing cv2/pycocotools, ~0.3-1 s)
# than it saves (~1-2 ms per image per extra core); measured with benchmarks/convert_trimap.py.
MIN_IMAGES_FOR_POOL = 400


def _lut(border: str, *, pet_only: bool) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    lut[TRIMAP_PET] = 1
    lut[TRIMAP_BORDER] = {"ignore": 0 if pet_only else IGNORE_INDEX, "foreground": 1, "background": 0}[border]
    return lut


_SEMANTIC_LUTS = {b: _lut(b, pet_only=False) for b in BORDER_POLICIES}
_PET_LUTS = {b: _lut(b, pet_only=True) for b in BORDER_POLICIES}


def parse_trimap(trimap: np.ndarray, *, border: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Trimap (HxW integers) -> (semantic uint8 map with 0/1/255, bool pet mask) under the border policy.

    The pet mask is Fortran-ordered so that RLE encoding needs no copy.

    >>> sem, pet = parse_trimap(np.array([[1, 2, 3]], dtype=np.uint8), border="ignore", path="t.png")
    >>> sem.tolist(), pet.tolist()
    ([[1, 0, 255]], [[True, False, False]])
    """
    if border not in BORDER_POLICIES:
        raise OptionError("border", f"must be one of {BORDER_POLICIES}, got {border!r}")
    if trimap.ndim != 2 or trimap.size == 0:
        raise AnnotationError(path, "channels", f"expected a single-channel trimap, got shape {trimap.shape}", code="bad_trimap_channels")
    if trimap.dtype.kind not in "ui":
        raise AnnotationError(path, "dtype", f"expected integer pixels, got {trimap.dtype}", code="bad_trimap_values")
    # min/max is a cheap vectorised check; the per-value census runs only for the error message.
    if int(trimap.min()) < TRIMAP_PET or int(trimap.max()) > TRIMAP_BORDER:
        values, counts = np.unique(trimap, return_counts=True)
        shown = ", ".join(f"{v} ({c} px)" for v, c in zip(values.tolist(), counts.tolist()) if not TRIMAP_PET <= v <= TRIMAP_BORDER)
        raise AnnotationError(path, "pixels", f"values outside {{1 pet, 2 background, 3 border}}: {shown}", code="bad_trimap_values")
    small = trimap if trimap.dtype == np.uint8 else trimap.astype(np.uint8)
    semantic = cv2.LUT(small, _SEMANTIC_LUTS[border])
    # The LUT over the transposed trimap is a C-ordered (W, H) array whose transpose is the F-contiguous
    # (H, W) mask pycocotools wants, with 0/1 bytes: viewed as bool without a copy.
    pet = cv2.LUT(cv2.transpose(small), _PET_LUTS[border]).T.view(bool)
    return semantic, pet


def decode_trimap(data: bytes, *, path: str) -> np.ndarray:
    """PNG bytes -> the stored values, unconverted (multi-channel PNGs stay HxWxC, for `parse_trimap` to
    reject). Palette PNGs give their indices; 1/2/4-bit grey PNGs, which decoders stretch to 0..255, are
    scaled back. Raises AnnotationError for non-PNG or corrupt data."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 33:
        raise AnnotationError(path, "", "not a PNG file (bad signature or header)", code="corrupt_trimap")
    depth, color_type = data[24], data[25]
    # IHDR's width and height (big-endian, bytes 16..24): refuse a bomb before the decoder allocates it.
    check_pixel_count(path, width=int.from_bytes(data[16:20], "big"), height=int.from_bytes(data[20:24], "big"))
    try:
        if color_type == _PNG_PALETTE:
            # cv2 would expand a palette to BGR; the indices are what the annotator stored.
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                arr: np.ndarray | None = np.asarray(im)
        else:
            arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception as err:  # decoders raise a zoo of types for broken files
        raise AnnotationError(path, "", f"corrupt PNG: {err}", code="corrupt_trimap") from err
    if arr is None:
        raise AnnotationError(path, "", "corrupt or truncated PNG", code="corrupt_trimap")
    if color_type == _PNG_GRAY and depth < 8:
        arr = arr // (255 // (2**depth - 1))
    return arr


def encode_png(array: np.ndarray) -> bytes:
    """Single-channel PNG bytes, format explicit (not guessed from a file name). cv2's default PNG settings
    (RLE strategy, fastest level, no filters) are 4x faster than naming a level, which also switches
    filtering on; label maps compress well either way."""
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
    return buf.tobytes()


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (_PNG_SIGNATURE, "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))
_EXTENSION_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP"}


def sniff_image_format(head: bytes) -> str | None:
    """Format named by a file's first bytes (None when unknown).

    >>> sniff_image_format(b"GIF89a")
    'GIF'
    """
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


@dataclass(frozen=True)
class TrimapJob:
    stem: str
    trimap: Path
    image: Path
    semantic: Path
    border: str
    category: str
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TrimapResult:
    stem: str
    image: Path
    size: tuple[int, int] | None  # None: the image was skipped as an error
    annotation: AnnotationRecord | None
    findings: tuple[Finding, ...]
    semantic: Path
    semantic_png: bytes | None = None  # encoded in the worker, written by the parent's writer threads


def process_trimap(job: TrimapJob) -> TrimapResult:
    """One image: header size, trimap decode and checks, semantic PNG bytes, pet RLE. Reads, never writes;
    never raises for bad input."""
    findings: list[Finding] = []

    def skipped(err: AnnotationError) -> TrimapResult:
        findings.append(Finding(file=err.path, severity="error", code=err.code, message=f"{err.field + ': ' if err.field else ''}{err.reason}"))
        return TrimapResult(stem=job.stem, image=job.image, size=None, annotation=None, findings=tuple(findings), semantic=job.semantic)

    try:
        (width, height), head = read_image_header(job.image)
        found = sniff_image_format(head)
        expected = _EXTENSION_FORMAT.get(job.image.suffix.lower())
        if found and expected and found != expected:
            findings.append(Finding(file=str(job.image), severity="warning", code="content_mismatch",
                                    message=f"{found} content in a {job.image.suffix} file; read by content"))
        data = read_input_bytes(job.trimap)
        trimap = decode_trimap(data, path=str(job.trimap))
        # Say everything that is wrong at once (tfds' fake trimaps are RGBA *and* the wrong size).
        problems: list[tuple[str, str]] = []
        if trimap.ndim != 2:
            kind = {3: "RGB", 4: "RGBA"}.get(trimap.shape[2], "multi-channel")
            problems.append(("bad_trimap_channels",
                f"channels: {trimap.shape[2]} ({kind}); a trimap is a single-channel PNG with 1 pet, 2 background, 3 border"))
        if trimap.shape[:2] != (height, width):
            problems.append(("size_mismatch", f"size: trimap is {trimap.shape[1]}x{trimap.shape[0]}, image {job.image.name} is {width}x{height}"))
        if problems:
            raise AnnotationError(job.trimap, "", "; ".join(m for _, m in problems), code=problems[0][0])
        semantic, pet = parse_trimap(trimap, border=job.border, path=str(job.trimap))
    except AnnotationError as err:
        return skipped(err)
    annotation = None
    if pet.any():
        annotation = mask_annotation(category=job.category, mask=pet.view(np.uint8), attributes=dict(job.attributes))
    else:
        findings.append(Finding(file=str(job.trimap), severity="warning", code="empty_pet",
                                message=f"no pixel is pet under border policy {job.border!r}; image kept with no annotation"))
    return TrimapResult(stem=job.stem, image=job.image, size=(width, height), annotation=annotation, findings=tuple(findings),
                        semantic=job.semantic, semantic_png=encode_png(semantic))


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would only oversubscribe


def run_trimap_jobs(jobs: Sequence[TrimapJob], *, workers: int | None) -> Iterator[TrimapResult]:
    """Results in job order; a pool of `workers` processes (default: all cores) for large job lists."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) < MIN_IMAGES_FOR_POOL:
        yield from map(process_trimap, jobs)
        return
    chunk = max(1, min(64, len(jobs) // (workers * 8)))
    # forkserver: safe when the caller has threads (Luigi, torch); preloading this module in the server
    # makes each worker a cheap fork instead of a fresh import of cv2/numpy/pycocotools.
    ctx: multiprocessing.context.BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
    else:  # Windows
        ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=workers, initializer=_init_worker) as pool:
        yield from pool.imap(process_trimap, jobs, chunksize=chunk)


def collect_pairs(trimaps: Path, images: Path, *, report: ConversionReport, only: set[str] | None = None,
                  files: InputFiles | None = None) -> dict[str, tuple[Path, Path]]:
    """stem -> (trimap, image), among `files` when listed. Unmatched and ambiguous files become report rows;
    hidden files (AppleDouble `._*` forks, .DS_Store) are not inputs (segpipe.core.images.is_hidden_name)."""
    listing = files or InputFiles()
    found: dict[str, list[Path]] = {}
    for p in listing.walk(trimaps):
        if p.suffix.lower() == ".png":
            found.setdefault(p.stem, []).append(p)
    index = listing.index_images([images])
    for stem in sorted(s for s in set(found) | set(index.by_stem) if not is_utf8_name(s)):  # refused here, never a crash later
        for p in (*found.pop(stem, ()), *index.by_stem.pop(stem, ())):
            report.add(file=p, severity="error", code="non_utf8_name", message=NON_UTF8_REASON)
    pairs: dict[str, tuple[Path, Path]] = {}
    for stem in sorted(found):
        if only is not None and stem not in only:
            continue
        if len(found[stem]) > 1:
            report.add(file=found[stem][0], severity="error", code="duplicate_stem", message=f"trimaps with the same stem: {', '.join(map(str, found[stem]))}")
            continue
        candidates = list(index.candidates(stem))
        if not candidates:
            report.add(file=found[stem][0], severity="error", code="missing_image", message=f"no image named {stem}.* under {images}")
        elif len(candidates) > 1:
            report.add(file=candidates[0], severity="error", code="duplicate_stem", message=f"images with the same stem: {', '.join(map(str, candidates))}")
        else:
            pairs[stem] = (found[stem][0], candidates[0])
    for stem in sorted(set(index.by_stem) - set(found)):
        if only is None or stem in only:
            for c in index.candidates(stem):
                report.add(file=c, severity="warning", code="unannotated", message="image has no trimap; left out")
    return pairs


def convert_pairs(pairs: dict[str, tuple[Path, Path]], *, images: Path, cats: PetCategories, border: str,
                  report: ConversionReport, workers: int | None, outputs: ConversionOutputs) -> list[ImageRecord]:
    """Run the per-image work, the label maps (and class list) into `outputs`; returns the kept images."""
    if border not in BORDER_POLICIES:
        raise OptionError("border", f"must be one of {BORDER_POLICIES}, got {border!r}")
    jobs: list[TrimapJob] = []
    for stem, (trimap, image) in sorted(pairs.items()):
        breed, species = cats.breed_species(stem)
        if stem not in cats.by_stem and cats.by_stem:
            from_case = f"species {species!r} from the file name's first letter (capital: cat)" if species else "species unknown"
            report.add(file=image, severity="warning", code="not_in_list",
                       message=f"not in the list file; breed {breed!r} taken from the file name, {from_case}: add it to the list file to be sure")
        category = cats.category_of(stem)
        if category is None:
            report.add(file=image, severity="error", code="unknown_species",
                message="species unknown (not in a usable list file, and no letter starts the file name): "
                       "skipped at --categories species; add the image to list.txt")
            continue
        attributes = (("breed", breed),) + ((("species", species),) if species else ())
        jobs.append(TrimapJob(stem=stem, trimap=trimap, image=image, semantic=Path(f"{stem}.png"),
                              border=border, category=category, attributes=attributes))
    outputs.semantic_classes = SEMANTIC_CLASSES
    records: list[ImageRecord] = []
    for result in run_trimap_jobs(jobs, workers=workers):
        report.extend(result.findings)
        if result.semantic_png is not None:
            outputs.add_label_map(result.semantic.name, result.semantic_png)
        if result.size is not None:
            anns = (result.annotation,) if result.annotation is not None else ()
            records.append(ImageRecord(file_name=result.image.relative_to(images).as_posix(), width=result.size[0], height=result.size[1],
                annotations=anns))
    return records


def read_categories(list_file: Path | None, *, stems: Sequence[str], level: str, report: ConversionReport,
                    where: Path | str = "") -> PetCategories:
    """Categories from list.txt; an unreadable or malformed list is an error row and names fall back to file
    names. Without a list, an info row at `where` says so."""
    if list_file is not None:
        try:
            entries, problems = parse_pet_list_lines(_read_list_text(list_file), path=str(list_file))
            for problem in problems:  # one row per bad line; the other lines still name their images
                report.add(file=list_file, severity="error", code="bad_list", message=f"{problem.field}: {problem.reason}; line skipped")
            return pet_categories(entries, stems=stems, level=level, path=str(list_file))
        except (OSError, UnicodeDecodeError) as err:
            report.add(file=list_file, severity="error", code="bad_list", message=f"unreadable list file: {err}")
        except AnnotationError as err:
            report.add(file=list_file, severity="error", code="bad_list", message=f"{err.field}: {err.reason}; breeds taken from file names")
    else:
        report.add(file=where, severity="info", code="no_list", message="no list file: breeds from file names (sorted), species unknown")
    return pet_categories(None, stems=stems, level=level, path=str(list_file or ""))


def _read_list_text(path: Path) -> str:
    try:
        return read_input_bytes(path).decode("utf-8")
    except AnnotationError as err:  # not a regular file, or too big: reported like an unreadable list
        raise OSError(err.reason) from err


def convert_trimap(src: Path, out: Path, *, images: Path, list_file: Path | None = None, border: str = "ignore",
                   categories: str = "breed", strict: bool = False, workers: int | None = None) -> ConversionReport:
    """Trimap PNGs under `src` (matched to images under `images` by stem) -> OUT/instances.json,
    OUT/semantic/<stem>.png + classes.txt, OUT/dataset.json, OUT/conversion_report.csv. Under `strict`, the
    first error raises StrictModeError after writing the report so far and removing OUT's converted outputs."""
    with streamed_label_maps(Path(out)) as outputs:
        conversion = trimap_conversion(src, images=images, list_file=list_file, border=border, categories=categories, strict=strict,
                                       workers=workers, outputs=outputs)
    return write_conversion_dir(Path(out), conversion)


def trimap_conversion(src: Path, *, images: Path, files: Iterable[str | os.PathLike[str]] | None = None, list_file: Path | None = None,
                      border: str = "ignore", categories: str = "breed", strict: bool = False, workers: int | None = None,
                      outputs: ConversionOutputs | None = None) -> Conversion:
    """The trimaps under `src` and their images (only `files` of them when they are listed) in memory: COCO
    dict, semantic label maps and findings. `outputs`: where the label maps go (in memory by default)."""
    src, images, listing = Path(src), Path(images), input_files(files)
    report = ConversionReport(strict=strict)

    def build(outputs: ConversionOutputs) -> dict[str, Any]:
        pairs = collect_pairs(src, images, report=report, files=listing)
        cats = read_categories(list_file, stems=sorted(pairs), level=categories, report=report, where=src)
        records = convert_pairs(pairs, images=images, cats=cats, border=border, report=report, workers=workers, outputs=outputs)
        return assemble_coco(images=records, categories=cats.categories)

    return run_conversion(report=report, format="trimap", image_root=images, options={"border": border, "categories": categories}, build=build,
                          outputs=outputs)

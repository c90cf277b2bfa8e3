"""The whole Oxford-IIIT Pet layout to COCO: pet masks from the trimaps, head boxes from the XMLs.

    ROOT/images/<stem>.jpg                (also .mat files, and GIF/PNG content named .jpg: read by content)
    ROOT/annotations/trimaps/<stem>.png   1 pet, 2 background, 3 border
    ROOT/annotations/xmls/<stem>.xml      head box, <name> = species (trainval images only in the real set)
    ROOT/annotations/list.txt             Image CLASS-ID SPECIES BREED-ID, 6 '#' header lines
    ROOT/annotations/{trainval,test}.txt  the same columns, no header

instances.json and heads.json share one image list, hence the same image ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from segpipe.converters.coco import AnnotationRecord, CategoryRecord, ImageRecord, assemble_coco
from segpipe.converters.conversion_output import Conversion, ConversionOutputs, run_conversion, streamed_label_maps, write_conversion_dir
from segpipe.core.errors import AnnotationError, OptionError
from segpipe.core.images import read_input_bytes
from segpipe.converters.input_files import InputFiles, input_files
from segpipe.core.pet_list import SPECIES_NAMES, parse_split_names
from segpipe.converters.report import ConversionReport, Finding
from segpipe.converters.trimap import collect_pairs, convert_pairs, read_categories
from segpipe.converters.voc_parse import check_size, parse_voc_xml, voc_objects_to_annotations

SPLITS: tuple[str, ...] = ("trainval", "test")
HEAD_CATEGORIES: tuple[CategoryRecord, ...] = tuple(
    CategoryRecord(name=name, supercategory="animal") for _, name in sorted(SPECIES_NAMES.items())
)
# Head boxes use the pixel-corner convention of every other box here (bbox = [xmin, ymin, xmax - xmin, ...]); the Oxford XMLs
# do not say which they follow, and tfds reads them the same way (xmin / width).
HEADS_ONE_BASED = False


def _species_category(name: str) -> str:
    species = name.strip().lower()
    if species not in SPECIES_NAMES.values():
        raise KeyError(name)
    return species


def parse_head_boxes(data: bytes, *, path: str, width: int, height: int) -> tuple[list[AnnotationRecord], list[Finding]]:
    """Head boxes of one Oxford XML for a width x height image; XML/image size disagreement is a warning."""
    doc = parse_voc_xml(data, path=path)
    findings = [*doc.findings, *check_size(doc, width=width, height=height, path=path)]
    records, more = voc_objects_to_annotations(doc, width=width, height=height, one_based=HEADS_ONE_BASED, path=path,
                                               category_of=_species_category)
    return records, findings + more


def read_head_images(images: Sequence[ImageRecord], *, xmls: Path, report: ConversionReport, files: InputFiles | None = None) -> list[ImageRecord]:
    """The same images with their head boxes. Images without a usable XML (missing, unreadable, or with an
    unusable object) get `heads_annotated: false` and no head box."""
    listing = files or InputFiles()
    out: list[ImageRecord] = []
    for im in images:
        path = xmls / f"{Path(im.file_name).stem}.xml"
        annotations: list[AnnotationRecord] = []
        annotated = listing.is_file(path)
        if not annotated:
            report.add(file=path, severity="info", code="no_head_xml", message="no head-box XML for this image (the real dataset has them for trainval only)")
        else:
            try:
                annotations, findings = parse_head_boxes(read_input_bytes(path), path=str(path), width=im.width, height=im.height)
                report.extend(findings)
                bad = sum(f.severity == "error" for f in findings)
                if bad:
                    # As in segpipe.converters.voc: an image kept with some of its heads missing turns correct
                    # detections of those heads into false positives, so none of its boxes is kept.
                    report.add(file=path, severity="info", code="image_skipped",
                               message=f"{bad} unusable object(s): heads_annotated is false and no head box is kept")
                    annotations, annotated = [], False
            except OSError as err:
                report.add(file=path, severity="error", code="unreadable_xml", message=f"unreadable XML: {err}")
                annotated = False
            except AnnotationError as err:
                report.add(file=path, severity="error", code=err.code, message=f"{err.field + ': ' if err.field else ''}{err.reason}")
                annotated = False
        out.append(ImageRecord(file_name=im.file_name, width=im.width, height=im.height, annotations=tuple(annotations),
                               extra={"heads_annotated": annotated}))
    return out


def read_split(root: Path, split: str, *, report: ConversionReport) -> set[str] | None:
    """Stems of annotations/<split>.txt; None (and an error row) when it cannot be read."""
    if split not in SPLITS:
        raise OptionError("split", f"must be one of {SPLITS}, got {split!r}")
    path = root / "annotations" / f"{split}.txt"
    try:
        return set(parse_split_names(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as err:
        report.add(file=path, severity="error", code="bad_split", message=f"unreadable split file: {err}; no image kept")
        return None


def convert_oxford_pet(root: Path, out: Path, *, border: str = "ignore", categories: str = "breed", split: str | None = None,
                       strict: bool = False, workers: int | None = None) -> ConversionReport:
    """ROOT in the Oxford-IIIT Pet layout -> OUT/instances.json, heads.json, semantic/, dataset.json,
    conversion_report.csv. `split` keeps only the images listed in annotations/<split>.txt. Under `strict`, the
    first error raises StrictModeError after writing the report so far and removing OUT's converted outputs."""
    with streamed_label_maps(Path(out)) as outputs:
        conversion = oxford_pet_conversion(root, border=border, categories=categories, split=split, strict=strict, workers=workers, outputs=outputs)
    return write_conversion_dir(Path(out), conversion)


def oxford_pet_conversion(root: Path, *, files: Iterable[str | os.PathLike[str]] | None = None, border: str = "ignore", categories: str = "breed",
                          split: str | None = None, strict: bool = False, workers: int | None = None,
                          outputs: ConversionOutputs | None = None) -> Conversion:
    """The Oxford-IIIT Pet layout under `root` in memory: COCO dict, head boxes, semantic label maps and
    findings. With `files` listed, only those images are converted, and the split file's lines about other
    images are not this conversion's business (no missing-trimap row for them). `outputs`: where the label
    maps go (in memory by default)."""
    root, listing = Path(root), input_files(files)
    report = ConversionReport(strict=strict)

    def build(outputs: ConversionOutputs) -> dict[str, Any]:
        return _convert_layout(root, border=border, categories=categories, split=split, report=report, workers=workers, files=listing, outputs=outputs)

    return run_conversion(report=report, format="oxford-pet", image_root=root / "images",
                          options={"border": border, "categories": categories, "split": split}, build=build, outputs=outputs)


def _convert_layout(root: Path, *, border: str, categories: str, split: str | None, report: ConversionReport,
                    workers: int | None, files: InputFiles, outputs: ConversionOutputs) -> dict[str, Any]:
    """The COCO dict of the layout under `root`; label maps and heads.json into `outputs`."""
    images_dir, annotations = root / "images", root / "annotations"
    for needed in (images_dir, annotations / "trimaps"):
        if not needed.is_dir():
            report.add(file=needed, severity="error", code="missing_folder", message="folder of the Oxford-IIIT Pet layout is missing")
    only: set[str] | None = None
    if split is not None:
        only = read_split(root, split, report=report) or set()
        if files.listed:
            mine = {p.stem for folder in (images_dir, annotations / "trimaps", annotations / "xmls") for p in files.walk(folder)}
            only &= mine
        listed_stems = sorted(only)
    pairs = collect_pairs(annotations / "trimaps", images_dir, report=report, only=only, files=files)
    if only is not None:
        for stem in listed_stems:
            if stem not in pairs and not files.is_file(annotations / "trimaps" / f"{stem}.png"):
                report.add(file=annotations / f"{split}.txt", severity="error", code="missing_trimap", message=f"{stem}: listed in the split but has no trimap")
    list_file = annotations / "list.txt"
    cats = read_categories(list_file if files.is_file(list_file) else None, stems=sorted(pairs), level=categories, report=report,
                           where=list_file)
    records = convert_pairs(pairs, images=images_dir, cats=cats, border=border, report=report, workers=workers, outputs=outputs)
    heads = read_head_images(records, xmls=annotations / "xmls", report=report, files=files)
    outputs.heads = assemble_coco(images=heads, categories=HEAD_CATEGORIES)
    return assemble_coco(images=records, categories=cats.categories)

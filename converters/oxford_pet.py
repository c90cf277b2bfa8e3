"""The whole Oxford-IIIT Pet layout to COCO: pet masks from the trimaps, head boxes from the XMLs.

    ROOT/images/<stem>.jpg                (also .mat files, and GIF/PNG content named .jpg: read by content)
    ROOT/annotations/trimaps/<stem>.png   1 pet, 2 background, 3 border
    ROOT/annotations/xmls/<stem>.xml      head box, <name> = species (trainval images only in the real set)
    ROOT/annotations/list.txt             Image CLASS-ID SPECIES BREED-ID, 6 '#' header lines
    ROOT/annotations/{trainval,test}.txt  the same columns, no header

instances.json and heads.json share one image list, hence the same image ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from segpipe.converters.coco import AnnotationRecord, CategoryRecord, ImageRecord, assemble_coco, write_coco
from segpipe.converters.dataset_layout import HEADS_FILE, discard_outputs, write_dataset_meta
from segpipe.converters.errors import AnnotationError
from segpipe.converters.images import read_input_bytes
from segpipe.converters.pet_list import SPECIES_NAMES, parse_split_names
from segpipe.converters.report import REPORT_FILE_NAME, ConversionReport, Finding, StrictModeError, write_report
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


def read_head_images(images: Sequence[ImageRecord], *, xmls: Path, report: ConversionReport) -> list[ImageRecord]:
    """The same images with their head boxes. Images without a usable XML (missing, unreadable, or with an
    unusable object) get `heads_annotated: false` and no head box."""
    out: list[ImageRecord] = []
    for im in images:
        path = xmls / f"{Path(im.file_name).stem}.xml"
        annotations: list[AnnotationRecord] = []
        annotated = path.is_file()
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
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
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
    root, out = Path(root), Path(out)
    report = ConversionReport(strict=strict)
    try:
        _convert_layout(root, out, border=border, categories=categories, split=split, report=report, workers=workers)
    except StrictModeError:
        write_report(out / REPORT_FILE_NAME, report.findings)
        discard_outputs(out)
        raise
    write_dataset_meta(out, format="oxford-pet", image_root=root / "images",
                       options={"border": border, "categories": categories, "split": split})
    write_report(out / REPORT_FILE_NAME, report.findings)
    return report


def _convert_layout(root: Path, out: Path, *, border: str, categories: str, split: str | None, report: ConversionReport,
                    workers: int | None) -> None:
    """Write instances.json, semantic/ and heads.json of the layout under `root`."""
    images_dir, annotations = root / "images", root / "annotations"
    for needed in (images_dir, annotations / "trimaps"):
        if not needed.is_dir():
            report.add(file=needed, severity="error", code="missing_folder", message="folder of the Oxford-IIIT Pet layout is missing")
    only: set[str] | None = None
    if split is not None:
        only = read_split(root, split, report=report) or set()
        listed_stems = sorted(only)
    pairs = collect_pairs(annotations / "trimaps", images_dir, report=report, only=only)
    if only is not None:
        for stem in listed_stems:
            if stem not in pairs and not (annotations / "trimaps" / f"{stem}.png").exists():
                report.add(file=annotations / f"{split}.txt", severity="error", code="missing_trimap", message=f"{stem}: listed in the split but has no trimap")
    list_file = annotations / "list.txt"
    cats = read_categories(list_file if list_file.is_file() else None, stems=sorted(pairs), level=categories, report=report,
                           where=list_file)
    records = convert_pairs(pairs, out, images=images_dir, cats=cats, border=border, report=report, workers=workers)
    heads = read_head_images(records, xmls=annotations / "xmls", report=report)
    write_coco(out / HEADS_FILE, assemble_coco(images=heads, categories=HEAD_CATEGORIES))

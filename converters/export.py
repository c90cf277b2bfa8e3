"""COCO -> the formats people label in (`segpipe export yolo|voc|labelme|cvat DATASET -o OUT`).

Each writer is the inverse of its converter (declared once, in EXPORTERS below, with the `segpipe convert`
command that reads its output back). The source is a converted dataset dir (instances.json + dataset.json)
or any COCO json with its images. Every image is copied into OUT so that OUT is a complete dataset of the
target format; OUT/export_report.csv holds one row per thing the format could not hold or the source got
wrong (`file, severity, code, message`, as the conversion report), so nothing is dropped silently:
crowd regions (no format here has a crowd flag), holes filled by a polygon outline, overlapping masks in
VOC's one-object-per-pixel PNGs, unreadable segmentations, missing images.

Same input => byte-identical outputs: images in sorted file_name order, numbers printed by `repr` (the
shortest text that reads back as the same float), no timestamps.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.coco import read_coco
from segpipe.core.dataset_layout import DatasetDir, resolve_image_path
from segpipe.core.errors import AnnotationError
from segpipe.converters.report import ConversionReport, format_report_csv

if TYPE_CHECKING:
    import numpy as np

EXPORT_REPORT_FILE = "export_report.csv"


@dataclass(frozen=True)
class ExportObject:
    """One COCO annotation, decoded: `mask` (HxW bool) when it has a segmentation, `polygons` when that
    segmentation was polygons (written as they are, exactly, where the format takes polygons)."""

    annotation_id: int
    category: str
    bbox: tuple[float, float, float, float]
    mask: np.ndarray | None = None
    polygons: tuple[tuple[float, ...], ...] | None = None
    iscrowd: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportImage:
    image_id: int
    file_name: str  # relative POSIX path, as in the COCO file
    width: int
    height: int
    path: Path | None  # the image file; None when it is missing or its name leaves the image root
    objects: tuple[ExportObject, ...]


@dataclass(frozen=True)
class ExportSource:
    categories: tuple[str, ...]  # in category id order
    images: tuple[ExportImage, ...]  # in file_name order
    image_root: Path
    annotations_file: Path


def fmt(value: float) -> str:
    """A number as text that reads back as the same float; integral values without '.0'.

    >>> fmt(12.0), fmt(0.1 + 0.2), fmt(-0.0)
    ('12', '0.30000000000000004', '0')
    """
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


def decode_segmentation(seg: Any, *, width: int, height: int) -> tuple[np.ndarray, tuple[tuple[float, ...], ...] | None]:
    """A COCO segmentation (polygons, RLE with list counts, compressed RLE) -> (HxW bool mask, polygons or None).
    Raises ValueError for anything else."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polygons = tuple(tuple(float(v) for v in p) for p in seg)
        if not polygons or any(len(p) < 6 or len(p) % 2 or not all(math.isfinite(v) for v in p) for p in polygons):
            raise ValueError("polygons must be lists of >= 3 finite x, y pairs")
        rle = mask_utils.merge(mask_utils.frPyObjects([list(p) for p in polygons], height, width))
        return mask_utils.decode(rle).astype(bool), polygons
    if isinstance(seg, dict):
        size = list(seg.get("size", []))
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image's [{height}, {width}]")
        counts = seg.get("counts")
        if isinstance(counts, list):
            if sum(counts) != width * height:
                raise ValueError("the RLE run-lengths do not add up to the image's pixel count")
            rle = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise ValueError("RLE counts must be a list or a string")
        try:
            mask: np.ndarray = mask_utils.decode(rle).astype(bool)
        except Exception as err:  # pycocotools raises bare exceptions for corrupt strings
            raise ValueError(f"undecodable RLE: {err}") from err
        if mask.shape != (height, width) or int(np.count_nonzero(mask)) != int(mask_utils.area(rle)):
            raise ValueError("not a valid RLE of the image's size")
        return mask, None
    raise ValueError(f"expected polygons or an RLE dict, got {type(seg).__name__}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_source(dataset: str | os.PathLike[str], *, report: ConversionReport, images: Path | None = None) -> ExportSource:
    """Read a converted dataset dir or a COCO json (+ its images) for export. Records a source cannot give
    (unknown image or category, unreadable segmentation) are report rows; the rest is exported.
    Raises AnnotationError when there is no readable COCO file at all."""
    from segpipe.core.dataset_layout import coco_image_root

    dataset = Path(dataset)
    json_path = dataset if dataset.is_file() else DatasetDir(dataset).instances
    if not json_path.is_file():
        raise AnnotationError(dataset, "", "no COCO file here (give a converted dataset dir holding instances.json, or a COCO json)",
                              code="missing_source")
    try:
        coco = read_coco(json_path)
    except (OSError, ValueError) as err:
        raise AnnotationError(json_path, "", f"not a readable COCO json: {err}", code="invalid_json") from err
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise AnnotationError(json_path, "", "a COCO json needs `images`, `annotations` and `categories` lists", code="invalid_json")
    if images is not None:
        image_root = Path(images)
    elif dataset.is_file():
        image_root = coco_image_root(json_path, coco)
    else:
        image_root = DatasetDir(dataset).image_root
    where = str(json_path)
    cats: dict[int, str] = {}
    for k, c in enumerate(coco["categories"]):
        if not isinstance(c, dict) or not _positive_int(c.get("id")) or not isinstance(c.get("name"), str) or not c["name"].strip():
            report.add(file=where, severity="error", code="invalid_category", message=f"categories[{k}]: needs a positive int id and a name; skipped")
            continue
        if c["id"] in cats or c["name"] in cats.values():
            report.add(file=where, severity="error", code="duplicate_category",
                       message=f"categories[{k}]: id {c['id']} or name {c['name']!r} listed twice; skipped")
            continue
        cats[c["id"]] = c["name"]
    image_rows: dict[int, dict[str, Any]] = {}
    for k, im in enumerate(coco["images"]):
        ok = isinstance(im, dict) and _positive_int(im.get("id")) and isinstance(im.get("file_name"), str) and im["file_name"]
        if not ok or not _positive_int(im.get("width")) or not _positive_int(im.get("height")):
            report.add(file=where, severity="error", code="invalid_image", message=f"images[{k}]: needs an id, a file_name, a width and a height; skipped")
            continue
        if im["id"] in image_rows:
            report.add(file=where, severity="error", code="duplicate_image", message=f"images[{k}]: id {im['id']} listed twice; skipped")
            continue
        image_rows[im["id"]] = im
    objects: dict[int, list[ExportObject]] = {i: [] for i in image_rows}
    for k, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict):
            report.add(file=where, severity="error", code="invalid_annotation", message=f"annotations[{k}]: not an object; not exported")
            continue
        ann_id, image_id, cat = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        label = f"annotations[{k}] (id {ann_id})"
        if image_id not in image_rows or cat not in cats:
            report.add(file=where, severity="error", code="unknown_reference",
                message=f"{label}: image_id {image_id!r} or category_id {cat!r} is not in the dataset; not exported")
            continue
        im = image_rows[image_id]
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            bbox = None
        mask = polygons = None
        if ann.get("segmentation") not in (None, [], {}):
            try:
                mask, polygons = decode_segmentation(ann["segmentation"], width=im["width"], height=im["height"])
            except ValueError as err:
                report.add(file=where, severity="error", code="invalid_segmentation", message=f"{label} of {im['file_name']}: {err}; not exported")
                continue
        if bbox is None:
            if mask is None:
                report.add(file=where, severity="error", code="invalid_bbox",
                           message=f"{label} of {im['file_name']}: no usable bbox and no segmentation; not exported")
                continue
            from segpipe.converters.coco import mask_bbox

            bbox = list(mask_bbox(mask))
        attrs: dict[str, Any] = ann["attributes"] if isinstance(ann.get("attributes"), dict) else {}
        objects[image_id].append(ExportObject(annotation_id=int(ann_id) if isinstance(ann_id, int) else -1, category=cats[cat],
            bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])), mask=mask, polygons=polygons,
            iscrowd=bool(ann.get("iscrowd", 0)), attributes=attrs))
    out: list[ExportImage] = []
    for image_id, im in sorted(image_rows.items(), key=lambda kv: (kv[1]["file_name"], kv[0])):
        path = resolve_image_path(image_root, im["file_name"])
        if path is None:
            report.add(file=where, severity="error", code="image_path_outside",
                message=f"image {im['file_name']!r} leaves the image root {image_root}; not followed, not exported")
        elif not path.is_file():
            report.add(file=str(path), severity="error", code="missing_image", message=f"image of {im['file_name']!r} not found; not exported")
            path = None
        out.append(ExportImage(image_id=image_id, file_name=im["file_name"], width=im["width"], height=im["height"], path=path,
                               objects=tuple(objects[image_id])))
    return ExportSource(categories=tuple(cats[i] for i in sorted(cats)), images=tuple(out), image_root=image_root, annotations_file=json_path)


def copy_image(image: ExportImage, dest: Path) -> None:
    """The image's bytes at `dest` (not fsynced one by one: an export is rerun, not resumed)."""
    assert image.path is not None
    atomic_write_bytes(dest, image.path.read_bytes(), durable=False)


def exportable(image: ExportImage, *, report: ConversionReport, fmt_name: str) -> list[ExportObject]:
    """The objects of `image` the formats can hold: crowd regions become rows (none of the four formats has a
    crowd flag; written as objects they would turn into false negatives for every detector)."""
    kept = []
    for o in image.objects:
        if o.iscrowd:
            report.add(file=image.file_name, severity="warning", code="crowd_not_exported",
                message=f"annotation {o.annotation_id} ({o.category}) is a crowd region (iscrowd=1): {fmt_name} has no crowd flag; not written")
            continue
        kept.append(o)
    return kept


def report_unheld_attributes(source: ExportSource, *, held: frozenset[str] | None, fmt_name: str, report: ConversionReport) -> None:
    """One info row per annotation attribute the format has no place for (`held` None: every scalar one is
    written), with how many annotations carry it: said once, not per object."""
    counts: dict[str, int] = {}
    for im in source.images:
        for o in im.objects:
            for name, value in o.attributes.items():
                if (held is None and isinstance(value, (dict, list))) or (held is not None and name not in held):
                    counts[name] = counts.get(name, 0) + 1
    for name, n in sorted(counts.items()):
        report.add(file=str(source.annotations_file), severity="info", code="attribute_not_exported",
                   message=f"attribute {name!r} of {n} annotation(s): {fmt_name} has no place for it; not written")


def unique_stems(images: Sequence[ExportImage], *, report: ConversionReport, key: Callable[[str], str]) -> list[ExportImage]:
    """Images whose annotation file name (`key` of file_name) is free: the second image that would write the same
    annotation file (a.jpg and a.png in one folder) is a row, not an overwrite."""
    seen: dict[str, str] = {}
    kept = []
    for im in images:
        k = key(im.file_name)
        if k in seen:
            report.add(file=im.file_name, severity="error", code="name_collision",
                message=f"its annotation file {k} is already written for {seen[k]}; not exported")
            continue
        seen[k] = im.file_name
        kept.append(im)
    return kept


def stem_path(file_name: str, ext: str) -> str:
    """'a/b/x.jpg' -> 'a/b/x' + ext."""
    return str(PurePosixPath(file_name).with_suffix(ext))


def finish(out: Path, report: ConversionReport) -> ConversionReport:
    atomic_write_text(out / EXPORT_REPORT_FILE, format_report_csv(report.findings))
    return report


@dataclass(frozen=True)
class Exporter:
    """A writer and the `segpipe convert` command that reads its output back (its inverse)."""

    name: str
    module: str
    function: str
    reader: str  # the `segpipe convert` command line that reads OUT back, "{out}" standing for OUT
    summary: str
    held_attributes: frozenset[str] = frozenset()  # annotation attributes the format has a place for

    def write(self, dataset: Path, out: Path, **options: Any) -> ConversionReport:
        import importlib

        fn: Callable[..., ConversionReport] = getattr(importlib.import_module(self.module), self.function)
        return fn(dataset, out, **options)


EXPORTERS: Mapping[str, Exporter] = {
    e.name: e for e in (
        Exporter("yolo", "segpipe.converters.export_yolo", "export_yolo", "yolo {out}",
                 "Ultralytics layout: images/, labels/*.txt (boxes `c cx cy w h`, masks as polygons `c x y ...`), data.yaml"),
        Exporter("voc", "segpipe.converters.export_voc", "export_voc",
                 "voc {out}/Annotations --images {out}/JPEGImages --classes {out}/classes.txt (masks: "
                 "segpipe convert voc-seg {out} --classes {out}/segmentation_classes.txt)",
                 "LabelImg XML in Annotations/, JPEGImages/, classes.txt; SegmentationClass/ and SegmentationObject/ PNGs for masks",
                 frozenset({"truncated", "difficult", "occluded", "pose", "voc_object_index"})),
        Exporter("labelme", "segpipe.converters.export_labelme", "export_labelme", "labelme {out} --classes {out}/classes.txt",
                 "One LabelMe JSON beside each image: rectangles, polygons (one group per object); classes.txt",
                 frozenset({"flags", "description", "group_id"})),
        Exporter("cvat", "segpipe.converters.export_cvat", "export_cvat", "cvat {out}",
                 "CVAT for images 1.1: annotations.xml (boxes, polygons, masks as CVAT's RLE: exact) + images/"),
    )
}

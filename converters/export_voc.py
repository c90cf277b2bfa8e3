"""COCO -> Pascal VOC (`segpipe export voc`), the inverse of `segpipe convert voc` and `segpipe convert voc-seg`.

    OUT/JPEGImages/<file_name>               the images, copied
    OUT/Annotations/<file_name stem>.xml     LabelImg XML: one <object> per annotation, <bndbox> in the
                                             pixel-corner convention `convert voc` reads by default
                                             (xmin = x, xmax = x + w; printed by `repr`, so boxes read back exactly)
    OUT/classes.txt                          the categories (`convert voc --classes`)
    OUT/SegmentationClass/<stem>.png         images with masks: palette PNGs, class index per pixel (VOC devkit)
    OUT/SegmentationObject/<stem>.png        object index per pixel, object k = the XML's k-th <object>
    OUT/segmentation_classes.txt             `background` + the categories (`convert voc-seg --classes`)

A VOC PNG holds one object per pixel and at most 254 objects and classes: pixels two masks share go to the
later object, and that loss, hidden objects and overflows are report rows. Box-only objects of an image with
masks get no pixels (the converter warns about them too). Crowd regions: rows.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Any
from xml.etree.ElementTree import Element, SubElement, indent, tostring

import numpy as np

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.export import (
    EXPORTERS, ExportImage, ExportObject, copy_image, exportable, finish, fmt, load_source, report_unheld_attributes, stem_path, unique_stems,
)
from segpipe.converters.report import ConversionReport

MAX_INDEX = 254  # 255 is VOC's void/border value


def voc_xml(image: ExportImage, objects: list[ExportObject], *, depth: int) -> bytes:
    root = Element("annotation")
    SubElement(root, "folder").text = "JPEGImages"
    SubElement(root, "filename").text = PurePosixPath(image.file_name).name
    SubElement(root, "path").text = image.file_name
    SubElement(SubElement(root, "source"), "database").text = "Unknown"
    size = SubElement(root, "size")
    SubElement(size, "width").text = str(image.width)
    SubElement(size, "height").text = str(image.height)
    SubElement(size, "depth").text = str(depth)
    SubElement(root, "segmented").text = "1" if any(o.mask is not None for o in objects) else "0"
    for o in objects:
        obj = SubElement(root, "object")
        SubElement(obj, "name").text = o.category
        SubElement(obj, "pose").text = str(o.attributes.get("pose") or "Unspecified")
        SubElement(obj, "truncated").text = "1" if o.attributes.get("truncated") else "0"
        if "occluded" in o.attributes:
            SubElement(obj, "occluded").text = "1" if o.attributes["occluded"] else "0"
        SubElement(obj, "difficult").text = "1" if o.attributes.get("difficult") else "0"
        box = SubElement(obj, "bndbox")
        x, y, w, h = o.bbox
        for tag, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
            SubElement(box, tag).text = fmt(value)
    indent(root, space="  ")
    data: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return data + b"\n"


def palette_png(indices: np.ndarray) -> bytes:
    from PIL import Image

    from segpipe.converters.voc_segmentation import voc_colormap

    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(voc_colormap().ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def segmentation_pngs(image: ExportImage, objects: list[ExportObject], *, class_index: dict[str, int], report: ConversionReport) -> tuple[bytes, bytes]:
    """(SegmentationClass, SegmentationObject) PNG bytes; rows for what one object per pixel cannot hold."""
    cls = np.zeros((image.height, image.width), dtype=np.uint8)
    obj = np.zeros((image.height, image.width), dtype=np.uint8)
    owner = np.zeros((image.height, image.width), dtype=np.int64)
    for k, o in enumerate(objects, start=1):
        if o.mask is None:
            continue
        if k > MAX_INDEX or class_index[o.category] > MAX_INDEX:
            report.add(file=image.file_name, severity="error", code="index_overflow",
                message=f"annotation {o.annotation_id}: object {k} or class {class_index[o.category]} above {MAX_INDEX}: not in the PNGs")
            continue
        taken = o.mask & (owner > 0)
        if taken.any():
            report.add(file=image.file_name, severity="warning", code="overlap_lost",
                message=f"annotation {o.annotation_id} overlaps earlier objects by {int(taken.sum())} px: those pixels go to it (one object per pixel)")
        cls[o.mask] = class_index[o.category]
        obj[o.mask] = k
        owner[o.mask] = k
    for k, o in enumerate(objects, start=1):
        if o.mask is not None and k <= MAX_INDEX and not (owner == k).any():
            report.add(file=image.file_name, severity="error", code="object_hidden",
                message=f"annotation {o.annotation_id} is covered entirely by later objects: no pixel left in SegmentationObject")
    return palette_png(cls), palette_png(obj)


def _depth(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return len(im.getbands())


def export_voc(dataset: str | os.PathLike[str], out: str | os.PathLike[str], *, images: Path | None = None, **_: Any) -> ConversionReport:
    """DATASET (converted dir or COCO json) -> OUT in the Pascal VOC layout; returns the export report."""
    out = Path(out)
    report = ConversionReport()
    source = load_source(dataset, report=report, images=images)
    class_index = {n: i for i, n in enumerate(source.categories, start=1)}
    report_unheld_attributes(source, held=EXPORTERS["voc"].held_attributes, fmt_name="VOC", report=report)
    seg_names: dict[str, str] = {}
    for image in unique_stems([im for im in source.images if im.path is not None], report=report, key=lambda f: stem_path(f, ".xml")):
        assert image.path is not None
        objects = exportable(image, report=report, fmt_name="VOC")
        copy_image(image, out / "JPEGImages" / image.file_name)
        atomic_write_bytes(out / "Annotations" / stem_path(image.file_name, ".xml"), voc_xml(image, objects, depth=_depth(image.path)))
        if not any(o.mask is not None for o in objects):
            continue
        stem = PurePosixPath(image.file_name).stem
        if stem in seg_names:  # the segmentation folders are flat, by stem (VOC devkit)
            report.add(file=image.file_name, severity="error", code="name_collision",
                message=f"its segmentation PNGs {stem}.png are already written for {seg_names[stem]}; masks not written")
            continue
        seg_names[stem] = image.file_name
        class_png, object_png = segmentation_pngs(image, objects, class_index=class_index, report=report)
        atomic_write_bytes(out / "SegmentationClass" / f"{stem}.png", class_png)
        atomic_write_bytes(out / "SegmentationObject" / f"{stem}.png", object_png)
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in source.categories))
    atomic_write_text(out / "segmentation_classes.txt", "".join(f"{c}\n" for c in ("background", *source.categories)))
    return finish(out, report)

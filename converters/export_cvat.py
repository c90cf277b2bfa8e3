"""COCO -> CVAT for images 1.1 XML (`segpipe export cvat`), the inverse of `segpipe convert cvat`.

    OUT/annotations.xml   https://docs.cvat.ai/docs/manual/advanced/xml_format/
    OUT/images/<file_name>

Boxes are `<box>`es; a one-polygon segmentation is a `<polygon>` (as it is); any other mask is a `<mask>`
in CVAT's run-lengths, so masks come back pixel for pixel. Attributes the converter kept (`occluded`,
`z_order`, `group_id`, CVAT `<attribute>`s) are written back and declared on their label in `<meta>`, as CVAT
needs them declared to import them. Crowd regions: report rows. The XML is built by xml.etree (nothing is
parsed here; reading stays with defusedxml in the converter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from xml.etree.ElementTree import Element, SubElement, indent, tostring

from segpipe.core.atomic_write import atomic_write_bytes
from segpipe.converters.export import ExportObject, copy_image, exportable, finish, fmt, load_source, report_unheld_attributes
from segpipe.converters.export_geometry import cvat_rle
from segpipe.converters.report import ConversionReport

CVAT_VERSION = "1.1"
_SHAPE_KEYS = ("occluded", "z_order", "group_id")


def shape_element(o: ExportObject, *, label: str | None = None, attributes: Mapping[str, Any] | None = None) -> Element:
    """One object as a CVAT shape element (not yet attached to an <image>)."""
    attrs = dict(o.attributes) if attributes is None else dict(attributes)
    common = {"label": label or o.category, "source": "manual", "occluded": "1" if attrs.get("occluded") in (True, "1", 1, "true") else "0",
              "z_order": str(attrs.get("z_order", "0"))}
    if attrs.get("group_id") not in (None, ""):
        common["group_id"] = str(attrs["group_id"])
    if o.mask is None:
        x, y, w, h = o.bbox
        el = Element("box", {**common, "xtl": fmt(x), "ytl": fmt(y), "xbr": fmt(x + w), "ybr": fmt(y + h)})
    elif o.polygons is not None and len(o.polygons) == 1:
        p = o.polygons[0]
        el = Element("polygon", {**common, "points": ";".join(f"{fmt(p[i])},{fmt(p[i + 1])}" for i in range(0, len(p), 2))})
    else:
        counts, left, top, width, height = cvat_rle(o.mask)
        el = Element("mask", {**common, "rle": ", ".join(map(str, counts)), "left": str(left), "top": str(top),
                              "width": str(width), "height": str(height)})
    for name, value in sorted(attrs.items()):
        if name in _SHAPE_KEYS or isinstance(value, (dict, list)):
            continue
        SubElement(el, "attribute", {"name": str(name)}).text = str(value).lower() if isinstance(value, bool) else str(value)
    return el


def cvat_document(labels: Sequence[str], images: Sequence[tuple[str, int, int, Sequence[Element]]], *, task_name: str = "segpipe export") -> bytes:
    """The annotations.xml of `images` ((name, width, height, shapes)), labels declared in order with every
    attribute name their shapes carry."""
    root = Element("annotations")
    SubElement(root, "version").text = CVAT_VERSION
    task = SubElement(SubElement(root, "meta"), "task")
    SubElement(task, "name").text = task_name
    SubElement(task, "size").text = str(len(images))
    SubElement(task, "mode").text = "annotation"
    attr_names: dict[str, set[str]] = {name: set() for name in labels}
    for _, _, _, shapes in images:
        for s in shapes:
            attr_names.setdefault(s.get("label", ""), set()).update(a.get("name", "") for a in s.iterfind("attribute"))
    labels_el = SubElement(task, "labels")
    for name in labels:
        label = SubElement(labels_el, "label")
        SubElement(label, "name").text = name
        SubElement(label, "type").text = "any"
        attributes = SubElement(label, "attributes")
        for a in sorted(attr_names.get(name, ())):
            attribute = SubElement(attributes, "attribute")
            SubElement(attribute, "name").text = a
            SubElement(attribute, "mutable").text = "False"
            SubElement(attribute, "input_type").text = "text"
            SubElement(attribute, "default_value").text = ""
            SubElement(attribute, "values").text = ""
    for i, (name, width, height, shapes) in enumerate(images):
        im = SubElement(root, "image", {"id": str(i), "name": name, "width": str(width), "height": str(height)})
        im.extend(shapes)
    indent(root, space="  ")
    body: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body + b"\n"


def export_cvat(dataset: str | os.PathLike[str], out: str | os.PathLike[str], *, images: Path | None = None, **_: Any) -> ConversionReport:
    """DATASET (converted dir or COCO json) -> OUT/annotations.xml + OUT/images/; returns the export report."""
    out = Path(out)
    report = ConversionReport()
    source = load_source(dataset, report=report, images=images)
    report_unheld_attributes(source, held=None, fmt_name="CVAT", report=report)
    entries = []
    for image in (im for im in source.images if im.path is not None):
        copy_image(image, out / "images" / image.file_name)
        shapes = []
        for o in exportable(image, report=report, fmt_name="CVAT"):
            if o.mask is not None and not o.mask.any():
                report.add(file=image.file_name, severity="error", code="empty_mask", message=f"annotation {o.annotation_id}: empty mask; not written")
                continue
            shapes.append(shape_element(o))
        entries.append((image.file_name, image.width, image.height, shapes))
    atomic_write_bytes(out / "annotations.xml", cvat_document(source.categories, entries))
    return finish(out, report)

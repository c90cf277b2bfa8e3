"""CVAT for images 1.1 XML -> COCO (`segpipe convert cvat`).

    SRC/annotations.xml (or the XML file given) + the images, by each `<image name=...>` relative to
    --images (default: SRC/images when it exists, else the XML's folder)

Format: https://docs.cvat.ai/docs/manual/advanced/xml_format/ . Per `<image>`: `<box>` (xtl, ytl, xbr, ybr,
pixel-corner) -> box; `<polygon points="x,y;x,y;...">` -> mask through pycocotools; `<mask rle= left= top=
width= height=>` -> mask (CVAT's own run-lengths: row-major inside the left/top/width/height rectangle,
starting with a run of background pixels). `occluded`, `z_order`, `group_id` and every `<attribute>` are kept
as annotation attributes; `<tag>`s become the image's `tags`. `<points>`, `<polyline>` and other shapes have
no area: report rows. Image names are never followed out of the image root. Categories follow the labels
declared in `<meta>`, in their order. The XML is parsed by defusedxml with DTDs refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable
from xml.etree.ElementTree import Element, ParseError

import numpy as np

from segpipe.converters.coco import AnnotationRecord, ImageRecord
from segpipe.converters.conversion_output import (
    FileOutcome, assemble, categories_for, collect, image_size, path_inside, row, skipped_for_errors, Conversion, ConversionOutputs,
    run_conversion, write_conversion_dir,
)
from segpipe.converters.errors import AnnotationError
from segpipe.converters.images import read_input_bytes
from segpipe.converters.report import ConversionReport, Finding
from segpipe.converters.shapes import MIN_POLYGON_POINTS, box_record, clip_box, mask_record, polygon_mask

CVAT_FORMAT = "cvat"
DEFAULT_XML = "annotations.xml"
NO_AREA_SHAPES: tuple[str, ...] = ("points", "polyline", "cuboid", "skeleton", "ellipse")


def parse_cvat_root(data: bytes, *, path: str) -> Element:
    from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
    from defusedxml.ElementTree import fromstring

    try:
        root: Element = fromstring(data, forbid_dtd=True)
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as err:
        raise AnnotationError(path, "<!DOCTYPE>", "XML declares a DTD or entities; refused, never expanded", code="xml_dtd_refused") from err
    except (ParseError, ValueError, LookupError) as err:
        raise AnnotationError(path, "", f"not well-formed XML: {err}", code="invalid_xml") from err
    if root.tag != "annotations":
        raise AnnotationError(path, f"<{root.tag}>", "the root element must be <annotations> (CVAT for images 1.1)", code="invalid_xml")
    return root


def declared_labels(root: Element) -> list[str]:
    """Label names of `<meta>` (task, project or job), in order, each once."""
    names: list[str] = []
    for el in root.iterfind("meta//labels/label/name"):
        name = (el.text or "").strip()
        if name and name not in names:
            names.append(name)
    return names


def decode_cvat_rle(counts: list[int], *, left: int, top: int, width: int, height: int, image_width: int, image_height: int) -> np.ndarray:
    """CVAT's mask run-lengths -> an image-sized bool mask. Raises ValueError when they do not fill the rectangle
    or the rectangle leaves the image.

    >>> decode_cvat_rle([1, 2, 1], left=1, top=0, width=2, height=2, image_width=3, image_height=2).astype(int).tolist()
    [[0, 0, 1], [0, 1, 0]]
    """
    if sum(counts) != width * height or any(c < 0 for c in counts):
        raise ValueError(f"the run-lengths add up to {sum(counts)}, the {width}×{height} rectangle has {width * height} pixels")
    if left < 0 or top < 0 or left + width > image_width or top + height > image_height:
        raise ValueError(f"the rectangle left={left} top={top} width={width} height={height} leaves the {image_width}×{image_height} image")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate background, object, starting with background
    crop = np.repeat(values, counts).reshape(height, width)
    mask = np.zeros((image_height, image_width), dtype=bool)
    mask[top : top + height, left : left + width] = crop
    return mask


def _attributes(el: Element) -> dict[str, Any]:
    attrs: dict[str, Any] = {"occluded": el.get("occluded", "0").strip() == "1"}
    if el.get("z_order") not in (None, "0"):
        attrs["z_order"] = el.get("z_order")
    if el.get("group_id") is not None:
        attrs["group_id"] = el.get("group_id")
    for a in el.iterfind("attribute"):
        name = a.get("name")
        if name and name not in attrs:
            attrs[name] = a.text or ""
    return attrs


def _floats(el: Element, names: tuple[str, ...]) -> list[float]:
    values = [float(el.get(n, "")) for n in names]  # ValueError for missing or non-numeric
    if not all(math.isfinite(v) for v in values):
        raise ValueError("non-finite coordinate")
    return values


def cvat_image_annotations(image: Element, *, width: int, height: int, labels: frozenset[str], path: str,
                           rectangle_segmentation: bool = False) -> tuple[list[AnnotationRecord], list[Finding]]:
    """The shapes of one `<image>` as COCO records for a `width`×`height` image, plus findings."""
    records: list[AnnotationRecord] = []
    findings: list[Finding] = []
    for i, el in enumerate(image):
        if el.tag in ("tag",):
            continue
        label = el.get("label", "")
        where = f"image {image.get('name')!r} <{el.tag}>[{i}] ({label!r})"
        if el.tag in NO_AREA_SHAPES:
            findings.append(row(path, "info" if el.tag == "points" else "warning", "no_area_shape",
                f"{where}: not converted ({el.tag} has no mask/box in COCO instances)"))
            continue
        if el.tag not in ("box", "polygon", "mask"):
            findings.append(row(path, "warning", "unknown_element", f"{where}: unknown element; left out"))
            continue
        if label not in labels:
            findings.append(row(path, "error", "unknown_label", f"{where}: label is not declared in <meta> labels"))
            continue
        attrs = _attributes(el)
        try:
            if el.tag == "box":
                x0, y0, x1, y1 = _floats(el, ("xtl", "ytl", "xbr", "ybr"))
                if x1 < x0 or y1 < y0:
                    raise ValueError(f"inverted box xtl={x0:g} ytl={y0:g} xbr={x1:g} ybr={y1:g}")
                x0, y0, x1, y1 = clip_box(x0, y0, x1, y1, width=width, height=height)
                if x1 <= x0 or y1 <= y0:
                    raise ValueError(f"the box has no area inside the {width}×{height} image")
                records.append(box_record(category=label, x0=x0, y0=y0, x1=x1, y1=y1, attributes=attrs, rectangle_segmentation=rectangle_segmentation))
                continue
            if el.tag == "polygon":
                pairs = [p.split(",") for p in el.get("points", "").split(";") if p.strip()]
                flat = [float(v) for p in pairs for v in p]
                if any(len(p) != 2 for p in pairs) or len(pairs) < MIN_POLYGON_POINTS or not all(math.isfinite(v) for v in flat):
                    raise ValueError(f"points: expected >= {MIN_POLYGON_POINTS} 'x,y' pairs separated by ';'")
                mask = polygon_mask([flat], width=width, height=height)
            else:
                counts = [int(c) for c in el.get("rle", "").split(",")]
                left, top, w, h = (int(el.get(n, "")) for n in ("left", "top", "width", "height"))
                mask = decode_cvat_rle(counts, left=left, top=top, width=w, height=h, image_width=width, image_height=height)
        except ValueError as err:
            findings.append(row(path, "error", f"invalid_{el.tag}", f"{where}: {err}"))
            continue
        record = mask_record(category=label, mask=mask, attributes=attrs)
        if record is None:
            findings.append(row(path, "error", f"empty_{el.tag}", f"{where}: covers no pixel"))
            continue
        records.append(record)
    return records, findings


def _declared_size(image: Element) -> tuple[int, int] | None:
    try:
        return int(image.get("width", "")), int(image.get("height", ""))
    except ValueError:
        return None


def convert_cvat(src: Path, out: Path, *, images: Path | None = None, rectangle_segmentation: bool = False, strict: bool = False) -> ConversionReport:
    """A CVAT for images 1.1 XML (`src` itself, or SRC/annotations.xml) -> OUT/instances.json (+ dataset.json, report)."""
    return write_conversion_dir(Path(out), cvat_conversion(src, images=images, rectangle_segmentation=rectangle_segmentation, strict=strict))


def cvat_conversion(src: Path, *, files: Iterable[str | os.PathLike[str]] | None = None, images: Path | None = None,
                    rectangle_segmentation: bool = False, strict: bool = False) -> Conversion:
    """A CVAT XML's images in memory: COCO dict and findings. `files` (a shard's list) changes nothing: the
    one XML names every image, so `segpipe run` converts a CVAT dataset as one shard holding all its files."""
    src = Path(src)
    xml = src / DEFAULT_XML if src.is_dir() else src
    folder = xml.parent
    image_root = Path(images) if images is not None else (folder / "images" if (folder / "images").is_dir() else folder)
    if not xml.is_file():
        raise AnnotationError(xml, "", f"no CVAT XML here (give the XML file, or a folder holding {DEFAULT_XML})", code="missing_source")
    report = ConversionReport(strict=strict)

    def one(image: Element, labels: frozenset[str], seen: set[str]) -> FileOutcome:
        name = image.get("name", "")
        if not name:
            return FileOutcome(None, (row(xml, "error", "invalid_image", f"<image id={image.get('id')!r}>: no name attribute; skipped"),))
        if name in seen:
            return FileOutcome(None, (row(xml, "error", "duplicate_annotation", f"image {name!r} is listed twice; the later <image> is skipped"),))
        seen.add(name)
        path = path_inside(image_root, name)
        if path is None:
            return FileOutcome(None, (row(xml, "error", "image_path_outside",
                f"image name {name!r} leaves the image root {image_root}; not followed, skipped"),))
        size, findings = image_size(path, annotation=xml, declared=_declared_size(image))
        if size is None:
            return FileOutcome(None, tuple(findings))
        records, found = cvat_image_annotations(image, width=size[0], height=size[1], labels=labels, path=str(xml),
            rectangle_segmentation=rectangle_segmentation)
        findings.extend(found)
        skipped = skipped_for_errors(found, path=xml)
        if skipped is not None:
            return FileOutcome(None, (*findings, skipped))
        tags = sorted(t.get("label", "") for t in image.iterfind("tag"))
        extra = {"tags": tags} if tags else {}
        return FileOutcome(ImageRecord(file_name=Path(name).as_posix(), width=size[0], height=size[1], annotations=tuple(records), extra=extra),
            tuple(findings))

    def build(outputs: ConversionOutputs) -> dict[str, Any] | None:
        try:
            root = parse_cvat_root(read_input_bytes(xml), path=str(xml))
        except AnnotationError as err:
            report.add(file=xml, severity="error", code=err.code, message=f"{err.field}: {err.reason}" if err.field else err.reason)
            return None
        names = declared_labels(root)
        if not names:
            report.add(file=xml, severity="warning", code="no_labels", message="no labels declared in <meta>; categories from the shapes' labels, sorted")
            labels = frozenset(el.get("label", "") for el in root.iterfind("image/*") if el.get("label"))
        else:
            labels = frozenset(names)
        seen: set[str] = set()
        records, _ = collect((one(im, labels, seen) for im in root.iterfind("image")), report=report)
        return assemble(records, categories=categories_for(names or None, labels))

    options = {"source": str(xml.resolve()), "rectangle_segmentation": rectangle_segmentation}
    return run_conversion(report=report, format=CVAT_FORMAT, image_root=image_root, options=options, build=build)

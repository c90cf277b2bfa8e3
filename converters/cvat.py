"""CVAT for images 1.1 XML -> COCO (`segpipe convert cvat`).

    SRC/annotations.xml (or the XML file given) + the images, by each `<image name=...>` relative to
    --images (default: SRC/images when it exists, else the XML's folder)

Format: https://docs.cvat.ai/docs/manual/advanced/xml_format/ . Per `<image>`: `<box>` (xtl, ytl, xbr, ybr,
pixel-corner) -> box; a `<box rotation="deg">` (degrees, clockwise about the box centre, as CVAT draws it) ->
its rotated rectangle as a mask, with the rotated corners' axis-aligned extent as `bbox`; `<ellipse cx cy rx
ry rotation>` -> the mask of the pixels whose centre lies inside it, `<polygon points="x,y;x,y;...">` -> mask
through pycocotools; `<mask rle= left= top= width= height=>` -> mask (CVAT's own run-lengths: row-major inside
the left/top/width/height rectangle, starting with a run of background pixels). `occluded`, `z_order`,
`group_id`, `rotation` and every `<attribute>` are kept as annotation attributes; `<tag>`s become the image's
`tags`. `<points>`, `<polyline>` and other shapes have no area: report rows.

Project exports (https://docs.cvat.ai/docs/manual/advanced/formats/format-cvat/: `<meta><project>`, each
`<image ... subset="Train">`, the images under images/<subset>/) are read as their subsets: the file_name is
`<subset>/<name>` when that file exists, and the image keeps its `subset` field (the same name may appear in
two subsets). Image names are never followed out of the image root. Categories follow the labels declared in
`<meta>` (task or project), in their order. The XML is parsed by defusedxml with DTDs refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable
from xml.etree.ElementTree import Element, ParseError

import numpy as np

from segpipe.converters.coco import MIXED_BOX_MASK_CODE, AnnotationRecord, ImageRecord, fill_box_masks
from segpipe.converters.conversion_output import (
    FileOutcome, assemble, categories_for, collect, image_size, path_inside, row, skipped_for_errors, Conversion, ConversionOutputs,
    run_conversion, write_conversion_dir,
)
from segpipe.core.errors import AnnotationError
from segpipe.core.images import read_input_bytes
from segpipe.converters.report import ConversionReport, Finding
from segpipe.converters.shapes import MIN_POLYGON_POINTS, box_record, clip_box, mask_record, polygon_mask

CVAT_FORMAT = "cvat"
DEFAULT_XML = "annotations.xml"
NO_AREA_SHAPES: tuple[str, ...] = ("points", "polyline", "cuboid", "skeleton")
AREA_ELEMENTS: tuple[str, ...] = ("box", "polygon", "mask", "ellipse")
ROUND_DECIMALS = 6


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
    if el.get("rotation") not in (None, "0", "0.0"):
        attrs["rotation"] = el.get("rotation")
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


def rotated_corners(x0: float, y0: float, x1: float, y1: float, degrees: float) -> list[float]:
    """The corners of the box (x0, y0)-(x1, y1) turned `degrees` clockwise on screen (y points down) about its
    centre, as one flat polygon.

    >>> rotated_corners(100, 100, 300, 140, 90)
    [220.0, 20.0, 220.0, 220.0, 180.0, 220.0, 180.0, 20.0]
    """
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    out: list[float] = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        dx, dy = x - cx, y - cy
        # rounded to 1e-6 px: cos(90°) is 6e-17, not 0, and the extent would print as 4.000000000000001
        out += [round(cx + dx * c - dy * s, ROUND_DECIMALS), round(cy + dx * s + dy * c, ROUND_DECIMALS)]
    return out


def ellipse_mask(*, cx: float, cy: float, rx: float, ry: float, degrees: float, width: int, height: int) -> np.ndarray:
    """Pixels whose centre (x + 0.5, y + 0.5) lies inside the ellipse of radii rx, ry about (cx, cy), turned
    `degrees` clockwise on screen.

    >>> ellipse_mask(cx=2, cy=2, rx=2, ry=1, degrees=0, width=4, height=4).astype(int).tolist()  # centres 0.5 from the axis: in
    [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    """
    ys, xs = np.mgrid[0:height, 0:width]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    u, v = dx * c + dy * s, -dx * s + dy * c  # into the ellipse's own axes (the inverse turn)
    inside: np.ndarray = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    return inside


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
        if el.tag not in AREA_ELEMENTS:
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
                rotation = float(el.get("rotation", "0") or "0")
                if not math.isfinite(rotation):
                    raise ValueError(f"rotation={el.get('rotation')!r} is not a finite number")
                if rotation % 360:
                    records_or_error = _rotated_box(label, x0, y0, x1, y1, rotation, attrs=attrs, width=width, height=height)
                    if isinstance(records_or_error, str):
                        findings.append(row(path, "error", "empty_box", f"{where}: {records_or_error}"))
                    else:
                        records.append(records_or_error)
                    continue
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
            elif el.tag == "ellipse":
                cx, cy, rx, ry = _floats(el, ("cx", "cy", "rx", "ry"))
                degrees = float(el.get("rotation", "0") or "0")
                if rx <= 0 or ry <= 0 or not math.isfinite(degrees):
                    raise ValueError(f"rx={rx:g} ry={ry:g} rotation={el.get('rotation')!r}: radii must be > 0, the rotation finite")
                mask = ellipse_mask(cx=cx, cy=cy, rx=rx, ry=ry, degrees=degrees, width=width, height=height)
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


def _rotated_box(label: str, x0: float, y0: float, x1: float, y1: float, rotation: float, *, attrs: dict[str, Any],
                 width: int, height: int) -> AnnotationRecord | str:
    """A rotated CVAT box: its rectangle rasterised as a polygon (pycocotools), `bbox` the axis-aligned extent
    of the turned corners clipped to the image (the box that encloses what the annotator drew), `area` the
    mask's pixel count. A reason string when nothing of it is inside the image."""
    corners = rotated_corners(x0, y0, x1, y1, rotation)
    mask = polygon_mask([corners], width=width, height=height)
    xs, ys = corners[0::2], corners[1::2]
    bx0, by0, bx1, by1 = clip_box(min(xs), min(ys), max(xs), max(ys), width=width, height=height)
    record = mask_record(category=label, mask=mask, attributes=attrs)
    if record is None or bx1 <= bx0 or by1 <= by0:
        return f"the rotated box covers no pixel of the {width}×{height} image"
    return AnnotationRecord(category=label, bbox=(bx0, by0, bx1 - bx0, by1 - by0), area=record.area, segmentation=record.segmentation,
                            attributes=record.attributes)


def _declared_size(image: Element) -> tuple[int, int] | None:
    try:
        return int(image.get("width", "")), int(image.get("height", ""))
    except ValueError:
        return None


def convert_cvat(src: Path, out: Path, *, images: Path | None = None, rectangle_segmentation: bool = False, box_masks: bool = True,
                 strict: bool = False) -> ConversionReport:
    """A CVAT for images 1.1 XML (`src` itself, or SRC/annotations.xml) -> OUT/instances.json (+ dataset.json, report)."""
    return write_conversion_dir(Path(out), cvat_conversion(src, images=images, rectangle_segmentation=rectangle_segmentation, box_masks=box_masks,
                                                         strict=strict))


def cvat_conversion(src: Path, *, files: Iterable[str | os.PathLike[str]] | None = None, images: Path | None = None,
                    rectangle_segmentation: bool = False, box_masks: bool = True, strict: bool = False) -> Conversion:
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
        subset = (image.get("subset") or "").strip()
        if not name:
            return FileOutcome(None, (row(xml, "error", "invalid_image", f"<image id={image.get('id')!r}>: no name attribute; skipped"),))
        key = f"{subset}/{name}" if subset else name
        if key in seen:
            where = f"image {name!r}" + (f" of subset {subset!r}" if subset else "")
            return FileOutcome(None, (row(xml, "error", "duplicate_annotation", f"{where} is listed twice; the later <image> is skipped"),))
        seen.add(key)
        path = path_inside(image_root, name)
        if subset:  # a project export: images/<subset>/<name>; a task export keeps the subset only as a field
            in_subset = path_inside(image_root, f"{subset}/{name}")
            if in_subset is not None and in_subset.is_file():
                path, name = in_subset, f"{subset}/{name}"
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
        extra: dict[str, Any] = {"tags": tags} if tags else {}
        if subset:
            extra["subset"] = subset
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
        records, mixed = fill_box_masks(records, fill=box_masks)
        if mixed is not None:
            report.add(file=xml, severity="warning", code=MIXED_BOX_MASK_CODE, message=mixed)
        return assemble(records, categories=categories_for(names or None, labels))

    options = {"source": str(xml.resolve()), "rectangle_segmentation": rectangle_segmentation, "box_masks": box_masks}
    return run_conversion(report=report, format=CVAT_FORMAT, image_root=image_root, options=options, build=build)

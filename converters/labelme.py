"""LabelMe JSON folders -> COCO (`segpipe convert labelme`).

    SRC/**/<stem>.json, each naming its image in `imagePath` (relative to the JSON's folder)

`imagePath` is followed only when it stays inside SRC (no `..`, no absolute path, no symlink out);
otherwise, or when that file is missing, the image named like the JSON beside it is used, with a
warning row. `imageData` (the image embedded as base64) is written out only with `embedded_images`
(then every image comes from its JSON, under OUT/images/). Shapes: `rectangle` -> box; `polygon`,
`oriented_rectangle` (its four corners) and `circle` -> masks (rasterised by pycocotools / pixel centres);
`mask` (labelme >= 5.5: a base64 PNG of the box between its two integer points, both inclusive, as
labelme's own `shapes_to_label` pastes it) -> that mask; shapes sharing a `group_id` and a label are one
object, as in LabelMe's own labelme2coco example
(https://github.com/wkentaro/labelme/tree/main/examples/instance_segmentation); `point`s are not objects
and become report rows; lines are left out with a warning.

`__ignore__` is labelme's ignore label (its examples' labels.txt starts with it; labelme2voc paints it 255,
labelme2coco leaves it out of the categories): never a category here, with or without --classes, and nor
is the `_background_` line that follows it in labels.txt (labelme2voc's class 0, not an object). Each
image's `__ignore__` shapes become one ignore region per category: an `iscrowd: 1` annotation of every
category holding their union, so COCOeval counts neither a miss nor a false positive there, whatever the class.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeGuard

import numpy as np

from segpipe.core import json_depth
from segpipe.converters.coco import MIXED_BOX_MASK_CODE, AnnotationRecord, ImageRecord, fill_box_masks
from segpipe.converters.conversion_output import (
    EMBEDDED_IMAGES_DIR, Conversion, ConversionOutputs, FileOutcome, assemble, categories_for, collect, image_size, path_inside, row, run_conversion,
    skipped_for_errors, write_conversion_dir,
)
from segpipe.core.errors import AnnotationError
from segpipe.core.images import NON_UTF8_REASON, is_utf8_name, read_input_bytes
from segpipe.converters.input_files import input_files
from segpipe.converters.report import ConversionReport, Finding
from segpipe.converters.shapes import MIN_POLYGON_POINTS, box_polygon, box_record, clip_box, disc_mask, finite, polygon_mask
from segpipe.converters.trimap import sniff_image_format
from segpipe.converters.voc import read_classes_file

LABELME_FORMAT = "labelme"
AREA_SHAPES: tuple[str, ...] = ("rectangle", "polygon", "circle", "oriented_rectangle", "mask")
IGNORE_LABEL = "__ignore__"  # https://github.com/wkentaro/labelme/blob/main/examples/instance_segmentation/labels.txt
BACKGROUND_LABEL = "_background_"  # labelme2voc's class 0, the same labels.txt's second line
ISCROWD_IGNORE_REGION = 1
POINT_SHAPES: tuple[str, ...] = ("point", "points")
LINE_SHAPES: tuple[str, ...] = ("line", "linestrip")
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


@dataclass(frozen=True)
class LabelmeShape:
    index: int
    label: str
    shape_type: str
    points: tuple[tuple[float, float], ...]
    group_id: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)
    mask: str | None = None  # `mask` shapes: the base64 PNG of the box between the two points


@dataclass(frozen=True)
class LabelmeDocument:
    shapes: tuple[LabelmeShape, ...]
    image_path: str | None
    image_data: str | None
    size: tuple[int, int] | None
    findings: tuple[Finding, ...] = ()


def _points(raw: Any) -> tuple[tuple[float, float], ...] | None:
    if not isinstance(raw, list):
        return None
    out = []
    for p in raw:
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
            return None
        out.append((float(p[0]), float(p[1])))
    return tuple(out) if finite([v for p in out for v in p]) else None


def parse_labelme_json(data: bytes, *, path: str) -> LabelmeDocument:
    """A LabelMe file's bytes -> its shapes; raises AnnotationError for a file that is not LabelMe JSON at all.
    A bad shape is a finding (error), the others are kept."""
    try:
        doc = json_depth.loads(data.decode("utf-8-sig"))  # deep nesting: a JSONDecodeError
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(path, "", f"not valid JSON: {err}", code="invalid_json") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise AnnotationError(path, "shapes", "missing or not a list (not a LabelMe file?)", code="invalid_json")
    findings: list[Finding] = []
    shapes: list[LabelmeShape] = []
    for i, raw in enumerate(doc["shapes"]):
        where = f"shapes[{i}]"
        if not isinstance(raw, dict):
            findings.append(row(path, "error", "invalid_shape", f"{where}: not an object"))
            continue
        label = raw.get("label")
        shape_type = raw.get("shape_type") or "polygon"  # LabelMe writes null for polygons in old files
        points = _points(raw.get("points"))
        if not isinstance(label, str) or not label.strip():
            findings.append(row(path, "error", "invalid_shape", f"{where}.label: missing or not a string"))
            continue
        if points is None or not isinstance(shape_type, str):
            findings.append(row(path, "error", "invalid_shape", f"{where}.points: expected a list of [x, y] finite numbers"))
            continue
        attributes: dict[str, Any] = {}
        if raw.get("flags"):
            attributes["flags"] = raw["flags"]
        if raw.get("description"):
            attributes["description"] = raw["description"]
        if raw.get("group_id") is not None:
            attributes["group_id"] = raw["group_id"]
        mask = raw.get("mask") if isinstance(raw.get("mask"), str) else None
        shapes.append(LabelmeShape(i, label.strip(), shape_type, points, raw.get("group_id"), attributes, mask))
    width, height = doc.get("imageWidth"), doc.get("imageHeight")
    size = (width, height) if _positive_int(width) and _positive_int(height) else None
    image_path = doc.get("imagePath") if isinstance(doc.get("imagePath"), str) and doc.get("imagePath") else None
    image_data = doc.get("imageData") if isinstance(doc.get("imageData"), str) and doc.get("imageData") else None
    return LabelmeDocument(tuple(shapes), image_path, image_data, size, tuple(findings))


def _enough_points(shape: LabelmeShape) -> bool:
    wanted = {"rectangle": 2, "circle": 2, "mask": 2, "oriented_rectangle": 4}.get(shape.shape_type)
    return len(shape.points) == wanted if wanted is not None else len(shape.points) >= MIN_POLYGON_POINTS


def _positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _pasted_mask(shape: LabelmeShape, *, width: int, height: int) -> np.ndarray:
    """A `mask` shape on the whole image: labelme pastes the PNG at [y1:y2 + 1, x1:x2 + 1] of the integer
    points (labelme/utils/shape.py, shapes_to_label). Raises ValueError for a PNG that does not fit them."""
    import io

    from PIL import Image

    if shape.mask is None:
        raise ValueError("no `mask` data")
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape.mask, validate=True))) as im:
            crop = np.asarray(im.convert("L")) > 0
    except Exception as err:  # any decoder failure names the shape
        raise ValueError(f"`mask` is not a base64 PNG: {type(err).__name__}: {err}") from err
    (x1, y1), (x2, y2) = ((int(x), int(y)) for x, y in shape.points)
    if crop.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(f"the mask is {crop.shape[1]}×{crop.shape[0]}, its points span {x2 - x1 + 1}×{y2 - y1 + 1}")
    mask = np.zeros((height, width), dtype=bool)
    ys, xs = slice(max(y1, 0), min(y2 + 1, height)), slice(max(x1, 0), min(x2 + 1, width))
    if ys.start < ys.stop and xs.start < xs.stop:
        mask[ys, xs] = crop[ys.start - y1 : ys.stop - y1, xs.start - x1 : xs.stop - x1]
    return mask


def _shape_mask(shape: LabelmeShape, *, width: int, height: int) -> np.ndarray | None:
    pts = shape.points
    if shape.shape_type == "mask":
        return _pasted_mask(shape, width=width, height=height)
    if shape.shape_type == "oriented_rectangle" and len(pts) == 4:
        return polygon_mask([[v for p in pts for v in p]], width=width, height=height)
    if shape.shape_type == "rectangle" and len(pts) == 2:
        (ax, ay), (bx, by) = pts
        return polygon_mask([box_polygon((min(ax, bx), min(ay, by), abs(bx - ax), abs(by - ay)))], width=width, height=height)
    if shape.shape_type == "polygon" and len(pts) >= MIN_POLYGON_POINTS:
        return polygon_mask([[v for p in pts for v in p]], width=width, height=height)
    if shape.shape_type == "circle" and len(pts) == 2:
        (cx, cy), (px, py) = pts
        return disc_mask(cx=cx, cy=cy, radius=float(np.hypot(px - cx, py - cy)), width=width, height=height)
    return None


def _shape_rle(shape: LabelmeShape, *, width: int, height: int) -> dict[str, Any]:
    """The shape as a compressed RLE of the whole image. Polygons and rectangles go straight from their corners
    to runs (pycocotools' rasteriser, the one `polygon_mask` decodes), so a shape on a 13000 x 13000 image costs
    its outline, not 169 MB of mask to OR, copy and encode; circles and pasted masks are drawn in their box and
    encoded."""
    from pycocotools import mask as mask_utils

    from segpipe.core.polygon_bounds import polygons_rle

    pts = shape.points
    if shape.shape_type in ("oriented_rectangle", "polygon") and len(pts) >= (4 if shape.shape_type == "oriented_rectangle" else MIN_POLYGON_POINTS):
        return polygons_rle([[v for p in pts for v in p]], height=height, width=width)
    if shape.shape_type == "rectangle" and len(pts) == 2:
        (ax, ay), (bx, by) = pts
        return polygons_rle([box_polygon((min(ax, bx), min(ay, by), abs(bx - ax), abs(by - ay)))], height=height, width=width)
    mask = _shape_mask(shape, width=width, height=height)
    if mask is None:
        mask = np.zeros((height, width), dtype=bool)
    rle: dict[str, Any] = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return rle


def _union_rle(rles: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    merged: dict[str, Any] = mask_utils.merge(list(rles), intersect=0) if len(rles) > 1 else rles[0]
    return merged


def _rle_record(*, category: str, rle: dict[str, Any], attributes: Any) -> AnnotationRecord | None:
    """As `mask_record` on the decoded mask (same area, tight box and counts), from the runs alone."""
    from pycocotools import mask as mask_utils

    area = float(mask_utils.area(rle))
    if area == 0:
        return None
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    counts = rle["counts"]
    return AnnotationRecord(category=category, bbox=(x, y, w, h), area=area,
                            segmentation={"size": [int(rle["size"][0]), int(rle["size"][1])],
                                          "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
                            attributes=dict(attributes or {}))


def labelme_shapes_to_annotations(doc: LabelmeDocument, *, width: int, height: int, path: str, allowed: frozenset[str] | None = None,
                                  rectangle_segmentation: bool = False) -> tuple[list[AnnotationRecord], list[Finding], list[str]]:
    """Records, findings and the labels seen, for a `width`×`height` image."""
    records: list[AnnotationRecord] = []
    findings: list[Finding] = []
    groups: dict[tuple[str, Any], list[LabelmeShape]] = {}
    order: list[tuple[str, Any]] = []
    for shape in doc.shapes:
        where = f"shapes[{shape.index}] ({shape.label!r}, {shape.shape_type})"
        if shape.shape_type in POINT_SHAPES:
            coords = "; ".join(f"{x:g},{y:g}" for x, y in shape.points)
            findings.append(row(path, "info", "point_shape", f"{where}: a point is not an object; left out of instances.json (at {coords})"))
            continue
        if shape.shape_type in LINE_SHAPES:
            findings.append(row(path, "warning", "line_shape", f"{where}: a line has no area; left out"))
            continue
        if shape.shape_type not in AREA_SHAPES:
            findings.append(row(path, "error", "unsupported_shape",
                f"{where}: shape_type not supported (supported: {', '.join(AREA_SHAPES + POINT_SHAPES + LINE_SHAPES)})"))
            continue
        if allowed is not None and shape.label not in allowed and shape.label != IGNORE_LABEL:
            findings.append(row(path, "error", "unknown_label", f"{where}: label is not in the classes file"))
            continue
        if not _enough_points(shape):
            findings.append(row(path, "error", "invalid_shape", f"{where}: wrong number of points ({len(shape.points)})"))
            continue
        key = (shape.label, shape.index) if shape.group_id is None else (shape.label, ("group", shape.group_id))
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(shape)
    ignore: list[dict[str, Any]] = []
    for key in order:
        members = groups[key]
        first = members[0]
        where = f"shapes[{first.index}] ({first.label!r}, {first.shape_type})"
        if len(members) == 1 and first.shape_type == "rectangle" and first.label != IGNORE_LABEL:
            (ax, ay), (bx, by) = first.points
            x0, y0, x1, y1 = clip_box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by), width=width, height=height)
            if x1 <= x0 or y1 <= y0:
                findings.append(row(path, "error", "empty_box", f"{where}: the rectangle has no area inside the {width}×{height} image"))
                continue
            records.append(box_record(category=first.label, x0=x0, y0=y0, x1=x1, y1=y1, attributes=first.attributes,
                rectangle_segmentation=rectangle_segmentation))
            continue
        try:
            rle = _union_rle([_shape_rle(shape, width=width, height=height) for shape in members])
        except ValueError as err:
            findings.append(row(path, "error", "invalid_shape", f"{where}: {err}"))
            continue
        if first.label == IGNORE_LABEL:
            ignore.append(rle)
            continue
        record = _rle_record(category=first.label, rle=rle, attributes=first.attributes)
        if record is None:
            findings.append(row(path, "error", "empty_shape", f"{where}: covers no pixel of the {width}×{height} image"))
            continue
        records.append(record)
    ignored = _rle_record(category=IGNORE_LABEL, rle=_union_rle(ignore), attributes={"ignore_region": IGNORE_LABEL}) if ignore else None
    if ignored is not None:
        records.append(replace(ignored, iscrowd=ISCROWD_IGNORE_REGION))
    return records, findings, sorted({s.label for s in doc.shapes if s.shape_type in AREA_SHAPES and s.label != IGNORE_LABEL})


def expand_ignore_regions(records: Sequence[ImageRecord], categories: Sequence[str]) -> list[ImageRecord]:
    """Each image's `__ignore__` region as one iscrowd annotation per category (COCOeval matches crowd
    regions within a category only), where the region was found among the image's annotations."""
    out = []
    for im in records:
        annotations: list[AnnotationRecord] = []
        for ann in im.annotations:
            if ann.category == IGNORE_LABEL:
                annotations += [replace(ann, category=name) for name in categories]
            else:
                annotations.append(ann)
        out.append(replace(im, annotations=tuple(annotations)))
    return out


def image_for(doc: LabelmeDocument, *, src: Path, json_rel: str, beside: Sequence[Path],
              is_file: Callable[[Path], bool] = Path.is_file) -> tuple[str | None, list[Finding]]:
    """The image's path relative to `src`: `imagePath` when it stays inside `src` and exists, else the one
    image named like the JSON in its folder. Never leaves `src`."""
    findings: list[Finding] = []
    folder = posixpath.dirname(json_rel)
    if doc.image_path is not None:
        joined = posixpath.normpath(posixpath.join(folder, doc.image_path.replace("\\", "/")))
        inside = path_inside(src, joined) if not doc.image_path.startswith(("/", "\\")) else None
        if inside is None:
            findings.append(row(src / json_rel, "warning", "image_path_outside", f"imagePath {doc.image_path!r} leaves the dataset root; not followed"))
        elif is_file(inside):
            return joined, findings
    candidates = [p for p in beside if p.parent == (src / folder)]
    if candidates:
        chosen = candidates[0].relative_to(src).as_posix()
        if doc.image_path is not None and not findings:
            findings.append(row(src / json_rel, "warning", "image_path_missing", f"imagePath {doc.image_path!r} does not exist; using {chosen}"))
        return chosen, findings
    return None, findings


def _embedded(doc: LabelmeDocument, *, json_rel: str) -> tuple[str | None, bytes | str]:
    """`imageData`, named like the JSON (its name under OUT/images/): (relative name, bytes) or (None, reason)."""
    if doc.image_data is None:
        return None, "no imageData in the file"
    try:
        data = base64.b64decode(doc.image_data, validate=True)
    except (binascii.Error, ValueError) as err:
        return None, f"imageData is not base64: {err}"
    kind = sniff_image_format(data[:16])
    ext = _EXTENSIONS.get(kind or "")
    if ext is None:
        return None, "imageData is not a known image format"
    return posixpath.splitext(json_rel)[0] + ext, data


def convert_labelme(src: Path, out: Path, *, classes: Path | None = None, embedded_images: bool = False,
                    rectangle_segmentation: bool = False, box_masks: bool = True, strict: bool = False) -> ConversionReport:
    """Every `*.json` under `src` -> OUT/instances.json (+ dataset.json, report); images from disk, or from
    `imageData` into OUT/images/ with `embedded_images`."""
    conversion = labelme_conversion(src, classes=classes, embedded_images=embedded_images, rectangle_segmentation=rectangle_segmentation,
                                    box_masks=box_masks, strict=strict)
    return write_conversion_dir(Path(out), conversion)


def labelme_conversion(src: Path, *, files: Iterable[str | os.PathLike[str]] | None = None, classes: Path | None = None,
                       embedded_images: bool = False, rectangle_segmentation: bool = False, box_masks: bool = True, strict: bool = False) -> Conversion:
    """The LabelMe JSONs under `src` (only `files` of it when they are listed) in memory: COCO dict, embedded
    images (with `embedded_images`) and findings."""
    src, listing = Path(src), input_files(files)
    if not src.is_dir():
        raise AnnotationError(src, "", "source is not a directory", code="missing_source")
    declared = read_classes_file(classes) if classes is not None else None
    if declared is not None:  # labelme's labels.txt starts with __ignore__ and _background_: neither is an object category
        declared = [n for n in declared if n not in (IGNORE_LABEL, BACKGROUND_LABEL)]
    allowed = frozenset(declared) if declared is not None else None
    report = ConversionReport(strict=strict)

    def one(json_rel: str, index: Any, owners: dict[str, str], outputs: ConversionOutputs) -> FileOutcome:
        path = src / json_rel
        try:
            doc = parse_labelme_json(read_input_bytes(path), path=str(path))
        except AnnotationError as err:
            return FileOutcome(None, (row(path, "error", err.code, f"{err.field}: {err.reason}" if err.field else err.reason),))
        findings = list(doc.findings)
        data: bytes | None = None
        if embedded_images:
            image_rel, embedded = _embedded(doc, json_rel=json_rel)
            if image_rel is None:
                return FileOutcome(None, (*findings, row(path, "error", "missing_image", f"embedded images: {embedded!s}; skipped")), ())
            data = embedded if isinstance(embedded, bytes) else None
        else:
            image_rel, found = image_for(doc, src=src, json_rel=json_rel, beside=index.candidates(Path(json_rel).stem), is_file=listing.is_file)
            findings.extend(found)
            if image_rel is None:
                hint = " (the image is embedded as imageData: pass --embedded-images to write it out)" if doc.image_data else ""
                return FileOutcome(None, (*findings, row(path, "error", "missing_image", f"no image found via imagePath or beside the JSON{hint}; skipped")))
        if image_rel in owners:
            return FileOutcome(None, (*findings, row(path, "error", "duplicate_annotation",
                f"image {image_rel} is already annotated by {owners[image_rel]}; skipped")))
        owners[image_rel] = json_rel
        if data is not None:
            outputs.images[image_rel] = data
        image = Path(EMBEDDED_IMAGES_DIR) / image_rel if embedded_images else src / image_rel
        size, found = image_size(image, annotation=path, declared=doc.size, data=data)
        findings.extend(found)
        if size is None:
            return FileOutcome(None, tuple(findings))
        records, shape_findings, names = labelme_shapes_to_annotations(doc, width=size[0], height=size[1], path=str(path), allowed=allowed,
                                                                       rectangle_segmentation=rectangle_segmentation)
        findings.extend(shape_findings)
        skipped = skipped_for_errors([*doc.findings, *shape_findings], path=path)
        if skipped is not None:
            return FileOutcome(None, (*findings, skipped), tuple(names))
        return FileOutcome(ImageRecord(file_name=image_rel, width=size[0], height=size[1], annotations=tuple(records)), tuple(findings), tuple(names))

    def build(outputs: ConversionOutputs) -> dict[str, Any]:
        jsons = [p.relative_to(src).as_posix() for p in listing.walk(src) if p.suffix.lower() == ".json"]
        for rel in (j for j in jsons if not is_utf8_name(j)):
            report.add(file=src / rel, severity="error", code="non_utf8_name", message=NON_UTF8_REASON)
        jsons = [j for j in jsons if is_utf8_name(j)]
        index = listing.index_images([src])
        owners: dict[str, str] = {}
        records, names = collect((one(j, index, owners, outputs) for j in jsons), report=report)
        categories = categories_for(declared, names)
        if not categories:
            for im in records:
                if any(a.category == IGNORE_LABEL for a in im.annotations):
                    report.add(file=src / im.file_name, severity="warning", code="ignore_without_categories",
                               message=f"{IGNORE_LABEL} region left out: the dataset has no category for it to be an ignore region of")
        records, mixed = fill_box_masks(expand_ignore_regions(records, [c.name for c in categories]), fill=box_masks)
        if mixed is not None:
            report.add(file=src, severity="warning", code=MIXED_BOX_MASK_CODE, message=mixed)
        return assemble(records, categories=categories)

    options = {"source": str(src.resolve()), "classes": None if classes is None else str(Path(classes).resolve()),
               "embedded_images": embedded_images, "rectangle_segmentation": rectangle_segmentation,
               "box_masks": box_masks}
    return run_conversion(report=report, format=LABELME_FORMAT, image_root=None if embedded_images else src, options=options, build=build)

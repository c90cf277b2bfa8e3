"""Pascal VOC segmentation PNGs -> semantic label maps and COCO instance masks (`segpipe convert voc-seg`).

    ROOT/JPEGImages/<stem>.jpg
    ROOT/SegmentationClass/<stem>.png    class index per pixel, 255 = border/void
    ROOT/SegmentationObject/<stem>.png   object index per pixel (1 = the XML's first <object>), 255 = border
    ROOT/Annotations/<stem>.xml          optional: boxes cross-checked against the masks

VOC stores both PNGs as palette images; the palette *indices* are the labels, the colours are only for
viewing (devkit: https://host.robots.ox.ac.uk/pascal/VOC/voc2012/htmldoc/devkit_doc.html#sec:segmentation),
so they are read by segpipe's one label-map reader (segpipe.core.label_maps.read_label_map: palette
indices as stored, 1/2/4-bit grey unscaled, where PIL would read a 4-bit grey 1 as 17), exactly as the
evaluators read them. Datumaro and other tools re-save them as RGB: RGB pixels are mapped
back through the VOC colour map (below); a colour outside it is an error row. Each object index becomes one
COCO annotation whose class is the SegmentationClass value under it (the majority, with a warning row when
the object's pixels disagree); the object's XML box and name are compared with the mask (warning rows).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from segpipe.converters.coco import AnnotationRecord, ImageRecord
from segpipe.converters.conversion_output import (
    Conversion, ConversionOutputs, FileOutcome, assemble, categories_for, collect, image_size, row, run_conversion, streamed_label_maps,
    write_conversion_dir,
)
from segpipe.core.errors import AnnotationError
from segpipe.core.images import NON_UTF8_REASON, check_pixel_count, is_utf8_name, read_input_bytes
from segpipe.converters.input_files import input_files
from segpipe.converters.report import ConversionReport, Finding
from segpipe.converters.shapes import mask_record
from segpipe.converters.trimap import encode_png
from segpipe.converters.voc import read_classes_file
from segpipe.converters.voc_parse import parse_voc_xml

VOC_SEG_FORMAT = "voc-seg"
VOID_INDEX = 255
BACKGROUND_INDEX = 0
# Boxes whose IoU with their object's mask box is below this get a warning row: VOC boxes are drawn by hand
# and are rarely pixel-tight, but a different object (wrong order, wrong image) is far below it.
BOX_MASK_MIN_IOU = 0.5
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (VOClabelcolormap.m): index bits spread over the high bits of R, G, B.

    >>> voc_colormap()[[0, 1, 2, 15, 255]].tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0], [192, 128, 128], [224, 224, 192]]
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


_COLOR_TO_INDEX = {tuple(int(v) for v in rgb): i for i, rgb in enumerate(voc_colormap())}
_LUT = np.full(1 << 24, -1, dtype=np.int16)
for _rgb, _i in _COLOR_TO_INDEX.items():
    _LUT[(_rgb[0] << 16) | (_rgb[1] << 8) | _rgb[2]] = _i


def decode_label_png(data: bytes, *, path: str) -> np.ndarray:
    """PNG bytes -> HxW uint8 label indices: palette indices for `P` images, values for grey ones, the VOC
    colour map inverted for RGB ones. Raises AnnotationError for unreadable files and unknown colours."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            check_pixel_count(path, width=im.width, height=im.height)  # from the header, before decoding
            im.load()
            mode = im.mode
            arr = np.asarray(im.convert("RGB") if mode == "RGBA" else im)
    except AnnotationError:
        raise
    except Exception as err:  # PIL raises many types for broken files
        raise AnnotationError(path, "", f"unreadable PNG: {err}", code="corrupt_png") from err
    if mode in ("P", "L"):
        return arr.astype(np.uint8, copy=False)
    if mode in ("RGB", "RGBA"):
        keys = (arr[..., 0].astype(np.int32) << 16) | (arr[..., 1].astype(np.int32) << 8) | arr[..., 2]
        idx = _LUT[keys]
        if (idx < 0).any():
            bad = sorted({tuple(int(v) for v in arr[y, x]) for y, x in zip(*np.nonzero(idx < 0))})[:5]
            raise AnnotationError(path, "pixels", f"colours outside the VOC colour map: {bad}", code="unknown_colour")
        indices: np.ndarray = idx.astype(np.uint8)
        return indices
    raise AnnotationError(path, "mode", f"expected a palette, grey or RGB PNG, got mode {mode}", code="bad_label_png")


PNG_COLOUR_TYPES_RGB = (2, 6)  # IHDR colour types RGB and RGBA: https://www.w3.org/TR/png/#6Colour-values


def read_label_png(path: Path) -> np.ndarray:
    """A SegmentationClass/Object PNG -> HxW uint8 indices. Single-channel PNGs (palette, grey of any bit depth)
    go through the shared label-map reader; RGB ones through the VOC colour map (`decode_label_png`). Raises
    AnnotationError naming the file."""
    from segpipe.core.errors import EvaluationError
    from segpipe.core.label_maps import png_header, read_label_map

    data = read_input_bytes(path)
    header = png_header(data[:26])
    if header is None or header[1] in PNG_COLOUR_TYPES_RGB:
        return decode_label_png(data, path=str(path))
    try:
        labels = read_label_map(path)
    except EvaluationError as err:
        raise AnnotationError(path, err.field, err.reason, code="bad_label_png") from err
    if labels.dtype != np.uint8:
        if int(labels.max(initial=0)) > VOID_INDEX:
            raise AnnotationError(path, "pixels", f"16-bit values up to {int(labels.max())}: VOC indices stop at {VOID_INDEX}", code="bad_label_png")
        labels = labels.astype(np.uint8)
    return labels


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def parse_segmentation_pair(class_map: np.ndarray, object_map: np.ndarray | None, *, class_names: Sequence[str], path: str
                            ) -> tuple[list[tuple[int, AnnotationRecord]], list[Finding]]:
    """(object index, record) per object of `object_map`, classes from `class_map`; findings for bad values."""
    findings: list[Finding] = []
    bad = np.unique(class_map[(class_map >= len(class_names)) & (class_map != VOID_INDEX)])
    if bad.size:
        raise AnnotationError(path, "pixels", f"class indices {bad.tolist()} outside 0..{len(class_names) - 1} (and 255 void)", code="class_out_of_range")
    if object_map is None:
        return [], findings
    objects: list[tuple[int, AnnotationRecord]] = []
    for k in np.unique(object_map).tolist():
        if k in (BACKGROUND_INDEX, VOID_INDEX):
            continue
        mask = object_map == k
        classes, counts = np.unique(class_map[mask], return_counts=True)
        usable = [(int(c), int(n)) for c, n in zip(classes, counts) if c not in (BACKGROUND_INDEX, VOID_INDEX)]
        if not usable:
            findings.append(row(path, "error", "object_without_class",
                f"object {k}: SegmentationClass is background/void under all its {int(mask.sum())} pixels"))
            continue
        best = max(usable, key=lambda t: (t[1], -t[0]))
        if len(classes) > 1:
            shown = ", ".join(f"{class_names[c] if c < len(class_names) else c} ({n} px)" for c, n in zip(classes.tolist(), counts.tolist()))
            findings.append(row(path, "warning", "mixed_object_class", f"object {k}: SegmentationClass under it is {shown}; using {class_names[best[0]]}"))
        record = mask_record(category=class_names[best[0]], mask=mask, attributes={"voc_object_index": k})
        if record is not None:
            objects.append((k, record))
    return objects, findings


def cross_check_xml(objects: Sequence[tuple[int, AnnotationRecord]], *, xml: bytes, path: str) -> list[Finding]:
    """Compare object k's mask with the XML's k-th <object> (VOC numbers objects in XML order): name and box."""
    doc = parse_voc_xml(xml, path=path)
    findings = [f for f in doc.findings]
    for k, record in objects:
        if k > len(doc.objects):
            findings.append(row(path, "warning", "object_not_in_xml",
                f"object {k} ({record.category}) has a mask but the XML has only {len(doc.objects)} <object>(s)"))
            continue
        obj = doc.objects[k - 1]
        if obj.name != record.category:
            findings.append(row(path, "warning", "class_mismatch", f"object[{k - 1}]: the XML says {obj.name!r}, the masks say {record.category!r}"))
        if obj.problem is None:
            xml_box = (obj.xmin - 1, obj.ymin - 1, obj.xmax - obj.xmin + 1, obj.ymax - obj.ymin + 1)  # VOC's 1-based pixel boxes
            iou = box_iou(xml_box, record.bbox)
            if iou < BOX_MASK_MIN_IOU:
                findings.append(row(path, "warning", "box_mask_mismatch",
                    f"object[{k - 1}] ({obj.name!r}): XML box [{obj.xmin:g}, {obj.ymin:g}, {obj.xmax:g}, {obj.ymax:g}] and the mask's box "
                                    f"{[round(v, 2) for v in record.bbox]} overlap with IoU {iou:.2f} < {BOX_MASK_MIN_IOU}"))
    masked = {k for k, _ in objects}
    for i, obj in enumerate(doc.objects):
        if i + 1 not in masked:
            findings.append(row(path, "warning", "object_without_mask", f"object[{i}] ({obj.name!r}): no pixel of SegmentationObject has index {i + 1}"))
    return findings


def convert_voc_segmentation(root: Path, out: Path, *, classes: Path | None = None, strict: bool = False) -> ConversionReport:
    """ROOT's SegmentationClass (+ SegmentationObject, Annotations) PNGs -> OUT/semantic/<stem>.png +
    classes.txt, and OUT/instances.json with one annotation per object of the images that have a
    SegmentationObject PNG (+ dataset.json, report)."""
    with streamed_label_maps(Path(out)) as outputs:
        conversion = voc_segmentation_conversion(root, classes=classes, strict=strict, outputs=outputs)
    return write_conversion_dir(Path(out), conversion)


def voc_segmentation_conversion(root: Path, *, files: Iterable[str | os.PathLike[str]] | None = None, classes: Path | None = None,
                                strict: bool = False, outputs: ConversionOutputs | None = None) -> Conversion:
    """The VOC segmentation PNGs under `root` (only `files` of them when they are listed) in memory: COCO dict,
    semantic label maps and findings. `outputs`: where the label maps go (in memory by default)."""
    root, listing = Path(root), input_files(files)
    seg_class, seg_object, annotations = root / "SegmentationClass", root / "SegmentationObject", root / "Annotations"
    if not seg_class.is_dir():
        raise AnnotationError(seg_class, "", "no SegmentationClass folder (give the VOC root: JPEGImages/, SegmentationClass/, ...)", code="missing_source")
    class_names = read_classes_file(classes) if classes is not None else list(VOC_CLASSES)
    image_root = root / "JPEGImages"
    report = ConversionReport(strict=strict)

    def one(png: Path, index: Any, outputs: ConversionOutputs) -> FileOutcome:
        stem = png.stem
        candidates = index.candidates(stem)
        if not candidates:
            return FileOutcome(None, (row(png, "error", "missing_image", f"no image named {stem}.* in {image_root}; skipped"),))
        size, findings = image_size(candidates[0], annotation=png, declared=None)
        if size is None:
            return FileOutcome(None, tuple(findings))
        object_png = seg_object / png.name
        try:
            class_map = read_label_png(png)
            object_map = read_label_png(object_png) if listing.is_file(object_png) else None
            for label, arr in ((png, class_map), (object_png, object_map)):
                if arr is not None and arr.shape != (size[1], size[0]):
                    raise AnnotationError(label, "size", f"{arr.shape[1]}×{arr.shape[0]} PNG for a {size[0]}×{size[1]} image", code="size_mismatch")
            objects, found = parse_segmentation_pair(class_map, object_map, class_names=class_names, path=str(object_png))
        except AnnotationError as err:
            return FileOutcome(None, (*findings, row(err.path, "error", err.code,
                f"{err.field}: {err.reason}; skipped" if err.field else f"{err.reason}; skipped")))
        findings.extend(found)
        outputs.add_label_map(f"{stem}.png", encode_png(class_map))
        if object_map is None:
            return FileOutcome(None, (*findings, row(png, "info", "semantic_only", "no SegmentationObject PNG: semantic map only, left out of instances.json")))
        xml = annotations / f"{stem}.xml"
        if listing.is_file(xml):
            try:
                findings.extend(cross_check_xml(objects, xml=read_input_bytes(xml), path=str(xml)))
            except AnnotationError as err:
                findings.append(row(xml, "warning", err.code, f"{err.reason}; boxes not cross-checked"))
        if any(f.severity == "error" for f in found):
            return FileOutcome(None, (*findings, row(object_png, "info", "image_skipped", "unusable objects: the image is left out of instances.json")))
        file_name = candidates[0].relative_to(image_root).as_posix()
        return FileOutcome(ImageRecord(file_name=file_name, width=size[0], height=size[1], annotations=tuple(r for _, r in objects)), tuple(findings))

    def build(outputs: ConversionOutputs) -> dict[str, Any]:
        outputs.semantic_classes = tuple(class_names)
        index = listing.index_images([image_root])
        pngs = []
        for p in listing.walk(seg_class, recursive=False):
            if p.suffix.lower() != ".png":
                continue
            if is_utf8_name(p.name):
                pngs.append(p)
            else:
                report.add(file=p, severity="error", code="non_utf8_name", message=NON_UTF8_REASON)
        for p in (listing.walk(seg_object, recursive=False) if seg_object.is_dir() else []):
            if not listing.is_file(seg_class / p.name):
                report.add(file=p, severity="error", code="missing_class_png",
                    message="no SegmentationClass PNG of the same name: the objects' classes are unknown; skipped")
        records, _ = collect((one(p, index, outputs) for p in pngs), report=report)
        return assemble(records, categories=categories_for(class_names[1:], ()))

    options = {"source": str(root.resolve()), "classes": None if classes is None else str(Path(classes).resolve())}
    return run_conversion(report=report, format=VOC_SEG_FORMAT, image_root=image_root, options=options, build=build, outputs=outputs)

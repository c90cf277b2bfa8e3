"""Format and integrity checks, and the clean annotation set the other checks use.

The traps checked here are the ones that silently corrupt a COCO evaluation: id 0 is never matched,
duplicate ids double-count, `iscrowd=1` masks are ignored by COCOeval (../shared/peers/README.md, "Traps").
Severities and scores of these checks are in audit_findings.FIXED_RULES.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, TypeGuard, cast


from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.findings import AuditFinding, make_finding
from segpipe.core.polygon_bounds import polygons_rle
from segpipe.evaluators.instance.rle_strings import INVALID_RLE, compressed_counts, rle_totals

# Polygon areas in COCO are the polygon's own area, which differs from its rasterisation by up to a boundary's
# worth of pixels (COCO val2014 small objects: 146 vs 135 px), hence a sqrt(area) term; RLE areas are exact
# pixel counts (converters/coco.py), boxes are w*h.
AREA_TOLERANCE_RLE = (0.5, 0.001, 0.0)  # (absolute pixels, relative, times sqrt(area))
AREA_TOLERANCE_POLYGON = (2.0, 0.05, 1.0)
AREA_TOLERANCE_BOX = (0.5, 0.01, 0.0)
# A box edge past the image border by more than this is "outside" (float round-off is not).
OUTSIDE_TOLERANCE_PX = 1e-3
SPLIT_KEYS: tuple[str, ...] = ("split", "subset")
Issue = tuple[str, str]  # (check, message)


@dataclass(frozen=True)
class ImageInfo:
    id: int
    file_name: str
    width: int
    height: int
    split: str = ""


@dataclass(frozen=True)
class PreparedAnnotation:
    """A well-formed object annotation: mask as compressed RLE of the image's size, or box only."""

    id: int
    image_id: int
    category_id: int
    category: str
    bbox: tuple[float, float, float, float]
    area: float  # mask pixel count with a mask, else w*h
    rle: Mapping[str, Any] | None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _image_issues(im: Any, *, index: int, known: Mapping[int, ImageInfo]) -> tuple[ImageInfo | None, list[Issue]]:
    where = f"images[{index}]"
    if not isinstance(im, dict):
        return None, [(F.CHECK_NON_FINITE, f"{where} is not an object: {im!r:.60}")]
    im_id, w, h = im.get("id"), im.get("width"), im.get("height")
    if not _is_int(im_id):
        return None, [(F.CHECK_NON_FINITE, f"{where}.id is not an integer: {im_id!r}")]
    if im_id in known:
        return None, [(F.CHECK_IMAGE_ID_DUPLICATE, f"{where}.id {im_id} also used by {known[im_id].file_name!r}")]
    issues: list[Issue] = []
    if not (_is_number(w) and _is_number(h) and math.isfinite(w) and math.isfinite(h)):
        issues.append((F.CHECK_NON_FINITE, f"{where}.width/height not finite numbers: {w!r}x{h!r}"))
        w, h = 0, 0
    elif w <= 0 or h <= 0:
        issues.append((F.CHECK_DEGENERATE, f"{where}.width/height not positive: {w}x{h}"))
    split = next((str(im[k]) for k in SPLIT_KEYS if im.get(k) not in (None, "")), "")
    return ImageInfo(id=im_id, file_name=str(im.get("file_name", "")), width=int(w), height=int(h), split=split), issues


def parse_images(coco: Mapping[str, Any]) -> tuple[dict[int, ImageInfo], list[AuditFinding]]:
    """Images by id (first record wins on duplicates) and the findings about the image records."""
    findings: list[AuditFinding] = []
    images: dict[int, ImageInfo] = {}
    for index, im in enumerate(coco.get("images") or []):
        info, issues = _image_issues(im, index=index, known=images)
        located: dict[str, Any] = {"file_name": str(im.get("file_name", ""))} if isinstance(im, dict) else {}
        if isinstance(im, dict) and _is_int(im.get("id")):
            located["image_id"] = im["id"]
        findings += [make_finding(check=check, message=message, **located) for check, message in issues]
        if info is not None:
            images[info.id] = info
    return images, findings


def _polygons_rle(seg: list[Any], *, width: int, height: int, where: str) -> tuple[Mapping[str, Any] | None, list[Issue]]:
    polys: list[list[float]] = []
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(_is_number(v) for v in poly):
            return None, [(F.CHECK_BAD_SEGMENTATION, f"{where}[{k}] is not a polygon of >= 3 numeric points")]
        if not all(math.isfinite(v) for v in poly):
            return None, [(F.CHECK_NON_FINITE, f"{where}[{k}] has NaN/inf coordinates")]
        polys.append([float(v) for v in poly])
    outside = [
        (
            F.CHECK_SEGMENTATION_OUTSIDE,
            f"{where}[{k}] reaches ({min(p[0::2]):g},{min(p[1::2]):g})-({max(p[0::2]):g},{max(p[1::2]):g}) outside {width}x{height}",
        )
        for k, p in enumerate(polys)
        if min(p) < -OUTSIDE_TOLERANCE_PX or max(p[0::2]) > width + OUTSIDE_TOLERANCE_PX or max(p[1::2]) > height + OUTSIDE_TOLERANCE_PX
    ]
    if width <= 0 or height <= 0:
        return None, outside
    return polygons_rle(polys, height=height, width=width), outside  # clipped far outside: never a crash


def _segmentation_rle(seg: Any, *, width: int, height: int, where: str, total: int | None) -> tuple[Mapping[str, Any] | None, list[Issue]]:
    """(compressed RLE or None, issues) for one `segmentation` value; an empty list means a box-only annotation.

    `total` is rle_totals() of its compressed counts string, when it has one.
    """
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return _polygons_rle(seg, width=width, height=height, where=where) if seg else (None, [])
    if not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
        return None, [(F.CHECK_BAD_SEGMENTATION, f"{where} is neither a polygon list nor an RLE dict")]
    size = seg["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)):
        return None, [(F.CHECK_BAD_SEGMENTATION, f"{where}.size is not [height, width]: {size!r}")]
    if [int(size[0]), int(size[1])] != [height, width]:
        return None, [(F.CHECK_RLE_SIZE, f"{where}.size {list(size)} differs from the image's [height, width] [{height}, {width}]")]
    rle: Mapping[str, Any] | None = {"size": [height, width], "counts": compressed_counts(seg)}
    if isinstance(seg["counts"], list):  # uncompressed RLE, as COCO writes crowd regions
        try:
            runs = [int(c) for c in seg["counts"]]
        except (ValueError, TypeError, OverflowError) as err:
            return None, [(F.CHECK_BAD_SEGMENTATION, f"{where}.counts is not a list of run lengths: {err}")]
        total = sum(runs) if min(runs, default=0) >= 0 and max(runs, default=0) < 2**32 else INVALID_RLE
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width) if total == height * width else None
    if total is None or total == INVALID_RLE:
        return None, [(F.CHECK_BAD_SEGMENTATION, f"{where}.counts is not a valid RLE (corrupt string or negative run)")]
    if total != height * width:
        return None, [(F.CHECK_BAD_SEGMENTATION, f"{where}.counts runs add up to {total} pixels, not {height}x{width}")]
    return rle, []


def _area_tolerance(kind: str, reference: float) -> float:
    absolute, relative, boundary = {"rle": AREA_TOLERANCE_RLE, "polygon": AREA_TOLERANCE_POLYGON, "box": AREA_TOLERANCE_BOX}[kind]
    return absolute + relative * reference + boundary * math.sqrt(max(0.0, reference))


def _annotation_issues(
    ann: dict[str, Any], *, im: ImageInfo, cats: Mapping[Any, str], total: int | None
) -> tuple[PreparedAnnotation | None, list[Issue]]:
    """Everything wrong with one annotation of a known image; the prepared annotation when it is usable."""
    from pycocotools import mask as mask_utils

    issues: list[Issue] = []
    cat_id, crowd, bbox, area = ann.get("category_id"), ann.get("iscrowd", 0), ann.get("bbox"), ann.get("area")
    usable = _is_int(ann.get("id"))
    if cat_id not in cats:
        issues.append((F.CHECK_UNKNOWN_CATEGORY, f"category_id {cat_id!r} is not in categories"))
        usable = False
    if crowd not in (0, 1):  # True/False compare equal to 1/0
        issues.append((F.CHECK_CROWD_OBJECT, f"iscrowd must be 0 or 1, got {crowd!r}"))
        usable = False
    elif crowd:
        issues.append((F.CHECK_CROWD_OBJECT, "iscrowd=1: COCOeval ignores this object (it can only be matched as a crowd region)"))
        usable = False
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return None, issues + [(F.CHECK_DEGENERATE, f"bbox is not [x, y, w, h] numbers: {bbox!r}")]
    if not all(math.isfinite(v) for v in bbox):
        return None, issues + [(F.CHECK_NON_FINITE, f"bbox has NaN/inf: {bbox!r}")]
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        issues.append((F.CHECK_DEGENERATE, f"bbox width/height not positive: w={w:g} h={h:g}"))
        usable = False
    elif min(x, y) < -OUTSIDE_TOLERANCE_PX or x + w > im.width + OUTSIDE_TOLERANCE_PX or y + h > im.height + OUTSIDE_TOLERANCE_PX:
        issues.append((F.CHECK_BBOX_OUTSIDE, f"bbox [{x:g}, {y:g}, {w:g}, {h:g}] extends outside the {im.width}x{im.height} image"))
    if area is not None and not (_is_number(area) and math.isfinite(area)):
        issues.append((F.CHECK_NON_FINITE, f"area is not a finite number: {area!r}"))
        area = None
    seg = ann.get("segmentation", [])
    rle, seg_issues = _segmentation_rle(seg, width=im.width, height=im.height, where="segmentation", total=total)
    issues += seg_issues
    if any(check != F.CHECK_SEGMENTATION_OUTSIDE for check, _ in seg_issues):
        return None, issues
    measured = w * h if rle is None else float(mask_utils.area(rle))
    kind = "box" if rle is None else ("polygon" if isinstance(seg, list) else "rle")
    if area is not None and abs(float(area) - measured) > _area_tolerance(kind, measured):
        what = "w*h of the bbox" if rle is None else "the mask's pixel count"
        issues.append((F.CHECK_AREA_MISMATCH, f"area {float(area):g} differs from {what} {measured:g}"))
    if not usable:
        return None, issues
    prepared = PreparedAnnotation(
        # A key of `cats` (checked above); COCO category ids are ints, which this check does not re-verify.
        id=int(ann["id"]), image_id=im.id, category_id=cast(int, cat_id), category=cats[cat_id], bbox=(x, y, w, h), area=measured, rle=rle
    )
    return prepared, issues


def prepare_annotations(coco: Mapping[str, Any], images: Mapping[int, ImageInfo]) -> tuple[list[PreparedAnnotation], list[AuditFinding]]:
    """Check every annotation record; the well-formed, non-crowd ones come back prepared for later checks."""
    cats = {c.get("id"): str(c.get("name", "")) for c in coco.get("categories") or [] if isinstance(c, dict)}
    anns = list(coco.get("annotations") or [])
    compressed = {i: c for i, a in enumerate(anns) if isinstance(a, dict) and (c := compressed_counts(a.get("segmentation"))) is not None}
    totals = dict(zip(compressed, rle_totals(list(compressed.values())).tolist()))
    id_counts = Counter(a.get("id") for a in anns if isinstance(a, dict))
    seen_ids: set[Any] = set()
    findings: list[AuditFinding] = []
    prepared: list[PreparedAnnotation] = []
    for index, ann in enumerate(anns):
        if not isinstance(ann, dict):
            findings.append(make_finding(check=F.CHECK_BAD_SEGMENTATION, message=f"annotations[{index}] is not an object: {ann!r:.60}"))
            continue
        ann_id, im_id = ann.get("id"), ann.get("image_id")
        im = images.get(im_id) if _is_int(im_id) else None
        issues: list[Issue] = []
        if not _is_int(ann_id):
            issues.append((F.CHECK_NON_FINITE, f"id is not an integer: {ann_id!r}"))
        elif ann_id == 0:
            issues.append((F.CHECK_ANNOTATION_ID_ZERO, "id 0: pycocotools never matches it (COCOeval treats 0 as 'unmatched')"))
        if _is_int(ann_id) and id_counts[ann_id] > 1:
            if ann_id in seen_ids:
                issues.append((F.CHECK_ANNOTATION_ID_DUPLICATE, f"id {ann_id} is used by {id_counts[ann_id]} annotations"))
            seen_ids.add(ann_id)
        if im is None:
            issues.append((F.CHECK_UNKNOWN_IMAGE, f"image_id {im_id!r} is not in images"))
        else:
            ready, more = _annotation_issues(ann, im=im, cats=cats, total=totals.get(index))
            issues += more
            if ready is not None:
                prepared.append(ready)
        located: dict[str, Any] = {
            "image_id": im_id if _is_int(im_id) else None,
            "file_name": im.file_name if im else "",
            "annotation_id": ann_id if _is_int(ann_id) else None,
            "category": cats.get(ann.get("category_id"), ""),
        }
        findings += [make_finding(check=check, message=f"annotations[{index}]: {message}", **located) for check, message in issues]
    return prepared, findings

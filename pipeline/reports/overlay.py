"""Drawing for report thumbnails (pure numpy/cv2): class palette, masks and boxes blended over an image with
cv2.addWeighted, labels that avoid each other, side-by-side panels, JPEG data URIs."""

from __future__ import annotations

import base64
import colorsys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from segpipe.core.layout import IGNORE_INDEX

RGB = tuple[int, int, int]
THUMB_HEIGHT = 200
THUMB_MAX_WIDTH = 300
JPEG_QUALITY = 80
OVERLAY_ALPHA = 0.5
IGNORE_COLOUR: RGB = (255, 255, 255)
# Ground truth is outlined in white on a black halo, predictions in their class colour, so the two never share a
# colour whatever the class; what an audit finding names is outlined in magenta, a colour no class gets.
GT_OUTLINE: RGB = (255, 255, 255)
HIGHLIGHT_COLOUR: RGB = (255, 0, 255)
BACKGROUND_COLOUR: RGB = (110, 110, 110)
# tab10 without its grey, then tab20's light shades: distinguishable on photos and on white paper.
_PALETTE: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229),
)


def class_colours(names: Sequence[str], *, background: str | None = None) -> dict[str, RGB]:
    """Colour per class name in the given (category id / class index) order; `background` gets grey."""
    out: dict[str, RGB] = {}
    k = 0
    for name in names:
        if background is not None and name == background:
            out[name] = BACKGROUND_COLOUR
            continue
        if k < len(_PALETTE):
            out[name] = _PALETTE[k]
        else:  # golden-ratio hues: distinct and deterministic for any number of classes
            r, g, b = colorsys.hsv_to_rgb(((k - len(_PALETTE)) * 0.618034) % 1.0, 0.75, 0.9)
            out[name] = (int(r * 255), int(g * 255), int(b * 255))
        k += 1
    return out



class BadGeometry(ValueError):
    """An annotation's segmentation or bbox cannot be drawn (the audit reports why; the gallery shows it)."""


def _coordinate_limit(height: int, width: int) -> float:
    # pycocotools rasterises a polygon edge pixel by pixel: a NaN or 1e12 vertex takes minutes, so far-off
    # coordinates are refused rather than drawn (anything this far out is invisible anyway).
    return 4.0 * max(int(height), int(width), 1)


def _finite_numbers(values: Any, *, limit: float) -> list[float] | None:
    if not isinstance(values, (list, tuple)):
        return None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            number = float(v)
        except OverflowError:  # a JSON integer beyond any float
            return None
        if not abs(number) <= limit:  # NaN fails too
            return None
        out.append(number)
    return out


def annotation_mask(ann: Mapping[str, Any], *, height: int, width: int) -> np.ndarray | None:
    """Binary mask of a COCO annotation or result (polygons, RLE), or None when it has only a box.

    Raises BadGeometry for a segmentation that cannot be decoded (wrong types, bad RLE string, far-off points)."""
    from pycocotools import mask as mask_utils
    from segpipe.evaluators.instance.rle_strings import rle_totals

    seg = ann.get("segmentation")
    if not seg:
        return None
    limit = _coordinate_limit(height, width)
    try:
        if isinstance(seg, list):
            polygons = [_finite_numbers(p, limit=limit) for p in seg]
            if any(p is None or len(p) < 6 or len(p) % 2 for p in polygons):
                raise BadGeometry("polygons must be lists of an even number (>= 6) of finite coordinates")
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(seg, dict):
            size = _finite_numbers(seg.get("size"), limit=limit)
            if size is None or len(size) != 2 or min(size) < 1 or any(v != int(v) for v in size):
                raise BadGeometry(f"RLE size {seg.get('size')!r} is not [height, width]")
            h, w = int(size[0]), int(size[1])
            counts = seg.get("counts")
            # pycocotools trusts the runs (see segpipe.evaluators.audit.format_checks.rle_totals): the pixel total is checked
            # here first, as the evaluators do, rather than relying on whatever the installed version catches.
            if isinstance(counts, list):
                if not all(type(c) is int and c >= 0 for c in counts) or sum(counts) != h * w:
                    raise BadGeometry(f"RLE counts are not non-negative runs summing to {h}x{w}")
                rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
            elif isinstance(counts, (str, bytes)):
                raw = counts.encode("utf-8", "replace") if isinstance(counts, str) else counts
                if int(rle_totals([raw])[0]) != h * w:  # INVALID_RLE (-1) for a corrupt string
                    raise BadGeometry(f"RLE counts string is corrupt or does not cover {h}x{w}")
                rle = {"size": [h, w], "counts": raw}
            else:
                raise BadGeometry(f"RLE counts of type {type(counts).__name__}")
        else:
            raise BadGeometry(f"segmentation of type {type(seg).__name__}")
        mask = mask_utils.decode(rle)
    except BadGeometry:
        raise
    except Exception as err:  # pycocotools raises bare Exception ("input type is not supported") besides ValueError
        raise BadGeometry(f"{type(err).__name__}: {err}") from err
    binary: np.ndarray = mask.astype(bool)
    return binary


def parse_bbox(value: Any, *, limit: float) -> tuple[float, float, float, float] | None:
    """A COCO [x, y, w, h] of finite numbers within `limit` of the origin, else None (drawn without a box)."""
    numbers = _finite_numbers(value, limit=limit)
    return tuple(numbers) if numbers is not None and len(numbers) == 4 else None  # type: ignore[return-value]


def fit_thumbnail(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(THUMB_HEIGHT / max(h, 1), THUMB_MAX_WIDTH / max(w, 1))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _bgr(rgb: RGB) -> tuple[int, int, int]:
    return (rgb[2], rgb[1], rgb[0])


Box = tuple[int, int, int, int]  # x0, y0, x1, y1


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_label(image: np.ndarray, text: str, *, org: tuple[int, int], colour: RGB, taken: list[Box] | None = None) -> Box:
    """Text on a filled box of the class colour, black or white by the colour's brightness (readable on photos).

    Labels already placed (`taken`) push this one down a line at a time so neighbours stay legible."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.38, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x = int(np.clip(org[0], 0, max(0, image.shape[1] - tw - 2)))
    y = int(np.clip(org[1], th + 2, image.shape[0] - 1))
    box = (x, y - th - 2, x + tw + 2, y + base - 1)
    for _ in range(8):
        if taken is None or not any(_overlaps(box, t) for t in taken) or box[3] + th + base + 2 >= image.shape[0]:
            break
        y += th + base + 2
        box = (x, y - th - 2, x + tw + 2, y + base - 1)
    cv2.rectangle(image, box[:2], box[2:], _bgr(colour), thickness=-1)
    ink = (0, 0, 0) if sum(colour) > 400 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y - 1), font, scale, ink, thick, cv2.LINE_AA)
    if taken is not None:
        taken.append(box)
    return box


def draw_instances(image: np.ndarray, items: Sequence[Mapping[str, Any]], *, scale: float, highlight: int | None = None) -> np.ndarray:
    """Overlay instances on a thumbnail (BGR). Each item: mask (full-size bool or None), bbox, colour, label.

    Masks are blended with cv2.addWeighted and outlined; box-only items get a rectangle. The item whose
    `id` equals `highlight` gets a thick outline (audit: the suspicious annotation).
    """
    th, tw = image.shape[:2]
    layer = image.copy()
    painted = np.zeros((th, tw), dtype=bool)
    small_masks: list[np.ndarray | None] = []
    for item in items:
        m = item.get("mask")
        if m is None:
            small_masks.append(None)
            continue
        sm = cv2.resize(m.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST).astype(bool)
        layer[sm] = _bgr(item["colour"])
        painted |= sm
        small_masks.append(sm)
    blended = cv2.addWeighted(layer, OVERLAY_ALPHA, image, 1.0 - OVERLAY_ALPHA, 0.0)
    out = np.where(painted[..., None], blended, image)
    taken: list[Box] = []
    # The highlighted item is drawn last, and its label placed first, so nothing covers it.
    order = sorted(range(len(items)), key=lambda i: highlight is not None and items[i].get("id") == highlight)
    labels: list[tuple[str, tuple[int, int], RGB]] = []
    for i in order:
        item, sm = items[i], small_masks[i]
        marked = highlight is not None and item.get("id") == highlight
        outline: RGB = HIGHLIGHT_COLOUR if marked else item.get("outline", item["colour"])
        thick = 3 if marked else 2
        # A thumbnail is a few hundred pixels: a box further out than that many thumbnails is not drawn.
        box = parse_bbox(item.get("bbox"), limit=_coordinate_limit(th, tw) / max(scale, 1e-9)) or (0.0, 0.0, 0.0, 0.0)
        x, y, w, h = (v * scale for v in box)
        halo = item.get("halo", False) and not marked
        if sm is not None:
            contours, _ = cv2.findContours(sm.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if halo:
                cv2.drawContours(out, contours, -1, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.drawContours(out, contours, -1, _bgr(outline), thick, cv2.LINE_AA)
        if sm is None or marked:
            p1, p2 = (int(x), int(y)), (int(round(x + w)), int(round(y + h)))
            if halo:
                cv2.rectangle(out, p1, p2, (0, 0, 0), thick + 2)
            cv2.rectangle(out, p1, p2, _bgr(outline), thick)
        if item.get("label"):
            labels.append((str(item["label"]), (int(x), int(y) - 1), HIGHLIGHT_COLOUR if marked else item["colour"]))
    for text, org, colour in reversed(labels):  # the last drawn (highlighted, then the highest scores) claim their place first
        draw_label(out, text, org=org, colour=colour, taken=taken)
    return out


def draw_label_map(image: np.ndarray, labels: np.ndarray, *, colours: Sequence[RGB]) -> np.ndarray:
    """Overlay a semantic label map (class index per pixel; 0 background unpainted, 255 ignore in white)."""
    th, tw = image.shape[:2]
    small = cv2.resize(labels.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for idx, rgb in enumerate(colours[:255]):
        lut[idx] = _bgr(rgb)
    lut[IGNORE_INDEX] = _bgr(IGNORE_COLOUR)
    painted = (small != 0) & ((small < len(colours)) | (small == IGNORE_INDEX))
    blended = cv2.addWeighted(lut[small], OVERLAY_ALPHA, image, 1.0 - OVERLAY_ALPHA, 0.0)
    out = np.where(painted[..., None], blended, image)
    # Outlines in the class colour keep regions readable where the photo's colour cancels the tint.
    for idx in sorted(int(v) for v in np.unique(small) if 0 < v < min(len(colours), IGNORE_INDEX)):
        contours, _ = cv2.findContours((small == idx).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, _bgr(colours[idx]), 2, cv2.LINE_AA)
    return out


TITLE_STRIP = 16


def side_by_side(panels: Sequence[np.ndarray], *, titles: Sequence[str]) -> np.ndarray:
    """Panels of equal height, separated by a white gap, each under a white strip with its title (a title
    drawn on the image would hide labels of objects near the top edge)."""
    height = max(p.shape[0] for p in panels)
    row: list[np.ndarray] = []
    for i, (panel, title) in enumerate(zip(panels, titles)):
        p = cv2.copyMakeBorder(panel, TITLE_STRIP, height - panel.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(p, title, (2, TITLE_STRIP - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (30, 30, 30), 1, cv2.LINE_AA)
        if i:
            row.append(np.full((height + TITLE_STRIP, 6, 3), 255, dtype=np.uint8))
        row.append(p)
    return np.hstack(row)


def placeholder(*, width: int, height: int, text: str) -> np.ndarray:
    """Grey canvas for an image that cannot be read (audits show broken images too)."""
    small = fit_thumbnail(np.full((max(int(height), 16), max(int(width), 16), 3), 90, dtype=np.uint8))
    draw_label(small, text, org=(4, small.shape[0] // 2), colour=(230, 230, 230))
    return small


@dataclass(frozen=True)
class Thumbnail:
    uri: str  # data:image/jpeg;base64,...
    width: int
    height: int


def encode_thumbnail(image: np.ndarray) -> Thumbnail:
    return Thumbnail(uri=jpeg_data_uri(image), width=int(image.shape[1]), height=int(image.shape[0]))


def jpeg_data_uri(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} thumbnail as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")



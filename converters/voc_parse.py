"""Pure parsing of LabelImg / Pascal VOC XML: bytes -> `VocDocument` -> COCO `AnnotationRecord`s.

Nothing here touches the disk; `segpipe.converters.voc` holds the `read_*`/`convert_*` edges. Any DTD is
refused outright, so entity bombs (billion laughs) and external entities
(`<!ENTITY x SYSTEM "file:///etc/passwd">`) are never expanded, fetched or read: documents that
provably hold no DTD go to the C parser, every other document to defusedxml with `forbid_dtd=True`.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple
from xml.etree.ElementTree import Element, ParseError
from xml.etree.ElementTree import fromstring as plain_fromstring

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring as defused_fromstring

from segpipe.converters.coco import AnnotationRecord
from segpipe.core.errors import AnnotationError
from segpipe.converters.report import Finding, Severity

VOC_ROOT_TAG = "annotation"
BOX_FIELDS: tuple[str, str, str, str] = ("xmin", "ymin", "xmax", "ymax")
# Python's float() also takes "1_000", "nan", "inf" and "infinity"; none of them is a pixel coordinate.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Documents in these encodings spell "<!DOCTYPE" with the same bytes, so its absence proves there is no
# DTD and therefore no entity declaration of any kind (entities can only be declared inside a DTD).
_ASCII_COMPATIBLE = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii", b"iso-8859-1", b"latin-1", b"latin1"})
_XML_DECLARATION = re.compile(rb"(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})
_FLAG_TAGS: tuple[str, str, str] = ("difficult", "truncated", "occluded")
_PLAIN_FLAGS: dict[str, bool] = {"0": False, "1": True}
_UNSET = object()


class VocObject(NamedTuple):
    """One `<object>`; `problem` says why it could not be read (its coordinates are then NaN).

    A NamedTuple rather than a frozen dataclass: it is built once per box and is about 4x cheaper.
    """

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool | None = None
    occluded: bool | None = None
    pose: str | None = None
    problem: str | None = None
    # <part>s and <actions> (VOC person layout and action tasks), as annotation attributes; None when absent
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class VocDocument:
    """One XML file. `findings` holds the non-fatal notes made while parsing (empty tags, odd flags)."""

    filename: str | None
    size: tuple[int, int, int | None] | None
    objects: tuple[VocObject, ...]
    findings: tuple[Finding, ...] = ()


def parse_voc_xml(data: bytes, *, path: str) -> VocDocument:
    """Parse one VOC XML document. Raises AnnotationError for documents that cannot be used at all.

    >>> doc = parse_voc_xml(b"<annotation><object><name>cat</name><bndbox><xmin>1</xmin>"
    ...     b"<ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>", path="a.xml")
    >>> doc.objects[0].name, doc.objects[0].xmax
    ('cat', 3.0)
    """
    root = _parse_root(data, path=path)
    notes: list[Finding] = []
    empty: Counter[str] = Counter()
    size = _parse_size(root.find("size"), path=path, notes=notes, empty=empty)
    objects = tuple(
        _parse_object(el, index=i, path=path, notes=notes, empty=empty) for i, el in enumerate(root.findall("object"))
    )
    if empty:
        listed = ", ".join(f"<{tag}/> ×{n}" for tag, n in sorted(empty.items()))
        notes.append(Finding(file=path, severity="info", code="empty_tag", message=f"empty tags treated as absent: {listed}"))
    filename = root.findtext("filename")
    return VocDocument(filename=(filename.strip() or None) if filename else None, size=size, objects=objects, findings=tuple(notes))


def _provably_dtd_free(data: bytes) -> bool:
    """True when `data` is in an ASCII-compatible encoding and holds no `<!DOCTYPE` at all."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:  # UTF-16/32: bytes differ
        return False
    declared = _XML_DECLARATION.match(data)
    if declared is not None and declared.group(1).lower() not in _ASCII_COMPATIBLE:
        return False
    return b"<!DOCTYPE" not in data and b"<!ENTITY" not in data


def _parse_root(data: bytes, *, path: str) -> Element:
    try:
        if _provably_dtd_free(data):
            # Without a DTD there is nothing for defusedxml to defuse, and the C parser is about 3x faster
            # than defusedxml's pure-Python one (benchmarks/convert_voc.py). Undeclared entity references
            # still fail ("undefined entity").
            root = plain_fromstring(data)
        else:
            # forbid_dtd: a VOC file never needs a DTD, and refusing it stops every entity trick before
            # a single declaration is processed (https://github.com/tiran/defusedxml#attack-vectors).
            root = defused_fromstring(data, forbid_dtd=True)
    except DTDForbidden as err:
        raise AnnotationError(path, "<!DOCTYPE>", "XML declares a DTD; DTDs and entities are refused, never expanded or read", code="xml_dtd_refused") from err
    except (EntitiesForbidden, ExternalReferenceForbidden) as err:
        raise AnnotationError(path, "<!ENTITY>", "XML declares entities; they are refused, never expanded or read", code="xml_dtd_refused") from err
    except ParseError as err:
        raise AnnotationError(path, "", f"malformed XML: {err}", code="malformed_xml") from err
    except (ValueError, LookupError) as err:  # unknown or multi-byte encoding declarations
        raise AnnotationError(path, "", f"unreadable XML: {err}", code="malformed_xml") from err
    if root.tag != VOC_ROOT_TAG:
        raise AnnotationError(path, f"<{root.tag}>", f"root element is <{root.tag}>, not <{VOC_ROOT_TAG}>: not a VOC annotation", code="not_voc")
    return root


def _stripped(raw: str | None, *, tag: str, empty: Counter[str]) -> str | None:
    """Text of a tag without surrounding blanks; None when absent, and counted in `empty` when empty."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        empty[tag] += 1
        return None
    return text


def _parse_size(el: Element | None, *, path: str, notes: list[Finding], empty: Counter[str]) -> tuple[int, int, int | None] | None:
    if el is None:
        return None
    values: dict[str, int | None] = {}
    for tag in ("width", "height", "depth"):
        raw = _stripped(el.findtext(tag), tag=tag, empty=empty)
        values[tag] = _parse_dimension(raw)
        if raw is not None and values[tag] is None:
            notes.append(Finding(file=path, severity="warning", code="invalid_size", message=f"size.{tag}: not a positive integer: {raw!r}; ignored"))
    width, height = values["width"], values["height"]
    if width is None or height is None:
        return None
    return (width, height, values["depth"])


def _parse_dimension(raw: str | None) -> int | None:
    if raw is None or not _NUMBER.fullmatch(raw):
        return None
    value = float(raw)
    return int(value) if value.is_integer() and value > 0 else None


def _parse_flag(raw: str | None, *, tag: str, where: str, path: str, notes: list[Finding], empty: Counter[str]) -> bool | None:
    text = _stripped(raw, tag=tag, empty=empty)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    notes.append(Finding(file=path, severity="warning", code="invalid_flag", message=f"{where}.{tag}: expected 0 or 1, got {text!r}; treated as absent"))
    return None


def _parse_coordinate(raw: str | None, *, tag: str) -> tuple[float, str | None]:
    text = raw.strip() if raw is not None else ""
    if not text:
        return math.nan, f"bndbox.{tag}: missing"
    if not _NUMBER.fullmatch(text):
        return math.nan, f"bndbox.{tag}: not a number: {text!r}"
    value = float(text)
    if not math.isfinite(value):  # "1e999" overflows to inf
        return math.nan, f"bndbox.{tag}: not a finite number: {text!r}"
    return value, None


def _parse_object(el: Element, *, index: int, path: str, notes: list[Finding], empty: Counter[str]) -> VocObject:
    # Only top-level <object>s are objects: <part>s (VOC person layout) nest inside them and are not boxes
    # of their own class; they and the object's <actions> are kept as its attributes. Written for speed (C `findtext`, a fast
    # path for plain numbers and 0/1 flags): extraction must not cost more than the parse itself;
    # anything unusual takes the slow path that words the finding.
    raw_name = el.findtext("name")
    name = raw_name.strip() if raw_name else ""
    bndbox = el.find("bndbox")
    texts = [bndbox.findtext(tag) for tag in BOX_FIELDS] if bndbox is not None else None
    coords = _plain_coordinates(texts)
    problems: list[str] = [] if name else ["name: missing or empty"]
    if coords is None:
        coords = [math.nan, math.nan, math.nan, math.nan]
        if texts is None:
            problems.append("bndbox: missing")
        else:
            for i, tag in enumerate(BOX_FIELDS):
                coords[i], problem = _parse_coordinate(texts[i], tag=tag)
                if problem:
                    problems.append(problem)
    flags: list[bool | None] = []
    for tag in _FLAG_TAGS:
        raw = el.findtext(tag)
        flag = _PLAIN_FLAGS.get(raw, _UNSET) if raw is not None else None
        flags.append(flag if flag is not _UNSET else _parse_flag(raw, tag=tag, where=f"object[{index}]", path=path, notes=notes, empty=empty))  # type: ignore[arg-type]
    raw_pose = el.findtext("pose")
    pose = _stripped(raw_pose, tag="pose", empty=empty) if raw_pose is not None else None
    extra = _parts_and_actions(el, where=f"object[{index}]", path=path, notes=notes) if el.find("part") is not None or el.find("actions") is not None else None
    return VocObject(name, coords[0], coords[1], coords[2], coords[3], bool(flags[0]), flags[1], flags[2], pose, "; ".join(problems) or None, extra)


def _parts_and_actions(el: Element, *, where: str, path: str, notes: list[Finding]) -> dict[str, Any]:
    """An object's <part>s as `parts: [{name, xmin, ymin, xmax, ymax}]` (the XML's numbers as written: the
    VOC2012 person layout, https://host.robots.ox.ac.uk/pascal/VOC/voc2012/htmldoc/devkit_doc.html#SECTION00052000000000000000),
    and its <actions> as `actions: {name: bool}` (the action task's flags). A part whose box cannot be read is a
    warning row and is left out of the list."""
    extra: dict[str, Any] = {}
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(el.findall("part")):
        name = (part.findtext("name") or "").strip()
        box = part.find("bndbox")
        values = [_parse_coordinate(box.findtext(tag), tag=tag) for tag in BOX_FIELDS] if box is not None else None
        problem = "bndbox: missing" if values is None else "; ".join(p for _, p in values if p)
        if not name or problem:
            notes.append(Finding(file=path, severity="warning", code="invalid_part",
                                 message=f"{where}.part[{i}]: {problem or 'name: missing or empty'}; the part is left out of the object's attributes"))
            continue
        parts.append({"name": name, **{tag: v for tag, (v, _) in zip(BOX_FIELDS, values or [])}})
    if parts:
        extra["parts"] = parts
    actions = el.find("actions")
    if actions is not None:
        flags: dict[str, bool] = {}
        for child in actions:
            text = (child.text or "").strip()
            if text in ("0", "1"):
                flags[child.tag] = text == "1"
            else:
                notes.append(Finding(file=path, severity="warning", code="invalid_flag",
                                     message=f"{where}.actions.{child.tag}: expected 0 or 1, got {text!r}; left out"))
        extra["actions"] = flags
    return extra


def _plain_coordinates(texts: list[str | None] | None) -> list[float] | None:
    """The four coordinates when all are plain finite numbers; None sends the caller to the slow path."""
    if texts is None:
        return None
    try:
        values = [float(t) for t in texts]  # type: ignore[arg-type]  # None -> TypeError
    except (TypeError, ValueError):
        return None
    # float() also takes "nan", "inf" and "1_0"; a non-finite sum catches the first two (and sends
    # huge-but-finite values to the slow path, which accepts them).
    if not math.isfinite(sum(values)) or any("_" in t for t in texts):  # type: ignore[operator]
        return None
    return values


def _fmt(value: float) -> str:
    return f"{value:g}" if value == value else "nan"


def check_size(doc: VocDocument, *, width: int, height: int, path: str) -> list[Finding]:
    """A warning when the XML's <size> disagrees with the image header (which wins)."""
    if doc.size is None or doc.size[:2] == (width, height):
        return []
    hint = " (swapped: EXIF orientation?)" if doc.size[:2] == (height, width) else ""
    return [Finding(file=path, severity="warning", code="size_mismatch",
        message=f"size: XML says {doc.size[0]}×{doc.size[1]}, the image is {width}×{height}{hint}; the image's size is used")]


def check_filename(doc: VocDocument, *, image_name: str | None, path: str) -> list[Finding]:
    """A warning when `<filename>` disagrees with the image found by the XML's own name, or holds a path.

    `<filename>` is only compared, never opened (`../` must never be followed); `image_name` is None
    when no image was found. Callers escape undecodable file names (report.display_path).
    """
    name = doc.filename
    if name is None or name == image_name:
        return []
    stem = posixpath.splitext(posixpath.basename(path))[0]
    found = f"the image found by the XML's name ({image_name})" if image_name else f"the XML's own name ({stem})"
    if "/" in name or "\\" in name or name in (".", ".."):
        return [Finding(file=path, severity="warning", code="filename_path", message=f"filename: {name!r} holds a path; it is not followed, {found} is used")]
    # Without an image only the stem can be compared; with one, the extension must match as well.
    if not (name in (image_name, stem) or (image_name is None and posixpath.splitext(name)[0] == stem)):
        return [Finding(file=path, severity="warning", code="filename_mismatch", message=f"filename: {name!r} disagrees with {found}; it is not followed")]
    return []


def voc_objects_to_annotations(
    doc: VocDocument,
    *,
    width: int,
    height: int,
    one_based: bool,
    path: str,
    category_of: Callable[[str], str] = lambda n: n,
) -> tuple[list[AnnotationRecord], list[Finding]]:
    """Boxes of a parsed document as COCO records for a `width`×`height` image, plus findings.

    Pixel-corner convention by default, bbox = [xmin, ymin, xmax − xmin, ymax − ymin]; `one_based`
    selects Pascal VOC's, [xmin − 1, ymin − 1, xmax − xmin + 1, ymax − ymin + 1] (1-based
    pixel indices, http://host.robots.ox.ac.uk/pascal/VOC/voc2012/devkit_doc.pdf). Boxes reaching
    outside the image are clipped (warning). Objects that cannot be used (unreadable, non-finite, inverted,
    empty after clipping, label refused by `category_of` with KeyError/ValueError/AnnotationError) give an error finding and no record; the caller decides what
    that means for the image.
    """
    records: list[AnnotationRecord] = []
    findings: list[Finding] = []

    def add(severity: Severity, code: str, index: int, obj: VocObject, message: str) -> None:
        where = f"object[{index}]" + (f" ({obj.name!r})" if obj.name else "")
        findings.append(Finding(file=path, severity=severity, code=code, message=f"{where}: {message}"))

    isfinite = math.isfinite
    offset = 1.0 if one_based else 0.0
    fwidth, fheight = float(width), float(height)
    for index, obj in enumerate(doc.objects):
        if obj.problem:
            add("error", "invalid_object", index, obj, obj.problem)
            continue
        xmin, ymin, xmax, ymax = obj.xmin, obj.ymin, obj.xmax, obj.ymax
        if not (isfinite(xmin) and isfinite(ymin) and isfinite(xmax) and isfinite(ymax)):
            add("error", "invalid_box", index, obj, "bndbox: non-finite coordinate " + ", ".join(_fmt(v) for v in (xmin, ymin, xmax, ymax)))
            continue
        try:
            category = category_of(obj.name)
        except (KeyError, ValueError, AnnotationError) as err:
            reason = err.reason if isinstance(err, AnnotationError) else f"label {obj.name!r} is not a declared class"
            add("error", "unknown_label", index, obj, f"name: {reason}")
            continue
        x0, y0, x1, y1 = xmin - offset, ymin - offset, xmax, ymax
        corners = f"xmin={_fmt(xmin)}, ymin={_fmt(ymin)}, xmax={_fmt(xmax)}, ymax={_fmt(ymax)}" if x1 < x0 or y1 < y0 else ""
        if corners:
            add("error", "inverted_box", index, obj, f"bndbox: max < min ({corners})")
            continue
        cx0, cx1 = min(max(x0, 0.0), fwidth), min(max(x1, 0.0), fwidth)
        cy0, cy1 = min(max(y0, 0.0), fheight), min(max(y1, 0.0), fheight)
        if cx0 != x0 or cy0 != y0 or cx1 != x1 or cy1 != y1:
            add(
                "warning", "box_clipped", index, obj,
                f"bndbox ({_fmt(xmin)}, {_fmt(ymin)}, {_fmt(xmax)}, {_fmt(ymax)}) reaches outside the "
                f"{width}×{height} image; clipped to [{_fmt(cx0)}, {_fmt(cy0)}, {_fmt(cx1)}, {_fmt(cy1)}]",
            )
        w, h = cx1 - cx0, cy1 - cy0
        if w <= 0 or h <= 0:
            add("error", "empty_box", index, obj,
                f"bndbox has zero width or height inside the {width}×{height} image "
                f"(xmin={_fmt(xmin)}, ymin={_fmt(ymin)}, xmax={_fmt(xmax)}, ymax={_fmt(ymax)})")
            continue
        attributes: dict[str, Any] = {"difficult": obj.difficult}
        if obj.truncated is not None:
            attributes["truncated"] = obj.truncated
        if obj.occluded is not None:
            attributes["occluded"] = obj.occluded
        if obj.pose is not None:
            attributes["pose"] = obj.pose
        if obj.extra:
            attributes.update(obj.extra)
        records.append(AnnotationRecord(category=category, bbox=(cx0, cy0, w, h), area=w * h, attributes=attributes))
    return records, findings

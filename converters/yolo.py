"""YOLO txt folders -> COCO (`segpipe convert yolo`): LabelImg's YOLO save format and Ultralytics'
detection and segmentation labels.

    SRC/**/<name>.<image ext>  and its label file, found the Ultralytics way
    (https://docs.ultralytics.com/datasets/detect/: the last `images` folder of the path replaced by
    `labels`, extension `.txt`), else beside the image (LabelImg);
    class names: --classes (classes.txt, obj.names or data.yaml), else SRC/data.yaml, SRC/classes.txt,
    SRC/labels/classes.txt, the `names =` file of SRC/obj.data, or SRC/obj.names. Names are required: a
    class index is meaningless without them.

Darknet-style exports (CVAT's "YOLO 1.1", https://docs.cvat.ai/docs/manual/advanced/formats/format-yolo/):
`obj.names`, `obj.data` (`names = ...`, `train = train.txt`, `valid = ...`), the subset lists, and
`obj_<subset>_data/` holding each image with its `.txt` beside it. The lists' paths start with `data/` (the
darknet folder they were written for): that prefix is dropped and the image looked up under SRC. An image
named in a list keeps the list's key as its `subset`; a listed image that is absent and a label file
without its image are report rows.

Each label line is `class cx cy w h` (a box) or `class x0 y0 x1 y1 ...` (a polygon, >= 3 points), all
coordinates normalised to [0, 1] by the image size read from the image header. An image without a label
file is a negative image, as in Ultralytics. Problems are report rows, never guesses: a class index out of
range (LabelImg rewrites classes.txt and can shift indices: https://github.com/HumanSignal/labelImg/issues/475),
duplicate names, coordinates outside [0, 1].
"""

from __future__ import annotations

import math
import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from segpipe.converters.coco import MIXED_BOX_MASK_CODE, AnnotationRecord, ImageRecord, fill_box_masks
from segpipe.converters.conversion_output import (
    Conversion, ConversionOutputs, FileOutcome, assemble, categories_for, collect, image_size, path_inside, row, run_conversion,
    skipped_for_errors, write_conversion_dir,
)
from segpipe.core.errors import AnnotationError
from segpipe.core.images import NON_UTF8_REASON, is_image_name, is_utf8_name, read_input_bytes
from segpipe.converters.input_files import input_files
from segpipe.converters.report import ConversionReport, Finding
from segpipe.converters.shapes import MIN_POLYGON_POINTS, box_record, mask_record, polygon_mask

YOLO_FORMAT = "yolo"
LABEL_EXTENSION = ".txt"
CLASSES_TXT = "classes.txt"
DATA_YAML_NAMES: tuple[str, ...] = ("data.yaml", "dataset.yaml")
OBJ_NAMES = "obj.names"
OBJ_DATA = "obj.data"
DARKNET_SUBSETS: tuple[str, ...] = ("train", "valid", "test")  # obj.data keys naming subset lists
DARKNET_PREFIX = "data/"  # darknet's own folder, which the exported lists' paths start with
BOX_TOKENS = 5  # class cx cy w h
PIXEL_DECIMALS = 6


def parse_classes_txt(text: str, *, path: str) -> tuple[list[str] | None, list[Finding]]:
    """classes.txt (one name per line, blank lines skipped) -> names, or None with error rows (a name
    listed twice makes every index after it ambiguous)."""
    names: list[str] = []
    first: dict[str, int] = {}
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in first:
            findings.append(row(path, "error", "duplicate_class",
                f"line {number}: class {name!r} listed twice (first on line {first[name]}); fix the file, class indices cannot be guessed"))
        first.setdefault(name, number)
        names.append(name)
    if not names:
        findings.append(row(path, "error", "no_classes", "no class names in the file"))
    return (None if findings else names), findings


def parse_data_yaml(text: str, *, path: str) -> tuple[list[str] | None, list[Finding]]:
    """Ultralytics data.yaml `names` (a list, or a mapping index -> name with indices 0..n-1) and `nc`.

    >>> parse_data_yaml("names: {0: cat, 1: dog}", path="d.yaml")[0]
    ['cat', 'dog']
    """
    import yaml

    class NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs here
        # An alias is a reference: a few hundred bytes of nested `&a [*a, *a]` expand to gigabytes once
        # printed ("billion laughs", https://en.wikipedia.org/wiki/Billion_laughs_attack). data.yaml needs none.
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", self.peek_event().start_mark)
            return super().compose_node(parent, index)

    try:
        data = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.YAMLError as err:
        return None, [row(path, "error", "invalid_yaml", f"not valid YAML: {err}")]
    raw = data.get("names") if isinstance(data, dict) else None
    if isinstance(raw, dict):
        keys = list(raw)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(range(len(keys))):
            return None, [row(path, "error", "invalid_classes", f"names: the keys must be the indices 0..{len(keys) - 1}, got {sorted(map(str, keys))}")]
        raw = [raw[i] for i in range(len(keys))]
    if not isinstance(raw, list) or not raw:
        return None, [row(path, "error", "no_classes", "names: missing or not a list/mapping of class names")]
    findings: list[Finding] = []
    if (bad := next((i for i, n in enumerate(raw) if not isinstance(n, (str, int, float))), None)) is not None:
        return None, [row(path, "error", "invalid_classes", f"names[{bad}]: a class name must be text, got {type(raw[bad]).__name__}")]
    names = [str(n).strip() for n in raw]
    for i, name in enumerate(names):
        if not name:
            findings.append(row(path, "error", "invalid_classes", f"names[{i}]: empty name"))
        elif name in names[:i]:
            findings.append(row(path, "error", "duplicate_class", f"names[{i}]: {name!r} listed twice (first at index {names.index(name)})"))
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        findings.append(row(path, "error", "invalid_classes", f"nc: says {nc!r} classes, names lists {len(names)}"))
    return (None if findings else names), findings


def _number(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(token)
    return value


def parse_yolo_labels(text: str, *, names: Sequence[str], width: int, height: int, path: str,
                      rectangle_segmentation: bool = False) -> tuple[list[AnnotationRecord], list[Finding]]:
    """One label file -> COCO records for a `width`×`height` image, plus findings (an error row per unusable line)."""
    records: list[AnnotationRecord] = []
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"line {number}"
        try:
            index = int(tokens[0])
        except ValueError:
            findings.append(row(path, "error", "invalid_class", f"{where}: class index {tokens[0]!r} is not an integer"))
            continue
        if not 0 <= index < len(names):
            findings.append(row(path, "error", "class_out_of_range",
                f"{where}: class index {index} is outside 0..{len(names) - 1} ({len(names)} names declared)"))
            continue
        try:
            coords = [_number(t) for t in tokens[1:]]
        except ValueError:
            findings.append(row(path, "error", "invalid_coordinate", f"{where}: coordinates must be finite numbers, got {' '.join(tokens[1:])!r}"))
            continue
        outside = [v for v in coords if not 0.0 <= v <= 1.0]
        if outside:
            findings.append(row(path, "error", "coordinate_out_of_range", f"{where}: normalised coordinates must lie in [0, 1], got {outside[0]:g}"))
            continue
        category = names[index]
        if len(tokens) == BOX_TOKENS:
            cx, cy, w, h = coords
            if w <= 0 or h <= 0:
                findings.append(row(path, "error", "empty_box", f"{where}: box width and height must be > 0, got w={w:g} h={h:g}"))
                continue
            # Rounded to 1e-6 px: normalised values carry 6 decimals (Ultralytics, LabelImg), and unrounded
            # products print as 1.9999999999999996 where the annotator drew 2.
            x0, y0 = max(round((cx - w / 2) * width, PIXEL_DECIMALS), 0.0), max(round((cy - h / 2) * height, PIXEL_DECIMALS), 0.0)
            x1, y1 = min(round((cx + w / 2) * width, PIXEL_DECIMALS), float(width)), min(round((cy + h / 2) * height, PIXEL_DECIMALS), float(height))
            records.append(box_record(category=category, x0=x0, y0=y0, x1=x1, y1=y1, rectangle_segmentation=rectangle_segmentation))
            continue
        if len(coords) % 2 or len(coords) < 2 * MIN_POLYGON_POINTS:
            findings.append(row(path, "error", "invalid_polygon",
                f"{where}: expected 4 box values or >= {MIN_POLYGON_POINTS} x y pairs, got {len(coords)} values"))
            continue
        polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
        record = mask_record(category=category, mask=polygon_mask([polygon], width=width, height=height))
        if record is None:
            findings.append(row(path, "error", "empty_polygon", f"{where}: the polygon covers no pixel"))
            continue
        records.append(record)
    return records, findings


def label_candidates(image_rel: str) -> list[str]:
    """Label paths for an image (relative POSIX paths): the Ultralytics `images` -> `labels` swap, then beside.

    >>> label_candidates("images/train/a.jpg")
    ['labels/train/a.txt', 'images/train/a.txt']
    """
    parts = list(PurePosixPath(image_rel).with_suffix(LABEL_EXTENSION).parts)
    out: list[str] = []
    if "images" in parts[:-1]:
        i = len(parts) - 2 - parts[:-1][::-1].index("images")
        out.append("/".join(parts[:i] + ["labels"] + parts[i + 1 :]))
    out.append("/".join(parts))
    return out


def read_class_names(path: Path) -> tuple[list[str] | None, list[Finding]]:
    try:
        text = read_input_bytes(path).decode("utf-8-sig")
    except AnnotationError as err:
        return None, [row(path, "error", "invalid_classes", f"cannot read the class names: {err.reason}")]
    except UnicodeDecodeError as err:
        return None, [row(path, "error", "invalid_classes", f"cannot read the class names: {err}")]
    if path.suffix.lower() in (".yaml", ".yml"):
        return parse_data_yaml(text, path=str(path))
    return parse_classes_txt(text, path=str(path))


def parse_obj_data(text: str) -> dict[str, str]:
    """darknet's obj.data: `key = value` lines (`#` comments, blank lines skipped).

    >>> parse_obj_data(chr(10).join(["classes = 2", "train = data/train.txt # list", "names = data/obj.names"]))
    {'classes': '2', 'train': 'data/train.txt', 'names': 'data/obj.names'}
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key and value:
                out[key] = value
    return out


def darknet_rel(path: str) -> str:
    """A path written in a darknet export (relative to the darknet folder, `data/...`) as a path under SRC.

    >>> darknet_rel("data/obj_train_data/a.jpg"), darknet_rel("obj.names")
    ('obj_train_data/a.jpg', 'obj.names')
    """
    path = path.strip().replace("\\", "/")
    return path[len(DARKNET_PREFIX):] if path.startswith(DARKNET_PREFIX) else path


def read_obj_data(src: Path) -> dict[str, str]:
    """SRC/obj.data's keys ({} when absent or unreadable: the files it names are then looked for by name)."""
    path = src / OBJ_DATA
    if not path.is_file():
        return {}
    try:
        return parse_obj_data(read_input_bytes(path).decode("utf-8-sig", "replace"))
    except AnnotationError:
        return {}


def find_class_file(src: Path) -> Path:
    candidates = [*(src / n for n in DATA_YAML_NAMES), src / CLASSES_TXT, src / "labels" / CLASSES_TXT]
    named = read_obj_data(src).get("names")
    if named is not None:
        inside = path_inside(src, darknet_rel(named))
        if inside is not None:
            candidates.append(inside)
    candidates.append(src / OBJ_NAMES)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AnnotationError(src, "classes", f"no class names: name a class file ({CLASSES_TXT}, {OBJ_NAMES} or data.yaml), or put one in "
                          "the folder", code="missing_classes")


def darknet_subsets(src: Path, *, listing: Any, report: ConversionReport) -> tuple[dict[str, str], set[str]]:
    """{image path under SRC: subset} from the lists obj.data names, and the lists' own paths (not labels)."""
    subsets: dict[str, str] = {}
    lists: set[str] = set()
    for key, value in read_obj_data(src).items():
        if key not in DARKNET_SUBSETS:
            continue
        rel = darknet_rel(value)
        path = path_inside(src, rel)
        if path is None or not path.is_file():
            report.add(file=src / OBJ_DATA, severity="warning", code="missing_list", message=f"{key} = {value}: no such file under the dataset root")
            continue
        lists.add(rel)
        text = read_input_bytes(path).decode("utf-8-sig", "replace")
        for number, line in enumerate(text.splitlines(), start=1):
            image_rel = darknet_rel(line)
            if not image_rel:
                continue
            if path_inside(src, image_rel) is None:
                report.add(file=path, severity="error", code="image_path_outside",
                           message=f"line {number}: {line.strip()!r} leaves the dataset root; not followed")
                continue
            subsets.setdefault(image_rel, key)
    return subsets, lists


def _convert_image(*, src: Path, image_rel: str, label_rel: str | None, names: Sequence[str], rectangle_segmentation: bool,
                   subset: str | None = None) -> FileOutcome:
    image = src / image_rel
    annotation = src / label_rel if label_rel else image
    size, findings = image_size(image, annotation=annotation, declared=None)
    if size is None:
        return FileOutcome(None, tuple(findings))
    extra = {"subset": subset} if subset else {}
    if label_rel is None:
        return FileOutcome(ImageRecord(file_name=image_rel, width=size[0], height=size[1], extra=extra),
                           (row(image, "info", "no_label_file", "no label file: kept as a negative image (Ultralytics' rule)"),))
    try:
        text = read_input_bytes(annotation).decode("utf-8-sig")
    except AnnotationError as err:
        return FileOutcome(None, (row(annotation, "error", err.code, f"{err.reason}; the image is skipped"),))
    except UnicodeDecodeError as err:
        return FileOutcome(None, (row(annotation, "error", "unreadable_label", f"not UTF-8 text: {err}; the image is skipped"),))
    records, found = parse_yolo_labels(text, names=names, width=size[0], height=size[1], path=str(annotation), rectangle_segmentation=rectangle_segmentation)
    findings.extend(found)
    skipped = skipped_for_errors(found, path=annotation)
    if skipped is not None:
        return FileOutcome(None, (*findings, skipped))
    return FileOutcome(ImageRecord(file_name=image_rel, width=size[0], height=size[1], annotations=tuple(records), extra=extra), tuple(findings))


def convert_yolo(src: Path, out: Path, *, classes: Path | None = None, rectangle_segmentation: bool = False, box_masks: bool = True,
                 strict: bool = False) -> ConversionReport:
    """Every image under `src` with its YOLO label file -> OUT/instances.json (+ dataset.json, report).

    Raises AnnotationError before converting when `src` is not a folder or no class-name file is found."""
    conversion = yolo_conversion(src, classes=classes, rectangle_segmentation=rectangle_segmentation, box_masks=box_masks, strict=strict)
    return write_conversion_dir(Path(out), conversion)


def yolo_conversion(src: Path, *, files: Iterable[str | os.PathLike[str]] | None = None, classes: Path | None = None, rectangle_segmentation: bool = False,
                    box_masks: bool = True, strict: bool = False) -> Conversion:
    """The YOLO dataset under `src` (only `files` of it when they are listed) in memory: COCO dict and findings."""
    src, listing = Path(src), input_files(files)
    if not src.is_dir():
        raise AnnotationError(src, "", "source is not a directory", code="missing_source")
    class_file = Path(classes) if classes is not None else find_class_file(src)
    report = ConversionReport(strict=strict)

    def build(outputs: ConversionOutputs) -> dict[str, Any] | None:
        names, problems = read_class_names(class_file)
        report.extend(problems)
        if names is None:
            return None
        files = []
        for p in listing.walk(src):
            rel = p.relative_to(src).as_posix()
            if is_utf8_name(rel):
                files.append(rel)
            elif is_image_name(rel) or rel.endswith(LABEL_EXTENSION):
                report.add(file=p, severity="error", code="non_utf8_name", message=NON_UTF8_REASON)
        present = set(files)
        subsets, lists = darknet_subsets(src, listing=listing, report=report)
        if not listing.listed:  # a shard's list holds its own images only: the others are not missing
            for image_rel in sorted(set(subsets) - present):
                report.add(file=src / image_rel, severity="error", code="missing_image",
                           message=f"listed in the {subsets[image_rel]} list but absent (exported without images?); skipped")
        claimed: set[str] = set()
        outcomes = []
        for image_rel in (f for f in files if is_image_name(f)):
            label_rel = next((c for c in label_candidates(image_rel) if c in present), None)
            if label_rel is not None:
                claimed.add(label_rel)
            outcomes.append(_convert_image(src=src, image_rel=image_rel, label_rel=label_rel, names=names, rectangle_segmentation=rectangle_segmentation,
                                           subset=subsets.get(image_rel)))
        image_dirs = {posixpath.dirname(f) for f in files if is_image_name(f)}
        for rel in files:
            parts = PurePosixPath(rel).parts
            darknet_dir = len(parts) > 1 and parts[-2].startswith("obj_") and parts[-2].endswith("_data")
            is_label = (rel.endswith(LABEL_EXTENSION) and PurePosixPath(rel).name != CLASSES_TXT and rel not in lists
                        and ("labels" in parts[:-1] or darknet_dir or posixpath.dirname(rel) in image_dirs))
            if is_label and rel not in claimed and src / rel != class_file:
                report.add(file=src / rel, severity="error", code="missing_image",
                    message="no image for this label file (looked for the same name under images/ and beside it); skipped")
        records, _ = collect(outcomes, report=report)
        records, mixed = fill_box_masks(records, fill=box_masks)
        if mixed is not None:
            report.add(file=src, severity="warning", code=MIXED_BOX_MASK_CODE, message=mixed)
        return assemble(records, categories=categories_for(names, ()))

    options = {"source": str(src.resolve()), "classes": str(class_file.resolve()), "rectangle_segmentation": rectangle_segmentation,
               "box_masks": box_masks}
    return run_conversion(report=report, format=YOLO_FORMAT, image_root=src, options=options, build=build)

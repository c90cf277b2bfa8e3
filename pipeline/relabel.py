"""The relabel loop: an audit's findings as a task in a labeling tool, and the corrected task read back.

    write_relabel_task   DATASET + findings (+ predictions) -> TASK: only the flagged images, ranked as the
                         findings, each with its current annotations, every finding attached where the tool
                         shows it, the model's suggestions as separate `suggested:<class>` shapes, relabel.json
    accept_all           what an annotator who accepts every suggestion does to TASK (demos, benchmarks)
    apply_relabel        TASK + DATASET -> FIXED: the flagged images' annotations replaced by the corrected
                         ones, everything else byte-identical, un-accepted suggestions dropped, a changes table

In the task, CVAT (https://docs.cvat.ai/docs/manual/advanced/xml_format/) shapes carry text attributes:
`segpipe_id` (the dataset annotation id, or `s<k>` for a suggestion), `findings` (check, score and message of
each finding on it), `suggestion` (`class`, `outline`, `add`, or `delete` on a shape the model finds no object
under) and `replaces`; image-level findings are a `<tag label="segpipe_findings">` with a `findings` attribute.
LabelMe (https://github.com/wkentaro/labelme) shapes carry the dataset annotation id as `group_id` (a
suggestion gets an id above every annotation id), the findings in `description` and one `flags` entry per check
(plus `suggest_delete`); the image's checks are the document's `flags`. A suggestion is accepted by renaming
its label (dropping `suggested:`) and deleting the shape it `replaces`; a shape marked `delete` is deleted.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from segpipe.converters.coco import dumps_coco, mask_bbox, read_coco
from segpipe.core.dataset_layout import INSTANCES_FILE, write_dataset_meta
from segpipe.converters.export import ExportImage, ExportObject, ExportSource, load_source
from segpipe.converters.report import ConversionReport
from segpipe.core.errors import SegpipeError

_BBOX_IN_MESSAGE = re.compile(r"bbox \[([^\]]*)\]")
RELABEL_FORMATS: tuple[str, ...] = ("cvat", "labelme")
RELABEL_FILE = "relabel.json"
CHANGES_TABLE = "relabel_changes"
SUGGESTED_PREFIX = "suggested:"
FINDINGS_TAG = "segpipe_findings"
ID_ATTRIBUTE = "segpipe_id"
MODEL_CHECKS_SUGGESTING = {"possibly_wrong_class": "class", "possibly_sloppy_outline": "outline", "possibly_spurious": "delete",
                           "possibly_missing": "add"}
CHANGE_COLUMNS: tuple[str, ...] = ("image_id", "file_name", "annotation_id", "change", "old_category", "new_category", "iou", "detail")
BOX_TOLERANCE = 1e-6


class RelabelError(SegpipeError):
    """A task that cannot be applied as it stands (unreadable image, unknown label, not the task of DATASET)."""


@dataclass(frozen=True)
class Suggestion:
    key: str  # "s<k>", unique in the task
    kind: str  # class | outline | add
    category: str
    replaces: int | None
    obj: ExportObject
    score: float


@dataclass
class TaskImage:
    rank: int
    image: ExportImage
    task_file: str
    findings: list[dict[str, Any]]
    suggestions: list[Suggestion] = field(default_factory=list)
    delete: set[int] = field(default_factory=set)


def _clean(value: Any) -> Any:
    """A findings cell as plain JSON: NaN, None and pandas' NA (nullable integer columns) are None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _finding_records(findings: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for r in findings.to_dict("records"):
        rec = {k: _clean(r.get(k)) for k in ("check", "severity", "image_id", "annotation_id", "category", "score", "message")}
        if rec["image_id"] is None:
            continue
        rec["image_id"] = int(rec["image_id"])
        rec["annotation_id"] = None if rec["annotation_id"] is None else int(rec["annotation_id"])
        rows.append(rec)
    return rows


def _finding_text(findings: Sequence[Mapping[str, Any]]) -> str:
    return " | ".join(f"{f['check']} ({float(f['score']):.2f}): {f['message']}" for f in findings)


def _pred_objects(predictions: Sequence[Mapping[str, Any]], image: ExportImage, categories: Mapping[int, str],
                  min_score: float) -> list[tuple[float, ExportObject]]:
    """The image's predictions at or above `min_score`, as objects (masks decoded), best first."""
    from segpipe.converters.export import decode_segmentation

    out = []
    for k, p in enumerate(predictions):
        if p.get("image_id") != image.image_id or not isinstance(p.get("score"), (int, float)) or p["score"] < min_score:
            continue
        if p.get("category_id") not in categories:
            continue
        mask = None
        if p.get("segmentation") is not None:
            try:
                mask = decode_segmentation(p["segmentation"], width=image.width, height=image.height)[0]
            except ValueError as err:
                raise RelabelError(f"results[{k}]", "segmentation", str(err)) from err
            if not mask.any():
                continue
            bbox = mask_bbox(mask)
        else:
            bbox = tuple(float(v) for v in p["bbox"])  # type: ignore[assignment]
        out.append((float(p["score"]), ExportObject(annotation_id=-1, category=categories[p["category_id"]], bbox=bbox, mask=mask)))
    out.sort(key=lambda t: (-t[0], t[1].category, t[1].bbox))
    return out


def _iou(a: ExportObject, b: ExportObject) -> float:
    if a.mask is not None and b.mask is not None:
        pixels = int(np.count_nonzero(a.mask | b.mask))
        return float(np.count_nonzero(a.mask & b.mask)) / pixels if pixels else 0.0
    ax, ay, aw, ah = a.bbox
    bx, by, bw, bh = b.bbox
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - ix * iy
    return ix * iy / union if union > 0 else 0.0


def plan_suggestions(task: TaskImage, preds: Sequence[tuple[float, ExportObject]]) -> None:
    """The model's suggestion for each model-check finding of the image, by the audit's own matching rules
    (segpipe.evaluators.audit.model_checks): the model's class on the labelled outline for a wrong class, the model's
    outline for a sloppy one, `delete` for a spurious label, the unexplained confident predictions for missing
    objects."""
    from segpipe.evaluators.audit.model_checks import DUPLICATE_IOU

    objects = {o.annotation_id: o for o in task.image.objects}
    used: set[int] = set()
    n = 0

    def add(kind: str, category: str, replaces: int | None, obj: ExportObject, score: float) -> None:
        nonlocal n
        n += 1
        task.suggestions.append(Suggestion(key=f"{task.rank}.{n}", kind=kind, category=category, replaces=replaces, obj=obj, score=score))

    for f in task.findings:
        kind = MODEL_CHECKS_SUGGESTING.get(f["check"])
        ann = objects.get(f["annotation_id"]) if f["annotation_id"] is not None else None
        if kind is None or kind == "add" or ann is None:
            continue
        if kind == "delete":
            task.delete.add(ann.annotation_id)
            continue
        same = kind == "outline"
        candidates = [(j, _iou(ann, p), s, p) for j, (s, p) in enumerate(preds) if (p.category == ann.category) == same]
        if not candidates:
            continue
        j, _, score, pred = max(candidates, key=lambda c: (c[1], c[2], -c[0]))
        used.add(j)
        if kind == "class":  # the labelled outline, the model's class
            add(kind, pred.category, ann.annotation_id, ExportObject(annotation_id=-1, category=pred.category, bbox=ann.bbox, mask=ann.mask,
                                                                     polygons=ann.polygons), score)
        else:
            add(kind, pred.category, ann.annotation_id, pred, score)
    missing = [f for f in task.findings if f["check"] == "possibly_missing"]
    if missing:
        unexplained = [(j, score, pred) for j, (score, pred) in enumerate(preds)
                       if j not in used and all(_iou(a, pred) < DUPLICATE_IOU for a in task.image.objects)]
        # Each finding names its prediction by category and box (1 decimal); the unexplained prediction that prints
        # the same is the one it found. A finding whose box matches none takes the best remaining prediction.
        taken: set[int] = set()
        for f in missing:
            boxed = _BBOX_IN_MESSAGE.search(str(f["message"]))
            match = [(j, sc, p) for j, sc, p in unexplained if j not in taken and p.category == f["category"]
                     and boxed is not None and boxed.group(1) == ", ".join(f"{v:.1f}" for v in p.bbox)]
            match = match or [(j, sc, p) for j, sc, p in unexplained if j not in taken and p.category == f["category"]]
            if match:
                j, score, pred = match[0]
                taken.add(j)
                add("add", pred.category, None, pred, score)


def _task_name(rank: int, file_name: str) -> str:
    return f"{rank:04d}_{PurePosixPath(file_name).name}"


def select_flagged(source: ExportSource, findings: pd.DataFrame, *, min_score: float = 0.0) -> list[TaskImage]:
    """The images with a finding at or above `min_score`, in the findings' order (highest score first)."""
    by_id = {im.image_id: im for im in source.images}
    records = [r for r in _finding_records(findings) if r["score"] is not None and float(r["score"]) >= min_score]
    order: list[int] = []
    per_image: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["image_id"] not in by_id:
            continue
        if r["image_id"] not in per_image:
            order.append(r["image_id"])
            per_image[r["image_id"]] = []
        per_image[r["image_id"]].append(r)
    return [TaskImage(rank=k, image=by_id[i], task_file=_task_name(k, by_id[i].file_name), findings=per_image[i])
            for k, i in enumerate(order, start=1)]


def write_relabel_task(dataset: str | os.PathLike[str], findings: pd.DataFrame, out: str | os.PathLike[str], *, fmt: str,
                       predictions: Sequence[Mapping[str, Any]] | None = None, min_score: float = 0.0,
                       suggest_min_score: float | None = None) -> list[TaskImage]:
    """TASK for the flagged images of DATASET (see the module docstring); returns the task's images, ranked."""
    from segpipe.core.atomic_write import atomic_write_text

    if fmt not in RELABEL_FORMATS:
        raise RelabelError("relabel", "format", f"must be one of {RELABEL_FORMATS}, got {fmt!r}")
    from segpipe.evaluators.audit.model_checks import CONFIDENT

    out = Path(out)
    report = ConversionReport()
    source = load_source(dataset, report=report)
    tasks = [t for t in select_flagged(source, findings, min_score=min_score) if t.image.path is not None]
    coco = read_coco(source.annotations_file)
    categories = {c["id"]: c["name"] for c in coco["categories"] if isinstance(c, dict) and "id" in c and "name" in c}
    if predictions is not None:
        threshold = CONFIDENT if suggest_min_score is None else suggest_min_score
        for t in tasks:
            plan_suggestions(t, _pred_objects(predictions, t.image, categories, threshold))
    if fmt == "cvat":
        _write_cvat_task(out, source, tasks)
    else:
        _write_labelme_task(out, source, tasks)
    mapping = {
        "format": fmt, "dataset": str(Path(dataset).resolve()), "annotations_file": str(source.annotations_file.resolve()),
        "suggested_prefix": SUGGESTED_PREFIX,
        "images": [{
            "rank": t.rank, "task_file": t.task_file, "file_name": t.image.file_name, "image_id": t.image.image_id,
            "findings": t.findings,
            "shapes": [{"key": _key(fmt, o.annotation_id), "annotation_id": o.annotation_id, "label": o.category,
                        "suggestion": "delete" if o.annotation_id in t.delete else None}
                       for o in t.image.objects if not o.iscrowd]
                      + [{"key": _suggestion_key(fmt, s, source), "annotation_id": None, "label": SUGGESTED_PREFIX + s.category,
                          "suggestion": s.kind, "replaces": s.replaces, "score": round(s.score, 6)} for s in t.suggestions],
        } for t in tasks],
        "export_rows": [{"file": f.file, "severity": f.severity, "code": f.code, "message": f.message} for f in report.findings],
    }
    atomic_write_text(out / RELABEL_FILE, json.dumps(mapping, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return tasks


def _key(fmt: str, annotation_id: int) -> Any:
    return annotation_id if fmt == "labelme" else str(annotation_id)


def _max_id(source: ExportSource) -> int:
    return max((o.annotation_id for im in source.images for o in im.objects), default=0)


def _suggestion_key(fmt: str, s: Suggestion, source: ExportSource) -> Any:
    if fmt == "cvat":
        return f"s{s.key}"
    rank, n = (int(v) for v in s.key.split("."))
    return _max_id(source) + rank * 1000 + n  # above every annotation id: LabelMe's group_id is an int


def _write_cvat_task(out: Path, source: ExportSource, tasks: Sequence[TaskImage]) -> None:
    from xml.etree.ElementTree import Element, SubElement

    from segpipe.core.atomic_write import atomic_write_bytes
    from segpipe.converters.export import copy_image
    from segpipe.converters.export_cvat import cvat_document, shape_element

    labels = list(source.categories)
    entries = []
    for t in tasks:
        copy_image(t.image, out / "images" / t.task_file)
        shapes = []
        by_ann: dict[int, list[dict[str, Any]]] = {}
        for f in t.findings:
            by_ann.setdefault(f["annotation_id"] or 0, []).append(f)
        if by_ann.get(0):
            tag = Element("tag", {"label": FINDINGS_TAG, "source": "manual"})
            SubElement(tag, "attribute", {"name": "findings"}).text = _finding_text(by_ann[0])
            shapes.append(tag)
        for o in t.image.objects:
            if o.iscrowd:
                continue
            attrs = {k: v for k, v in o.attributes.items() if k in ("occluded", "z_order")}
            attrs[ID_ATTRIBUTE] = str(o.annotation_id)
            attrs["findings"] = _finding_text(by_ann.get(o.annotation_id, []))
            attrs["suggestion"] = "delete" if o.annotation_id in t.delete else ""
            attrs["replaces"] = ""
            shapes.append(shape_element(o, attributes=attrs))
        for s in t.suggestions:
            label = SUGGESTED_PREFIX + s.category
            if label not in labels:
                labels.append(label)
            attrs = {ID_ATTRIBUTE: f"s{s.key}", "findings": f"model score {s.score:.2f}", "suggestion": s.kind,
                     "replaces": "" if s.replaces is None else str(s.replaces)}
            shapes.append(shape_element(s.obj, label=label, attributes=attrs))
        entries.append((t.task_file, t.image.width, t.image.height, shapes))
    if any(t.findings for t in tasks):
        labels.append(FINDINGS_TAG)
    atomic_write_bytes(out / "annotations.xml", cvat_document(labels, entries, task_name="segpipe relabel"))


def _write_labelme_task(out: Path, source: ExportSource, tasks: Sequence[TaskImage]) -> None:
    from segpipe.core.atomic_write import atomic_write_text
    from segpipe.converters.export import copy_image
    from segpipe.converters.export_labelme import labelme_document, object_shapes

    report = ConversionReport()
    for t in tasks:
        copy_image(t.image, out / t.task_file)
        by_ann: dict[int, list[dict[str, Any]]] = {}
        for f in t.findings:
            by_ann.setdefault(f["annotation_id"] or 0, []).append(f)
        shapes: list[dict[str, Any]] = []
        for o in t.image.objects:
            if o.iscrowd:
                continue
            mine = by_ann.get(o.annotation_id, [])
            flags = {f["check"]: True for f in mine}
            if o.annotation_id in t.delete:
                flags["suggest_delete"] = True
            shapes.extend(object_shapes(o, image=t.image, report=report, description=_finding_text(mine), flags=flags))
        for s in t.suggestions:
            desc = f"suggestion ({s.kind}, model score {s.score:.2f})" + ("" if s.replaces is None else f": replaces annotation {s.replaces}")
            shapes.extend(object_shapes(s.obj, image=t.image, report=None, label=SUGGESTED_PREFIX + s.category, description=desc,
                                        group_id=_suggestion_key("labelme", s, source)))
        doc = json.loads(labelme_document(t.image, shapes, image_path=t.task_file))
        doc["flags"] = {f["check"]: True for f in t.findings}
        atomic_write_text(out / (PurePosixPath(t.task_file).stem + ".json"), json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in _task_labels(source, tasks)))


def _task_labels(source: ExportSource, tasks: Sequence[TaskImage]) -> list[str]:
    labels = list(source.categories)
    for t in tasks:
        for s in t.suggestions:
            if SUGGESTED_PREFIX + s.category not in labels:
                labels.append(SUGGESTED_PREFIX + s.category)
    return labels


def read_mapping(task: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(task) / RELABEL_FILE
    if not path.is_file():
        raise RelabelError(path, "", "no relabel.json: not a task written by `segpipe audit --relabel`")
    try:
        mapping: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RelabelError(path, "", f"unreadable: {err}") from err
    if mapping.get("format") not in RELABEL_FORMATS or not isinstance(mapping.get("images"), list):
        raise RelabelError(path, "format", "not a relabel.json of a cvat or labelme task")
    return mapping


def accept_all(task: str | os.PathLike[str]) -> int:
    """Do to TASK what an annotator who accepts every suggestion does: rename each `suggested:` shape to its
    class, delete the shapes the suggestions replace and the shapes marked `delete`. Returns the number of
    suggestions accepted."""
    task = Path(task)
    mapping = read_mapping(task)
    accepted = 0
    for entry in mapping["images"]:
        replaced = {str(s["replaces"]) for s in entry["shapes"] if s.get("replaces") is not None}
        deleted = {str(s["annotation_id"]) for s in entry["shapes"] if s.get("suggestion") == "delete"}
        gone = replaced | deleted
        accepted += sum(1 for s in entry["shapes"] if s.get("suggestion"))
        if mapping["format"] == "labelme":
            takes_over = {str(s["key"]): s["replaces"] for s in entry["shapes"] if s.get("replaces") is not None}
            path = task / (PurePosixPath(entry["task_file"]).stem + ".json")
            doc = json.loads(path.read_text(encoding="utf-8"))
            kept = []
            for shape in doc["shapes"]:
                if str(shape.get("group_id")) in gone:
                    continue
                if shape["label"].startswith(SUGGESTED_PREFIX):
                    shape["label"] = shape["label"][len(SUGGESTED_PREFIX):]
                    # The accepted shape is the replaced object, corrected (as relabelling it in the tool would be).
                    shape["group_id"] = takes_over.get(str(shape.get("group_id")), shape.get("group_id"))
                kept.append(shape)
            doc["shapes"] = kept
            path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if mapping["format"] == "cvat":
        _accept_all_cvat(task / "annotations.xml", mapping)
    return accepted


def _accept_all_cvat(xml: Path, mapping: Mapping[str, Any]) -> None:
    from xml.etree.ElementTree import tostring

    from segpipe.converters.cvat import parse_cvat_root

    root = parse_cvat_root(xml.read_bytes(), path=str(xml))
    for image in root.iterfind("image"):
        shapes = list(image)
        attrs = {id(s): {a.get("name"): (a.text or "") for a in s.iterfind("attribute")} for s in shapes}
        gone = {a["replaces"] for a in attrs.values() if a.get("replaces")}
        for s in shapes:
            a = attrs[id(s)]
            if a.get(ID_ATTRIBUTE) in gone or a.get("suggestion") == "delete":
                image.remove(s)
            elif s.get("label", "").startswith(SUGGESTED_PREFIX):
                s.set("label", s.get("label", "")[len(SUGGESTED_PREFIX):])
                if a.get("replaces"):  # the accepted shape is the replaced object, corrected
                    for el in s.iterfind("attribute"):
                        if el.get("name") == ID_ATTRIBUTE:
                            el.text = a["replaces"]
    xml.write_bytes(b'<?xml version="1.0" encoding="utf-8"?>\n' + tostring(root, encoding="utf-8") + b"\n")


@dataclass(frozen=True)
class ApplyResult:
    changes: pd.DataFrame
    images: int  # flagged images replaced
    conversion_rows: tuple[Any, ...]
    stale_semantic_maps: int = 0  # changed images whose copied semantic/ label map still shows the old labels


def _read_task(task: Path, fmt: str) -> tuple[dict[str, Any], tuple[Any, ...]]:
    if fmt == "cvat":
        from segpipe.converters.cvat import cvat_conversion

        conversion = cvat_conversion(task)
    else:
        from segpipe.converters.labelme import labelme_conversion

        conversion = labelme_conversion(task)
    if conversion.coco is None:
        raise RelabelError(task, "", "the task could not be read: " + "; ".join(f"{f.file}: {f.message}" for f in conversion.findings[:5]))
    return conversion.coco, conversion.findings


def _identity(fmt: str, ann: Mapping[str, Any]) -> str | None:
    attrs = ann.get("attributes") or {}
    value = attrs.get(ID_ATTRIBUTE) if fmt == "cvat" else attrs.get("group_id")
    return None if value in (None, "") else str(value)


def _mask(ann: Mapping[str, Any], height: int, width: int) -> np.ndarray | None:
    from segpipe.converters.export import decode_segmentation

    seg = ann.get("segmentation")
    if seg in (None, [], {}):
        return None
    return decode_segmentation(seg, width=width, height=height)[0]


def _as_outlined(old: np.ndarray, new: np.ndarray) -> bool:
    """True when `new` is `old` as the LabelMe task drew it (holes filled): an untouched shape, not a reshape."""
    from segpipe.converters.export_geometry import mask_outlines, polygons_mask

    outlines, holes = mask_outlines(old)
    return bool(holes) and bool((polygons_mask(outlines, width=old.shape[1], height=old.shape[0]) == new).all())


def apply_relabel(task: str | os.PathLike[str], dataset: str | os.PathLike[str], out: str | os.PathLike[str]) -> ApplyResult:
    """FIXED = DATASET with the task's images' annotations replaced by the corrected ones (see the module docstring).

    Raises RelabelError, writing nothing, when an image of the task cannot be read back or a shape's label is
    not a category of DATASET: replacing an image's annotations with a partial set would lose labels silently."""
    from segpipe.core.atomic_write import atomic_write_bytes
    from segpipe.reports.tables import write_table

    task, dataset, out = Path(task), Path(dataset), Path(out)
    mapping = read_mapping(task)
    fmt = mapping["format"]
    json_path = dataset if dataset.is_file() else dataset / INSTANCES_FILE
    if not json_path.is_file():
        raise RelabelError(dataset, "", "no instances.json here: give the dataset the task was written from")
    coco = read_coco(json_path)
    if Path(mapping.get("annotations_file", "")).resolve() != json_path.resolve():
        raise RelabelError(task / RELABEL_FILE, "annotations_file", f"the task was written from {mapping.get('annotations_file')}, not {json_path}")
    back, rows = _read_task(task, fmt)
    back_cats = {c["id"]: c["name"] for c in back["categories"]}
    cat_ids = {c["name"]: c["id"] for c in coco["categories"]}
    images = {im["id"]: im for im in coco["images"]}
    back_images = {im["file_name"]: im for im in back["images"]}
    back_anns: dict[int, list[dict[str, Any]]] = {}
    for a in back["annotations"]:
        back_anns.setdefault(a["image_id"], []).append(a)
    old_by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        old_by_image.setdefault(a["image_id"], []).append(a)
    next_id = max((a["id"] for a in coco["annotations"] if isinstance(a.get("id"), int)), default=0) + 1
    replacement: dict[int, list[dict[str, Any]]] = {}
    changes: list[dict[str, Any]] = []
    for entry in mapping["images"]:
        image_id, name = entry["image_id"], entry["task_file"]
        im = images.get(image_id)
        if im is None or im["file_name"] != entry["file_name"]:
            raise RelabelError(task / RELABEL_FILE, name, f"image {entry['file_name']!r} (id {image_id}) is not in {json_path}")
        got = back_images.get(name)
        if got is None:
            problems = "; ".join(f.message for f in rows if PurePosixPath(f.file).name.startswith(PurePosixPath(name).stem)) or "no record"
            raise RelabelError(task, name, f"this task image could not be read back ({problems}); fix it and apply again")
        old = {a["id"]: a for a in old_by_image.get(image_id, [])}
        new_list: list[dict[str, Any]] = []
        seen: set[int] = set()
        for a in back_anns.get(got["id"], []):
            label = back_cats[a["category_id"]]
            row = {"image_id": image_id, "file_name": im["file_name"]}
            if label.startswith(SUGGESTED_PREFIX) or label == FINDINGS_TAG:
                if label != FINDINGS_TAG:
                    changes.append({**row, "annotation_id": None, "change": "suggestion_dropped", "old_category": None,
                                    "new_category": label[len(SUGGESTED_PREFIX):], "iou": None, "detail": "not accepted"})
                continue
            if label not in cat_ids:
                raise RelabelError(task, name, f"label {label!r} is not a category of the dataset ({sorted(cat_ids)[:10]})")
            ident = _identity(fmt, a)
            old_ann = old.get(int(ident)) if ident is not None and ident.lstrip("-").isdigit() else None
            if old_ann is not None and old_ann["id"] in seen:
                old_ann = None  # a copy of a shape: a new object
            new_mask = _mask(a, im["height"], im["width"])
            if old_ann is None:
                record = {"id": next_id, "image_id": image_id, "category_id": cat_ids[label], "bbox": a["bbox"], "area": a["area"], "iscrowd": 0}
                if new_mask is not None:
                    record["segmentation"] = a["segmentation"]
                next_id += 1
                new_list.append(record)
                changes.append({**row, "annotation_id": record["id"], "change": "added", "old_category": None, "new_category": label, "iou": None,
                                "detail": ""})
                continue
            seen.add(old_ann["id"])
            old_label = next(c["name"] for c in coco["categories"] if c["id"] == old_ann["category_id"])
            old_mask = _mask(old_ann, im["height"], im["width"])
            same_box = len(old_ann.get("bbox", [])) == 4 and all(abs(float(x) - float(y)) <= BOX_TOLERANCE for x, y in zip(old_ann["bbox"], a["bbox"]))
            if old_mask is not None and new_mask is not None:
                union = int(np.count_nonzero(old_mask | new_mask))
                iou = float(np.count_nonzero(old_mask & new_mask)) / union if union else 1.0
                same_shape = bool((old_mask == new_mask).all()) or (fmt == "labelme" and _as_outlined(old_mask, new_mask))
            else:
                iou, same_shape = None, same_box and (old_mask is None) == (new_mask is None)
            if label == old_label and same_shape:
                new_list.append(old_ann)  # untouched: the dataset's own record, as it was
                continue
            record = dict(old_ann)
            record["category_id"] = cat_ids[label]
            if not same_shape:
                record["bbox"], record["area"] = a["bbox"], a["area"]
                if new_mask is not None:
                    record["segmentation"] = a["segmentation"]
                else:
                    record.pop("segmentation", None)
            new_list.append(record)
            if label != old_label:
                changes.append({**row, "annotation_id": old_ann["id"], "change": "relabelled", "old_category": old_label, "new_category": label,
                                "iou": iou, "detail": ""})
            if not same_shape:
                changes.append({**row, "annotation_id": old_ann["id"], "change": "reshaped", "old_category": old_label, "new_category": label,
                                "iou": iou, "detail": ""})
        for ann_id, old_ann in old.items():
            if ann_id not in seen:
                old_label = next(c["name"] for c in coco["categories"] if c["id"] == old_ann["category_id"])
                changes.append({"image_id": image_id, "file_name": im["file_name"], "annotation_id": ann_id, "change": "removed",
                                "old_category": old_label, "new_category": None, "iou": None, "detail": ""})
        replacement[image_id] = new_list
    annotations: list[dict[str, Any]] = []
    done: set[int] = set()
    for a in coco["annotations"]:
        if a["image_id"] in replacement:
            if a["image_id"] not in done:
                annotations.extend(replacement[a["image_id"]])
                done.add(a["image_id"])
            continue
        annotations.append(a)
    for image_id, anns in replacement.items():
        if image_id not in done:
            annotations.extend(anns)
    fixed = {**coco, "annotations": annotations}
    out.mkdir(parents=True, exist_ok=True)
    if dataset.is_dir():
        for path in sorted(dataset.rglob("*")):
            rel = path.relative_to(dataset)
            if path.is_file() and rel != Path(INSTANCES_FILE):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out / rel)
    else:
        from segpipe.core.dataset_layout import coco_image_root

        write_dataset_meta(out, format="coco", image_root=coco_image_root(json_path, coco), options={})
    atomic_write_bytes(out / INSTANCES_FILE, dumps_coco(fixed))
    table = pd.DataFrame(changes, columns=list(CHANGE_COLUMNS))
    write_table(out, CHANGES_TABLE, table, parquet=False)
    changed = set(table.loc[table["change"] != "suggestion_dropped", "file_name"])
    stale = sum((out / "semantic" / f"{PurePosixPath(name).stem}.png").is_file() for name in changed) if dataset.is_dir() else 0
    return ApplyResult(changes=table, images=len(replacement), conversion_rows=tuple(rows), stale_semantic_maps=stale)


RELABEL_DIR = "relabel"


def audit_relabel_task(dataset: Path, findings: pd.DataFrame, audit_dir: Path, *, fmt: str, pred: Path | None, min_score: float,
                       suggest_min_score: float | None = None) -> str:
    """`segpipe audit --relabel FMT`: the task in AUDIT_DIR/relabel/; returns the line the command prints."""
    from segpipe.evaluators.audit.dataset import read_predictions

    predictions = read_predictions(pred) if pred is not None else None
    out = Path(audit_dir) / RELABEL_DIR
    tasks = write_relabel_task(dataset, findings, out, fmt=fmt, predictions=predictions, min_score=min_score, suggest_min_score=suggest_min_score)
    n = sum(len(t.suggestions) + len(t.delete) for t in tasks)
    return (f"wrote the {fmt} relabel task to {out}: {len(tasks)} flagged image(s), {n} suggestion(s); "
            f"after fixing it: segpipe relabel apply {out} --dataset {dataset} -o FIXED")

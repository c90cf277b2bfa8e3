"""Label-quality audit: format/integrity, geometry/statistics and model-assisted checks, one ranking.

`audit_dataset` is pure apart from reading image files under `image_root` (and semantic maps): give it a COCO
dict and what else is known. `read_audit_inputs` / `audit_path` are the disk edges that `segpipe audit` and
`segpipe run --audit` call.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from segpipe.core.dataset_layout import HEADS_FILE, DatasetDir, coco_image_root, resolve_image_path
from segpipe.core.errors import AnnotationError
from segpipe.core.images import read_image_size
from segpipe.core.layout import CONVERSION_REPORT_FILE as REPORT_FILE_NAME
from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.findings import AuditFinding, findings_frame, make_finding, summary_frame
from segpipe.evaluators.audit.format_checks import ImageInfo, parse_images, prepare_annotations
from segpipe.evaluators.audit.geometry_checks import (
    PetLayout,
    class_statistics_checks,
    empty_image_checks,
    mask_shape_checks,
    near_duplicate_checks,
    pet_layout_checks,
)
from segpipe.evaluators.audit.model_checks import model_checks, parse_predictions
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.json_files import read_json_file

CONVERSION_SCORES: Mapping[str, float] = {"error": 1.0, "warning": 0.6, "info": 0.1}
PET_FORMATS: frozenset[str] = frozenset({"trimap", "oxford-pet"})
RESULTS_FILE = "results.json"
PET_SPLIT_FILES: tuple[str, ...] = ("trainval", "test")


@dataclass(frozen=True)
class AuditResult:
    findings: pd.DataFrame  # F.FINDING_COLUMNS, sorted by score (descending) then stable keys
    summary: pd.DataFrame  # F.SUMMARY_COLUMNS


@dataclass(frozen=True)
class AuditInputs:
    """Everything `audit_dataset` needs, as read from a dataset dir (or COCO file) and a predictions path."""

    coco: dict[str, Any]
    image_root: Path | None
    conversion_findings: pd.DataFrame | None
    predictions: list[dict[str, Any]] | None
    semantic_dir: Path | None
    pet_layout: PetLayout | None
    input_findings: tuple[AuditFinding, ...] = ()  # problems found while reading (e.g. an unreadable split file)


def conversion_rows_to_findings(rows: pd.DataFrame, *, images: Sequence[Mapping[str, Any]]) -> list[AuditFinding]:
    """Conversion report rows (file, severity, code, message) as findings; located on an image by stem when unique."""
    by_stem: dict[str, list[Mapping[str, Any]]] = {}
    for im in images:
        by_stem.setdefault(PurePosixPath(str(im.get("file_name", ""))).stem, []).append(im)
    out: list[AuditFinding] = []
    for record in rows.to_dict(orient="records"):
        # Read with pandas' defaults an empty cell is NaN: treat it as the empty text it was.
        row = {k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for k, v in record.items()}
        file, severity = row.get("file", ""), row.get("severity", "error")
        severity = severity if severity in F.SEVERITIES else "error"
        match = by_stem.get(PurePosixPath(file.replace("\\", "/")).stem, [])
        image = match[0] if len(match) == 1 else None
        out.append(
            AuditFinding(
                check=f"{F.CHECK_CONVERSION_PREFIX}{row.get('code', '')}",
                severity=severity,
                score=CONVERSION_SCORES[severity],
                message=f"{file}: {row.get('message', '')}",
                image_id=image.get("id") if image else None,
                file_name=str(image.get("file_name")) if image else file,
            )
        )
    return out


def check_image_files(images: Sequence[ImageInfo], *, image_root: Path) -> list[AuditFinding]:
    """Missing, unreadable and wrongly sized image files, exact duplicates (content hash), and one image in two splits."""
    findings: list[AuditFinding] = []
    by_hash: dict[str, list[ImageInfo]] = defaultdict(list)
    for im in sorted(images, key=lambda i: i.id):
        located: dict[str, Any] = {"image_id": im.id, "file_name": im.file_name}
        path = resolve_image_path(image_root, im.file_name)
        if path is None:
            message = f"file_name {im.file_name!r} points outside the image root {image_root}: not read"
            findings.append(make_finding(check=F.CHECK_IMAGE_OUTSIDE_ROOT, message=message, **located))
            continue
        try:
            width, height = read_image_size(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except AnnotationError as err:
            check = F.CHECK_IMAGE_MISSING if err.code == "missing_image" else F.CHECK_IMAGE_UNREADABLE
            findings.append(make_finding(check=check, message=str(err), **located))
            continue
        except OSError as err:
            findings.append(make_finding(check=F.CHECK_IMAGE_UNREADABLE, message=f"{path}: {err}", **located))
            continue
        if (width, height) != (im.width, im.height):
            message = f"{path}: file is {width}x{height} (EXIF orientation applied), record says {im.width}x{im.height}"
            findings.append(make_finding(check=F.CHECK_IMAGE_SIZE, message=message, **located))
        by_hash[digest].append(im)
    for group in by_hash.values():
        first = group[0]
        for im in group[1:]:
            message = f"same bytes as image {first.id} ({first.file_name})"
            findings.append(make_finding(check=F.CHECK_DUPLICATE_IMAGE, message=message, image_id=im.id, file_name=im.file_name))
        splits = sorted({im.split for im in group if im.split})
        if len(splits) > 1:
            message = f"identical image content appears in splits {splits} (ids {[g.id for g in group]})"
            findings += [make_finding(check=F.CHECK_CROSS_SPLIT, message=message, image_id=im.id, file_name=im.file_name) for im in group]
    return findings


def semantic_foreground(semantic_dir: Path, stems: Sequence[str]) -> dict[str, int]:
    """stem -> labelled non-background pixels (1..254) in semantic_dir/<stem>.png, for the maps that exist."""
    from segpipe.core.label_maps import read_label_map_or_none

    out: dict[str, int] = {}
    for stem in stems:
        label = read_label_map_or_none(semantic_dir / f"{stem}.png")
        if label is not None:
            out[stem] = int(np.count_nonzero((label > 0) & (label < 255)))
    return out


def audit_dataset(
    coco: dict[str, Any],
    *,
    image_root: Path | None,
    conversion_findings: pd.DataFrame | None = None,
    predictions: list[dict[str, Any]] | None = None,
    semantic_dir: Path | None = None,
    pet_layout: PetLayout | None = None,
    input_findings: Sequence[AuditFinding] = (),
) -> AuditResult:
    """Run every check that the inputs allow and rank the findings.

    image_root: where `file_name`s resolve (None skips the image-file checks); conversion_findings: the rows of
    conversion_report.csv; predictions: COCO results (enables the model-assisted checks); semantic_dir and
    pet_layout: the Oxford-IIIT Pet checks (empty trimap, head box, list.txt, species); input_findings: ranked
    with the rest. Raises EvaluationError for malformed predictions.
    """
    images, findings = parse_images(coco)
    findings += input_findings
    prepared, ann_findings = prepare_annotations(coco, images)
    findings += ann_findings
    categories = {c["id"]: str(c.get("name", "")) for c in coco.get("categories") or [] if isinstance(c, Mapping) and "id" in c}
    if image_root is not None:
        findings += check_image_files(list(images.values()), image_root=Path(image_root))
    if conversion_findings is not None and not conversion_findings.empty:
        findings += conversion_rows_to_findings(conversion_findings, images=coco.get("images") or [])
    findings += class_statistics_checks(prepared, images, categories=categories)
    findings += near_duplicate_checks(prepared, images)
    findings += mask_shape_checks(prepared, images)
    if pet_layout is None and semantic_dir is None:  # the Pet checks report an empty trimap themselves
        annotated = {a["image_id"] for a in coco.get("annotations") or [] if isinstance(a, Mapping) and isinstance(a.get("image_id"), int)}
        findings += empty_image_checks(annotated, images)
    if pet_layout is not None or semantic_dir is not None:
        layout = pet_layout or PetLayout()
        if semantic_dir is not None:
            stems = sorted({PurePosixPath(im.file_name).stem for im in images.values()})
            layout = PetLayout(
                heads=layout.heads,
                list_species=layout.list_species,
                splits=layout.splits,
                foreground={**layout.foreground, **semantic_foreground(Path(semantic_dir), stems)},
            )
        supers = {str(c.get("name", "")): str(c.get("supercategory", "")) for c in coco.get("categories") or [] if isinstance(c, Mapping)}
        findings += pet_layout_checks(prepared, images, layout=layout, supercategories=supers)
    if predictions is not None:
        preds = parse_predictions(predictions, images=images, categories=categories)
        findings += model_checks(prepared, preds, images=images, categories=categories)
        if not predictions:
            findings.append(make_finding(check=F.CHECK_NO_PREDICTIONS, message=(
                "the predictions hold no result: no model-assisted check ran (possibly missing / spurious / wrong "
                "class / sloppy outline); check that --pred is the results.json of an inference over this dataset")))
    frame = findings_frame(findings)
    return AuditResult(findings=frame, summary=summary_frame(frame))


def read_pet_layout(dataset: DatasetDir, *, image_root: Path) -> tuple[PetLayout, list[AuditFinding]]:
    """heads.json (same image list as instances.json), annotations/list.txt and split files beside the images;
    with a finding per split file that cannot be read."""
    from segpipe.core.pet_list import SPECIES_NAMES, parse_pet_list_lines, parse_split_names

    heads: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    heads_path = dataset.root / HEADS_FILE
    if heads_path.is_file():
        doc = read_json_file(heads_path, what="heads", expect=dict)
        names = {c["id"]: c["name"] for c in doc.get("categories", [])}
        stem_of = {im["id"]: PurePosixPath(im["file_name"]).stem for im in doc.get("images", [])}
        for ann in sorted(doc.get("annotations", []), key=lambda a: a["id"]):
            x, y, w, h = (float(v) for v in ann["bbox"])
            heads.setdefault(stem_of.get(ann["image_id"], ""), []).append((names.get(ann["category_id"], ""), (x, y, w, h)))
    annotations = image_root.parent / "annotations"
    list_species: dict[str, str] | None = None
    list_path = annotations / "list.txt"
    if list_path.is_file():
        try:
            entries, _ = parse_pet_list_lines(list_path.read_text(encoding="utf-8"), path=str(list_path))  # bad lines: conversion rows
            list_species = {e.image: SPECIES_NAMES[e.species] for e in entries}
        except (AnnotationError, UnicodeDecodeError):
            list_species = None  # the converter already reported the broken list as a conversion finding
    splits: dict[str, list[str]] = {}
    findings: list[AuditFinding] = []
    for split in PET_SPLIT_FILES:
        path = annotations / f"{split}.txt"
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                # The converter never reads split files, so this is the only report of the broken one.
                message = f"{path}: unreadable split file, its images are not checked for split overlap: {err}"
                findings.append(make_finding(check=F.CHECK_SPLIT_FILE_UNREADABLE, message=message, file_name=str(path)))
                continue
            for stem in sorted(set(parse_split_names(text))):
                splits.setdefault(stem, []).append(split)
    layout = PetLayout(heads={k: tuple(v) for k, v in heads.items()}, list_species=list_species, splits={k: tuple(v) for k, v in splits.items()})
    return layout, findings


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """COCO results from a results.json, or from a predictions dir holding one."""
    results = path / RESULTS_FILE if path.is_dir() else path
    if not results.is_file():
        raise EvaluationError(path, "", f"no {RESULTS_FILE} here (the audit needs instance predictions)")
    predictions: list[dict[str, Any]] = read_json_file(results, what="COCO results", expect=list)
    return predictions


def read_audit_inputs(dataset: Path, *, pred: Path | None = None) -> AuditInputs:
    """A converted dataset dir (instances.json, dataset.json, conversion_report.csv, ...) or a COCO json file."""
    dataset = Path(dataset)
    conversion = semantic = layout = None
    input_findings: list[AuditFinding] = []
    if dataset.is_file():
        json_path = dataset
    else:
        json_path = DatasetDir(dataset).instances
    coco = read_json_file(json_path, what="COCO", expect=dict)
    if dataset.is_file():
        image_root = coco_image_root(json_path, coco)
    else:
        ds = DatasetDir(dataset)
        meta = ds.meta()
        image_root = Path(meta.get("image_root", dataset))
        report = dataset / REPORT_FILE_NAME
        if report.is_file():
            conversion = pd.read_csv(report, dtype=str, keep_default_na=False)
        if ds.semantic.is_dir():
            semantic = ds.semantic
        if meta.get("format") in PET_FORMATS:
            layout, input_findings = read_pet_layout(ds, image_root=image_root)
    return AuditInputs(
        coco=coco,
        image_root=image_root,
        conversion_findings=conversion,
        predictions=read_predictions(Path(pred)) if pred is not None else None,
        semantic_dir=semantic,
        pet_layout=layout,
        input_findings=tuple(input_findings),
    )


def audit_path(dataset: Path, *, pred: Path | None = None) -> AuditResult:
    """`segpipe audit DATASET [--pred PRED]` without the writing: read the inputs, run `audit_dataset`."""
    inputs = read_audit_inputs(dataset, pred=pred)
    return audit_dataset(
        inputs.coco,
        image_root=inputs.image_root,
        conversion_findings=inputs.conversion_findings,
        predictions=inputs.predictions,
        semantic_dir=inputs.semantic_dir,
        pet_layout=inputs.pet_layout,
        input_findings=inputs.input_findings,
    )

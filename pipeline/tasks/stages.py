"""The one place where the pipeline calls the other stages' code (converters, inference, evaluators,
report writers, audit, HTML). If one of their signatures drifts, this file is the only one to fix.

Imports happen inside the functions: the Luigi task modules import this module, and a cached rerun must
not pay for torch/torchvision. Only `inference_session` reaches torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from segpipe.layout import META_FILE
from segpipe.runner.formats import ADAPTERS
from segpipe.runner.shards import DatasetSpec

# Converter options each format accepts (run.toml / CLI pass-through); anything else is a usage error.
CONVERT_OPTIONS: dict[str, tuple[str, ...]] = {
    "oxford-pet": ("border", "categories", "split", "strict"),
    "voc": ("one_based", "difficult", "size_from_xml", "rectangle_segmentation", "strict"),
    "trimap": ("border", "categories", "strict"),
    **{name: adapter.options for name, adapter in ADAPTERS.items()},
}
# Inference options forwarded to run_inference (all of them part of the inference key).
INFER_OPTIONS: tuple[str, ...] = (
    "num_classes", "classes", "class_table", "class_map", "device", "batch_size", "precision", "score_threshold", "resize",
    "trust_checkpoint", "size_bucket", "compile",
)
# Options that change how fast inference runs, never what it outputs: left out of the inference key.
INFER_SPEED_OPTIONS: tuple[str, ...] = ("loader_workers",)


def convert_dataset(*, spec: DatasetSpec, out: Path, options: Mapping[str, Any]) -> Any:
    """Run the format's converter on `spec` into `out` (one process: the pipeline shards instead)."""
    allowed = CONVERT_OPTIONS[spec.format]
    kwargs = {k: v for k, v in options.items() if k in allowed and v is not None}
    if spec.format in ADAPTERS:
        return ADAPTERS[spec.format].convert(spec.root, out, images=spec.images, classes=spec.classes, options=kwargs)
    if spec.format == "oxford-pet":
        from segpipe.converters.oxford_pet import convert_oxford_pet

        return convert_oxford_pet(spec.root, out, workers=1, **kwargs)
    if spec.format == "voc":
        from segpipe.converters.voc import convert_voc

        return convert_voc(spec.root, out, images=spec.images, classes=spec.classes, workers=1, **kwargs)
    from segpipe.converters.trimap import convert_trimap

    if spec.images is None:
        raise ValueError("--images: the trimap format needs the image folder")
    return convert_trimap(spec.root, out, images=spec.images, list_file=spec.list_file, workers=1, **kwargs)


def model_card_of(checkpoint: Path) -> Path | None:
    """The model card beside a checkpoint, as the inference engine finds it (no torch import)."""
    from segpipe.inference.checkpoints import model_card_path

    return model_card_path(checkpoint)


def inference_session(
    *, model: str, checkpoint: Path, options: Mapping[str, Any], loader_workers: int | None, checkpoint_sha256: str | None = None,
) -> Any:
    """A checkpoint loaded once for several shards (segpipe.inference.engine.InferenceSession); torch is
    imported here and only here. `checkpoint_sha256` is the driver's digest of the checkpoint, so the file
    is not read and hashed again."""
    from segpipe.inference.engine import InferenceSession

    kwargs = {k: options[k] for k in INFER_OPTIONS if k in options and options[k] is not None}
    return InferenceSession(model=model, checkpoint=checkpoint, workers=loader_workers, checkpoint_sha256=checkpoint_sha256, **kwargs)


def model_task(*, model: str, checkpoint: Path) -> str | None:
    """"semantic" or "instance" for a model name (a TorchScript file's model card says which), without
    importing torch; None for an unknown name (the inference task then fails with the engine's message)."""
    from segpipe.inference.checkpoints import InferenceError, read_model_card
    from segpipe.inference.models import SEMANTIC, TORCHSCRIPT, model_spec

    try:
        spec = model_spec(model)
        return (read_model_card(checkpoint).task or SEMANTIC) if spec.name == TORCHSCRIPT else spec.task
    except InferenceError:
        return None


def inference_label_space(label_space: Mapping[str, Any], *, task: str | None) -> dict[str, Any]:
    """The part of a dataset's label space a model's outputs are mapped onto, hence what its inference is
    keyed on: a semantic model's classes map onto the semantic classes (its connected-component results
    are not scored by `segpipe run`, so the category list, e.g. `--categories breed|species`, does not
    matter to it); an instance model's classes map onto the categories."""
    if task == "semantic":
        return {"categories": [], "semantic_classes": label_space.get("semantic_classes")}
    if task == "instance":
        return {"categories": list(label_space.get("categories", [])), "semantic_classes": None}
    return dict(label_space)


def inference_task(pred_dir: Path) -> str | None:
    """"semantic" or "instance", as the engine recorded it in meta.json (None when absent)."""
    import json

    meta = pred_dir / META_FILE
    if not meta.is_file():
        return None
    task = json.loads(meta.read_text(encoding="utf-8")).get("task")
    return None if task is None else str(task)


def instance_shard_stats(*, gt: dict[str, Any], results: Sequence[Mapping[str, Any]], iou_type: str, image_ids: Sequence[int]) -> Any:
    from segpipe.evaluators.instance import instance_update

    return instance_update(gt, list(results), iou_type=iou_type, image_ids=list(image_ids))


def instance_report(*, stats: Sequence[Any]) -> Any:
    from segpipe.evaluators.instance import InstanceStats, instance_compute

    return instance_compute(InstanceStats.merge_all(list(stats)))


def semantic_image_confusion(*, gt: np.ndarray, pred: np.ndarray | None, num_classes: int, path: str) -> np.ndarray:
    """Confusion of one image pair; a missing prediction counts every labelled pixel as a miss."""
    from segpipe.evaluators.confusion import confusion_update, unpredicted_update

    if pred is None:
        return unpredicted_update(gt, num_classes=num_classes, path=path)
    return confusion_update(gt, pred, num_classes=num_classes, path=path)


def semantic_per_image_row(*, confusion: np.ndarray, file: str, missing: bool) -> dict[str, object]:
    from segpipe.evaluators.semantic_tables import MISSING_PREDICTION, PREDICTION_FOUND, per_image_row

    return per_image_row(confusion, file=file, prediction=MISSING_PREDICTION if missing else PREDICTION_FOUND)


def semantic_report(*, confusion: np.ndarray, class_names: Sequence[str], per_image: pd.DataFrame | None, notes: pd.DataFrame) -> Any:
    from segpipe.evaluators.semantic_tables import semantic_compute

    return semantic_compute(confusion, class_names=list(class_names), per_image=per_image, notes=notes)


def semantic_notes_columns() -> list[str]:
    from segpipe.evaluators.semantic_tables import NOTES_COLUMNS

    return list(NOTES_COLUMNS)


def write_instance_report(*, report: Any, out: Path, header: Mapping[str, Any]) -> None:
    from segpipe.cli.evaluate_instances import write_instance_report as write

    write(report, out, header=dict(header))


def write_semantic_report(*, report: Any, out: Path, header: Mapping[str, Any]) -> None:
    from segpipe.cli.evaluate_semantic import write_semantic_report as write

    write(report, out, header=dict(header))


def write_report_records(out: Path, *, instance: Sequence[Any] | None = None, semantic: Sequence[Mapping[str, Any]] | None = None) -> None:
    """The per-image statistics beside a report (segpipe.reports.records): merged match records, or the
    per-image confusions of semantic shards (nothing when a shard lacks them)."""
    from segpipe.reports import records

    if instance is not None:
        from segpipe.evaluators.instance import InstanceStats

        records.write_instance_records(out, stats=InstanceStats.merge_all(list(instance)))
    if semantic is not None:
        found = records.semantic_records_from_shards(semantic)
        if found is not None:
            records.write_semantic_records(out, files=found[0], confusions=found[1], class_names=semantic[0]["class_names"])


def render_evaluate_html(*, report_dir: Path, gallery: Any = None) -> None:
    """report.html beside the tables (reads the tables and header.json the writers put there); `gallery`
    (a segpipe.reports.gallery.GallerySource) gives the worst-images pictures."""
    from segpipe.reports.html import render_evaluate_report

    render_evaluate_report(report_dir, gallery=gallery)


def render_leaderboard_html(*, out_dir: Path) -> None:
    """OUT/leaderboard.html from OUT/leaderboard.csv, per_class_by_checkpoint.csv and OUT/checkpoints/."""
    from segpipe.reports.html import render_leaderboard

    render_leaderboard(out_dir)


def render_audit_html(*, audit_dir: Path, dataset_dir: Path | None = None) -> None:
    """audit.html from the findings table, with thumbnails of the converted dataset's images when given."""
    from segpipe.reports.gallery import GallerySource
    from segpipe.reports.html import render_audit_report

    render_audit_report(audit_dir, gallery=GallerySource.from_dirs(dataset=dataset_dir) if dataset_dir is not None else None)


def audit(*, dataset_dir: Path) -> Any:
    """The audit of a converted dataset dir exactly as `segpipe audit DATASET_DIR` runs it: conversion report
    rows carried in, and the Oxford-IIIT Pet layout checks (heads.json, list.txt, splits) where they apply."""
    from segpipe.evaluators.audit import audit_path

    return audit_path(dataset_dir)


def read_label_map(path: Path) -> np.ndarray:
    """A single-channel label PNG exactly as `segpipe evaluate semantic` reads it (errors name the file)."""
    from segpipe.evaluators.label_maps import read_label_map as read

    return read(path)

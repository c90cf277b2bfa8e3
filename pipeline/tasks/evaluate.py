"""Evaluation as Luigi tasks: additive statistics per shard, one report per checkpoint, a leaderboard.

Per-shard statistics (instance match records, confusion matrices) are additive, so the report of a
checkpoint is the merge of its shards' statistics (design.md, torchmetrics style). Predictions are
matched to the ground truth by image file name: inference numbers images in its own image index, which
knows nothing of annotations (issue 5, property 2).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.dataset_layout import INSTANCES_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR, DatasetDir, read_class_names_file
from segpipe.evaluators.errors import EvaluationError
from segpipe.layout import RESULTS_FILE
from segpipe.tasks import stages
from segpipe.cache.targets import CachedTask
from segpipe.runner.shards import read_plan
from segpipe.reports.tables import write_table
from segpipe.tasks.convert import ConvertMerge
from segpipe.tasks.infer import INDEX_DATASET, PRED_DIR, InferShard

# Shard statistics are data only (numpy arrays without pickles + JSON): the cache may be on a shared file
# system, and loading a pickle from it would run whatever code anyone who can write there put in it.
STATS_ARRAYS = "stats.npz"
STATS_META = "stats.json"
LEGACY_STATS = "stats.pkl"  # older segpipe versions; never loaded
STATS_FORMAT = 2  # 2: semantic shards hold per-image confusion matrices (the leaderboard's bootstrap); part of the shard key
INSTANCE_EVAL = "instance"
SUMMARY_FILE = "summary.json"
PER_CLASS_LONG = "per_class_long.csv"
REPORT_DIR = "report"
SEMANTIC_EVAL = "semantic"
LONG_COLUMNS = ["checkpoint", "evaluation", "category", "metric", "value"]
# Part of the leaderboard's key: bump when the leaderboard's files change, so cached leaderboards are redone.
LEADERBOARD_FORMAT = "leaderboard-2 (intervals, best, comparison)"


def remap_results(*, results: list[dict[str, Any]], index_names: dict[int, str], gt_ids: dict[str, int]) -> list[dict[str, Any]]:
    """Results re-numbered from image-index ids to ground-truth ids via file names; others dropped. Pure."""
    out = []
    for r in results:
        name = index_names.get(int(r["image_id"]))
        if name is not None and name in gt_ids:
            out.append({**r, "image_id": gt_ids[name]})
    return out


class EvalShard(CachedTask):
    """Additive evaluation statistics of one checkpoint on one shard."""

    kind = "eval/shards"

    def requires(self) -> dict[str, Any]:
        (mkey, mpayload), (ikey, ipayload) = self.data["merge"], self.data["infer"]
        return {"gt": ConvertMerge(key=mkey, cache=self.cache, payload=mpayload),
                "pred": InferShard(key=ikey, cache=self.cache, payload=ipayload)}

    def compute(self) -> None:
        data = self.data
        gt_dir = self.requires()["gt"].output().directory
        infer = self.requires()["pred"]
        pred_dir = infer.output().directory / PRED_DIR
        gt = json.loads((gt_dir / INSTANCES_FILE).read_bytes())
        gt_ids = {str(im["file_name"]): int(im["id"]) for im in gt["images"]}
        names = [n for n in read_plan(data["plan"])["shards"][int(data["shard"])]["image_names"] if n in gt_ids]
        stats: dict[str, Any] = {}
        results_path = pred_dir / RESULTS_FILE
        # A semantic model's results.json holds connected components at best: it is scored as semantic
        # segmentation, and instance metrics are for instance models.
        task = stages.inference_task(pred_dir)
        if results_path.is_file() and task in ("instance", None):
            index = json.loads((infer.requires().output().directory / INDEX_DATASET / INSTANCES_FILE).read_bytes())
            index_names = {int(im["id"]): str(im["file_name"]) for im in index["images"]}
            results = remap_results(results=json.loads(results_path.read_bytes()), index_names=index_names, gt_ids=gt_ids)
            stats[INSTANCE_EVAL] = stages.instance_shard_stats(
                gt=gt, results=results, iou_type=data["iou_type"], image_ids=[gt_ids[n] for n in names]
            )
        classes_file = gt_dir / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE
        if classes_file.is_file() and (pred_dir / SEMANTIC_DIR).is_dir() and task in ("semantic", None):
            stats[SEMANTIC_EVAL] = _semantic_shard(
                names=names, gt_dir=gt_dir / SEMANTIC_DIR, pred_dir=pred_dir / SEMANTIC_DIR,
                class_names=read_class_names_file(classes_file),
            )
        directory = self.fresh_directory()
        write_shard_stats(directory, stats=stats)
        self.finish(images=len(names), evaluations=sorted(stats))


def _semantic_shard(*, names: list[str], gt_dir: Path, pred_dir: Path, class_names: list[str]) -> dict[str, Any]:
    n = len(class_names)
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    rows: list[dict[str, object]] = []
    notes: list[dict[str, str]] = []
    matrices: list[np.ndarray] = []  # per image, in the order of `rows`: what the leaderboard's bootstrap resamples
    for name in names:
        stem = PurePosixPath(name).stem
        gt_path = gt_dir / f"{stem}.png"
        if not gt_path.is_file():
            continue
        pred_path = pred_dir / f"{stem}.png"
        pred = stages.read_label_map(pred_path) if pred_path.is_file() else None
        matrix = stages.semantic_image_confusion(
            gt=stages.read_label_map(gt_path), pred=pred, num_classes=n, path=str(pred_path)
        )
        confusion += matrix
        matrices.append(matrix)
        rows.append(stages.semantic_per_image_row(confusion=matrix, file=f"{stem}.png", missing=pred is None))
        if pred is None:
            notes.append({"file": f"{stem}.png", "issue": "missing_prediction"})
    per_image_confusion = np.stack(matrices) if matrices else np.zeros((0, n, n + 1), dtype=np.int64)
    return {"confusion": confusion, "per_image": rows, "notes": notes, "class_names": class_names,
            "per_image_confusion": per_image_confusion}


def shard_stats_to_arrays(stats: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A shard's statistics as (named numeric arrays, JSON-able metadata). Pure."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": STATS_FORMAT, "evaluations": sorted(stats)}
    if INSTANCE_EVAL in stats:
        inst_arrays, meta[INSTANCE_EVAL] = stats[INSTANCE_EVAL].to_arrays()
        arrays |= {f"{INSTANCE_EVAL}.{k}": v for k, v in inst_arrays.items()}
    if SEMANTIC_EVAL in stats:
        sem = stats[SEMANTIC_EVAL]
        arrays[f"{SEMANTIC_EVAL}.confusion"] = np.asarray(sem["confusion"], dtype=np.int64)
        if "per_image_confusion" in sem:
            arrays[f"{SEMANTIC_EVAL}.per_image_confusion"] = np.asarray(sem["per_image_confusion"], dtype=np.int64)
        meta[SEMANTIC_EVAL] = {k: list(sem[k]) for k in ("per_image", "notes", "class_names")}
    return arrays, meta


def shard_stats_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], *, path: str) -> dict[str, Any]:
    """The inverse of `shard_stats_to_arrays`, checking types (the files come from a shared cache). Pure."""
    from segpipe.evaluators.instance_stats import InstanceStats

    if not isinstance(meta, dict) or meta.get("format") != STATS_FORMAT:
        raise EvaluationError(path, "format", f"expected shard statistics format {STATS_FORMAT}")
    stats: dict[str, Any] = {}
    if INSTANCE_EVAL in meta:
        if not isinstance(meta[INSTANCE_EVAL], dict):
            raise EvaluationError(path, INSTANCE_EVAL, "expected an object")
        prefix = f"{INSTANCE_EVAL}."
        inst_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        stats[INSTANCE_EVAL] = InstanceStats.from_arrays(inst_arrays, meta[INSTANCE_EVAL], path=path)
    if SEMANTIC_EVAL in meta:
        sem, confusion = meta[SEMANTIC_EVAL], arrays.get(f"{SEMANTIC_EVAL}.confusion")
        if not (isinstance(confusion, np.ndarray) and confusion.dtype.kind == "i" and confusion.ndim == 2):
            raise EvaluationError(path, f"{SEMANTIC_EVAL}.confusion", "expected a 2-D integer array")
        if not (isinstance(sem, dict) and all(isinstance(sem.get(k), list) for k in ("per_image", "notes", "class_names"))):
            raise EvaluationError(path, SEMANTIC_EVAL, "expected lists per_image, notes and class_names")
        stats[SEMANTIC_EVAL] = {"confusion": confusion, **{k: sem[k] for k in ("per_image", "notes", "class_names")}}
        per_image_confusion = arrays.get(f"{SEMANTIC_EVAL}.per_image_confusion")  # absent in older caches
        if per_image_confusion is not None:
            if not (per_image_confusion.dtype.kind == "i" and per_image_confusion.ndim == 3
                    and per_image_confusion.shape[0] == len(sem["per_image"]) and per_image_confusion.shape[1:] == confusion.shape):
                raise EvaluationError(path, f"{SEMANTIC_EVAL}.per_image_confusion", "expected one integer confusion matrix per per-image row")
            stats[SEMANTIC_EVAL]["per_image_confusion"] = per_image_confusion
    return stats


def write_shard_stats(directory: Path, *, stats: dict[str, Any]) -> None:
    arrays, meta = shard_stats_to_arrays(stats)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(directory / STATS_ARRAYS, buffer.getvalue())
    # Key order kept: per-image rows become table columns in this order.
    atomic_write_text(directory / STATS_META, json.dumps(meta) + "\n")


def read_shard_stats(directory: Path) -> dict[str, Any]:
    """A shard's statistics; never unpickles anything (`allow_pickle=False`: object arrays are refused)."""
    path = directory / STATS_ARRAYS
    if not path.is_file() and (directory / LEGACY_STATS).is_file():
        raise EvaluationError(directory / LEGACY_STATS, "", f"pickled statistics of an older segpipe are never loaded: delete {directory} to recompute")
    try:
        meta = json.loads((directory / STATS_META).read_text(encoding="utf-8"))
        loaded = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise EvaluationError(path, "", f"not an .npz archive of shard statistics (a {type(loaded).__name__})")
        with loaded as npz:
            arrays = {name: npz[name] for name in sorted(npz.files)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # ValueError: also a pickle or an object array
        raise EvaluationError(path, "", f"not readable shard statistics: {type(err).__name__}: {err}") from err
    return shard_stats_from_arrays(arrays, meta, path=str(path))


class EvalReport(CachedTask):
    """One checkpoint's reports: the merge of its shards' statistics, written as tables (+ HTML)."""

    kind = "eval/reports"

    def requires(self) -> list[EvalShard]:
        return [EvalShard(key=k, cache=self.cache, payload=p) for k, p in self.data["shards"]]

    def compute(self) -> None:
        data = self.data
        parts = [read_shard_stats(t.output().directory) for t in self.requires()]
        out = self.fresh_directory()
        header = {**data["header"], **_inference_classes(self.requires())}
        if data.get("inputs_date"):  # the user's inputs' date, not the cache files' (those change with every clean run)
            header["inputs_date"] = data["inputs_date"]
        summaries: dict[str, list[list[Any]]] = {}
        long_rows: list[pd.DataFrame] = []
        if parts and all(INSTANCE_EVAL in p for p in parts):
            name = data["iou_type"]
            report = stages.instance_report(stats=[p[INSTANCE_EVAL] for p in parts])
            stages.write_instance_report(report=report, out=out / REPORT_DIR / name,
                                         header={**header, "evaluation": name, "task": "instances"})
            stages.write_report_records(out / REPORT_DIR / name, instance=[p[INSTANCE_EVAL] for p in parts])
            summaries[name] = _summary_dict(report.summary)
            long_rows.append(_per_class_long(report.per_class, evaluation=name))
        if parts and all(SEMANTIC_EVAL in p for p in parts):
            report = _semantic_merge([p[SEMANTIC_EVAL] for p in parts])
            stages.write_semantic_report(report=report, out=out / REPORT_DIR / SEMANTIC_EVAL,
                                         header={**header, "evaluation": SEMANTIC_EVAL, "task": "semantic"})
            stages.write_report_records(out / REPORT_DIR / SEMANTIC_EVAL, semantic=[p[SEMANTIC_EVAL] for p in parts])
            summaries[SEMANTIC_EVAL] = _summary_dict(report.summary)
            long_rows.append(_per_class_long(report.per_class, evaluation=SEMANTIC_EVAL))
        if not summaries:
            raise RuntimeError(f"checkpoint {header.get('checkpoint')}: inference produced nothing to evaluate")
        if data.get("html", True):
            gt_dir = self.requires()[0].requires()["gt"].output().directory if self.requires() else None
            for evaluation in sorted(summaries):
                report_dir = out / REPORT_DIR / evaluation
                gallery = None if gt_dir is None else _gallery_inputs(
                    shards=self.requires(), evaluation=evaluation, report_dir=report_dir, gt_dir=gt_dir)
                stages.render_evaluate_html(report_dir=report_dir, gallery=gallery)
        long_table = pd.concat(long_rows, ignore_index=True)
        atomic_write_text(out / PER_CLASS_LONG, long_table.to_csv(index=False, lineterminator="\n"))
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summaries, sort_keys=True, indent=1) + "\n")
        self.finish(evaluations=sorted(summaries))


def _inference_classes(shards: list[EvalShard]) -> dict[str, Any]:
    """How the model's classes met the dataset's (the same in every shard): dropped classes and what is scored."""
    for shard in shards:
        meta = shard.requires()["pred"].output().directory / PRED_DIR / "meta.json"
        if meta.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            return {k: data[k] for k in ("dropped_model_classes", "n_dropped_model_outputs", "scoring") if k in data}
    return {}


GALLERY_DIR = "gallery"
GALLERY_SIZE = 24  # segpipe.reports.html's default number of worst images


def _gallery_inputs(*, shards: list[EvalShard], evaluation: str, report_dir: Path, gt_dir: Path) -> Any:
    """The worst images' predictions gathered from the inference shards into REPORT/gallery/, so the page
    can draw GT and prediction side by side (a bounded copy: GALLERY_SIZE images, whatever the dataset size)."""
    from segpipe.reports import data as report_data
    from segpipe.reports.gallery import GallerySource

    infer_dirs = [s.requires()["pred"].output().directory / PRED_DIR for s in shards]
    gallery = report_dir / GALLERY_DIR
    per_image = report_data.read_table(report_dir, "per_image")
    common = {"image_root": DatasetDir(gt_dir).image_root, "gt_coco": gt_dir / INSTANCES_FILE}
    if evaluation == SEMANTIC_EVAL:
        worst = report_data.worst_semantic_images(per_image, n=GALLERY_SIZE)
        names = [str(f) for f in worst.get("file", [])]
        for name in names:
            source = next((d / SEMANTIC_DIR / name for d in infer_dirs if (d / SEMANTIC_DIR / name).is_file()), None)
            if source is not None:
                atomic_write_bytes(gallery / SEMANTIC_DIR / name, source.read_bytes())
        return GallerySource(**common, gt_semantic_dir=gt_dir / SEMANTIC_DIR, pred_semantic_dir=gallery / SEMANTIC_DIR)
    gt = json.loads((gt_dir / INSTANCES_FILE).read_bytes())
    gt_ids = {str(im["file_name"]): int(im["id"]) for im in gt["images"]}
    wanted = {int(i) for i in report_data.worst_instance_images(per_image, n=GALLERY_SIZE).get("image_id", [])}
    picked: list[dict[str, Any]] = []
    index_names: dict[int, str] | None = None  # every inference shard of a checkpoint shares one image index
    for shard in shards:
        infer = shard.requires()["pred"]
        results_path = infer.output().directory / PRED_DIR / RESULTS_FILE
        if not results_path.is_file():
            continue
        if index_names is None:
            index = json.loads((infer.requires().output().directory / INDEX_DATASET / INSTANCES_FILE).read_bytes())
            index_names = {int(im["id"]): str(im["file_name"]) for im in index["images"]}
        remapped = remap_results(results=json.loads(results_path.read_bytes()), index_names=index_names, gt_ids=gt_ids)
        picked.extend(r for r in remapped if int(r["image_id"]) in wanted)
    picked.sort(key=lambda r: (int(r["image_id"]), -float(r.get("score", 0.0))))
    atomic_write_text(gallery / RESULTS_FILE, json.dumps(picked, sort_keys=True) + "\n")
    return GallerySource(**common, results=gallery / RESULTS_FILE)


def _semantic_merge(shards: list[dict[str, Any]]) -> Any:
    """One semantic report from per-shard confusions (summed), per-image rows and notes."""
    per_image = pd.DataFrame([r for s in shards for r in s["per_image"]])
    if not per_image.empty:
        per_image = per_image.sort_values("file", kind="stable").reset_index(drop=True)
    notes = pd.DataFrame([r for s in shards for r in s["notes"]], columns=stages.semantic_notes_columns())
    return stages.semantic_report(
        confusion=np.add.reduce([s["confusion"] for s in shards]), class_names=shards[0]["class_names"],
        per_image=per_image if not per_image.empty else None, notes=notes,
    )


def _summary_dict(summary: pd.DataFrame) -> list[list[Any]]:
    """(metric, value) pairs in the evaluator's order (JSON objects would get their keys sorted)."""
    return [[str(m), float(v)] for m, v in zip(summary["metric"], summary["value"])]


def _per_class_long(per_class: pd.DataFrame, *, evaluation: str) -> pd.DataFrame:
    """Per-class table -> rows (evaluation, category, metric, value); the first text column names the class."""
    label = next(c for c in per_class.columns if not pd.api.types.is_numeric_dtype(per_class[c]))
    # Ids (category_id) are not metrics.
    numeric = [c for c in per_class.columns
               if c != label and not str(c).endswith("_id") and pd.api.types.is_numeric_dtype(per_class[c])]
    long = per_class.melt(id_vars=[label], value_vars=numeric, var_name="metric", value_name="value")
    long = long.rename(columns={label: "category"})
    long.insert(0, "evaluation", evaluation)
    return long[["evaluation", "category", "metric", "value"]]


def leaderboard_compute(*, rows: list[dict[str, Any]], summaries: dict[str, dict[str, list[list[Any]]]]) -> pd.DataFrame:
    """One row per checkpoint, sorted by AP (instance) or mIoU (semantic), failed checkpoints last. Pure."""
    records = []
    for row in rows:
        record: dict[str, Any] = {"checkpoint": row["checkpoint"], "sha256": row["sha256"],
                                  "status": "failed" if row.get("error") else "ok", "error": row.get("error") or ""}
        for evaluation, metrics in sorted(summaries.get(row["checkpoint"], {}).items()):
            record.update({str(m): v for m, v in metrics})
        records.append(record)
    table = pd.DataFrame(records)
    sort_metric = next((m for m in ("AP", "mIoU") if m in table.columns), None)
    key = table[sort_metric].map(lambda v: -v if isinstance(v, float) and not math.isnan(v) else math.inf) if sort_metric else 0
    table = table.assign(_failed=table["status"] == "failed", _key=key)
    table = table.sort_values(["_failed", "_key", "checkpoint"], kind="stable").drop(columns=["_failed", "_key"])
    return table.reset_index(drop=True)


class Leaderboard(CachedTask):
    """leaderboard.csv and per_class_by_checkpoint.csv for every checkpoint of the run."""

    kind = "leaderboard"

    def requires(self) -> list[EvalReport]:
        return [EvalReport(key=r["report"][0], cache=self.cache, payload=r["report"][1]) for r in self.data["rows"] if r.get("report")]

    def compute(self) -> None:
        from segpipe.tasks.leaderboard_stats import with_intervals

        rows = self.data["rows"]
        summaries: dict[str, dict[str, list[list[Any]]]] = {}
        report_dirs: dict[str, Path] = {}
        long_tables: list[pd.DataFrame] = []
        for row in rows:
            if not row.get("report"):
                continue
            report_dir = EvalReport(key=row["report"][0], cache=self.cache, payload=row["report"][1]).output().directory
            summaries[row["checkpoint"]] = json.loads((report_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
            report_dirs[row["checkpoint"]] = report_dir / REPORT_DIR
            long = pd.read_csv(io.StringIO((report_dir / PER_CLASS_LONG).read_text(encoding="utf-8")), keep_default_na=False, na_values=[""])
            long.insert(0, "checkpoint", row["checkpoint"])
            long_tables.append(long)
        out = self.fresh_directory()
        table = leaderboard_compute(rows=rows, summaries=summaries)
        table = with_intervals(table, report_dirs=report_dirs, out=out)  # intervals, best.json, comparison/
        write_table(out, "leaderboard", table)
        long = pd.concat(long_tables, ignore_index=True) if long_tables else pd.DataFrame(columns=LONG_COLUMNS)
        long = long.sort_values(["checkpoint", "evaluation"], kind="stable").reset_index(drop=True)
        write_table(out, "per_class_by_checkpoint", long[LONG_COLUMNS])
        self.finish(checkpoints=len(rows))


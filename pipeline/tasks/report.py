"""A checkpoint's report (the merge of its shards' statistics) and the leaderboard, as Luigi tasks."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import luigi
import numpy as np
import pandas as pd

from segpipe.cache.fingerprints import combine_keys
from segpipe.cache.targets import CachedTask
from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.core.dataset_layout import INSTANCES_FILE, SEMANTIC_DIR, DatasetDir
from segpipe.core.layout import RESULTS_FILE
from segpipe.reports.tables import write_table
from segpipe.core.errors import SegpipeError
from segpipe.reports import records
from segpipe.plan.shards import read_plan
from segpipe.tasks.evaluate import (
    INSTANCE_EVAL, LEADERBOARD_FORMAT, PER_CLASS_LONG, REPORT_DIR, SEMANTIC_EVAL, SUMMARY_FILE, CheckpointTask, EvalGroup, read_gt_keys,
    read_shard_stats, remap_results,
)
from segpipe.tasks.infer import PRED_DIR, read_unit_images
from segpipe.tasks.units import unit_directory

if TYPE_CHECKING:
    from segpipe.evaluators.semantic.tables import SemanticReport

LONG_COLUMNS = ["checkpoint", "evaluation", "category", "metric", "value"]


def renumber_instance_stats(parts: Sequence[Any]) -> list[Any]:
    """Shard statistics (image ids local to each shard) renumbered to the merged dataset's ids, which are
    1 + the rank of the file name among all images (segpipe.tasks.convert.merge_coco). Pure."""
    names = sorted(n for p in parts for n in p.file_names)
    global_id = {n: i for i, n in enumerate(names, start=1)}
    out = []
    for p in parts:
        local = {int(i): global_id[n] for i, n in zip(p.image_ids, p.file_names)}

        def renumber(ids: np.ndarray, local: dict[int, int] = local) -> np.ndarray:  # bound now, not at call time
            return np.asarray([local[int(i)] for i in ids], dtype=np.int64)

        out.append(replace(p, image_ids=renumber(p.image_ids), det_image=renumber(p.det_image), gt_image=renumber(p.gt_image)))
    return out


class EvalReport(CheckpointTask):
    """One checkpoint's reports: the merge of its shards' statistics, written as tables (+ HTML)."""

    kind = "eval/reports"
    digest = luigi.Parameter()
    groups = luigi.ListParameter(significant=False)  # the EvalGroup digests, by group
    html = luigi.BoolParameter(significant=False, default=True)
    inputs_date = luigi.OptionalParameter(significant=False, default=None)  # the user's inputs' date, for the header

    def subdir(self) -> str:
        return f"{self.checkpoint}-{self.digest}"

    def requires(self) -> dict[str, Any]:
        # luigi's Task.clone is unannotated: it copies this task's parameters that EvalGroup shares.
        groups = [self.clone(EvalGroup, group=i, digest=d) for i, d in enumerate(self.groups)]  # type: ignore[no-untyped-call]
        return {"groups": groups, "gt": self.merge_task()}

    def shard_dirs(self) -> list[tuple[Path, Path]]:
        """(inference unit dir, evaluation unit dir) of every shard, in shard order."""
        cache = Path(str(self.cache))
        plan = read_plan(str(cache), str(self.plan))
        gt_keys = read_gt_keys(self.merge_task().output().directory)
        units = self.shard_units(range(len(plan.shards)), gt_keys=gt_keys)
        return [(unit_directory(cache, i.kind, i.key), unit_directory(cache, e.kind, e.key)) for _, i, e in units]

    def compute(self) -> None:
        # Imported here, not at the top: a cached rerun imports the task modules and runs none of this.
        from segpipe.commands.evaluate_instances import write_instance_report
        from segpipe.commands.evaluate_semantic import write_semantic_report
        from segpipe.evaluators.instance.evaluation import InstanceStats, instance_compute
        from segpipe.reports.html import render_evaluate_report

        shard_dirs = self.shard_dirs()
        parts = [read_shard_stats(e) for _, e in shard_dirs]
        plan = read_plan(str(self.cache), str(self.plan))
        out = self.fresh_directory()
        header = {"checkpoint": str(self.checkpoint), "sha256": str(self.checkpoint_sha256), "model": str(self.model),
                  "dataset_key": str(self.merge_digest), "images_key": plan.images_key, "segpipe": str(self.version),
                  **_inference_classes([i for i, _ in shard_dirs])}
        if self.inputs_date:  # the user's inputs' date, not the cache files' (those change with every clean run)
            header["inputs_date"] = str(self.inputs_date)
        summaries: dict[str, list[list[Any]]] = {}
        long_rows: list[pd.DataFrame] = []
        if parts and all(INSTANCE_EVAL in p for p in parts):
            name = str(self.iou_type)
            instance = renumber_instance_stats([p[INSTANCE_EVAL] for p in parts])
            merged_stats = InstanceStats.merge_all(list(instance))
            report = instance_compute(merged_stats)
            write_instance_report(report, out / REPORT_DIR / name, header={**header, "evaluation": name, "task": "instances"})
            records.write_instance_records(out / REPORT_DIR / name, stats=merged_stats)
            summaries[name] = _summary_dict(report.summary)
            long_rows.append(_per_class_long(report.per_class, evaluation=name))
        if parts and all(SEMANTIC_EVAL in p for p in parts):
            semantic = _semantic_merge([p[SEMANTIC_EVAL] for p in parts])
            write_semantic_report(semantic, out / REPORT_DIR / SEMANTIC_EVAL, header={**header, "evaluation": SEMANTIC_EVAL, "task": "semantic"})
            _write_semantic_records(out / REPORT_DIR / SEMANTIC_EVAL, shards=[p[SEMANTIC_EVAL] for p in parts])
            summaries[SEMANTIC_EVAL] = _summary_dict(semantic.summary)
            long_rows.append(_per_class_long(semantic.per_class, evaluation=SEMANTIC_EVAL))
        if not summaries:
            raise SegpipeError(str(self.checkpoint_path), "predictions", "inference produced nothing to evaluate (no results.json, no semantic maps)")
        if self.html:
            gt_dir = self.merge_task().output().directory
            for evaluation in sorted(summaries):
                report_dir = out / REPORT_DIR / evaluation
                gallery = _gallery_inputs(infer_dirs=[i for i, _ in shard_dirs], evaluation=evaluation, report_dir=report_dir, gt_dir=gt_dir)
                render_evaluate_report(report_dir, gallery=gallery)
        long_table = pd.concat(long_rows, ignore_index=True)
        atomic_write_text(out / PER_CLASS_LONG, long_table.to_csv(index=False, lineterminator="\n"))
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summaries, sort_keys=True, indent=1) + "\n")
        self.finish(evaluations=sorted(summaries))


def _inference_classes(infer_dirs: list[Path]) -> dict[str, Any]:
    """How the model's classes met the dataset's (the same in every shard): dropped classes and what is scored."""
    for infer_dir in infer_dirs:
        meta = infer_dir / PRED_DIR / "meta.json"
        if meta.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            return {k: data[k] for k in ("dropped_model_classes", "n_dropped_model_outputs", "scoring") if k in data}
    return {}


GALLERY_DIR = "gallery"
GALLERY_SIZE = 24  # segpipe.reports.html's default number of worst images


def _gallery_inputs(*, infer_dirs: list[Path], evaluation: str, report_dir: Path, gt_dir: Path) -> Any:
    """The worst images' predictions gathered from the inference shards into REPORT/gallery/, so the page
    can draw GT and prediction side by side (a bounded copy: GALLERY_SIZE images, whatever the dataset size)."""
    from segpipe.reports import data as report_data
    from segpipe.reports.gallery import GallerySource

    gallery = report_dir / GALLERY_DIR
    per_image = report_data.read_table(report_dir, "per_image")
    image_root, gt_coco = DatasetDir(gt_dir).image_root, gt_dir / INSTANCES_FILE
    if evaluation == SEMANTIC_EVAL:
        worst = report_data.worst_semantic_images(per_image, n=GALLERY_SIZE)
        names = [str(f) for f in worst.get("file", [])]
        for name in names:
            source = next((d / PRED_DIR / SEMANTIC_DIR / name for d in infer_dirs if (d / PRED_DIR / SEMANTIC_DIR / name).is_file()), None)
            if source is not None:
                atomic_write_bytes(gallery / SEMANTIC_DIR / name, source.read_bytes())
        return GallerySource(image_root=image_root, gt_coco=gt_coco, gt_semantic_dir=gt_dir / SEMANTIC_DIR, pred_semantic_dir=gallery / SEMANTIC_DIR)
    gt = json.loads((gt_dir / INSTANCES_FILE).read_bytes())
    gt_ids = {str(im["file_name"]): int(im["id"]) for im in gt["images"]}
    wanted = {int(i) for i in report_data.worst_instance_images(per_image, n=GALLERY_SIZE).get("image_id", [])}
    picked: list[dict[str, Any]] = []
    for infer_dir in infer_dirs:  # each inference shard numbers its images in its own index
        results_path = infer_dir / PRED_DIR / RESULTS_FILE
        if not results_path.is_file():
            continue
        remapped = remap_results(results=json.loads(results_path.read_bytes()), index_names=read_unit_images(infer_dir), gt_ids=gt_ids)
        picked.extend(r for r in remapped if int(r["image_id"]) in wanted)
    picked.sort(key=lambda r: (int(r["image_id"]), -float(r.get("score", 0.0))))
    atomic_write_text(gallery / RESULTS_FILE, json.dumps(picked, sort_keys=True) + "\n")
    return GallerySource(image_root=image_root, gt_coco=gt_coco, results=gallery / RESULTS_FILE)


def _semantic_merge(shards: list[dict[str, Any]]) -> SemanticReport:
    """One semantic report from per-shard confusions (summed), per-image rows and notes."""
    from segpipe.evaluators.semantic.tables import NOTES_COLUMNS, semantic_compute

    per_image = pd.DataFrame([r for s in shards for r in s["per_image"]])
    if not per_image.empty:
        per_image = per_image.sort_values("file", kind="stable").reset_index(drop=True)
    notes = pd.DataFrame([r for s in shards for r in s["notes"]], columns=list(NOTES_COLUMNS))
    return semantic_compute(np.add.reduce([s["confusion"] for s in shards]), class_names=list(shards[0]["class_names"]),
                            per_image=per_image if not per_image.empty else None, notes=notes)


def _write_semantic_records(out: Path, *, shards: Sequence[Mapping[str, Any]]) -> None:
    """The per-image confusions of the semantic shards beside the report (nothing when a shard lacks them)."""
    found = records.semantic_records_from_shards(shards)
    if found is not None:
        records.write_semantic_records(out, files=found[0], confusions=found[1], class_names=shards[0]["class_names"])


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
        for _evaluation, metrics in sorted(summaries.get(row["checkpoint"], {}).items()):
            record.update({str(m): v for m, v in metrics})
        records.append(record)
    table = pd.DataFrame(records)
    sort_metric = next((m for m in ("AP", "mIoU") if m in table.columns), None)
    key = table[sort_metric].map(lambda v: -v if isinstance(v, float) and not math.isnan(v) else math.inf) if sort_metric else 0
    table = table.assign(_failed=table["status"] == "failed", _key=key)
    table = table.sort_values(["_failed", "_key", "checkpoint"], kind="stable").drop(columns=["_failed", "_key"])
    return table.reset_index(drop=True)


class Leaderboard(CachedTask):
    """leaderboard.csv and per_class_by_checkpoint.csv for every checkpoint of the run. `rows` names each
    checkpoint's report folder (or its error); the driver runs the reports first."""

    kind = "leaderboard"
    digest = luigi.Parameter()
    rows = luigi.ListParameter(significant=False)  # [checkpoint, sha256, report folder ("" if failed), error]

    def subdir(self) -> str:
        return str(self.digest)

    def compute(self) -> None:
        from segpipe.tasks.leaderboard_stats import with_intervals

        rows = [{"checkpoint": r[0], "sha256": r[1], "report": r[2] or None, "error": r[3] or None} for r in self.rows]
        summaries: dict[str, dict[str, list[list[Any]]]] = {}
        report_dirs: dict[str, Path] = {}
        long_tables: list[pd.DataFrame] = []
        for row in rows:
            if not row["report"]:
                continue
            report_dir = Path(str(self.cache)) / EvalReport.kind / str(row["report"])
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


def leaderboard_key(rows: Sequence[Sequence[str]], *, version: str) -> str:
    return combine_keys("leaderboard", LEADERBOARD_FORMAT, version, *["\0".join(str(v) for v in row) for row in rows])

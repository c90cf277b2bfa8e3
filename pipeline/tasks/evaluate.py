"""Inference + evaluation as Luigi tasks: one task per checkpoint per group of shards.

Per-shard statistics (instance match records, confusion matrices) are additive, so the report of a
checkpoint is the merge of its shards' statistics (torchmetrics style). Each evaluation shard reads and is
keyed on its own ground truth only (the merge writes one file per shard), so one edited annotation
reruns one evaluation shard per checkpoint. Predictions are matched to the ground truth by image file
name: inference numbers images in its own shard index, which knows nothing of annotations.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import luigi
import numpy as np

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.core.dataset_layout import SEMANTIC_CLASSES_FILE, SEMANTIC_DIR, read_class_names_file
from segpipe.core.errors import EvaluationError
from segpipe.core.layout import RESULTS_FILE
from segpipe.cache.fingerprints import combine_keys
from segpipe.cache.input_check import Expected, inputs_unchanged
from segpipe.cache.targets import CachedTask, new_task
from segpipe.plan.gpu_slots import gpu_slot
from segpipe.plan.progress import image_progress
from segpipe.plan.shards import read_plan
from segpipe.inference.images import infer_images, inference_label_space, model_task, open_session, predictions_task, readable_card
from segpipe.tasks.convert import GT_DIR, GT_INDEX_FILE, ConvertMerge, GroupTask, spec_from_json
from segpipe.tasks.infer import PRED_DIR, infer_unit_key, infer_unit_kind, read_unit_images, write_unit_images
from segpipe.tasks.units import Unit, UnitLog, ensure_unit, unit_directory

EVAL_UNITS = "eval/shards"

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


def eval_unit_key(*, version: str, infer_key: str, gt_key: str, iou_type: str) -> str:
    return combine_keys("eval-shard", version, f"stats-{STATS_FORMAT}", infer_key, gt_key, iou_type)


def read_label_space(merged_dir: Path) -> dict[str, Any]:
    """Category names and semantic classes of the merged dataset (what maps model outputs to ids), as the
    merge recorded them beside the per-shard ground truth: a small file, not the whole instances.json."""
    return dict(json.loads((merged_dir / GT_INDEX_FILE).read_text(encoding="utf-8"))["labels"])


class CheckpointTask(CachedTask):
    """Parameters shared by a checkpoint's tasks: what it is (name, digest, model, options digest, IoU type)
    as significant parameters; where things are (paths, the plan, the conversion's groups) as insignificant
    ones, from which `requires()` rebuilds the conversion tasks."""

    checkpoint = luigi.Parameter()
    checkpoint_digest = luigi.Parameter()
    model = luigi.Parameter()
    options_digest = luigi.Parameter()
    iou_type = luigi.Parameter()
    checkpoint_path = luigi.Parameter(significant=False)
    checkpoint_sha256 = luigi.Parameter(significant=False)
    options = luigi.DictParameter[dict[str, Any]](significant=False, default={})
    loader_workers = luigi.OptionalIntParameter(significant=False, default=None)
    labels_digest = luigi.Parameter(significant=False)
    plan = luigi.Parameter(significant=False)
    version = luigi.Parameter(significant=False)
    merge_digest = luigi.Parameter(significant=False)
    convert_groups = luigi.ListParameter(significant=False)
    convert_options = luigi.DictParameter[dict[str, Any]](significant=False, default={})
    # GPU indices (`--devices`): an inference takes a free one; the key says only "cuda", as the outputs do
    # not depend on which GPU ran them.
    devices = luigi.ListParameter(significant=False, default=())

    def merge_task(self) -> ConvertMerge:
        return new_task(ConvertMerge, cache=self.cache, digest=self.merge_digest, groups=self.convert_groups, plan=self.plan,
                        options=self.convert_options, version=self.version)

    def shard_units(self, positions: Sequence[int], *, gt_keys: Sequence[str]) -> list[tuple[int, Unit, Unit]]:
        """(position, inference unit, evaluation unit) of each shard position. Pure given the plan."""
        plan = read_plan(str(self.cache), str(self.plan))
        kind = infer_unit_kind(checkpoint_digest=str(self.checkpoint_digest), options_digest=str(self.options_digest))
        out = []
        for position in positions:
            shard = plan.shards[position]
            ikey = infer_unit_key(version=str(self.version), checkpoint_digest=str(self.checkpoint_digest),
                                  options_digest=str(self.options_digest), labels_digest=str(self.labels_digest),
                                  images_key=shard.images_key)
            ekey = eval_unit_key(version=str(self.version), infer_key=ikey, gt_key=gt_keys[position], iou_type=str(self.iou_type))
            label = f"{self.checkpoint}_s{shard.index:05d}"
            out.append((position, Unit("InferShard", kind, ikey, label), Unit("EvalShard", EVAL_UNITS, ekey, label)))
        return out


def read_gt_keys(merged_dir: Path) -> list[str]:
    """Each shard's ground-truth digest (by shard position), as the merge wrote them."""
    return [str(k) for k in json.loads((merged_dir / GT_INDEX_FILE).read_text(encoding="utf-8"))["shards"]]


class EvalGroup(GroupTask, CheckpointTask):
    """Inference and evaluation statistics of one checkpoint on one group of shards. The model is loaded
    once (only if some shard's inference is missing) and each shard is cached on its own."""

    kind = "eval/groups"

    def requires(self) -> ConvertMerge:
        return self.merge_task()

    def compute(self) -> None:
        cache = Path(str(self.cache))
        merged = self.requires().output().directory
        plan = read_plan(str(cache), str(self.plan))
        card = readable_card(Path(str(self.checkpoint_path)))  # read once in this task's process, passed to the session
        label_space = inference_label_space(read_label_space(merged), task=model_task(model=str(self.model), card=card))
        image_root = spec_from_json(plan.spec).image_root().resolve()
        gt_index = read_gt_keys(merged)
        session: list[Any] = []  # loaded at the first shard that needs inference
        progress, done_images = image_progress(), [0]  # one bar and one luigid status for the whole group
        prefix = spec_from_json(plan.spec).image_prefix()
        checkpoint = Path(str(self.checkpoint_path))

        def loaded() -> Any:  # the checkpoint, loaded at the first shard with an image to predict
            if not session:
                options = dict(self.options)
                if self.devices:  # hold one free GPU of `--devices` for the rest of this group
                    gpu = stack.enter_context(gpu_slot(cache, list(self.devices)))
                    options["device"] = f"cuda:{gpu}"
                session.append(open_session(model=str(self.model), checkpoint=checkpoint, options=options,
                                            loader_workers=self.loader_workers, checkpoint_sha256=str(self.checkpoint_sha256), card=card))
            return session[0]

        def infer(directory: Path, position: int) -> dict[str, Any]:
            shard = plan.shards[position]
            names = list(shard.image_names)
            wanted = set(names)
            # The images this shard reads, and the checkpoint, must be what the key fingerprinted.
            inputs: list[Expected] = [(image_root / str(path)[len(prefix):], int(size), str(sha)) for path, size, sha in shard.entries
                                      if str(path).startswith(prefix) and str(path)[len(prefix):] in wanted]
            inputs = [item for item in inputs if item[0].is_file()]  # a dangling link is an unreadable image, said so below
            inputs.append((checkpoint, None, str(self.checkpoint_sha256)))
            base = done_images[0]
            with inputs_unchanged(inputs, cache=cache):
                done = infer_images(loaded, image_root=image_root, names=names, label_space=label_space, out=directory / PRED_DIR,
                                    progress=lambda d, t: progress(base + d, base + t))
            (directory / PRED_DIR).mkdir(parents=True, exist_ok=True)
            write_unit_images(directory, file_names=done.file_names, unreadable=done.unreadable)
            done_images[0] += len(done.file_names)
            return {"images": len(done.file_names)}

        done = UnitLog()
        with contextlib.ExitStack() as stack:
            for position, iunit, eunit in self.shard_units(plan.groups[int(self.group)], gt_keys=gt_index):
                done.add(ensure_unit(cache, iunit, functools.partial(infer, position=position)))
                idir = unit_directory(cache, iunit.kind, iunit.key)

                def evaluate(d: Path, p: int = position, i: Path = idir) -> dict[str, Any]:  # bound now, not at call time
                    return evaluate_shard(directory=d, infer_dir=i, merged=merged, gt_key=gt_index[p], iou_type=str(self.iou_type))

                done.add(ensure_unit(cache, eunit, evaluate))
        self.fresh_directory()
        self.finish(**done.marker())


def evaluate_shard(*, directory: Path, infer_dir: Path, merged: Path, gt_key: str, iou_type: str) -> dict[str, Any]:
    """Additive statistics of one shard: its own ground truth (gt/<key>.json, shard-local image ids) against
    its own predictions, matched by file name. Writes stats.npz + stats.json into `directory`."""
    pred_dir = infer_dir / PRED_DIR
    gt = json.loads((merged / GT_DIR / f"{gt_key}.json").read_bytes())
    gt_ids = {str(im["file_name"]): int(im["id"]) for im in gt["images"]}
    names = sorted(gt_ids)
    stats: dict[str, Any] = {}
    results_path = pred_dir / RESULTS_FILE
    # A semantic model's results.json holds connected components at best: it is scored as semantic
    # segmentation, and instance metrics are for instance models.
    task = predictions_task(pred_dir)
    if results_path.is_file() and task in ("instance", None):
        from segpipe.evaluators.instance.evaluation import instance_update

        results = remap_results(results=json.loads(results_path.read_bytes()), index_names=read_unit_images(infer_dir), gt_ids=gt_ids)
        stats[INSTANCE_EVAL] = instance_update(gt, list[Mapping[str, Any]](results), iou_type=iou_type, image_ids=[gt_ids[n] for n in names])
    classes_file = merged / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE
    if classes_file.is_file() and (pred_dir / SEMANTIC_DIR).is_dir() and task in ("semantic", None):
        stats[SEMANTIC_EVAL] = _semantic_shard(
            names=names, gt_dir=merged / SEMANTIC_DIR, pred_dir=pred_dir / SEMANTIC_DIR,
            class_names=read_class_names_file(classes_file),
        )
    write_shard_stats(directory, stats=stats)
    return {"images": len(names), "evaluations": sorted(stats)}


def _semantic_shard(*, names: list[str], gt_dir: Path, pred_dir: Path, class_names: list[str]) -> dict[str, Any]:
    """The shard's images scored as `segpipe evaluate semantic` scores a folder (same pairing, same per-image
    scoring); predictions without GT are not listed (a shard's images without a label map are not scored)."""
    from segpipe.evaluators.semantic.evaluation import label_maps_by_stem, pair_label_maps, score_pair
    from segpipe.evaluators.semantic.tables import MISSING_PREDICTION

    n = len(class_names)
    stems = {PurePosixPath(name).stem for name in names}
    gt = {stem: gt_dir / f"{stem}.png" for stem in stems if (gt_dir / f"{stem}.png").is_file()}
    pairs, _ = pair_label_maps(gt, {s: p for s, p in label_maps_by_stem(pred_dir).items() if s in gt})
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    rows: list[dict[str, object]] = []
    notes: list[dict[str, str]] = []
    matrices: list[np.ndarray] = []  # per image, in the order of `rows`: what the leaderboard's bootstrap resamples
    for pair in pairs:
        matrix, row = score_pair(pair, num_classes=n)
        confusion += matrix
        matrices.append(matrix)
        rows.append(row)
        if pair.pred is None:
            notes.append({"file": pair.gt.name, "issue": MISSING_PREDICTION})
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
    from segpipe.evaluators.instance.stats import InstanceStats

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
    np.savez(buffer, allow_pickle=True, **arrays)  # numpy's default, named so that `arrays` cannot be taken for it
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



"""Shard statistics in the cache are data only: a crafted pickle placed there is refused and never executed."""

from __future__ import annotations

import ast
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.evaluation import instance_compute, instance_update
from segpipe.evaluators.instance.stats import InstanceStats
from segpipe.tasks import evaluate as tasks_evaluate
from segpipe.tasks.evaluate import (
    INSTANCE_EVAL, LEGACY_STATS, SEMANTIC_EVAL, STATS_ARRAYS, STATS_META, read_shard_stats, write_shard_stats,
)
from tests.evaluators.test_instance import make_dataset

ROOT = Path(__file__).resolve().parents[2]
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


class _Payload:
    """Unpickling this creates the directory `target`: proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.target),)


def _stats() -> dict[str, Any]:
    gt, results = make_dataset(seed=4, n_images=5)
    known = {im["id"] for im in gt["images"]}
    results = [r for r in results if r["image_id"] in known]
    instance = instance_update(gt, results, iou_type="segm", image_ids=sorted(known)[:3])
    semantic = {
        "confusion": np.arange(12, dtype=np.int64).reshape(3, 4),
        "per_image": [{"file": "a.png", "IoU": 0.1 + 0.2, "Dice": float("nan"), "aAcc": 1 / 3, "gt_pixels": 7, "prediction": "found"}],
        "notes": [{"file": "b.png", "issue": "missing_prediction"}],
        "class_names": ["background", "cat", "dog"],
    }
    return {INSTANCE_EVAL: instance, SEMANTIC_EVAL: semantic}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_tasks_evaluate_imports_no_pickle_module() -> None:
    tree = ast.parse(Path(tasks_evaluate.__file__).read_text(encoding="utf-8"))
    assert not _imports(tree) & UNSAFE_MODULES


def _keywords(call: ast.Call) -> dict[str, Any]:
    return {k.arg: ast.literal_eval(k.value) if isinstance(k.value, ast.Constant) else None for k in call.keywords}


def test_no_unsafe_loads_anywhere_in_pipeline_and_evaluators() -> None:
    """No pickle.load(s); np.load only with allow_pickle=False; torch.load with an explicit weights_only
    (checkpoints.py passes False only behind --trust-checkpoint, tested in test_checkpoints.py)."""
    problems = []
    for path in sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "evaluators").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)):
                continue
            owner, name, where = node.func.value.id, node.func.attr, f"{path.relative_to(ROOT)}:{node.lineno}"
            if owner in UNSAFE_MODULES and name in ("load", "loads", "Unpickler", "open"):
                problems.append(f"{where}: {owner}.{name}")
            if owner in ("np", "numpy") and name == "load" and _keywords(node).get("allow_pickle", True) is not False:
                problems.append(f"{where}: np.load without allow_pickle=False")
            if owner == "torch" and name == "load" and "weights_only" not in _keywords(node):
                problems.append(f"{where}: torch.load without weights_only")
    assert problems == []


def test_round_trip_is_exact_and_scores_the_same(tmp_path: Path) -> None:
    stats = _stats()
    write_shard_stats(tmp_path, stats=stats)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATS_ARRAYS, STATS_META])
    back = read_shard_stats(tmp_path)
    a, b = stats[INSTANCE_EVAL], back[INSTANCE_EVAL]
    assert isinstance(b, InstanceStats) and len(a.det_image) > 0
    for name in ("iou_type", "category_ids", "category_names", "file_names", "warnings"):
        assert getattr(b, name) == getattr(a, name)
    for name in ("image_ids", "det_image", "det_category", "det_score", "det_rank", "det_matched", "det_ignored", "det_iou",
                 "gt_image", "gt_category", "gt_ignored"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
        assert getattr(b, name).dtype == getattr(a, name).dtype and getattr(b, name).shape == getattr(a, name).shape
    pd.testing.assert_frame_equal(instance_compute(b).per_class, instance_compute(a).per_class)
    assert instance_compute(b).stats == instance_compute(a).stats
    sem = back[SEMANTIC_EVAL]
    np.testing.assert_array_equal(sem["confusion"], stats[SEMANTIC_EVAL]["confusion"])
    assert sem["confusion"].dtype == np.int64
    assert list(sem["per_image"][0]) == list(stats[SEMANTIC_EVAL]["per_image"][0])  # column order
    assert sem["per_image"][0]["IoU"] == 0.1 + 0.2 and np.isnan(sem["per_image"][0]["Dice"])
    assert (sem["notes"], sem["class_names"]) == (stats[SEMANTIC_EVAL]["notes"], stats[SEMANTIC_EVAL]["class_names"])


def _write_meta(directory: Path) -> None:
    write_shard_stats(directory, stats=_stats())  # a genuine stats.json next to the crafted arrays


def test_a_pickle_payload_as_the_stats_file_is_refused_and_never_runs(tmp_path: Path) -> None:
    import pickle

    _write_meta(tmp_path)
    target = tmp_path / "pwned"
    (tmp_path / STATS_ARRAYS).write_bytes(pickle.dumps({"instance": _Payload(target)}))
    with pytest.raises(EvaluationError, match="not readable shard statistics"):
        read_shard_stats(tmp_path)
    assert not target.exists()


def test_an_npz_with_a_pickled_object_array_is_refused_and_never_runs(tmp_path: Path) -> None:
    _write_meta(tmp_path)
    target = tmp_path / "pwned"
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{INSTANCE_EVAL}.image_ids": np.array([_Payload(target)], dtype=object)})
    (tmp_path / STATS_ARRAYS).write_bytes(buffer.getvalue())
    with pytest.raises(EvaluationError, match="allow_pickle"):
        read_shard_stats(tmp_path)
    assert not target.exists()


def test_an_old_pickled_stats_file_is_never_loaded(tmp_path: Path) -> None:
    import pickle

    target = tmp_path / "pwned"
    (tmp_path / LEGACY_STATS).write_bytes(pickle.dumps(_Payload(target)))
    with pytest.raises(EvaluationError, match=f"{LEGACY_STATS}.*never loaded"):
        read_shard_stats(tmp_path)
    assert not target.exists()


def test_arrays_of_the_wrong_kind_or_shape_are_refused(tmp_path: Path) -> None:
    arrays, meta = _stats()[INSTANCE_EVAL].to_arrays()
    with pytest.raises(EvaluationError, match="det_matched"):
        InstanceStats.from_arrays({**arrays, "det_matched": arrays["det_matched"].astype(np.float64)}, meta)
    with pytest.raises(EvaluationError, match="gt_ignored"):
        InstanceStats.from_arrays({**arrays, "gt_ignored": arrays["gt_ignored"][:, 0]}, meta)
    with pytest.raises(EvaluationError, match="image_ids"):
        InstanceStats.from_arrays({k: v for k, v in arrays.items() if k != "image_ids"}, meta)
    with pytest.raises(EvaluationError, match="file_names"):
        InstanceStats.from_arrays(arrays, {**meta, "file_names": [1, 2]})
    write_shard_stats(tmp_path, stats=_stats())
    meta_file = tmp_path / STATS_META
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text(encoding="utf-8")), "format": 0}), encoding="utf-8")
    with pytest.raises(EvaluationError, match="format"):
        read_shard_stats(tmp_path)

"""The relabel loop end to end on the sample (benchmarks/relabel_loop.py, small): injected errors are flagged,
the task's suggestions accepted and applied, and the findings and metrics move as they should."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "relabel_loop.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relabel_loop_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[Any]]:
    work = tmp_path_factory.mktemp("loop")
    clean, pred = bench.prepare(work, n_images=8, seed=0)
    injected = bench.inject(clean, work / "dirty")
    return work, clean, pred, injected


@pytest.mark.parametrize("fmt", ["cvat", "labelme"])
def test_loop_fixes_the_injected_errors(bench: ModuleType, prepared: tuple, fmt: str) -> None:
    work, clean, pred, injected = prepared
    assert [e.kind for e in injected] == ["delete", "shift", "grow", "spurious"]
    r = bench.run_loop(work, fmt=fmt, clean=clean, pred=pred, injected=injected, dirty=work / "dirty")
    assert r["found_before"] == {"delete": True, "shift": True, "grow": True, "spurious": True}
    assert r["found_after"] == {"delete": False, "shift": False, "grow": False, "spurious": False}
    changes = r["changes"]
    applied = changes[changes["change"] != "suggestion_dropped"]
    by_kind = {e.kind: e for e in injected}
    assert sorted(zip(applied["change"], applied["image_id"])) == sorted([
        ("added", by_kind["delete"].image_id), ("reshaped", by_kind["shift"].image_id),
        ("reshaped", by_kind["grow"].image_id), ("removed", by_kind["spurious"].image_id)])
    assert set(applied.loc[applied["change"] == "removed", "annotation_id"]) == {by_kind["spurious"].annotation_id}
    assert r["stale_semantic_maps"] == 4  # the copied trimap-based maps of the four changed images, said so
    for e in injected:  # every injected image's labels are closer to the clean ones
        assert r["label_iou_after"][e.image_id] > r["label_iou_before"][e.image_id] + 0.1
        assert r["label_iou_after"][e.image_id] >= 0.8
    assert r["ap_fixed"] > r["ap_dirty"] + 0.05
    assert r["findings_after"].get("possibly_sloppy_outline", 0) == 0 and r["findings_after"].get("possibly_spurious", 0) == 0
    # Images the task did not change keep their annotation records as they were.
    dirty = json.loads((work / "dirty" / "instances.json").read_text())
    fixed = json.loads((work / f"fixed_{fmt}" / "instances.json").read_text())
    touched = {e.image_id for e in injected}
    assert [a for a in dirty["annotations"] if a["image_id"] not in touched] == [a for a in fixed["annotations"] if a["image_id"] not in touched]
    for name in ("dataset.json", "conversion_report.csv", "heads.json"):
        assert (work / "dirty" / name).read_bytes() == (work / f"fixed_{fmt}" / name).read_bytes()

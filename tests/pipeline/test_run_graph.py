"""The task graph of `segpipe run`: typed tasks people can read, a bounded number of them, shards cached
inside them, and a cache where any folder can be deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import luigi
import numpy as np
import pytest
from PIL import Image

from segpipe.cache.fingerprints import ManifestEntry
from segpipe.runner.driver import RUN_LOG_FILE, run_pipeline, walk_graph
from segpipe.plan.shards import MAX_GROUPS, DatasetSpec, plan_shards
from tests.pipeline.pipeline_fixtures import families, make_checkpoint, make_dataset, report_files, settings_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("graph")
    dataset = make_dataset(tmp / "pets", n_images=8)
    make_checkpoint(tmp / "ckpts" / "m0.pt", seed=0)
    outcome = run_pipeline(settings_for(tmp, dataset=dataset, ckpts=tmp / "ckpts", shard_size=2))
    assert outcome.exit_code == 0, outcome.failed
    return tmp


def _copy(world: Path, dest: Path) -> object:
    for name in ("pets", "ckpts", "out"):
        shutil.copytree(world / name, dest / name, symlinks=True)
    return settings_for(dest, dataset=dest / "pets", ckpts=dest / "ckpts", shard_size=2)


def _graph(settings: object) -> list[luigi.Task]:
    """Every task of the run's graph, rebuilt the way the driver builds it."""
    from segpipe.cache.fingerprints import StatCache, build_manifest, checkpoint_fingerprint, package_version
    from segpipe.runner.driver import CheckpointInput, build_checkpoint_tasks, build_convert_tasks

    cache = settings.out / ".cache"  # type: ignore[attr-defined]
    spec = DatasetSpec(format="oxford-pet", root=settings.dataset.resolve())  # type: ignore[attr-defined]
    plan = plan_shards(build_manifest(spec.roots(), stat_cache=StatCache(None)), spec=spec, shard_size=2)
    version = package_version()
    merge = build_convert_tasks(spec=spec, plan=plan, settings=settings, version=version, cache=str(cache))  # type: ignore[arg-type]
    ckpt = (settings.dataset.parent / "ckpts" / "m0.pt").resolve()  # type: ignore[attr-defined]
    sha = __import__("hashlib").sha256(ckpt.read_bytes()).hexdigest()
    key = checkpoint_fingerprint(ckpt, card=ckpt.with_suffix(".json"), stat_cache=StatCache(None))
    report = build_checkpoint_tasks(ckpt=CheckpointInput(name="m0", path=ckpt, sha256=sha, key=key), merge=merge,
                                    settings=settings, version=version)  # type: ignore[arg-type]
    return walk_graph([report])


def test_no_payload_store_and_task_ids_say_what_a_task_is(world: Path, tmp_path: Path) -> None:
    settings = _copy(world, tmp_path)
    cache = tmp_path / "out" / ".cache"
    assert not (cache / "payloads").exists()
    tasks = _graph(settings)
    assert sorted({t.task_family for t in tasks}) == ["ConvertGroup", "ConvertMerge", "EvalGroup", "EvalReport"]
    for task in tasks:
        params = task.to_str_params(only_significant=True)
        assert all(len(v) <= 64 for v in params.values()), params  # names, digests and indexes, never a blob
        if task.task_family in ("EvalGroup", "EvalReport"):
            assert params["checkpoint"] == "m0" and task.task_id.startswith(f"{task.task_family}_m0_")
        if task.task_family.endswith("Group"):
            assert params["group"].isdigit()
        # requires() rebuilds the upstream tasks from the parameters alone: a task rebuilt from its parameters
        # (as luigid's workers do) has the same id and the same upstream tasks.
        again = type(task).from_str_params(task.to_str_params())
        assert again.task_id == task.task_id
        assert sorted(t.task_id for t in luigi.task.flatten(again.requires())) == sorted(
            t.task_id for t in luigi.task.flatten(task.requires()))


def test_requires_and_complete_read_no_plan(world: Path, tmp_path: Path) -> None:
    settings = _copy(world, tmp_path)
    tasks = _graph(settings)
    shutil.rmtree(tmp_path / "out" / ".cache" / "plans")  # the only file run() reads to find its shards
    for task in tasks:
        luigi.task.flatten(task.requires())
        assert task.complete()


def test_task_count_is_bounded_by_groups_not_images() -> None:
    """100,000 stems: 512 hash shards of ~195, in MAX_GROUPS scheduling groups."""
    entries = tuple(ManifestEntry(path=f"root/images/img_{i:06d}.jpg", size=1, sha256=f"{i:064x}") for i in range(100_000))
    plan = plan_shards(entries, spec=DatasetSpec(format="oxford-pet", root=Path("/nonexistent")), shard_size=256)
    assert len(plan.shards) == 512 and len(plan.groups()) == MAX_GROUPS
    assert sorted(p for g in plan.groups() for p in g) == list(range(512))
    sizes = [len(s.stems) for s in plan.shards]
    assert sum(sizes) == 100_000 and max(sizes) < 2 * 100_000 / 512


def _edit_trimap(path: Path) -> None:
    trimap = np.array(Image.open(path))
    trimap[:3, :3] = 3
    Image.fromarray(trimap).save(path, format="PNG")


@pytest.mark.parametrize("folder", ["infer", "convert/merged", "convert/shards", "eval/shards", "plans", "fingerprints"])
def test_deleting_a_cache_folder_then_editing_an_annotation_recomputes_it(world: Path, tmp_path: Path, folder: str) -> None:
    settings = _copy(world, tmp_path)
    before = report_files(tmp_path / "out")
    shutil.rmtree(tmp_path / "out" / ".cache" / folder)
    stem = sorted(p.stem for p in (tmp_path / "pets" / "images").iterdir())[0]
    _edit_trimap(tmp_path / "pets" / "annotations" / "trimaps" / f"{stem}.png")
    outcome = run_pipeline(settings)  # type: ignore[arg-type]
    assert outcome.exit_code == 0, outcome.failed
    ran = families(outcome.ran)
    assert "EvalShard" in ran and "ConvertMerge" in ran
    assert ("InferShard" in ran) == (folder == "infer")
    assert report_files(tmp_path / "out").keys() == before.keys()


def test_a_deleted_shard_folder_is_recomputed_and_never_reported_as_cached(world: Path, tmp_path: Path) -> None:
    settings = _copy(world, tmp_path)
    cache = tmp_path / "out" / ".cache"
    before = report_files(tmp_path / "out")
    victim = sorted((cache / "eval" / "shards").iterdir())[0]
    unit_id = json.loads((victim / "_DONE.json").read_text())["unit"]
    shutil.rmtree(victim)
    shutil.rmtree(cache / "eval" / "reports")  # the report must be rebuilt from the shards
    outcome = run_pipeline(settings)  # type: ignore[arg-type]
    assert outcome.exit_code == 0, outcome.failed
    assert families(outcome.ran) == ["EvalReport", "EvalShard"]
    assert unit_id in outcome.ran  # the deleted shard, and only it, was computed again
    log = json.loads((tmp_path / "out" / RUN_LOG_FILE).read_text())
    assert unit_id not in log["reused"] and unit_id not in log["cached"]
    # The group holding it ran again (a scheduling unit, found incomplete), and is not listed as cached.
    assert len(log["groups"]) == 1 and log["groups"][0] not in log["cached"]
    assert report_files(tmp_path / "out") == before


def test_changing_categories_reruns_no_inference(world: Path, tmp_path: Path) -> None:
    """A U-Net maps its outputs onto the semantic classes: breed -> species categories leave its inference alone."""
    from dataclasses import replace

    settings = replace(_copy(world, tmp_path), convert={"categories": "species"})  # type: ignore[type-var]
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    ran = families(outcome.ran)
    assert "InferShard" not in ran and "ConvertShard" in ran and "EvalReport" in ran


def test_removing_or_adding_an_image_reruns_one_inference_shard(world: Path, tmp_path: Path) -> None:
    settings = _copy(world, tmp_path)
    pets = tmp_path / "pets"
    stem = sorted(p.stem for p in (pets / "images").iterdir())[3]
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in [pets / "images" / f"{stem}.jpg", *(pets / "annotations").rglob(f"{stem}.*")]:
        path.rename(kept / path.name)
    removed = run_pipeline(settings)  # type: ignore[arg-type]
    assert removed.exit_code == 0, removed.failed
    assert families(removed.ran).count("InferShard") == 1 and families(removed.ran).count("EvalShard") == 1
    new_stem = f"{stem.rsplit('_', 1)[0]}_99"  # the same breed, so the category list stays the same
    for path in [kept / f"{stem}.jpg", kept / f"{stem}.png", kept / f"{stem}.xml"]:  # back, under a new name
        folder = {".jpg": pets / "images", ".png": pets / "annotations" / "trimaps", ".xml": pets / "annotations" / "xmls"}[path.suffix]
        if path.is_file():
            path.rename(folder / f"{new_stem}{path.suffix}")
    added = run_pipeline(settings)  # type: ignore[arg-type]
    assert added.exit_code == 0, added.failed
    assert families(added.ran).count("InferShard") == 1 and families(added.ran).count("EvalShard") == 1


def test_a_damaged_plan_file_is_written_again(world: Path, tmp_path: Path) -> None:
    settings = _copy(world, tmp_path)
    known = set((tmp_path / "out" / ".cache" / "plans").glob("*.json"))
    assert run_pipeline(settings).exit_code == 0  # type: ignore[arg-type]  # this copy's own plan (its paths)
    plans = sorted(set((tmp_path / "out" / ".cache" / "plans").glob("*.json")) - known)
    assert len(plans) == 1
    good = plans[0].read_bytes()
    plans[0].write_bytes(good[:10])
    shutil.rmtree(tmp_path / "out" / ".cache" / "eval" / "reports")  # so that tasks read the plan again
    outcome = run_pipeline(settings)  # type: ignore[arg-type]
    assert outcome.exit_code == 0, outcome.failed
    assert families(outcome.ran) == ["EvalReport"] and plans[0].read_bytes() == good


def test_a_noop_rerun_lists_as_cached_only_groups_whose_shards_are_all_there(world: Path, tmp_path: Path) -> None:
    """Below a complete report the run checks completion markers only (one stat per shard): a deleted shard
    folder is never counted as cached, although nothing needed to run."""
    settings = _copy(world, tmp_path)
    cache = tmp_path / "out" / ".cache"
    first = run_pipeline(settings)  # type: ignore[arg-type]  # this copy's own paths: everything cached
    assert first.exit_code == 0 and first.ran == [] and first.groups == []
    cached_groups = sorted(t for t in first.cached if t.startswith("EvalGroup_"))
    assert len(cached_groups) == 4  # 8 images, shard size 2: 4 shards, one per group
    assert len([t for t in first.cached if t.startswith("ConvertGroup_")]) == 4
    victim = sorted((cache / "eval" / "shards").iterdir())[0]
    relative = victim.relative_to(cache).as_posix()
    holders = [m for m in (cache / "eval" / "groups").glob("*/_DONE.json") if relative in json.loads(m.read_text())["units"]]
    assert len(holders) == 1
    shutil.rmtree(victim)
    again = run_pipeline(settings)  # type: ignore[arg-type]
    assert again.exit_code == 0 and again.ran == []  # the report is complete: nothing reads the shard
    listed = [t for t in again.cached if t.startswith("EvalGroup_")]
    digest = holders[0].parent.name.split("-")[1]
    assert any(digest in t for t in cached_groups) and not any(digest in t for t in listed)

"""Cache entries: one writer at a time, markers that list their files, damaged bookkeeping rebuilt."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
import luigi
import pytest
from PIL import Image

from segpipe.cache.fingerprints import STAT_CACHE_FILE, StatCache
from segpipe.cache.targets import (
    EXECUTION_LOG, CachedTask, MarkerTarget, log_execution, log_size, prepare_directory, read_executions, write_marker,
)
from segpipe.core.atomic_write import atomic_write_text
from segpipe.runner.driver import run_pipeline
from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, settings_for


class SlowTask(CachedTask):
    """Writes its files one by one, slowly, each stamped with the writing process."""

    kind = "slow"
    key = luigi.Parameter()

    def subdir(self) -> str:
        return str(self.key)

    def compute(self) -> None:
        out = self.fresh_directory()
        for i in range(4):
            atomic_write_text(out / f"part{i}.txt", f"{os.getpid()}\n")
            time.sleep(0.1)
        self.finish(pid=os.getpid())


def _run_slow(cache: str, barrier: "multiprocessing.synchronize.Barrier") -> None:
    barrier.wait()
    SlowTask(key="k", cache=cache).run()


def test_two_processes_never_write_one_entry_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_run_slow, args=(str(tmp_path), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(read_executions(tmp_path)) == 1  # the second one waited, then reused the first one's result
    task = SlowTask(key="k", cache=str(tmp_path))
    assert task.output().exists()
    pid = task.output().read_marker()["pid"]
    assert [(task.output().directory / f"part{i}.txt").read_text() for i in range(4)] == [f"{pid}\n"] * 4


def test_marker_lists_files_and_a_damaged_entry_is_not_done(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = MarkerTarget(tmp_path / "entry")
    prepare_directory(target)
    (target.directory / "sub").mkdir()
    (target.directory / "sub" / "a.png").write_bytes(b"\x89PNG-a")
    (target.directory / "b.csv").write_text("x\n1\n")
    write_marker(target, {"key": "k"})
    files = json.loads(target.marker.read_text())["_files"]
    assert sorted(files) == ["b.csv", "sub/a.png"] and files["b.csv"][0] == 4
    assert target.exists() and target.read_marker() == {"key": "k"}

    (target.directory / "b.csv").write_text("x\n2\n")  # same size, other content
    with caplog.at_level(logging.WARNING, logger="segpipe.cache"):
        assert not target.exists()
    assert f"{target.directory / 'b.csv'}: content differs" in caplog.text and "recomputed" in caplog.text
    (target.directory / "b.csv").write_text("x\n1\n")
    assert target.exists()
    (target.directory / "sub" / "a.png").write_bytes(b"\x89P")  # truncated
    assert not target.exists()
    (target.directory / "sub" / "a.png").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="segpipe.cache"):
        assert not target.exists()
    assert "sub/a.png: missing" in caplog.text
    target.marker.write_text("{garbage")
    assert not target.exists()


def test_damaged_execution_log_and_stat_cache_are_rebuilt(tmp_path: Path) -> None:
    log_execution(tmp_path, task_id="A")
    with open(tmp_path / "log" / EXECUTION_LOG, "ab") as fh:
        fh.write(b'{"task_id": "half-writ\n\xff\xfe garbage\n[1, 2]\n')
    log_execution(tmp_path, task_id="B")
    assert [e["task_id"] for e in read_executions(tmp_path)] == ["A", "B"]
    path = tmp_path / STAT_CACHE_FILE
    sample = tmp_path / "f.txt"
    sample.write_text("abc")
    for damaged in ("[1, 2]", '{"version": 1, "entries": {"x": 3, "y": [1]}}', "\x00\x01", '{"version": 1, "entries": [1]}'):
        path.write_text(damaged)
        cache = StatCache(path)
        assert len(cache.sha256(sample, stat=sample.stat())) == 64
        cache.save()
        assert StatCache(path).sha256(sample, stat=sample.stat()) == cache.sha256(sample, stat=sample.stat())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("world")
    make_dataset(tmp / "pets", n_images=8)
    make_checkpoint(tmp / "ckpts" / "m0.pt", seed=0)
    return tmp


def _board(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "leaderboard.csv").set_index("checkpoint")


def test_damaged_cache_entries_are_recomputed_not_trusted(world: Path, tmp_path: Path) -> None:
    """Delete a prediction inside a done inference entry, edit an annotation (so evaluation reruns over the
    same predictions), damage the bookkeeping: the rerun equals a clean run over the edited dataset."""
    for name in ("pets", "ckpts"):
        shutil.copytree(world / name, tmp_path / name)
    settings = settings_for(tmp_path, dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    assert run_pipeline(settings).exit_code == 0
    cache = settings.out / ".cache"
    pred = sorted(cache.glob("infer/**/pred/semantic/*.png"))
    assert pred
    pred[0].unlink()
    trimap = sorted((tmp_path / "pets" / "annotations" / "trimaps").glob("*.png"))[0]
    values = np.array(Image.open(trimap))
    values[: values.shape[0] // 2] = 2  # top half becomes background
    Image.fromarray(values).save(trimap)
    with open(cache / "log" / EXECUTION_LOG, "ab") as fh:
        fh.write(b"not json\n")
    (cache / "fingerprints" / STAT_CACHE_FILE).write_text("[")
    plan = sorted((cache / "plans").glob("*.json"))[0]  # the shard plan (file lists by shard), truncated
    plan.write_bytes(plan.read_bytes()[:10])

    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    assert "InferShard" in {t.split("_")[0] for t in outcome.ran}

    clean = settings_for(tmp_path / "clean", dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    assert run_pipeline(clean).exit_code == 0
    pd.testing.assert_frame_equal(_board(settings.out), _board(clean.out))
    assert pred[0].is_file()


def _edit_trimap(path: Path) -> None:
    values = np.array(Image.open(path))
    values[: values.shape[0] // 3] = 2
    Image.fromarray(values).save(path)


def test_an_input_edited_during_a_task_and_restored_is_not_published(
        world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segpipe.plan.formats import DatasetSpec

    for name in ("pets", "ckpts"):
        shutil.copytree(world / name, tmp_path / name)
    trimap = sorted((tmp_path / "pets" / "annotations" / "trimaps").glob("*.png"))[0]
    original = trimap.read_bytes()
    convert = DatasetSpec.convert

    def convert_while_someone_edits(self: DatasetSpec, **kwargs: Any) -> Any:
        _edit_trimap(trimap)  # the task reads the edited file...
        try:
            return convert(self, **kwargs)
        finally:
            trimap.write_bytes(original)  # ...which is back to its fingerprinted content when the task ends

    monkeypatch.setattr(DatasetSpec, "convert", convert_while_someone_edits)
    settings = settings_for(tmp_path, dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    outcome = run_pipeline(settings)
    assert outcome.exit_code != 0
    assert any(f"{trimap}: modified while this task read it" in reason for reason in outcome.failed.values()), outcome.failed
    monkeypatch.setattr(DatasetSpec, "convert", convert)
    assert run_pipeline(settings).exit_code == 0
    clean = settings_for(tmp_path / "clean", dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    assert run_pipeline(clean).exit_code == 0
    pd.testing.assert_frame_equal(_board(settings.out), _board(clean.out))


def test_an_input_edited_after_fingerprinting_is_refused(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segpipe.runner import driver

    for name in ("pets", "ckpts"):
        shutil.copytree(world / name, tmp_path / name)
    trimap = sorted((tmp_path / "pets" / "annotations" / "trimaps").glob("*.png"))[-1]
    plan = driver.plan_shards

    def plan_then_edit(*args: object, **kwargs: object) -> object:
        result = plan(*args, **kwargs)
        _edit_trimap(trimap)
        return result

    monkeypatch.setattr(driver, "plan_shards", plan_then_edit)
    settings = settings_for(tmp_path, dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    outcome = run_pipeline(settings)
    assert any(f"{trimap}: changed since this run fingerprinted it" in reason for reason in outcome.failed.values()), outcome.failed
    monkeypatch.setattr(driver, "plan_shards", plan)
    assert run_pipeline(settings).exit_code == 0
    clean = settings_for(tmp_path / "clean", dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    assert run_pipeline(clean).exit_code == 0
    pd.testing.assert_frame_equal(_board(settings.out), _board(clean.out))


def test_a_run_reads_the_execution_log_from_where_it_started(tmp_path: Path) -> None:
    log_execution(tmp_path, task_id="earlier")
    start = log_size(tmp_path)
    log_execution(tmp_path, task_id="mine")
    assert [e["task_id"] for e in read_executions(tmp_path, since=start)] == ["mine"]
    assert [e["task_id"] for e in read_executions(tmp_path)] == ["earlier", "mine"]
    assert log_size(tmp_path / "nowhere") == 0 and read_executions(tmp_path / "nowhere", since=5) == []


def test_input_checks_parse_the_stat_cache_once_per_process_and_again_when_it_changes(tmp_path: Path) -> None:
    from segpipe.cache.input_check import share_stat_cache, shared_stat_cache

    sample = tmp_path / "f.txt"
    sample.write_text("abc")
    path = tmp_path / STAT_CACHE_FILE
    writer = StatCache(path)
    writer.sha256(sample, stat=sample.stat())
    writer.save()
    first = shared_stat_cache(path)
    assert shared_stat_cache(path) is first and first.sha256(sample, stat=sample.stat()) and first.hits == 1
    time.sleep(0.02)
    other = tmp_path / "g.txt"
    other.write_text("xyz")
    writer.sha256(other, stat=other.stat())
    writer.save()  # the file changed: parsed again
    reloaded = shared_stat_cache(path)
    assert reloaded is not first and reloaded.sha256(other, stat=other.stat()) and reloaded.hits == 1
    share_stat_cache(writer)
    assert shared_stat_cache(path) is writer


def test_files_untouched_since_the_marker_are_not_read_again_and_an_edit_with_its_mtime_restored_is_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segpipe.cache import integrity

    target = MarkerTarget(tmp_path / "entry")
    prepare_directory(target)
    table = target.directory / "numbers.csv"
    table.write_text("x\n1\n")
    time.sleep(0.02)  # the marker in a later clock tick than the file
    write_marker(target, {"key": "k"})
    hashed: list[Path] = []
    real = integrity._sha256
    monkeypatch.setattr(integrity, "_sha256", lambda path: hashed.append(path) or real(path))
    assert target.exists() and hashed == []  # mtime, ctime, inode as recorded, ctime older than the marker
    before = table.stat()
    time.sleep(0.02)
    table.write_text("x\n2\n")  # same size, other content, old mtime put back
    os.utime(table, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert table.stat().st_mtime_ns == before.st_mtime_ns and not target.exists() and hashed == [table]
    # Written in the marker's own clock tick: always read (a later write in that tick would not show).
    racy = MarkerTarget(tmp_path / "racy")
    prepare_directory(racy)
    (racy.directory / "a.json").write_text("{}")
    write_marker(racy, {})
    if (racy.directory / "a.json").stat().st_ctime_ns >= racy.marker.stat().st_ctime_ns:
        assert racy.exists() and hashed[-1] == racy.directory / "a.json"


def test_an_entry_verified_in_this_run_is_trusted_while_its_folders_are_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Luigi checks a task's dependencies before each task: a large entry is verified once per run, not once per
    task, unless a file of it is deleted, added or renamed meanwhile (its folder changes)."""
    from segpipe.cache import targets

    target = MarkerTarget(tmp_path / "entry")
    prepare_directory(target)
    (target.directory / "semantic").mkdir()
    for i in range(3):
        (target.directory / "semantic" / f"{i}.png").write_bytes(b"png %d" % i)
    write_marker(target, {})
    targets.forget_verified()
    assert target.exists() and str(target.directory) not in targets._VERIFIED  # folders just written: not trusted yet
    time.sleep(targets.QUIET_FOLDER_NS / 1e9 + 0.1)
    assert target.exists() and str(target.directory) in targets._VERIFIED
    checked: list[Path] = []
    real = targets.inventory_mismatch
    monkeypatch.setattr(targets, "inventory_mismatch", lambda d, r, **kw: checked.append(d) or real(d, r, **kw))
    assert target.exists() and checked == []
    (target.directory / "semantic" / "1.png").unlink()
    assert not target.exists() and checked == [target.directory]
    (target.directory / "semantic" / "1.png").write_bytes(b"png 1")
    targets.forget_verified()
    assert target.exists() and len(checked) == 2  # a new run verifies again

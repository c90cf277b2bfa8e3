"""Fingerprints, shard plans and the shard merge: caching by content, not by existence."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from segpipe.cache.targets import MarkerTarget, prepare_directory, write_marker
from segpipe.cache.fingerprints import ManifestEntry
from segpipe.cache.fingerprints import (
    StatCache, build_manifest, canonical_json, checkpoint_fingerprint, combine_keys, manifest_key, options_key, scan_dataset,
)
from segpipe.plan.shards import DatasetSpec, plan_shards, shard_of
from segpipe.converters.coco import dumps_coco
from segpipe.tasks.convert import merge_category_order, merge_coco
from tests.pipeline.pipeline_fixtures import make_dataset
from segpipe.core.errors import SegpipeError


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_canonical_json_and_options_key_ignore_dict_order() -> None:
    assert canonical_json({"b": 1, "a": {"y": 2, "x": [1, 2]}}) == '{"a":{"x":[1,2],"y":2},"b":1}'
    assert options_key({"b": 1, "a": 2}) == options_key({"a": 2, "b": 1})
    assert options_key({"a": 1}) != options_key({"a": 1.5})
    assert combine_keys("k", "a", "b") != combine_keys("k", "b", "a")
    assert combine_keys("k", "a") != combine_keys("j", "a")


def test_manifest_hashes_content_and_skips_hidden_and_excluded(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write(root / "a.txt", b"alpha")
    _write(root / "sub" / "b.txt", b"beta")
    _write(root / ".hidden", b"x")
    _write(root / "out" / ".cache" / "c.txt", b"cache")
    _write(root / "out" / "report.csv", b"r")
    cache = StatCache(tmp_path / "stat.json")
    manifest = build_manifest({"root": root}, stat_cache=cache, exclude=[root / "out"])
    assert [e.path for e in manifest] == ["root/a.txt", "root/sub/b.txt"]
    assert manifest[0].sha256 == hashlib.sha256(b"alpha").hexdigest()
    assert manifest[0].size == 5


def test_stat_cache_avoids_rehashing_and_sees_changes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    f = _write(root / "a.bin", b"one")
    _write(root / "b.bin", b"two")
    first = StatCache(tmp_path / "stat.json")
    m1 = build_manifest({"r": root}, stat_cache=first)
    first.save()
    assert (first.hits, first.misses) == (0, 2)
    second = StatCache(tmp_path / "stat.json")  # reloaded from disk
    assert build_manifest({"r": root}, stat_cache=second) == m1
    assert (second.hits, second.misses) == (2, 0)
    # Same size, new content and a new mtime: re-hashed, and the key changes.
    f.write_bytes(b"uno")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    third = StatCache(tmp_path / "stat.json")
    m3 = build_manifest({"r": root}, stat_cache=third)
    assert third.misses == 1 and manifest_key(m3) != manifest_key(m1)
    # Rewriting identical bytes changes the mtime only: re-hashed, same key.
    f.write_bytes(b"one")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 20_000_000))
    assert manifest_key(build_manifest({"r": root}, stat_cache=StatCache(tmp_path / "stat.json"))) == manifest_key(m1)


def test_stat_cache_sees_a_same_size_edit_with_the_mtime_restored(tmp_path: Path) -> None:
    """The fast path trusts size, mtime, ctime and inode together: restoring the mtime after a same-size edit
    (touch -r, rsync --times) still moves ctime, and a file replaced by a renamed copy has another inode."""
    f = _write(tmp_path / "d" / "a.bin", b"one")
    cache = StatCache(tmp_path / "stat.json")
    first = build_manifest({"r": tmp_path / "d"}, stat_cache=cache)
    cache.save()
    before = f.stat()
    time.sleep(0.02)  # past the file system's timestamp tick
    f.write_bytes(b"two")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = StatCache(tmp_path / "stat.json")
    edited = build_manifest({"r": tmp_path / "d"}, stat_cache=again)
    assert again.misses == 1 and edited[0].sha256 == hashlib.sha256(b"two").hexdigest() != first[0].sha256
    again.save()
    copy = _write(tmp_path / "copy.bin", b"six")
    os.utime(copy, ns=(before.st_atime_ns, f.stat().st_mtime_ns))
    copy.replace(f)  # same size, same mtime, another inode
    third = StatCache(tmp_path / "stat.json")
    assert build_manifest({"r": tmp_path / "d"}, stat_cache=third)[0].sha256 == hashlib.sha256(b"six").hexdigest()
    assert third.misses == 1


def test_scan_lists_what_a_walk_lists_with_the_latest_mtime(tmp_path: Path) -> None:
    """One scandir pass: the files os.walk would list (hidden names, excluded trees and symlinked folders
    left out), their manifest in path order and their latest mtime."""
    root = tmp_path / "data"
    for rel in ("b.txt", "a/x.png", "a/y/z.jpg", "a-b/c.txt", ".hidden/q.txt", "a/.h.txt", "out/r.csv"):
        _write(root / rel, rel.encode())
    (root / "link").symlink_to(root / "a", target_is_directory=True)
    (root / "b-link.txt").symlink_to(root / "b.txt")
    os.utime(root / "a" / "y" / "z.jpg", ns=(10**18, 2 * 10**18))
    scan = scan_dataset({"root": root}, stat_cache=StatCache(None), exclude=[root / "out"])
    walked = sorted(
        (Path(d) / f).relative_to(root).as_posix()
        for d, dirs, files in os.walk(root)
        for _ in [dirs.__setitem__(slice(None), [x for x in dirs if not x.startswith(".") and x != "out"])]
        for f in files if not f.startswith(".")
    )
    assert [e.path for e in scan.manifest] == sorted(f"root/{w}" for w in walked)
    assert "root/a-b/c.txt" in [e.path for e in scan.manifest] and not any("link/" in e.path for e in scan.manifest)
    assert scan.latest_mtime == 2 * 10**9


def test_rehash_ignores_the_stat_cache(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "a", b"a")
    cache = StatCache(tmp_path / "stat.json")
    build_manifest({"r": tmp_path / "d"}, stat_cache=cache)
    cache.save()
    again = StatCache(tmp_path / "stat.json", rehash=True)
    build_manifest({"r": tmp_path / "d"}, stat_cache=again)
    assert again.misses == 1


def test_checkpoint_fingerprint_covers_bytes_and_model_card(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "m.pt", b"weights")
    cache = StatCache(None)
    plain = checkpoint_fingerprint(ckpt, card=None, stat_cache=cache)
    assert plain == hashlib.sha256(b"weights").hexdigest()
    card = _write(tmp_path / "m.json", b'{"num_classes": 2}')
    with_card = checkpoint_fingerprint(ckpt, card=card, stat_cache=cache)
    assert with_card != plain
    card.write_bytes(b'{"num_classes": 3}')
    os.utime(card, ns=(1, 10**18))
    assert checkpoint_fingerprint(ckpt, card=card, stat_cache=cache) != with_card


def test_shards_cut_by_stem_and_images_key_ignores_annotations(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "pets", n_images=10)
    spec = DatasetSpec(format="oxford-pet", root=root)
    manifest = build_manifest(spec.roots(), stat_cache=StatCache(None))
    plan = plan_shards(manifest, spec=spec, shard_size=4)
    # 10 stems / 4 per shard -> the next power of two, 4 hash shards; every stem in the shard its hash names.
    assert [s.index for s in plan.shards] == [0, 1, 2, 3]
    assert sorted(st for s in plan.shards for st in s.stems) == sorted(p.stem for p in (root / "images").iterdir())
    assert all(shard_of(st, n_shards=4) == s.index for s in plan.shards for st in s.stems)
    assert all(len(s.images) == len(s.stems) for s in plan.shards)
    assert sorted(e.path.rsplit("/", 1)[1] for e in plan.globals) == ["list.txt", "test.txt", "trainval.txt"]
    # One trimap edited: exactly one shard's key changes, the images' keys do not.
    stem = plan.shards[1].stems[0]
    trimap = root / "annotations" / "trimaps" / f"{stem}.png"
    trimap.write_bytes(trimap.read_bytes() + b"\0")
    plan2 = plan_shards(build_manifest(spec.roots(), stat_cache=StatCache(None)), spec=spec, shard_size=4)
    changed = [i for i, (a, b) in enumerate(zip(plan.shards, plan2.shards)) if manifest_key(a.entries) != manifest_key(b.entries)]
    assert changed == [1]
    assert plan2.images_key() == plan.images_key()
    assert [manifest_key(s.images) for s in plan2.shards] == [manifest_key(s.images) for s in plan.shards]


def test_adding_or_removing_an_image_changes_only_its_own_shard(tmp_path: Path) -> None:
    """Shards by hash of the stem: one image more or less leaves every other shard's files (and keys) alone."""
    root = make_dataset(tmp_path / "pets", n_images=12)
    spec = DatasetSpec(format="oxford-pet", root=root)

    def keys() -> dict[int, str]:
        plan = plan_shards(build_manifest(spec.roots(), stat_cache=StatCache(None)), spec=spec, shard_size=4)
        return {s.index: s.key() for s in plan.shards}

    before = keys()
    stem = sorted(p.stem for p in (root / "images").iterdir())[5]
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in [root / "images" / f"{stem}.jpg", *(root / "annotations").rglob(f"{stem}.*")]:
        path.rename(moved / path.name)
    removed = keys()
    assert len(removed) == len(before) == 4
    assert [i for i in before if before[i] != removed[i]] == [shard_of(stem, n_shards=4)]
    (moved / f"{stem}.jpg").rename(root / "images" / f"copy_{stem}.jpg")  # a new image (no annotation)
    added = keys()
    assert [i for i in before if removed[i] != added[i]] == [shard_of(f"copy_{stem}", n_shards=4)]


def test_shard_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(SegpipeError, match="shard_size"):
        plan_shards((), spec=DatasetSpec(format="oxford-pet", root=tmp_path), shard_size=0)


def test_merge_category_order_respects_every_part() -> None:
    assert merge_category_order([["dog", "cat"], ["cat", "bird"]]) == ["dog", "cat", "bird"]
    assert merge_category_order([["b"], ["a"]]) == ["a", "b"]
    assert merge_category_order([["z", "y", "x"], ["z", "x"]]) == ["z", "y", "x"]


def test_merge_coco_reassigns_ids_like_one_conversion() -> None:
    part_b = {"images": [{"id": 1, "file_name": "b.jpg", "width": 2, "height": 2}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
              "categories": [{"id": 1, "name": "dog"}]}
    part_a = {"images": [{"id": 1, "file_name": "a.jpg", "width": 2, "height": 2}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 1, 1]},
                              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}],
              "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    merged = merge_coco([part_b, part_a])
    assert [(i["id"], i["file_name"]) for i in merged["images"]] == [(1, "a.jpg"), (2, "b.jpg")]
    assert [c["name"] for c in merged["categories"]] == ["cat", "dog"]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in merged["annotations"]] == [(1, 1, 2), (2, 1, 1), (3, 2, 2)]
    assert part_b["images"][0]["id"] == 1  # inputs are not mutated


def _spec_and_whole(fmt: str, root: Path, options: dict[str, object]) -> tuple[DatasetSpec, object]:
    from segpipe.converters.oxford_pet import convert_oxford_pet
    from segpipe.converters.trimap import convert_trimap
    from segpipe.converters.voc import convert_voc

    if fmt == "oxford-pet":
        return DatasetSpec(format=fmt, root=root), lambda out: convert_oxford_pet(root, out, workers=1, **options)
    if fmt == "voc":
        return (DatasetSpec(format=fmt, root=root / "annotations" / "xmls", images=root / "images"),
                lambda out: convert_voc(root / "annotations" / "xmls", out, images=root / "images", workers=1, **options))
    list_file = root / "annotations" / "list.txt"
    return (DatasetSpec(format=fmt, root=root / "annotations" / "trimaps", images=root / "images", list_file=list_file),
            lambda out: convert_trimap(root / "annotations" / "trimaps", out, images=root / "images", list_file=list_file, workers=1, **options))


@pytest.mark.parametrize(("fmt", "options"), [
    ("oxford-pet", {}), ("oxford-pet", {"split": "trainval", "categories": "species"}), ("voc", {}), ("trimap", {"border": "foreground"}),
])
def test_sharded_conversion_equals_one_conversion(tmp_path: Path, fmt: str, options: dict[str, object]) -> None:
    """The merged dataset of conversion shards is byte-identical to converting the whole folder."""
    from segpipe.cache.fingerprints import package_version
    from segpipe.runner.config import RunSettings
    from segpipe.runner.driver import RunOutcome, build_convert_tasks, run_phase

    root = make_dataset(tmp_path / "pets", n_images=9)
    spec, convert_whole = _spec_and_whole(fmt, root, options)
    convert_whole(tmp_path / "whole")  # type: ignore[operator]
    plan = plan_shards(build_manifest(spec.roots(), stat_cache=StatCache(None)), spec=spec, shard_size=4)
    assert len(plan.shards) == 4 and len(plan.groups()) == 4
    settings = RunSettings(dataset=spec.root, format=fmt, model="unet", checkpoints=(), out=tmp_path / "out",
                           cache_dir=tmp_path / "cache", convert=options)
    merge = build_convert_tasks(spec=spec, plan=plan, settings=settings, version=package_version(), cache=str(tmp_path / "cache"))
    outcome = RunOutcome()
    run_phase([merge], settings=settings, outcome=outcome)
    assert not outcome.failed
    merged, whole = merge.output().directory, tmp_path / "whole"
    names = sorted(p.relative_to(whole).as_posix() for p in whole.rglob("*") if p.is_file())
    assert "instances.json" in names and "conversion_report.csv" in names
    # Beside the whole conversion's files, the merge writes each shard's own ground truth (gt/, gt_index.json).
    extra = ("_DONE.json", "gt_index.json")
    assert sorted(p.relative_to(merged).as_posix() for p in merged.rglob("*")
                  if p.is_file() and p.name not in extra and p.parent.name != "gt") == names
    for name in names:
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    # The shards' ground truths re-merged give the whole one back: same images, same annotations, same categories.
    shard_keys = json.loads((merged / "gt_index.json").read_text())["shards"]
    assert len(shard_keys) == len(plan.shards)
    parts = [json.loads((merged / "gt" / f"{k}.json").read_text()) for k in shard_keys]
    whole_coco = json.loads((whole / "instances.json").read_text())
    assert all(p["categories"] == whole_coco["categories"] for p in parts)
    assert json.loads(dumps_coco(merge_coco(parts))) == whole_coco


def test_marker_target_exists_only_after_the_marker(tmp_path: Path) -> None:
    target = MarkerTarget(tmp_path / "step")
    prepare_directory(target)
    (target.directory / "out.csv").write_text("partial")
    assert not target.exists()
    write_marker(target, {"key": "k"})
    assert target.exists() and target.read_marker() == {"key": "k"}
    prepare_directory(target)  # a rewrite starts by removing the old marker
    assert not target.exists()


def test_the_stored_plan_keys_shards_as_manifest_key_does() -> None:
    """plan_to_json hashes each shard's rows as they are (already in manifest order): the same keys as sorting."""
    from segpipe.plan.shards import plan_to_json

    rows = [ManifestEntry("root/annotations/list.txt", 3, "a" * 64)]
    for i in range(600):
        rows.append(ManifestEntry(f"root/images/img_{i}.jpg", i, hashlib.sha256(b"%d" % i).hexdigest()))
        if i % 3:
            rows.append(ManifestEntry(f"root/annotations/trimaps/img_{i}.png", i, hashlib.sha256(b"t%d" % i).hexdigest()))
    plan = plan_shards(tuple(reversed(rows)), spec=DatasetSpec(format="oxford-pet", root=Path("/nonexistent")), shard_size=64)
    stored = plan_to_json(plan, spec_json={})
    assert len(plan.shards) == 16 and stored["images_key"] == manifest_key(plan.images)
    for item, shard in zip(stored["shards"], plan.shards):  # type: ignore[call-overload]
        assert item["key"] == manifest_key(shard.entries) and item["images_key"] == manifest_key(shard.images)

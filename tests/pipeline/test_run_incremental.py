"""`segpipe run` reruns only what changed: nothing, one checkpoint, one annotation file."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segpipe.runner.driver import RUN_LOG_FILE, run_pipeline
from tests.pipeline.pipeline_fixtures import (
    cli_args, families, make_checkpoint, make_dataset, report_files, run_cli_subprocess, settings_for,
)

N_IMAGES = 8
SHARD_SIZE = 4  # two shards
NO_TORCH = (
    "mods = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
    "print('IMPORTED:' + ','.join(mods))\n"
)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A dataset, two checkpoints and one complete run; the tests below copy it and change one thing."""
    tmp = tmp_path_factory.mktemp("run")
    dataset = make_dataset(tmp / "pets", n_images=N_IMAGES)
    for seed in (0, 1):
        make_checkpoint(tmp / "ckpts" / f"m{seed}.pt", seed=seed)
    settings = settings_for(tmp, dataset=dataset, ckpts=tmp / "ckpts", shard_size=SHARD_SIZE)
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    return {"tmp": tmp, "settings": settings, "outcome": outcome}


def _copy_world(first_run: dict[str, object], dest: Path) -> tuple[Path, object]:
    """Copy dataset, checkpoints and OUT (with its cache) so each test changes its own copy."""
    tmp = first_run["tmp"]
    assert isinstance(tmp, Path)
    for name in ("pets", "ckpts", "out"):
        shutil.copytree(tmp / name, dest / name, symlinks=True)
    settings = settings_for(dest, dataset=dest / "pets", ckpts=dest / "ckpts", shard_size=SHARD_SIZE)
    return dest, settings


def test_first_run_runs_every_stage_in_shards(first_run: dict[str, object]) -> None:
    outcome = first_run["outcome"]
    ran = families(outcome.ran)
    assert ran.count("ConvertShard") == 2 and ran.count("ConvertMerge") == 1
    assert ran.count("InferShard") == 4 and ran.count("EvalShard") == 4 and ran.count("EvalReport") == 2
    assert ran.count("Leaderboard") == 1
    # Shards are cached units inside scheduling groups: one ConvertGroup per group, one EvalGroup per
    # checkpoint per group (here one shard per group).
    groups = families(outcome.groups)
    assert groups == sorted(["ConvertGroup"] * 2 + ["EvalGroup"] * 4)
    out = first_run["settings"].out
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.columns[:4]) == ["checkpoint", "sha256", "status", "error"]
    assert sorted(board["checkpoint"]) == ["m0", "m1"] and (board["status"] == "ok").all()
    assert board["mIoU"].is_monotonic_decreasing  # sorted by mIoU (no instance evaluation for a U-Net)
    long = pd.read_csv(out / "per_class_by_checkpoint.csv")
    assert list(long.columns) == ["checkpoint", "evaluation", "category", "metric", "value"]
    assert set(long["category"]) == {"background", "pet"} and set(long["checkpoint"]) == {"m0", "m1"}
    for name in ("m0", "m1"):
        summary = pd.read_csv(out / "checkpoints" / name / "semantic" / "summary.csv")
        assert summary.set_index("metric").loc["mIoU", "value"] == pytest.approx(board.set_index("checkpoint").loc[name, "mIoU"])


def test_leaderboard_miou_matches_an_independent_numpy_computation(first_run: dict[str, object]) -> None:
    """mIoU merged from per-shard confusions equals a one-pass numpy confusion over all images."""
    out = first_run["settings"].out
    cache = out / ".cache"
    merged = next((cache / "convert" / "merged").iterdir())
    board = pd.read_csv(out / "leaderboard.csv").set_index("checkpoint")
    for name in ("m0", "m1"):
        shard_dirs = [m.parent for m in sorted(cache.glob("infer/*/*/*/pred/meta.json"))
                      if json.loads(m.read_text())["checkpoint_sha256"] == board.loc[name, "sha256"]]
        assert len(shard_dirs) == 2
        conf = np.zeros((2, 2), dtype=np.int64)
        gts = sorted((merged / "semantic").glob("*.png"))
        assert len(gts) == N_IMAGES
        for gt_path in gts:
            gt = np.asarray(Image.open(gt_path)).astype(np.int64)
            pred_path = next(d / "semantic" / gt_path.name for d in shard_dirs if (d / "semantic" / gt_path.name).is_file())
            pred = np.asarray(Image.open(pred_path)).astype(np.int64)
            keep = gt != 255
            conf += np.bincount(gt[keep] * 2 + pred[keep], minlength=4).reshape(2, 2)
        tp = np.diag(conf)
        with np.errstate(invalid="ignore"):
            iou = tp / (conf.sum(0) + conf.sum(1) - tp)
        assert board.loc[name, "mIoU"] == pytest.approx(np.nanmean(iou), rel=1e-12)


def test_noop_rerun_runs_nothing_and_never_imports_torch(first_run: dict[str, object], tmp_path: Path) -> None:
    root, settings = _copy_world(first_run, tmp_path)
    before = report_files(settings.out)
    proc = run_cli_subprocess(cli_args(settings), extra_code=NO_TORCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORTED:\n" in proc.stdout, proc.stdout  # neither torch nor torchvision
    assert "ran: 0 task(s)" in proc.stdout
    log = json.loads((settings.out / RUN_LOG_FILE).read_text())
    assert log["ran"] == [] and log["failed"] == {}
    assert report_files(settings.out) == before


def test_convert_and_evaluate_commands_do_not_import_torch(first_run: dict[str, object], tmp_path: Path) -> None:
    settings = first_run["settings"]
    proc = run_cli_subprocess(["convert", "oxford-pet", str(settings.dataset), "-o", str(tmp_path / "conv")], extra_code=NO_TORCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORTED:\n" in proc.stdout
    gt = tmp_path / "conv" / "semantic"
    proc = run_cli_subprocess(["evaluate", "semantic", "--gt", str(gt), "--pred", str(gt), "-o", str(tmp_path / "ev")], extra_code=NO_TORCH)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "IMPORTED:\n" in proc.stdout
    coco = json.loads((tmp_path / "conv" / "instances.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 1.0}
               for a in coco["annotations"]]
    (tmp_path / "results.json").write_text(json.dumps(results))
    proc = run_cli_subprocess(["evaluate", "instances", "--gt", str(tmp_path / "conv" / "instances.json"),
                               "--pred", str(tmp_path / "results.json"), "-o", str(tmp_path / "ev2")], extra_code=NO_TORCH)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "IMPORTED:\n" in proc.stdout


def _edit_trimap(path: Path) -> None:
    """Turn a block of background pixels into border pixels: still a valid trimap, different content."""
    trimap = np.array(Image.open(path))
    trimap[:3, :3] = 3
    Image.fromarray(trimap).save(path, format="PNG")


def test_touching_one_annotation_reruns_its_shard_merge_and_evaluations_only(first_run: dict[str, object], tmp_path: Path) -> None:
    root, settings = _copy_world(first_run, tmp_path)
    stem = sorted(p.stem for p in (root / "pets" / "images").iterdir())[-1]  # in the second shard
    _edit_trimap(root / "pets" / "annotations" / "trimaps" / f"{stem}.png")
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    ran = families(outcome.ran)
    assert "InferShard" not in ran
    # The evaluation shards read and are keyed on their own ground truth: one per checkpoint reruns.
    assert ran == sorted(["ConvertShard", "ConvertMerge", *["EvalShard"] * 2, "EvalReport", "EvalReport", "Leaderboard"])


def test_adding_a_checkpoint_runs_only_its_inference_and_evaluation(first_run: dict[str, object], tmp_path: Path) -> None:
    root, settings = _copy_world(first_run, tmp_path)
    make_checkpoint(root / "ckpts" / "m2.pt", seed=2)
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    assert families(outcome.ran) == sorted(["InferShard", "InferShard", "EvalShard", "EvalShard", "EvalReport", "Leaderboard"])
    assert sorted(pd.read_csv(settings.out / "leaderboard.csv")["checkpoint"]) == ["m0", "m1", "m2"]
    assert (settings.out / "checkpoints" / "m2" / "semantic" / "summary.csv").is_file()


def test_replacing_a_checkpoint_in_place_reevaluates_it(first_run: dict[str, object], tmp_path: Path) -> None:
    root, settings = _copy_world(first_run, tmp_path)
    old_sha = pd.read_csv(settings.out / "leaderboard.csv").set_index("checkpoint").loc["m0", "sha256"]
    make_checkpoint(root / "ckpts" / "m0.pt", seed=7)  # same name, different bytes
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    assert families(outcome.ran) == sorted(["InferShard", "InferShard", "EvalShard", "EvalShard", "EvalReport", "Leaderboard"])
    board = pd.read_csv(settings.out / "leaderboard.csv").set_index("checkpoint")
    assert board.loc["m0", "sha256"] != old_sha


def test_audit_reruns_with_annotations_not_with_checkpoints(first_run: dict[str, object], tmp_path: Path) -> None:
    root, settings = _copy_world(first_run, tmp_path)
    settings = replace(settings, audit=True)
    outcome = run_pipeline(settings)
    assert families(outcome.ran) == ["AuditTask"]
    findings = pd.read_csv(settings.out / "audit" / "findings.csv")
    # The cached, sharded audit says what `segpipe audit` says on a whole, direct conversion.
    from segpipe.converters.oxford_pet import convert_oxford_pet
    from segpipe.evaluators.audit.dataset import audit_path

    convert_oxford_pet(root / "pets", tmp_path / "direct", workers=1)
    direct = audit_path(tmp_path / "direct").findings
    assert list(findings.columns) == list(direct.columns)
    rows = sorted(zip(findings["check"], findings["file_name"].astype(object).fillna("").astype(str)))
    assert rows and rows == sorted(zip(direct["check"], direct["file_name"].astype(object).fillna("").astype(str)))
    assert (settings.out / "audit" / "summary.csv").is_file()
    make_checkpoint(root / "ckpts" / "m2.pt", seed=2)
    assert "AuditTask" not in families(run_pipeline(settings).ran)
    stem = sorted(p.stem for p in (root / "pets" / "images").iterdir())[0]
    _edit_trimap(root / "pets" / "annotations" / "trimaps" / f"{stem}.png")
    assert "AuditTask" in families(run_pipeline(settings).ran)


def test_run_toml_settings_with_command_line_override(first_run: dict[str, object], tmp_path: Path) -> None:
    from segpipe.runner.config import RunConfigError, parse_run_settings, read_run_config

    toml = tmp_path / "run.toml"
    toml.write_text('dataset = "pets"\nformat = "oxford-pet"\nmodel = "unet"\ncheckpoints = "ckpts/*.pt"\n'
                    'out = "out"\nshard_size = 16\n[infer]\ndevice = "cpu"\n', encoding="utf-8")
    settings = parse_run_settings(read_run_config(toml), overrides={"shard_size": 4, "infer": {"batch_size": 2}}, source=str(toml))
    assert settings.dataset == tmp_path / "pets" and settings.checkpoints == (str(tmp_path / "ckpts/*.pt"),)
    assert settings.shard_size == 4 and dict(settings.infer) == {"device": "cpu", "batch_size": 2}
    assert settings.cache == tmp_path / "out" / ".cache"
    with pytest.raises(RunConfigError, match="convert.bogus"):
        parse_run_settings(read_run_config(toml), overrides={"convert": {"bogus": 1}}, source=str(toml))
    with pytest.raises(RunConfigError, match="format"):
        parse_run_settings({**read_run_config(toml), "format": "kitti"}, overrides={}, source=str(toml))  # yolo is a format now


def test_remap_results_goes_through_file_names() -> None:
    from segpipe.tasks.evaluate import remap_results

    results = [{"image_id": 1, "score": 0.5}, {"image_id": 2, "score": 0.4}, {"image_id": 3, "score": 0.3}]
    out = remap_results(results=results, index_names={1: "a.jpg", 2: "b.jpg", 3: "c.jpg"}, gt_ids={"c.jpg": 1, "a.jpg": 2})
    assert out == [{"image_id": 2, "score": 0.5}, {"image_id": 1, "score": 0.3}]
    assert results[0]["image_id"] == 1  # not mutated


def test_instance_evaluation_through_the_pipeline_matches_pycocotools(tmp_path: Path) -> None:
    """Instance predictions (planted in the inference cache) scored by the shard/merge path equal COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from segpipe.cache.fingerprints import StatCache, build_manifest, package_version
    from segpipe.cache.targets import write_marker, MarkerTarget
    from segpipe.runner.driver import (
        CheckpointInput, RunOutcome, build_checkpoint_tasks, build_convert_tasks, read_label_space, run_phase,
    )
    from segpipe.plan.shards import DatasetSpec, plan_shards, read_plan
    from segpipe.tasks.evaluate import read_gt_keys
    from segpipe.inference.data import images_dataset
    from segpipe.tasks.infer import write_unit_images

    dataset = make_dataset(tmp_path / "pets", n_images=6)
    ckpt = tmp_path / "ckpts" / "det.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"never loaded: inference outputs are planted")
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", model="maskrcnn_resnet50_fpn", shard_size=4,
                            cache_dir=tmp_path / "cache")
    version, cache = package_version(), str(tmp_path / "cache")
    spec = DatasetSpec(format="oxford-pet", root=dataset.resolve())
    plan = plan_shards(build_manifest(spec.roots(), stat_cache=StatCache(None)), spec=spec, shard_size=4)
    assert len(plan.shards) == 2
    merge = build_convert_tasks(spec=spec, plan=plan, settings=settings, version=version, cache=cache)
    run_phase([merge], settings=settings, outcome=RunOutcome())
    merged = merge.output().directory
    label_space = read_label_space(merged)
    sha = __import__("hashlib").sha256(ckpt.read_bytes()).hexdigest()
    report = build_checkpoint_tasks(ckpt=CheckpointInput(name="det", path=ckpt, sha256=sha, key=sha), merge=merge,
                                    settings=settings, version=version)
    gt = json.loads((merged / "instances.json").read_text())
    gt_names = {im["id"]: im["file_name"] for im in gt["images"]}
    plan_json = read_plan(cache, merge.plan)
    rng = np.random.default_rng(0)
    all_results = []
    for position, infer_unit, _ in report.shard_units(range(len(plan_json.shards)), gt_keys=read_gt_keys(merged)):
        names = list(plan_json.shards[position].image_names)
        unit_dir = tmp_path / "cache" / infer_unit.kind / infer_unit.key
        # What the shard's inference records: its images (ids by sorted file name), as infer_images gives them.
        info, unreadable = images_dataset(image_root=spec.image_root(), names=names, categories=[c["name"] for c in label_space["categories"]],
                                          semantic_classes=label_space["semantic_classes"])
        write_unit_images(unit_dir, file_names=[e.file_name for e in info.images], unreadable=unreadable)
        index_ids = {e.file_name: e.image_id for e in info.images}
        results = []
        for k, ann in enumerate(a for a in gt["annotations"] if gt_names[a["image_id"]] in set(names)):
            if k % 3 == 2:
                continue  # a missed pet
            cat = ann["category_id"] if k % 4 else (ann["category_id"] % len(gt["categories"])) + 1  # some wrong classes
            results.append({"image_id": index_ids[gt_names[ann["image_id"]]], "category_id": cat,
                            "segmentation": ann["segmentation"], "bbox": ann["bbox"], "score": float(rng.uniform(0.1, 1))})
        pred = unit_dir / "pred"
        pred.mkdir(parents=True)
        (pred / "results.json").write_text(json.dumps(results))
        (pred / "meta.json").write_text(json.dumps({"task": "instance"}))
        write_marker(MarkerTarget(unit_dir), {"planted": True})
        ids = {v: k for k, v in index_ids.items()}
        gt_ids = {v: k for k, v in gt_names.items()}
        all_results += [{**r, "image_id": gt_ids[ids[r["image_id"]]]} for r in results]

    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    assert "InferShard" not in families(outcome.ran)
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    ev = COCOeval(coco_gt, coco_gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in all_results]), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    board = pd.read_csv(settings.out / "leaderboard.csv").set_index("checkpoint")
    assert 0 < ev.stats[0] < 1
    for i, metric in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]):
        assert board.loc["det", metric] == pytest.approx(ev.stats[i], abs=1e-12), metric


def test_forked_workers_find_torch_imported_but_cuda_untouched(first_run: dict[str, object], tmp_path: Path) -> None:
    """With --workers 2 Luigi forks a process per task: the run imports the inference modules once, before
    forking (not in every task), only when some inference is to run, and never initialises CUDA itself."""
    root, settings = _copy_world(first_run, tmp_path)
    make_checkpoint(root / "ckpts" / "m_new.pt", seed=7)
    check = NO_TORCH + "print('CUDA:', sys.modules['torch'].cuda.is_initialized() if 'torch' in sys.modules else None)\n"
    args = [*cli_args(settings), "--workers", "2"]
    proc = run_cli_subprocess(args, extra_code=check)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORTED:torch,torchvision\n" in proc.stdout and "CUDA: False" in proc.stdout, proc.stdout
    assert "InferShard" in json.dumps(json.loads((settings.out / RUN_LOG_FILE).read_text())["ran"])
    again = run_cli_subprocess(args, extra_code=check)  # nothing to infer: nothing imported
    assert again.returncode == 0 and "IMPORTED:\n" in again.stdout and "ran: 0 task(s)" in again.stdout, again.stdout

"""Wrong inputs are refused (usage error, exit 2) or warned, never scored in silence: predictions made on
another label space, a reused output folder holding another conversion's or command's files, an interrupted
inference, options of `segpipe run` that cannot work, swapped arguments. Everything runs through the CLI on
the embedded sample (`segpipe sample`) and tiny random U-Nets."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.demo.sample import generate_sample
from tests.pipeline.pipeline_fixtures import make_checkpoint

N_IMAGES = 40


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample converted twice (one `pet` category; `cat`/`dog` species), a checkpoint, and the
    predictions of that checkpoint on the `pet` conversion."""
    tmp = tmp_path_factory.mktemp("guards")
    root = generate_sample(tmp / "pets", n_images=N_IMAGES)
    for categories in ("pet", "species"):
        result = invoke("convert", "oxford-pet", root, "-o", tmp / categories, "--categories", categories)
        assert result.exit_code == 0, result.output
    ckpt = make_checkpoint(tmp / "ckpts" / "unet.pt", seed=0)
    result = invoke("infer", "--model", "unet", "--checkpoint", ckpt, "--dataset", tmp / "pet", "-o", tmp / "pred",
                    "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    return {"root": root, "pet": tmp / "pet", "species": tmp / "species", "ckpt": ckpt, "pred": tmp / "pred"}


# --- label spaces compared by name ---------------------------------------------------------------------------

def test_instances_on_another_label_space_are_refused_naming_both_lists(world: dict[str, Path], tmp_path: Path) -> None:
    args = ["evaluate", "instances", "--gt", world["species"] / "instances.json", "--pred", world["pred"] / "results.json",
            "-o", tmp_path / "r", "--no-html"]
    refused = invoke(*args)
    assert refused.exit_code == 2, refused.output
    assert "1=pet" in refused.output and "1=cat" in refused.output and "2=dog" in refused.output
    assert "--allow-label-mismatch" in refused.output and not (tmp_path / "r").exists()
    forced = invoke(*args, "--allow-label-mismatch")
    assert forced.exit_code == 0, forced.output
    assert "warning:" in forced.output and "1=pet" in forced.output
    assert any("1=pet" in w for w in json.loads((tmp_path / "r" / "header.json").read_text())["warnings"])
    same = invoke("evaluate", "instances", "--gt", world["pet"] / "instances.json", "--pred", world["pred"] / "results.json",
                  "-o", tmp_path / "ok", "--no-html")
    assert same.exit_code == 0 and "label" not in same.output.lower(), same.output


def renamed_classes(dataset: Path, to: Path, names: str) -> Path:
    """A copy of a converted dataset whose semantic classes are named otherwise (another conversion's label
    maps): the pixel values are the same, what they mean is not."""
    shutil.copytree(dataset, to)
    (to / ".segpipe.json").unlink()
    (to / "semantic" / "classes.txt").write_text(names)
    return to


def test_semantic_maps_on_another_label_space_are_refused(world: dict[str, Path], tmp_path: Path) -> None:
    # The species and pet conversions share their label maps (background, pet: the trimap's foreground).
    assert (world["species"] / "semantic/classes.txt").read_text() == (world["pet"] / "semantic/classes.txt").read_text()
    gt = renamed_classes(world["pet"], tmp_path / "gt", "background\nperson\n")
    args = ["evaluate", "semantic", "--gt", gt, "--pred", world["pred"], "-o", tmp_path / "r", "--no-html"]
    refused = invoke(*args)
    assert refused.exit_code == 2, refused.output
    assert "[background, pet]" in refused.output and "[background, person]" in refused.output
    assert invoke(*args, "--allow-label-mismatch").exit_code == 0
    assert invoke("evaluate", "semantic", "--gt", world["pet"], "--pred", world["pred"], "-o", tmp_path / "ok", "--no-html").exit_code == 0


def test_compare_and_audit_check_the_label_space_too(world: dict[str, Path], tmp_path: Path) -> None:
    gt = renamed_classes(world["pet"], tmp_path / "gt", "background\nperson\n")
    compared = invoke("compare", world["pred"], world["pred"], "--dataset", gt, "-o", tmp_path / "c", "--replicates", 10, "--no-html")
    assert compared.exit_code == 2 and "[background, person]" in compared.output, compared.output
    audited = invoke("audit", world["species"], "--pred", world["pred"], "-o", tmp_path / "a")
    assert audited.exit_code == 2 and "1=pet" in audited.output and "2=dog" in audited.output, audited.output
    assert invoke("audit", world["species"], "--pred", world["pred"], "-o", tmp_path / "a2", "--allow-label-mismatch").exit_code == 0


def test_a_plain_results_list_is_warned_when_its_ids_miss_whole_categories(world: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "elsewhere" / "detections.json"  # the same list, without the folder that names its categories
    plain.parent.mkdir()
    shutil.copy(world["pred"] / "results.json", plain)
    gt = json.loads((world["species"] / "instances.json").read_text())
    with_gt = {a["category_id"] for a in gt["annotations"]}
    used = {r["category_id"] for r in json.loads(plain.read_text())}
    assert used == {1} and with_gt == {1, 2}  # every `pet` detection lands on `cat`; `dog` gets nothing
    result = invoke("evaluate", "instances", "--gt", world["species"] / "instances.json", "--pred", plain, "-o", tmp_path / "r", "--no-html")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "1 of 2 categories with ground truth got no result at all (2=dog)" in result.output


def test_swapped_gt_and_pred_are_said(world: dict[str, Path], tmp_path: Path) -> None:
    gt, pred = world["pet"] / "instances.json", world["pred"] / "results.json"
    result = invoke("evaluate", "instances", "--gt", gt, "--pred", gt, "-o", tmp_path / "r", "--no-html")
    assert result.exit_code == 2 and "is a COCO ground truth" in result.output, result.output
    swapped = invoke("evaluate", "instances", "--gt", pred, "--pred", gt, "-o", tmp_path / "r", "--no-html")
    assert swapped.exit_code == 2 and "look swapped" in swapped.output, swapped.output
    audited = invoke("audit", world["pet"], "--pred", gt, "-o", tmp_path / "a")
    assert audited.exit_code == 2 and "is it a ground truth" in audited.output, audited.output


def test_compare_iou_type_on_semantic_predictions_is_a_usage_error(world: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("compare", world["pred"], world["pred"], "--dataset", world["pet"], "-o", tmp_path / "c",
                    "--iou-type", "segm", "--replicates", 10, "--no-html")
    assert result.exit_code == 2 and "--iou-type segm" in result.output, result.output


# --- an output folder says what wrote it ---------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["manifest", "written-before-manifests"])
def test_a_yolo_conversion_over_a_pet_conversion_leaves_nothing_stale(world: dict[str, Path], tmp_path: Path, legacy: bool) -> None:
    from tests.converters import test_yolo

    out = tmp_path / "X"
    assert invoke("convert", "oxford-pet", world["root"], "-o", out).exit_code == 0
    assert (out / "semantic").is_dir() and (out / "heads.json").is_file()
    if legacy:
        (out / ".segpipe.json").unlink()
    yolo = test_yolo.ultralytics(tmp_path / "yolo")
    result = invoke("convert", "yolo", yolo, "-o", out)
    assert result.exit_code == 0, result.output
    assert not (out / "semantic").exists() and not (out / "heads.json").exists()
    assert sorted(p.name for p in out.iterdir()) == [".segpipe.json", "conversion_report.csv", "dataset.json", "instances.json"]
    scored = invoke("evaluate", "semantic", "--gt", out, "--pred", world["pred"], "-o", tmp_path / "r", "--no-html")
    assert scored.exit_code != 0  # no Pet maps left to score


def test_writing_into_another_commands_folder_is_a_usage_error(world: dict[str, Path], tmp_path: Path) -> None:
    pred_files = sorted(p.name for p in world["pred"].iterdir())
    converted = invoke("convert", "oxford-pet", world["root"], "-o", world["pred"])
    assert converted.exit_code == 2 and "segpipe infer" in converted.output, converted.output
    assert sorted(p.name for p in world["pred"].iterdir()) == pred_files
    inferred = invoke("infer", "--model", "unet", "--checkpoint", world["ckpt"], "--dataset", world["pet"], "-o", world["species"],
                      "--device", "cpu", "--workers", "0")
    assert inferred.exit_code == 2 and "conversion" in inferred.output, inferred.output
    assert not (world["species"] / "results.json").exists()
    evaluated = invoke("evaluate", "semantic", "--gt", world["pet"], "--pred", world["pred"], "-o", world["species"], "--no-html")
    assert evaluated.exit_code == 2 and not (world["species"] / "summary.csv").exists(), evaluated.output
    ran = invoke(*_run_args(world, world["species"], "--device", "cpu"))
    assert ran.exit_code == 2 and "conversion" in ran.output and not (world["species"] / ".cache").exists(), ran.output


# --- partial predictions ---------------------------------------------------------------------------------------

def test_interrupted_infer_is_marked_refused_and_resumed(world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segpipe.inference.streaming as streaming

    real = streaming.run_with_oom_backoff
    predicted: list[int] = []

    def interrupt_after_first_shard(forward: Any, good: list[Any], **kw: Any) -> Any:
        if interrupt and sum(predicted) >= 32:  # every batch of the first shard (<= 32 images) went through
            raise KeyboardInterrupt
        predicted.append(len(good))
        return real(forward, good, **kw)

    monkeypatch.setattr(streaming, "run_with_oom_backoff", interrupt_after_first_shard)
    out = tmp_path / "pred"
    args = ["infer", "--model", "unet", "--checkpoint", world["ckpt"], "--dataset", world["pet"], "-o", out, "--device", "cpu", "--workers", "0"]
    interrupt = True
    cut = invoke(*args)
    assert cut.exit_code == 130, cut.output
    assert "interrupted:" in cut.output and f"of {N_IMAGES} image(s) finished" in cut.output and "resume" in cut.output
    assert json.loads((out / ".segpipe.json").read_text())["complete"] is False
    finished = sum(len(json.loads(p.read_text())["image_ids"]) for p in (out / ".shards").glob("0*.json"))
    assert 0 < finished < N_IMAGES and f"interrupted: {finished} of {N_IMAGES} image(s) finished" in cut.output
    n_maps = len(list((out / "semantic").glob("*.png")))
    assert 0 < n_maps < N_IMAGES

    refused = invoke("evaluate", "semantic", "--gt", world["pet"], "--pred", out, "-o", tmp_path / "r", "--no-html")
    assert refused.exit_code == 2 and "--allow-partial" in refused.output and "has not finished" in refused.output, refused.output
    partial = invoke("evaluate", "semantic", "--gt", world["pet"], "--pred", out, "-o", tmp_path / "r", "--no-html", "--allow-partial")
    assert partial.exit_code == 0, partial.output
    assert f"{N_IMAGES - n_maps} of {N_IMAGES} image(s) have no prediction" in partial.output
    for command in (["compare", out, world["pred"], "--dataset", world["pet"], "-o", tmp_path / "c", "--replicates", 10, "--no-html"],
                    ["audit", world["pet"], "--pred", out, "-o", tmp_path / "a"],
                    ["evaluate", "instances", "--gt", world["pet"] / "instances.json", "--pred", out, "-o", tmp_path / "i", "--no-html"]):
        result = invoke(*command)
        assert result.exit_code == 2 and "--allow-partial" in result.output, (command, result.output)
    instances = invoke("evaluate", "instances", "--gt", world["pet"] / "instances.json", "--pred", out, "-o", tmp_path / "i",
                       "--no-html", "--allow-partial")
    assert instances.exit_code == 0 and f"of {N_IMAGES} image(s) have no prediction" in instances.output, instances.output
    audited = invoke("audit", world["pet"], "--pred", out, "-o", tmp_path / "a", "--allow-partial")
    assert audited.exit_code == 0 and f"{N_IMAGES - finished} of {N_IMAGES} image(s) have no prediction" in audited.output, audited.output

    interrupt, before = False, len(predicted)
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    redone = sum(predicted[before:])
    assert redone == N_IMAGES - finished and f"{finished} image(s) resumed from an earlier run" in resumed.output, (redone, resumed.output)
    assert json.loads((out / ".segpipe.json").read_text())["complete"] is True
    for name in ("results.json", *(f"semantic/{p.name}" for p in (world["pred"] / "semantic").glob("*.png"))):
        assert (out / name).read_bytes() == (world["pred"] / name).read_bytes(), name  # as the uninterrupted run
    assert invoke("evaluate", "semantic", "--gt", world["pet"], "--pred", out, "-o", tmp_path / "r2", "--no-html").exit_code == 0


# --- segpipe run: options checked before work starts ------------------------------------------------------------

def _run_args(world: dict[str, Path], out: Path, *extra: Any) -> list[Any]:
    return ["run", "--dataset", world["root"], "--format", "oxford-pet", "--model", "unet", "--checkpoints",
            world["ckpt"].parent / "*.pt", "-o", out, "--shard-size", 8, "--loader-workers", 0, "--no-html", "-q", *extra]


def test_run_device_without_that_gpu_is_a_usage_error_before_any_conversion(world: dict[str, Path], tmp_path: Path) -> None:
    import torch

    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = invoke(*_run_args(world, tmp_path / "out", "--device", f"cuda:{missing}"))
    assert result.exit_code == 2, result.output
    assert f"torch sees {missing} CUDA device(s)" in result.output and "nothing was converted" in result.output
    cache = tmp_path / "out" / ".cache"
    assert not cache.exists() or not any(cache.rglob("instances.json"))


def test_run_format_and_class_list_are_checked_at_the_start(world: dict[str, Path], tmp_path: Path) -> None:
    args = _run_args(world, tmp_path / "out", "--device", "cpu")
    wrong = invoke(*[("yolo" if a == "oxford-pet" else a) for a in args])
    assert wrong.exit_code == 2 and "is an Oxford-IIIT Pet root" in wrong.output and "--format oxford-pet" in wrong.output, wrong.output
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    no_names = invoke(*[(yolo if a == world["root"] else "yolo" if a == "oxford-pet" else a) for a in args])
    assert no_names.exit_code == 2 and "no class names" in no_names.output, no_names.output
    missing = invoke(*[(yolo if a == world["root"] else "yolo" if a == "oxford-pet" else a) for a in args], "--classes", tmp_path / "none.txt")
    assert missing.exit_code == 2 and "none.txt" in missing.output, missing.output
    assert not (tmp_path / "out" / ".cache").exists() or not any((tmp_path / "out" / ".cache").rglob("instances.json"))


def test_ctrl_c_during_run_says_interrupted_and_a_rerun_continues(world: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import segpipe.inference.engine as engine

    real = engine.InferenceSession.run

    def interrupted(self: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.InferenceSession, "run", interrupted)
    args = [a for a in _run_args(world, tmp_path / "out", "--device", "cpu") if a != "-q"]
    cut = invoke(*args)
    assert cut.exit_code == 130, cut.output
    assert "interrupted" in cut.output and "upstream task failed" not in cut.output
    assert "run the same command again" in cut.output and "task(s) not run: interrupted" in cut.output
    kept = re.search(r"interrupted: (\d+) finished task\(s\) are kept in the cache", cut.output)
    assert kept is not None and int(kept.group(1)) > 0, cut.output  # the conversion's groups and merge
    monkeypatch.setattr(engine.InferenceSession, "run", real)
    rerun = invoke(*args)
    assert rerun.exit_code == 0, rerun.output
    assert f"from cache: {kept.group(1)} task(s)" in rerun.output  # what finished before Ctrl-C is not redone


def test_run_model_class_names_must_fit_the_model_outputs(world: dict[str, Path], tmp_path: Path) -> None:
    result = invoke(*_run_args(world, tmp_path / "out", "--device", "cpu", "--model-classes", "background,cat,dog", "--num-classes", 2))
    assert result.exit_code == 2 and "3 model class name(s) given for 2 model output(s)" in result.output, result.output
    assert not (tmp_path / "out" / ".cache").exists() or not any((tmp_path / "out" / ".cache").rglob("instances.json"))


def test_the_python_api_makes_the_same_checks(world: dict[str, Path]) -> None:
    import segpipe
    from segpipe.prediction_checks import PredictionCheckError

    with pytest.raises(PredictionCheckError, match="2=dog"):
        segpipe.evaluate_instances(world["species"] / "instances.json", world["pred"] / "results.json")
    with pytest.warns(UserWarning, match="1=pet"):
        segpipe.evaluate_instances(world["species"] / "instances.json", world["pred"], allow_label_mismatch=True)
    with pytest.raises(PredictionCheckError, match="--allow-partial"):
        partial = world["pred"].parent / "partial"
        shutil.copytree(world["pred"], partial)
        manifest = json.loads((partial / ".segpipe.json").read_text())
        (partial / ".segpipe.json").write_text(json.dumps({**manifest, "complete": False}))
        segpipe.evaluate_semantic(world["pet"], partial)

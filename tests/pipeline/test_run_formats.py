"""`segpipe run --format yolo|labelme|cvat|voc-seg`: the sharded conversion equals converting the whole
folder byte for byte, and a voc-seg run goes end to end through the CLI to a leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from segpipe.cache.fingerprints import StatCache, build_manifest
from segpipe.plan.shards import DatasetSpec, plan_shards
from tests.converters import test_cvat, test_labelme, test_third_party, test_voc_segmentation, test_yolo


def _whole(fmt: str, root: Path) -> Callable[[Path], Any]:
    from segpipe.converters.conversion_output import write_conversion_dir

    return lambda out: write_conversion_dir(out, DatasetSpec(format=fmt, root=root).convert(files=None, options={}))


@pytest.mark.parametrize(("fmt", "make"), [
    ("yolo", test_yolo.ultralytics), ("labelme", test_labelme.dataset), ("cvat", test_cvat.dataset), ("voc-seg", test_voc_segmentation.voc_root),
    # as other tools export them: a darknet (CVAT YOLO 1.1) export, LabelMe masks and __ignore__, a CVAT project export
    ("yolo", test_third_party.darknet), ("labelme", test_third_party.labelme_folder), ("cvat", test_third_party.cvat_project),
])
def test_sharded_conversion_equals_one_conversion(tmp_path: Path, fmt: str, make: Callable[[Path], Path]) -> None:
    from segpipe.cache.fingerprints import package_version
    from segpipe.runner.config import RunSettings
    from segpipe.runner.driver import RunOutcome, build_convert_tasks, run_phase

    root = make(tmp_path / "ds").resolve()
    if fmt == "voc-seg":  # VOC's JPEGImages holds many images that are not segmented: not part of the dataset
        test_voc_segmentation.write_image(root / "JPEGImages/unlabelled.jpg", width=8, height=8)
    spec = DatasetSpec(format=fmt, root=root)
    _whole(fmt, root)(tmp_path / "whole")
    plan = plan_shards(build_manifest(spec.roots(), stat_cache=StatCache(None)), spec=spec, shard_size=1)
    # One hash shard only where one file annotates every image (else one per image here, shard size 1;
    # two stems may still hash into the same shard).
    assert (plan.n_groups == 1) == (fmt == "cvat"), "one shard only where one file annotates every image"
    assert "unlabelled.jpg" not in plan.image_names()
    settings = RunSettings(dataset=root, format=fmt, model="unet", checkpoints=(), out=tmp_path / "out", cache_dir=tmp_path / "cache")
    merge = build_convert_tasks(spec=spec, plan=plan, settings=settings, version=package_version(), cache=str(tmp_path / "cache"))
    outcome = RunOutcome()
    run_phase([merge], settings=settings, outcome=outcome)
    assert not outcome.failed
    merged, whole = merge.output().directory, tmp_path / "whole"
    names = sorted(p.relative_to(whole).as_posix() for p in whole.rglob("*") if p.is_file())
    assert "instances.json" in names
    # Beside the whole conversion's files, the merge writes each shard's own ground truth (gt/, gt_index.json).
    assert sorted(p.relative_to(merged).as_posix() for p in merged.rglob("*")
                  if p.is_file() and p.name not in ("_DONE.json", "gt_index.json") and p.parent.name != "gt") == names
    for name in names:
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    shard_gt = [json.loads((merged / "gt" / f"{k}.json").read_text()) for k in json.loads((merged / "gt_index.json").read_text())["shards"]]
    whole_coco = json.loads((whole / "instances.json").read_text())
    assert sorted(im["file_name"] for part in shard_gt for im in part["images"]) == sorted(im["file_name"] for im in whole_coco["images"])
    assert all(part["categories"] == whole_coco["categories"] for part in shard_gt)
    gt_names = {im["file_name"] for im in json.loads((whole / "instances.json").read_text())["images"]}
    assert gt_names <= set(plan.image_names()), "COCO file names are relative to the image root the runner infers on"


def test_voc_seg_runs_end_to_end_through_the_cli(tmp_path: Path) -> None:
    import torch

    from segpipe.cli import main
    from segpipe.converters.voc_segmentation import VOC_CLASSES
    from segpipe.inference.unet import UNet

    root = test_voc_segmentation.voc_root(tmp_path / "voc")
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpts/tiny.pt"
    ckpt.parent.mkdir()
    torch.save(UNet(num_classes=len(VOC_CLASSES), depth=1, base_width=2).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"task": "semantic", "class_names": list(VOC_CLASSES), "unet": {"depth": 1, "width": 2}}))
    args = ["run", "--dataset", str(root), "--format", "voc-seg", "--model", "unet", "--checkpoints", str(tmp_path / "ckpts/*.pt"),
            "-o", str(tmp_path / "out"), "--device", "cpu", "--loader-workers", "0", "--no-html", "--shard-size", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    board = (tmp_path / "out/leaderboard.csv").read_text()
    assert "tiny" in board and "mIoU" in board


def test_labelme_runs_end_to_end_with_an_instance_model(tmp_path: Path) -> None:
    """Boxes and masks in one dataset: segm evaluation needs a segmentation on every annotation, which
    --rectangle-segmentation gives the rectangles; the run finishes with the checkpoint scored."""
    import torch

    from segpipe.cli import main
    from segpipe.inference.models import build_model

    root = test_labelme.dataset(tmp_path / "lm")
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpts/det.pt"
    ckpt.parent.mkdir()
    torch.save(build_model("maskrcnn_resnet50_fpn", num_classes=4).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"task": "instance", "class_names": ["__background__", "ball", "cat", "dog"]}))
    args = ["run", "--dataset", str(root), "--format", "labelme", "--model", "maskrcnn_resnet50_fpn", "--checkpoints", str(tmp_path / "ckpts/*.pt"),
            "-o", str(tmp_path / "out"), "--device", "cpu", "--loader-workers", "0", "--no-html", "--score-threshold", "0.5", "--rectangle-segmentation",
            "--resize", "native"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    board = (tmp_path / "out/leaderboard.csv").read_text().splitlines()
    assert board[0].startswith("checkpoint,") and ",ok," in board[1]
    assert "point_shape" in (tmp_path / "out/conversion_report.csv").read_text()


def test_the_cli_offers_every_runner_format() -> None:
    from segpipe.cli.run import RUN_FORMATS
    from segpipe.plan.shards import FORMATS

    assert RUN_FORMATS == FORMATS


@pytest.mark.parametrize("fmt", ["voc", "yolo", "labelme", "cvat", "voc-seg"])
def test_run_on_a_folder_with_nothing_to_convert_is_a_usage_error(tmp_path: Path, fmt: str) -> None:
    """The rule of `segpipe convert`, before any task runs: a darknet export saved without its images, or a
    folder of notes, names the layout looked for and what it holds."""
    from segpipe.cli import main

    root = tmp_path / "ds"
    if fmt == "yolo":
        test_third_party.darknet(root, with_images=False)
    else:
        root.mkdir()
        (root / "notes.md").write_text("no dataset here\n")
    args = ["run", "--dataset", str(root), "--format", fmt, "--model", "unet", "--checkpoints", str(tmp_path / "none/*.pt"),
            "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-html"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "nothing to convert (0 images): looked for" in result.output and "found" in result.output, result.output
    assert not (tmp_path / "out").exists()

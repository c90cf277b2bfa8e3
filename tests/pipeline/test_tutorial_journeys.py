"""The models the tutorials use, scored on a user's own (generated) pet data: torchvision's Mask R-CNN with its
91 COCO label slots, DeepLabV3 with the 21 VOC classes, the pet U-Net on a breed dataset. Each model is random
init (`weights=None`), saved in torchvision's state_dict layout, carded with a built-in class table."""

from __future__ import annotations

import contextlib
from collections import Counter
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.converters.oxford_pet import convert_oxford_pet
from segpipe.core.label_maps import read_label_map
from segpipe.inference import engine as infer_engine
from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from segpipe.inference.class_tables import COCO_CLASSES, VOC_CLASSES
from segpipe.runner.driver import run_pipeline
from tests.pipeline.pipeline_fixtures import cli_args, make_checkpoint, make_dataset, settings_for

torch.set_num_threads(1)  # 2 cores shared by many
N_IMAGES = 4


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("pets"), n_images=N_IMAGES, seed=3)


def converted(pets: Path, out: Path, *, categories: str) -> Path:
    convert_oxford_pet(pets, out, categories=categories, workers=1)
    return out


def invoke(args: list[str]) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def lighter_maskrcnn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer proposals and detections: the box and mask heads dominate CPU time on 2 shared cores."""
    real = infer_engine.build_model

    def build(*args: Any, **kw: Any) -> Any:
        model = real(*args, **kw)
        if hasattr(model, "roi_heads"):
            model.rpn._post_nms_top_n["testing"] = 60
            model.roi_heads.detections_per_img = 20
        return model

    monkeypatch.setattr(infer_engine, "build_model", build)


def pycocotools_stats(gt_path: Path, results: list[dict[str, Any]], iou_type: str) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def test_maskrcnn_with_the_coco_table_on_a_cat_dog_dataset(pets: Path, tmp_path: Path, lighter_maskrcnn: None) -> None:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    ds = converted(pets, tmp_path / "species", categories="species")
    cats = {c["name"]: c["id"] for c in json.loads((ds / "instances.json").read_text())["categories"]}
    assert set(cats) == {"cat", "dog"}
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():  # random init scores every label ~1/91: favour person, cat and dog so that boxes come out
        model.roi_heads.box_predictor.cls_score.bias[[1, 17, 18]] += 6.0
        cls = model.roi_heads.box_predictor.cls_score  # person scores as cat does: both slots reach the top 20
        cls.weight[1], cls.bias[1] = cls.weight[17], cls.bias[17]
    torch.save(model.state_dict(), ckpts / "mrcnn.pth")
    (ckpts / "mrcnn.toml").write_text('class_table = "coco"\n')

    r = invoke(["infer", "--model", "maskrcnn_resnet50_fpn", "--checkpoint", ckpts / "mrcnn.pth", "--dataset", ds,
                "-o", tmp_path / "pred", "--device", "cpu", "--workers", 0, "--batch-size", 2, "--score-threshold", 0.0, "--resize", "native"])
    assert r.exit_code == 0, r.output
    assert "dropped 88 model class output(s)" in r.output and "person" in r.output
    meta = json.loads((tmp_path / "pred" / "meta.json").read_text())
    assert meta["n_dropped_model_outputs"] == 88 and meta["dropped_model_classes"][0] == "person"
    assert "N/A" in meta["dropped_model_classes"] and "cat -> cat" in meta["scoring"]
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert results and {r_["category_id"] for r_ in results} <= set(cats.values())
    # the dropped classes were predicted: kept as `cat` by a class map, person detections show up
    r = invoke(["infer", "--model", "maskrcnn_resnet50_fpn", "--checkpoint", ckpts / "mrcnn.pth", "--dataset", ds,
                "-o", tmp_path / "with_person", "--device", "cpu", "--workers", 0, "--score-threshold", 0.0, "--class-map", "person=cat",
                "--resize", "native"])
    assert r.exit_code == 0 and "person+cat -> cat" in r.output, r.output
    with_person = json.loads((tmp_path / "with_person" / "results.json").read_text())
    # The same cat/dog detections (one image per forward pass on the CPU, whatever the batch size), plus the
    # person slot's, now scored as cat. A multiset: the equal biases above give the three slots equal boxes and scores.
    detections = Counter((x["image_id"], x["score"], tuple(x["bbox"])) for x in results)
    assert detections < Counter((x["image_id"], x["score"], tuple(x["bbox"])) for x in with_person)
    # labels 17 (cat) and 18 (dog) of torchvision's table land on the dataset's own ids
    assert COCO_CLASSES.index("cat") == 17 and COCO_CLASSES.index("dog") == 18

    r = invoke(["evaluate", "instances", "--gt", ds / "instances.json", "--pred", tmp_path / "pred" / "results.json",
                "-o", tmp_path / "report"])
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("metric")["value"]
    ref = pycocotools_stats(ds / "instances.json", results, "segm")
    assert summary["AP"] == pytest.approx(ref[0], abs=1e-12) and summary["AP50"] == pytest.approx(ref[1], abs=1e-12)

    settings = settings_for(tmp_path, dataset=pets, ckpts=ckpts, model="maskrcnn_resnet50_fpn", shard_size=N_IMAGES,
                            convert={"categories": "species"}, infer={"device": "cpu", "loader_workers": 0, "score_threshold": 0.0, "resize": "native"},
                            out=tmp_path / "run")
    settings = settings.__class__(**{**settings.__dict__, "checkpoints": (str(ckpts / "*.pth"),)})
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    board = pd.read_csv(outcome.leaderboard).set_index("checkpoint")
    assert board.loc["mrcnn", "AP"] == pytest.approx(ref[0], abs=1e-12)


def test_deeplabv3_with_the_voc_table_and_a_class_map_on_a_trimap_dataset(pets: Path, tmp_path: Path) -> None:
    from torchvision.models.segmentation import deeplabv3_resnet50

    ds = converted(pets, tmp_path / "pet", categories="pet")
    torch.manual_seed(0)
    source = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    torch.save(source.state_dict(), ckpts / "deeplab.pth")  # aux_classifier.* included, as torchvision publishes it
    (ckpts / "deeplab.json").write_text(json.dumps({"class_table": "voc", "class_map": {"cat": "pet", "dog": "pet"}}))

    r = invoke(["infer", "--model", "deeplabv3_resnet50", "--checkpoint", ckpts / "deeplab.pth", "--dataset", ds,
                "-o", tmp_path / "pred", "--device", "cpu", "--workers", 0, "--batch-size", 2])
    assert r.exit_code == 0, r.output
    assert "dropped 18 model class output(s)" in r.output and "cat+dog -> pet" in r.output
    kept = [VOC_CLASSES.index(n) for n in ("__background__", "cat", "dog")]
    image_root = Path(json.loads((ds / "dataset.json").read_text())["image_root"])
    gts, preds = [], []
    for im in json.loads((ds / "instances.json").read_text())["images"]:
        # the plain way: torchvision's own model, argmax over the classes this dataset has, cat and dog -> pet
        rgb = np.asarray(Image.open(image_root / im["file_name"]).convert("RGB"), dtype=np.float32) / 255
        x = (torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        with torch.inference_mode():
            logits = source(x[None])["out"][0]
        expected = np.array([0, 1, 1], np.uint8)[logits[kept].argmax(0).numpy()]
        stem = Path(im["file_name"]).stem
        pred = read_label_map(tmp_path / "pred" / "semantic" / f"{stem}.png")
        np.testing.assert_array_equal(pred, expected, err_msg=stem)
        gts.append(read_label_map(ds / "semantic" / f"{stem}.png"))
        preds.append(pred)
    gt, pred = np.concatenate([g.ravel() for g in gts]), np.concatenate([p.ravel() for p in preds])
    valid = gt != 255
    ious = [np.sum((gt == c) & (pred == c) & valid) / np.sum(((gt == c) | (pred == c)) & valid) for c in (0, 1)]

    r = invoke(["evaluate", "semantic", "--gt", ds, "--pred", tmp_path / "pred", "-o", tmp_path / "report"])
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("metric")["value"]
    assert summary["mIoU"] == pytest.approx(np.mean(ious), abs=1e-12)

    settings = settings_for(tmp_path, dataset=pets, ckpts=ckpts, model="deeplabv3_resnet50", shard_size=N_IMAGES,
                            convert={"categories": "pet"}, out=tmp_path / "run")
    settings = settings.__class__(**{**settings.__dict__, "checkpoints": (str(ckpts / "*.pth"),)})
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    board = pd.read_csv(outcome.leaderboard).set_index("checkpoint")
    assert board.loc["deeplab", "mIoU"] == pytest.approx(np.mean(ious), abs=1e-12)
    header = json.loads(next((tmp_path / "run" / "checkpoints" / "deeplab").rglob("header.json")).read_text())
    assert header["n_dropped_model_outputs"] == 18 and "cat+dog -> pet" in header["scoring"]
    r = invoke([*cli_args(settings), "--categories", "pet"])  # the same run from the command line: all cached
    assert r.exit_code == 0, r.output
    # convert group, merge, the checkpoint's one inference+evaluation group, its report, the leaderboard
    assert "ran: 0 task(s)" in r.output and "from cache: 5 task(s)" in r.output
    assert "checkpoint deeplab (semantic): dropped 18 model class output(s) not in the dataset: aeroplane" in r.output


def test_pet_unet_on_a_breed_dataset_says_results_json_is_empty_and_why(pets: Path, tmp_path: Path) -> None:
    ds = converted(pets, tmp_path / "breed", categories="breed")
    ckpt = make_checkpoint(tmp_path / "unet.pt", seed=0)
    r = invoke(["infer", "--model", "unet", "--checkpoint", ckpt, "--dataset", ds, "-o", tmp_path / "pred",
                "--device", "cpu", "--workers", 0])
    assert r.exit_code == 0, r.output  # the semantic label maps are real predictions
    assert "results.json stays empty: no kept class is a COCO category" in r.output
    r = invoke(["evaluate", "instances", "--gt", ds / "instances.json", "--pred", tmp_path / "pred" / "results.json",
                "-o", tmp_path / "report"])
    assert r.exit_code == 1 and "empty by construction" in r.output and "evaluate semantic" in r.output
    r = invoke(["evaluate", "semantic", "--gt", ds, "--pred", tmp_path / "pred", "-o", tmp_path / "sem"])
    assert r.exit_code == 0, r.output


def test_a_model_with_no_class_in_the_dataset_is_refused_naming_the_card(pets: Path, tmp_path: Path) -> None:
    ds = converted(pets, tmp_path / "breed", categories="breed")
    ckpt = make_checkpoint(tmp_path / "unet.pt", seed=0)
    ckpt.with_suffix(".json").write_text(json.dumps({"class_names": ["sky", "road"], "unet": {"depth": 1, "width": 2}}))
    r = invoke(["infer", "--model", "unet", "--checkpoint", ckpt, "--dataset", ds, "-o", tmp_path / "pred", "--device", "cpu"])
    assert r.exit_code == 1
    assert "unet.json: classes: no model class maps onto a dataset class" in r.output and "--class-map" in r.output
    r = invoke(["infer", "--model", "unet", "--checkpoint", ckpt, "--dataset", ds, "-o", tmp_path / "pred", "--device", "cpu",
                "--workers", 0, "--class-map", "sky=background,road=pet"])
    assert r.exit_code == 0, r.output
    r = invoke(["infer", "--model", "unet", "--checkpoint", ckpt, "--dataset", ds, "-o", tmp_path / "pred2", "--device", "cpu",
                "--class-map", "road=car"])
    assert r.exit_code == 1 and "--class-map: class_map.road: 'car' is not a dataset class" in r.output
    r = invoke(["infer", "--model", "unet", "--checkpoint", ckpt, "--dataset", ds, "-o", tmp_path / "pred2", "--device", "cpu",
                "--class-map", "tree=pet"])
    assert r.exit_code == 1 and "['tree'] are not model class names" in r.output

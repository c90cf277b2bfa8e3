"""What the model sees: semantic size buckets (exact against per-image inference), the batch actually reached,
and Mask R-CNN's default 800/1333 resolution with `native` as an option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms import Normalize, ToTensor

from segpipe.cli import main
from segpipe.inference import engine as infer_engine
from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD, InferenceError, ModelCard
from segpipe.inference.data import batches_plan, read_dataset, resized_size
from segpipe.inference.engine import load_model, run_inference
from segpipe.inference.resolution import ResolutionError, default_resolution_key, parse_resize
from segpipe.runner.config import RunConfigError, parse_run_settings
from tests.pipeline.test_infer import read_png, save_model, write_dataset

torch.set_num_threads(1)  # 2 cores shared by many

# Six sizes, no two equal: without buckets every batch holds one image. With 16-px buckets: 48x48 (3), 48x32 (2), 64x48 (1).
SIZES = [("a.png", 50, 40), ("b.png", 52, 41), ("c.png", 47, 38), ("d.png", 60, 45), ("e.png", 44, 44), ("f.png", 49, 37)]


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    root = tmp_path_factory.mktemp("buckets")
    ds = write_dataset(root / "ds", SIZES, seed=3)
    ckpt = root / "lraspp.pt"
    return ds, ckpt, save_model(ckpt, "lraspp_mobilenet_v3_large").eval()


def alone_at(model: Any, path: Path, *, size: tuple[int, int]) -> np.ndarray:
    """The image predicted on its own, the plain way, at `size` (w, h): PIL bilinear, ToTensor, Normalize,
    forward, argmax, nearest back to the image's size."""
    img = Image.open(path).convert("RGB")
    w0, h0 = img.size
    x = Normalize(IMAGENET_MEAN, IMAGENET_STD)(ToTensor()(img.resize(size, resample=Image.Resampling.BILINEAR)))[None]
    with torch.inference_mode():
        labels = model(x)["out"].argmax(1)
    back = torch.nn.functional.interpolate(labels[None].float(), size=(h0, w0), mode="nearest")[0, 0]
    return back.numpy().astype(np.uint8)


def test_size_buckets_fill_batches_and_equal_each_image_predicted_alone(varied: tuple[Path, Path, Any], tmp_path: Path) -> None:
    ds, ckpt, model = varied
    kw: dict[str, Any] = dict(model="lraspp_mobilenet_v3_large", checkpoint=ckpt, dataset=ds, workers=0, batch_size=4)
    plain = run_inference(out=tmp_path / "plain", **kw)
    bucketed = run_inference(out=tmp_path / "bucketed", size_bucket=16, **kw)
    assert plain.mean_batch_size == 1.0 and bucketed.mean_batch_size == 2.0  # 6 images in 3 forward passes
    meta = json.loads((tmp_path / "bucketed" / "meta.json").read_text())
    assert meta["mean_batch_size"] == 2.0 and meta["planned_mean_batch"] == 2.0
    assert meta["resize"] == {"short_side": "native", "size_bucket": 16}
    assert json.loads((tmp_path / "plain" / "meta.json").read_text())["resize"] == "native"
    for name, w, h in SIZES:
        size = resized_size(width=w, height=h, short_side=None, size_bucket=16)
        assert all(side % 16 == 0 and abs(side - orig) <= 8 for side, orig in zip(size, (w, h)))
        got = read_png(tmp_path / "bucketed" / "semantic" / f"{Path(name).stem}.png")
        assert got.shape == (h, w)
        np.testing.assert_array_equal(got, alone_at(model, ds / "img" / name, size=size), err_msg=name)
    # Batch size 1 at the same buckets: the same bytes (batching changes nothing).
    run_inference(out=tmp_path / "one", **{**kw, "batch_size": 1}, size_bucket=16)
    for name, _, _ in SIZES:
        stem = Path(name).stem
        assert (tmp_path / "one" / "semantic" / f"{stem}.png").read_bytes() == (tmp_path / "bucketed" / "semantic" / f"{stem}.png").read_bytes()


def test_size_buckets_after_resize_and_in_the_plan(varied: tuple[Path, Path, Any]) -> None:
    info = read_dataset(varied[0])
    assert resized_size(width=500, height=375, short_side=256, size_bucket=32) == (352, 256)
    assert resized_size(width=20, height=300, short_side=None, size_bucket=32) == (32, 288)  # never below one bucket
    # Short side 24: long sides 30, 30, 29, 32, 24 (the square one), 31: five sizes.
    assert len(batches_plan(images=info.images, task="semantic", batch_size=16, short_side=24)) == 5
    buckets = batches_plan(images=info.images, task="semantic", batch_size=16, short_side=24, size_bucket=8)
    assert sorted(len(b) for b in buckets) == [1, 5]  # 8-px buckets: 32x24 (the long sides 29-32) and 24x24


def test_padding_to_a_bucket_would_change_the_labels(varied: tuple[Path, Path, Any]) -> None:
    """Why buckets resize and never pad: the same image padded (zeros after normalisation, i.e. what a conv's own
    padding adds) and the logits cropped back is not the image predicted alone (LR-ASPP pools the whole map)."""
    ds, _, model = varied
    img = Image.open(ds / "img" / "a.png").convert("RGB")
    x = Normalize(IMAGENET_MEAN, IMAGENET_STD)(ToTensor()(img))[None]
    padded = torch.nn.functional.pad(x, (0, 64 - x.shape[-1], 0, 48 - x.shape[-2]))
    with torch.inference_mode():
        alone = model(x)["out"]
        cropped = model(padded)["out"][..., : x.shape[-2], : x.shape[-1]]
    assert not torch.allclose(alone, cropped, atol=1e-4)


def test_size_bucket_is_for_semantic_models_and_checked(varied: tuple[Path, Path, Any], tmp_path: Path) -> None:
    ds, ckpt, _ = varied
    mrcnn = tmp_path / "mrcnn.pt"
    save_model(mrcnn, "maskrcnn_resnet50_fpn", card={"class_names": ["__background__", "pet"]})
    with pytest.raises(InferenceError, match="size buckets batch semantic models") as err:
        run_inference(model="maskrcnn_resnet50_fpn", checkpoint=mrcnn, dataset=ds, out=tmp_path / "p", size_bucket=32)
    assert err.value.field == "size_bucket"
    with pytest.raises(InferenceError, match="'huge' is not a size") as err:
        run_inference(model="lraspp_mobilenet_v3_large", checkpoint=ckpt, dataset=ds, out=tmp_path / "p", resize="huge")
    assert err.value.field == "resize"
    args = ["infer", "--model", "lraspp_mobilenet_v3_large", "--checkpoint", str(ckpt), "--dataset", str(ds), "-o", str(tmp_path / "q")]
    r = CliRunner().invoke(main, [*args, "--resize", "big"])
    assert r.exit_code == 2 and "--resize" in r.output and "'native'" in r.output
    r = CliRunner().invoke(main, [*args, "--workers", "0", "--size-bucket", "16", "--batch-size", "8"])
    assert r.exit_code == 0 and "6/6 images" in r.output and "2.0 images per batch" in r.output, r.output


def test_resize_values_from_run_toml_and_the_command_line_make_one_key() -> None:
    base = {"dataset": "d", "format": "oxford-pet", "model": "unet", "checkpoints": "c/*.pt", "out": "o"}
    from_toml = parse_run_settings({**base, "infer": {"resize": 512}}, overrides={}, source="run.toml")
    from_cli = parse_run_settings(base, overrides={"infer": {"resize": "512"}}, source="command line")
    assert from_toml.infer["resize"] == from_cli.infer["resize"] == 512
    assert parse_run_settings(base, overrides={"infer": {"resize": "Native"}}, source="cmd").infer["resize"] == "native"
    with pytest.raises(RunConfigError, match="run.toml: infer.resize: 0 is not a size"):
        parse_run_settings({**base, "infer": {"resize": 0}}, overrides={}, source="run.toml")
    speedy = parse_run_settings({**base, "infer": {"size_bucket": 32, "compile": True}}, overrides={}, source="run.toml")
    assert speedy.infer == {"size_bucket": 32, "compile": True}
    with pytest.raises(RunConfigError, match="infer.size_bucket"):
        parse_run_settings({**base, "infer": {"size_bucket": 0}}, overrides={}, source="run.toml")
    # The run's inference key spells out what a Mask R-CNN default means (predictions at another default are not reused).
    assert default_resolution_key(task="instance", resize=None) == "800/1333"
    assert default_resolution_key(task="instance", resize="native") is None and default_resolution_key(task="semantic", resize=None) is None
    with pytest.raises(ResolutionError):
        parse_resize(True)


def test_maskrcnn_default_is_its_training_resolution(varied: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's Mask R-CNN sees an 800-px short side unless told otherwise; `native` feeds the image as it is."""
    ckpt = tmp_path / "mrcnn.pt"
    save_model(ckpt, "maskrcnn_resnet50_fpn", card={"class_names": ["__background__", "pet"]})
    model = load_model(name="maskrcnn_resnet50_fpn", task="instance", checkpoint=ckpt, card=ModelCard(), n_outputs=2, trust=False,
                       resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, score_threshold=0.05)
    assert (model.transform.min_size, model.transform.max_size) == ((800,), 1333)
    seen: list[tuple[int, ...]] = []
    real_build = infer_engine.build_model

    def recording(*args: Any, **kw: Any) -> Any:
        built = real_build(*args, **kw)
        built.rpn._post_nms_top_n["testing"] = 20  # CPU time: the backbone is what this test is about
        built.roi_heads.detections_per_img = 5
        built.backbone.register_forward_pre_hook(lambda _m, a: seen.append(tuple(a[0].shape)))
        return built

    monkeypatch.setattr(infer_engine, "build_model", recording)
    ds = write_dataset(tmp_path / "ds", [("a.png", 60, 45)])
    kw: dict[str, Any] = dict(model="maskrcnn_resnet50_fpn", checkpoint=ckpt, dataset=ds, workers=0, score_threshold=0.5)
    run_inference(out=tmp_path / "default", **kw)
    run_inference(out=tmp_path / "native", resize="native", **kw)
    carded = tmp_path / "carded.pt"  # a model card may say it too
    save_model(carded, "maskrcnn_resnet50_fpn", card={"class_names": ["__background__", "pet"], "resize": "native"})
    run_inference(out=tmp_path / "carded", **{**kw, "checkpoint": carded})
    # 60x45 scaled to short side 800 is 1066x800, padded to a multiple of 32 (size_divisible) for the backbone.
    assert seen == [(1, 3, 800, 1088), (1, 3, 64, 64), (1, 3, 64, 64)]
    assert json.loads((tmp_path / "default" / "meta.json").read_text())["resize"] == {"min_size": 800, "max_size": 1333}
    assert json.loads((tmp_path / "native" / "meta.json").read_text())["resize"] == "native"


def test_segpipe_run_passes_size_buckets_to_inference(tmp_path: Path) -> None:
    from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset

    dataset = make_dataset(tmp_path / "pets", n_images=8)  # sizes 160x208 (2), 176x224 (3), 224x160 (2), 240x180
    make_checkpoint(tmp_path / "ckpts" / "a.pt", seed=0)
    args = ["run", "--dataset", str(dataset), "--format", "oxford-pet", "--model", "unet", "--checkpoints", str(tmp_path / "ckpts/*.pt"),
            "-o", str(tmp_path / "out"), "--shard-size", "8", "--device", "cpu", "--loader-workers", "0", "--no-html",
            "--batch-size", "8", "--size-bucket", "64"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    metas = [json.loads(p.read_text()) for p in (tmp_path / "out" / ".cache" / "infer").rglob("meta.json")]
    # 64-px buckets: 192x192 (2 images), 192x256 (3), 256x192 (3): 8 images in 3 passes (4 sizes and passes without).
    assert [(m["resize"], m["mean_batch_size"]) for m in metas] == [({"short_side": "native", "size_bucket": 64}, 2.667)]
    assert (tmp_path / "out" / "leaderboard.csv").is_file()

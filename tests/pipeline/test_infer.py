"""Inference engine: outputs against a plain torchvision forward pass, COCO loadRes, resume, OOM, bad images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import Normalize, ToTensor

from segpipe.converters.coco import CategoryRecord, ImageRecord, assemble_coco, mask_annotation, write_coco
from segpipe.core.dataset_layout import write_dataset_meta
from segpipe.core.images import read_image_size
from segpipe.inference import engine as infer_engine
from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD, InferenceError, UntrustedCheckpointWarning
from segpipe.inference.data import ImageEntry, Sample, batches_plan, class_mapping_compute, parse_class_names, read_dataset
from segpipe.inference.engine import run_inference, run_with_oom_backoff
from segpipe.inference.outputs import SemanticPrediction, component_results
from segpipe.inference.models import build_model
from segpipe.inference.unet import UNet

torch.set_num_threads(1)  # 2 cores shared by many: oversubscribed threads run 10x slower
REPO = Path(__file__).resolve().parents[2]


def _image(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy picture with a bright rectangle (the 'pet') and its mask."""
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 4: 3 * h // 4, w // 5: w // 2] = True
    img[mask] = (230, 160, 40)
    return img, mask


def write_dataset(root: Path, specs: Sequence[tuple[str, int, int]], *, corrupt: Sequence[str] = (), seed: int = 0) -> Path:
    """specs: (file name, width, height); names ending in _gray/_rgba are saved as such."""
    rng = np.random.default_rng(seed)
    imgs, sem = root / "img", root / "semantic"
    imgs.mkdir(parents=True)
    sem.mkdir()
    records = []
    for name, w, h in specs:
        img, mask = _image(rng, w, h)
        path = imgs / name
        if "_gray" in name:
            Image.fromarray(img[..., 0]).save(path)
        elif "_rgba" in name:
            Image.fromarray(np.dstack([img, np.full((h, w), 128, np.uint8)]), mode="RGBA").save(path)
        else:
            Image.fromarray(img).save(path)
        cv2.imwrite(str(sem / f"{Path(name).stem}.png"), mask.astype(np.uint8))
        records.append(ImageRecord(file_name=name, width=w, height=h, annotations=[mask_annotation(category="pet", mask=mask)]))
    for name in corrupt:
        (imgs / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        records.append(ImageRecord(file_name=name, width=20, height=20))
    write_coco(root / "instances.json", assemble_coco(images=records, categories=[CategoryRecord("pet")]))
    (sem / "classes.txt").write_text("background\npet\n")
    write_dataset_meta(root, format="coco", image_root=imgs, options={})
    return root


SPECS = [("a.png", 48, 40), ("b.png", 48, 40), ("c_gray.png", 40, 48), ("d_rgba.png", 48, 40), ("e.png", 36, 36)]


def save_model(path: Path, name: str, *, num_classes: int = 2, seed: int = 0, card: dict[str, Any] | None = None, **kw: Any) -> Any:
    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes, **kw)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}, path)
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card))
    return model


def reference_argmax(model: Any, path: Path, *, resize: int | None = None) -> np.ndarray:
    """The plain way: PIL -> ToTensor -> Normalize -> model -> argmax, one image, fp32, CPU."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w0, h0 = img.size
    if resize is not None:
        scale = resize / min(w0, h0)
        img = img.resize((int(w0 * scale), int(h0 * scale)) if w0 > h0 else (resize, int(h0 * scale)) if w0 < h0 else (resize, resize),
                         resample=Image.Resampling.BILINEAR)
    x = Normalize(IMAGENET_MEAN, IMAGENET_STD)(ToTensor()(img))[None]
    with torch.inference_mode():
        out = model(x)
        labels = (out["out"] if isinstance(out, dict) else out).argmax(1)
        if resize is not None:
            labels = torch.nn.functional.interpolate(labels[None].float(), size=(h0, w0), mode="nearest")[0].long()
    return labels[0].numpy().astype(np.uint8)


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds"), SPECS, corrupt=["zz_corrupt.png"])


@pytest.fixture(scope="module")
def lraspp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    path = tmp_path_factory.mktemp("ck") / "lraspp.pt"
    return path, save_model(path, "lraspp_mobilenet_v3_large")


@pytest.fixture(scope="module")
def base_run(dataset: Path, lraspp: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One engine run shared by the tests that only read its outputs (each run costs seconds here)."""
    out = tmp_path_factory.mktemp("base")
    summary = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=out, batch_size=3, workers=0)
    return out, summary


def test_semantic_pngs_equal_plain_torchvision_argmax(dataset: Path, lraspp: tuple[Path, Any], base_run: tuple[Path, Any]) -> None:
    ckpt, model = lraspp
    tmp_path, s = base_run
    assert (s.n_images, s.n_processed, s.n_skipped, s.task) == (6, 5, 1, "semantic")
    seen = set()
    for name, w, h in SPECS:
        png = read_png(tmp_path / "semantic" / f"{Path(name).stem}.png")
        ref = reference_argmax(model, dataset / "img" / name)
        assert png.shape == (h, w) and png.dtype == np.uint8
        np.testing.assert_array_equal(png, ref, err_msg=name)
        seen |= set(np.unique(png).tolist())
    assert seen <= {0, 1}
    report = (tmp_path / "inference_report.csv").read_text().splitlines()
    assert report[0] == "image_id,file_name,code,message"
    assert len(report) == 2 and "zz_corrupt.png,unreadable_image" in report[1]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["checkpoint_sha256"] == s.checkpoint_sha256 and meta["device"] == "cpu" and meta["images_per_second"] > 0


def test_model_card_class_order_maps_onto_dataset(dataset: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "net.pt"
    model = save_model(ckpt, "unet", card={"class_names": ["pet", "background"], "unet": {"depth": 2, "width": 4}},
                       unet_depth=2, unet_width=4)
    run_inference(model="unet", checkpoint=ckpt, dataset=dataset, out=tmp_path / "p", workers=0, batch_size=2)
    for name, _, _ in SPECS:
        ref = reference_argmax(model, dataset / "img" / name)
        np.testing.assert_array_equal(read_png(tmp_path / "p" / "semantic" / f"{Path(name).stem}.png"), 1 - ref)


def test_resize_runs_small_and_writes_native_size(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    ckpt, model = lraspp
    run_inference(model="lraspp_mobilenet_v3_large", checkpoint=ckpt, dataset=dataset, out=tmp_path, resize=24, workers=0)
    for name, w, h in SPECS:
        png = read_png(tmp_path / "semantic" / f"{Path(name).stem}.png")
        assert png.shape == (h, w)
        np.testing.assert_array_equal(png, reference_argmax(model, dataset / "img" / name, resize=24))


def test_unknown_class_name_fails_before_any_image(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InferenceError, match="'cat'"):
        run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=out, classes=["background", "cat"])
    assert not out.exists()
    with pytest.raises(InferenceError, match="num_classes"):
        run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=out, num_classes=3)
    with pytest.raises(InferenceError, match="must not be the dataset dir"):
        run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=dataset)
    assert (dataset / "semantic" / "a.png").is_file()


def test_results_json_loads_with_pycocotools_and_is_scored(dataset: Path, base_run: tuple[Path, Any]) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    tmp_path = base_run[0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results, "a 2-class model always predicts some pet or background component"
    gt = COCO(str(dataset / "instances.json"))
    dt = gt.loadRes(str(tmp_path / "results.json"))
    for res in results:
        img = gt.imgs[res["image_id"]]
        assert res["segmentation"]["size"] == [img["height"], img["width"]]
        mask = dt.annToMask(dt.anns[next(a["id"] for a in dt.dataset["annotations"] if a["segmentation"] == res["segmentation"])])
        png = read_png(tmp_path / "semantic" / f"{Path(img['file_name']).stem}.png")
        assert np.all(png[mask.astype(bool)] == 1)  # components come from the pet class of the PNG
    ev = COCOeval(gt, dt, "segm")
    ev.evaluate(), ev.accumulate()
    assert ev.eval["precision"].shape[0] == 10
    ev.summarize()
    # `segpipe evaluate instances` scores it, with pycocotools' AP
    from click.testing import CliRunner

    from segpipe.cli import main

    args = ["evaluate", "instances", "--gt", str(dataset / "instances.json"), "--pred", str(tmp_path / "results.json"),
            "-o", str(tmp_path / "eval")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv").set_index("metric")["value"]
    assert summary["AP"] == pytest.approx(ev.stats[0], abs=1e-12)


def test_maskrcnn_results_load_with_pycocotools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocotools.coco import COCO

    ds = write_dataset(tmp_path / "ds", [("a.png", 64, 48), ("b.png", 48, 64), ("c.png", 64, 40)])
    ckpt = tmp_path / "mrcnn.pt"
    save_model(ckpt, "maskrcnn_resnet50_fpn", card={"class_names": ["__background__", "pet"]})
    real_build = infer_engine.build_model

    def lighter(*args: Any, **kw: Any) -> Any:
        # Fewer proposals and detections: the box and mask heads dominate CPU time on 2 shared cores.
        model = real_build(*args, **kw)
        model.rpn._post_nms_top_n["testing"] = 50
        model.roi_heads.detections_per_img = 10
        return model

    monkeypatch.setattr(infer_engine, "build_model", lighter)
    s = run_inference(model="maskrcnn_resnet50_fpn", checkpoint=ckpt, dataset=ds, out=tmp_path / "p", workers=0,
                      batch_size=2, score_threshold=0.0, resize="native")
    assert (s.task, s.n_processed) == ("instance", 3)
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert results and not (tmp_path / "p" / "semantic").exists()
    gt = COCO(str(ds / "instances.json"))
    dt = gt.loadRes(results)
    for res in results:
        img = gt.imgs[res["image_id"]]
        assert res["category_id"] == 1 and len(res["bbox"]) == 4 and isinstance(res["segmentation"]["counts"], str)
        assert res["segmentation"]["size"] == [img["height"], img["width"]]
    assert [r["image_id"] for r in results] == sorted(r["image_id"] for r in results)
    assert len(dt.anns) == len(results)


def test_outputs_byte_identical_across_runs(dataset: Path, lraspp: tuple[Path, Any], base_run: tuple[Path, Any], tmp_path: Path) -> None:
    # Another batch size and a DataLoader worker process: same bytes.
    run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=tmp_path, batch_size=1, workers=1)
    outs = [base_run[0], tmp_path]
    for rel in ["results.json", "inference_report.csv", *[f"semantic/{Path(n).stem}.png" for n, _, _ in SPECS]]:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_image_ids_restrict_to_a_subset(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    s = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=tmp_path, image_ids=[2, 4], workers=0)
    assert (s.n_images, s.n_processed) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "semantic").glob("*.png")) == ["b.png", "d_rgba.png"]
    assert {r["image_id"] for r in json.loads((tmp_path / "results.json").read_text())} <= {2, 4}
    with pytest.raises(InferenceError, match="99"):
        run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=tmp_path, image_ids=[99])


def test_interrupted_run_resumes_from_last_finished_shard(dataset: Path, lraspp: tuple[Path, Any], base_run: tuple[Path, Any],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=tmp_path, batch_size=1, workers=0, shard_size=1)
    real_call = infer_engine.DevicePredictor.__call__
    calls: list[int] = []

    def killed_at_third_batch(self: Any, samples: list[Sample]) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_call(self, samples)

    monkeypatch.setattr(infer_engine.DevicePredictor, "__call__", killed_at_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_inference(**kw)
    # Plan order (by size): the 20x20 corrupt image, e (36x36), a, b, d (48x40), c; the third model call is b.
    shards = sorted(p.name for p in (tmp_path / ".shards").glob("0*.json"))
    assert shards == ["000000.json", "000001.json", "000002.json"]
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setattr(infer_engine.DevicePredictor, "__call__", real_call)
    s = run_inference(**kw)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["images_this_run"] == 3 and s.n_processed == 5 and s.n_skipped == 1
    assert s.n_resumed == 2  # e and a; the corrupt image's shard is retried, as every skipped image is
    for rel in ["results.json", "inference_report.csv", "semantic/a.png", "semantic/b.png"]:
        assert (base_run[0] / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    # Other settings: the old shards are not reused.
    run_inference(**{**kw, "score_threshold": 0.5})
    assert json.loads((tmp_path / "meta.json").read_text())["images_this_run"] == 5


def test_oom_halves_the_batch_and_retries() -> None:
    entries = [Sample(ImageEntry(i, f"{i}.png", Path(f"{i}.png"), 4, 4), None, None) for i in range(7)]
    sizes: list[int] = []
    emptied: list[int] = []

    def fake(chunk: list[Sample]) -> list[int]:
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return [s.entry.image_id for s in chunk]

    out, failed, limit = run_with_oom_backoff(fake, entries, limit=8, on_oom=lambda: emptied.append(1))
    assert out == list(range(7)) and failed == [] and limit == 2
    assert sizes == [7, 4, 2, 2, 2, 1] and len(emptied) == 2

    def always(chunk: list[Sample]) -> list[int]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    out, failed, limit = run_with_oom_backoff(always, entries[:2], limit=2)
    assert out == [] and limit == 1 and [f.code for f in failed] == ["out_of_memory"] * 2


def test_engine_survives_oom(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = infer_engine.DevicePredictor.semantic

    def oom_above_one(self: Any, samples: list[Sample]) -> Any:
        if len(samples) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, samples)

    monkeypatch.setattr(infer_engine.DevicePredictor, "semantic", oom_above_one)
    s = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, out=tmp_path, batch_size=4, workers=0)
    assert s.batch_size == 1 and s.n_processed == 5
    ref = reference_argmax(lraspp[1], dataset / "img" / "a.png")
    np.testing.assert_array_equal(read_png(tmp_path / "semantic" / "a.png"), ref)


def test_exif_orientation_matches_converter_sizes(tmp_path: Path, lraspp: tuple[Path, Any]) -> None:
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    raw = np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8)  # stored 50x30
    exif = Image.Exif()
    exif[274] = 6  # rotate 90: displayed 30x50
    Image.fromarray(raw).save(root / "img" / "r.jpg", exif=exif.tobytes())
    w, h = read_image_size(root / "img" / "r.jpg")
    assert (w, h) == (30, 50)
    write_coco(root / "instances.json", assemble_coco(images=[ImageRecord("r.jpg", w, h)], categories=[CategoryRecord("pet")]))
    write_dataset_meta(root, format="coco", image_root=root / "img", options={})
    s = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=root, out=tmp_path / "p", workers=0)
    assert s.n_skipped == 0
    png = read_png(tmp_path / "p" / "semantic" / "r.png")
    np.testing.assert_array_equal(png, reference_argmax(lraspp[1], root / "img" / "r.jpg"))


def test_size_mismatch_is_a_row(tmp_path: Path, lraspp: tuple[Path, Any]) -> None:
    root = write_dataset(tmp_path / "ds", [("a.png", 30, 20)])
    coco = json.loads((root / "instances.json").read_text())
    coco["images"][0]["width"] = 31
    write_coco(root / "instances.json", coco)
    s = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=root, out=tmp_path / "p", workers=0)
    assert (s.n_processed, s.n_skipped) == (0, 1)
    assert "image is 30x20 but instances.json says 31x20" in (tmp_path / "p" / "inference_report.csv").read_text()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated in torch 2.15, still supported
def test_torchscript_model(dataset: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = UNet(num_classes=2, depth=2, base_width=4).eval()
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    (tmp_path / "net.toml").write_text('task = "semantic"\nclass_names = ["background", "pet"]\n')
    with pytest.raises(InferenceError, match="TorchScript file is a program.*--trust-checkpoint"):
        run_inference(model="torchscript", checkpoint=path, dataset=dataset, out=tmp_path / "p", workers=0)
    assert not (tmp_path / "p" / "semantic").exists()
    with pytest.warns(UntrustedCheckpointWarning, match="TORCHSCRIPT"):
        run_inference(model="torchscript", checkpoint=path, dataset=dataset, out=tmp_path / "p", workers=0,
                      trust_checkpoint=True)
    np.testing.assert_array_equal(read_png(tmp_path / "p" / "semantic" / "a.png"), reference_argmax(net, dataset / "img" / "a.png"))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_is_not_loaded_without_trust(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`torch.jit.load` runs the archive's code: without --trust-checkpoint it is never called, and the CLI says why."""
    from click.testing import CliRunner

    from segpipe.cli import main

    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(path))
    loads: list[str] = []
    monkeypatch.setattr(torch.jit, "load", lambda f, *a, **k: loads.append(str(f)))
    args = ["infer", "--model", "torchscript", "--checkpoint", str(path), "--dataset", str(dataset),
            "-o", str(tmp_path / "p"), "--workers", "0", "--device", "cpu"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 1, done.output
    assert f"{path}: refused: a TorchScript file is a program" in done.output
    assert loads == []
    assert not (tmp_path / "p" / "results.json").exists()
    helptext = " ".join(CliRunner().invoke(main, ["infer", "--help"]).output.split())
    assert "TorchScript files too" in helptext


def test_batches_plan_groups_equal_sizes_and_aspect_ratios() -> None:
    sizes = [(40, 30), (30, 40), (40, 30), (80, 60), (40, 30), (30, 40)]
    entries = [ImageEntry(i + 1, f"{i}.png", Path(f"{i}.png"), w, h) for i, (w, h) in enumerate(sizes)]
    sem = batches_plan(images=entries, task="semantic", batch_size=2, short_side=None)
    assert [[e.image_id for e in b] for b in sem] == [[1, 3], [5], [2, 6], [4]]
    assert all(len({(e.width, e.height) for e in b}) == 1 for b in sem)
    # --resize 30: 40x30 and 80x60 both become 40x30 and may share a batch.
    sem = batches_plan(images=entries, task="semantic", batch_size=4, short_side=30)
    assert [[e.image_id for e in b] for b in sem] == [[1, 3, 4, 5], [2, 6]]
    inst = batches_plan(images=entries, task="instance", batch_size=4, short_side=None)
    assert [[e.image_id for e in b] for b in inst] == [[2, 6], [1, 3, 4, 5]]  # portraits never batch with landscapes


def test_class_mapping(dataset: Path) -> None:
    info = read_dataset(dataset)
    m = class_mapping_compute(task="semantic", names=None, num_classes=None, dataset=info, source="x")
    assert (m.output_names, m.targets, m.component_categories) == (("background", "pet"), (0, 1), (None, 1))
    m = class_mapping_compute(task="instance", names=["background", "pet"], num_classes=2, dataset=info, source="x")
    assert m.targets == (0, 1)
    # A model class the dataset lacks is dropped and counted; only a model with no class in the dataset is refused.
    m = class_mapping_compute(task="instance", names=["pet", "dog"], num_classes=None, dataset=info, source="card.json")
    assert (m.targets, m.kept, m.dropped) == ((0, 1, 0), (False, True, False), ("dog",))
    with pytest.raises(InferenceError, match="card.json: classes: no model class maps.*'dog'"):
        class_mapping_compute(task="instance", names=["cat", "dog"], num_classes=None, dataset=info, source="card.json")
    assert parse_class_names("background, pet") == ("background", "pet")


def test_component_results_score_is_mean_probability() -> None:
    labels = np.zeros((10, 12), np.uint8)
    labels[1:4, 1:4] = 1
    labels[6:9, 7:11] = 1
    conf = np.full((10, 12), 0.5, np.float16)
    conf[6:9, 7:11] = 0.75
    conf[1, 1] = 1.0
    pred = SemanticPrediction(ImageEntry(7, "x.png", Path("x.png"), 12, 10), labels, conf)
    res = component_results(pred, categories={1: 5}, score_threshold=0.05)
    assert [r["score"] for r in res] == [0.75, round((8 * 0.5 + 1.0) / 9, 6)]
    assert res[0]["bbox"] == [7.0, 6.0, 4.0, 3.0] and res[1]["bbox"] == [1.0, 1.0, 3.0, 3.0]
    assert all(r["category_id"] == 5 and r["image_id"] == 7 for r in res)
    assert component_results(pred, categories={1: 5}, score_threshold=0.8) == []


def test_cli_infer_and_exit_code(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segpipe.cli import main

    args = ["infer", "--model", "lraspp_mobilenet_v3_large", "--checkpoint", str(lraspp[0]), "--dataset", str(dataset),
            "-o", str(tmp_path / "p"), "--workers", "0", "--batch-size", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output  # the corrupt image was skipped
    assert "5/6 images" in result.output and "1 skipped" in result.output
    result = CliRunner().invoke(main, [*args[:-4], "-o", str(tmp_path / "q"), "--classes", "background,cat"])
    assert result.exit_code == 1 and "'cat'" in result.output


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, segpipe.cli.infer; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.gpu
def test_cuda_matches_cpu(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    kw = dict(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=dataset, batch_size=4, workers=1)
    run_inference(out=tmp_path / "cpu", device="cpu", **kw)
    for precision in ("fp32", "bf16", "fp16"):
        s = run_inference(out=tmp_path / precision, device="cuda", precision=precision, **kw)
        assert s.device.startswith("cuda") and s.n_processed == 5
        agree = np.mean([np.mean(read_png(tmp_path / precision / "semantic" / f"{Path(n).stem}.png")
                                 == read_png(tmp_path / "cpu" / "semantic" / f"{Path(n).stem}.png")) for n, _, _ in SPECS])
        assert agree > (0.999 if precision == "fp32" else 0.95), precision


# --- End to end on the embedded sample (segpipe.demo.sample + segpipe.converters.oxford_pet) ---------------------------

def _confusion(gt_dir: Path, pred_dir: Path, *, n: int) -> np.ndarray:
    """Plain numpy confusion matrix (rows = GT) over all GT label maps, 255 ignored."""
    total = np.zeros((n, n), np.int64)
    for gt_path in sorted(gt_dir.glob("*.png")):
        gt = read_png(gt_path).astype(np.int64)
        pred = read_png(pred_dir / gt_path.name).astype(np.int64)
        keep = gt != 255
        total += np.bincount(gt[keep] * n + pred[keep], minlength=n * n).reshape(n, n)
    return total


def _miou(conf: np.ndarray) -> float:
    tp = np.diag(conf).astype(float)
    return float(np.mean(tp / (conf.sum(0) + conf.sum(1) - tp)))


def _train_tiny_unet(ds: Path, *, steps: int, seed: int) -> UNet:
    """A few dozen Adam steps on random 64x64 crops of the converted sample (seconds on a CPU)."""
    from segpipe.inference.data import decode_image

    info = read_dataset(ds)
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    xs = [norm(ToTensor()(decode_image(e.path))) for e in info.images]
    ys = [torch.from_numpy(read_png(ds / "semantic" / f"{Path(e.file_name).stem}.png").astype(np.int64)) for e in info.images]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = UNet(num_classes=2, depth=2, base_width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        bx, by = [], []
        for _ in range(4):
            k = int(torch.randint(len(xs), (1,), generator=gen))
            h, w = ys[k].shape
            y0, x0 = int(torch.randint(h - 63, (1,), generator=gen)), int(torch.randint(w - 63, (1,), generator=gen))
            bx.append(xs[k][:, y0:y0 + 64, x0:x0 + 64])
            by.append(ys[k][y0:y0 + 64, x0:x0 + 64])
        loss = torch.nn.functional.cross_entropy(net(torch.stack(bx)), torch.stack(by), ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def pet_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segpipe.converters.oxford_pet import convert_oxford_pet
    from segpipe.demo.sample import generate_sample

    root = tmp_path_factory.mktemp("pet")
    generate_sample(root / "raw", n_images=8, seed=0)
    report = convert_oxford_pet(root / "raw", root / "ds", categories="pet", workers=1)
    assert not report.has_errors
    return root / "ds"


def test_trained_unet_beats_random_on_the_sample(pet_dataset: Path, tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    card = {"class_names": ["background", "pet"], "unet": {"depth": 2, "width": 8}}
    scores = {}
    for label, net in (("random", UNet(num_classes=2, depth=2, base_width=8).eval()),
                       ("trained", _train_tiny_unet(pet_dataset, steps=10, seed=0))):
        ckpt = tmp_path / f"{label}.pt"
        torch.save({"state_dict": net.state_dict()}, ckpt)
        ckpt.with_suffix(".json").write_text(json.dumps(card))
        out = tmp_path / label
        s = run_inference(model="unet", checkpoint=ckpt, dataset=pet_dataset, out=out, workers=0, batch_size=4)
        assert s.n_processed == 8
        conf = _confusion(pet_dataset / "semantic", out / "semantic", n=2)
        results = json.loads((out / "results.json").read_text())
        mask_ap = 0.0  # pycocotools' loadRes cannot take an empty list: no detections score 0
        if results:
            gt = COCO(str(pet_dataset / "instances.json"))
            ev = COCOeval(gt, gt.loadRes(results), "segm")
            ev.evaluate(), ev.accumulate(), ev.summarize()
            mask_ap = float(ev.stats[0])
        scores[label] = (_miou(conf), mask_ap)
        from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs

        report = evaluate_semantic_dirs(pet_dataset / "semantic", out / "semantic", class_names=["background", "pet"], workers=1)
        assert report.metric("mIoU") == pytest.approx(_miou(conf))
    print("mIoU, mask AP:", scores)
    assert scores["trained"][0] > scores["random"][0] + 0.15
    assert scores["trained"][0] > 0.6
    assert scores["trained"][1] > scores["random"][1]


def test_engine_refuses_a_pickled_code_checkpoint(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    from tests.pipeline.test_checkpoints import _Payload

    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"model": lraspp[1].state_dict(), "hook": _Payload(marker)}, evil)
    with pytest.raises(InferenceError, match="--trust-checkpoint"):
        run_inference(model="lraspp_mobilenet_v3_large", checkpoint=evil, dataset=dataset, out=tmp_path / "p")
    assert not marker.exists() and not (tmp_path / "p").exists()


def test_cli_trust_checkpoint_warns_loudly(dataset: Path, lraspp: tuple[Path, Any], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segpipe.cli import main
    from tests.pipeline.test_checkpoints import _Payload

    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"model": lraspp[1].state_dict(), "hook": _Payload(marker)}, evil)
    args = ["infer", "--model", "lraspp_mobilenet_v3_large", "--checkpoint", str(evil), "--dataset", str(dataset),
            "-o", str(tmp_path / "p"), "--workers", "0", "--trust-checkpoint"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert "WARNING: LOADING" in result.output and "FULL UNPICKLING" in result.output and marker.exists()


def test_file_name_outside_image_root_is_a_skipped_row(tmp_path: Path, lraspp: tuple[Path, Any]) -> None:
    root = write_dataset(tmp_path / "ds", [("a.png", 30, 20)])
    for name in ("secret.png", "other.png"):  # readable, right size: only the path check stops them
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / name)
    coco = json.loads((root / "instances.json").read_text())
    coco["images"] += [{**coco["images"][0], "id": 2, "file_name": "../../secret.png"},
                       {**coco["images"][0], "id": 3, "file_name": str(tmp_path / "other.png")}]
    write_coco(root / "instances.json", coco)
    s = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=root, out=tmp_path / "p", workers=0)
    assert (s.n_processed, s.n_skipped) == (1, 2)
    report = (tmp_path / "p" / "inference_report.csv").read_text()
    assert report.count("image_outside_root") == 2 and "../../secret.png" in report
    assert not (tmp_path / "p" / "semantic" / "secret.png").exists()


def test_symlinked_images_are_inferred(tmp_path: Path, lraspp: tuple[Path, Any]) -> None:
    """A symlink farm (each image a link into a store elsewhere) is read like plain files: only a file_name that
    climbs out of the root (`..`, absolute) is refused."""
    root = write_dataset(tmp_path / "ds", [("a.png", 30, 20), ("b.png", 30, 20)])
    store = tmp_path / "store"
    store.mkdir()
    image_root = Path(json.loads((root / "dataset.json").read_text())["image_root"])
    for name in ("a.png", "b.png"):
        (image_root / name).rename(store / name)
        os.symlink(store / name, image_root / name)
    s = run_inference(model="lraspp_mobilenet_v3_large", checkpoint=lraspp[0], dataset=root, out=tmp_path / "p", workers=0)
    assert (s.n_processed, s.n_skipped) == (2, 0)
    assert "image_outside_root" not in (tmp_path / "p" / "inference_report.csv").read_text()


def test_rerun_retries_skipped_images_and_says_resumed_only_when_it_resumed(tmp_path: Path, lraspp: tuple[Path, Any]) -> None:
    from click.testing import CliRunner

    from segpipe.cli import main

    root = write_dataset(tmp_path / "ds", [("a.png", 30, 20)], corrupt=["bad.png"])
    args = ["infer", "--model", "lraspp_mobilenet_v3_large", "--checkpoint", str(lraspp[0]), "--dataset", str(root),
            "-o", str(tmp_path / "p"), "--device", "cpu", "--workers", "0", "--num-classes", "2", "--classes", "background,pet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 3 and "1/2 images" in first.output and "resumed" not in first.output, first.output
    # The broken image is fixed in place: the same command now predicts it, without deleting OUT.
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "img" / "bad.png")
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "2/2 images" in second.output and "0 skipped" in second.output, second.output
    assert (tmp_path / "p" / "semantic" / "bad.png").is_file()
    assert "resumed" not in second.output  # one shard, redone: nothing came from the first run

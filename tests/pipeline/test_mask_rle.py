"""The crop RLE encoder and the parallel output stage give exactly pycocotools' single-threaded full-mask RLE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from segpipe.inference import engine as infer_engine
from segpipe.inference.data import ImageEntry
from segpipe.inference.engine import run_inference
from segpipe.inference.mask_rle import MaskCrop, compress_counts, crop_counts, crops_from_cpu_probabilities, crops_from_masks, encode_crop
from segpipe.inference.outputs import SemanticPrediction, component_results
from tests.pipeline.test_infer import save_model, write_dataset

torch.set_num_threads(1)  # 2 cores shared by many


def pycocotools_counts(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def test_crop_rle_equals_pycocotools_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = np.zeros((h, w), np.uint8)
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1, x1 = int(rng.integers(y0, h + 1)), int(rng.integers(x0, w + 1))
        if rng.random() < 0.3:  # full-height crops: runs that wrap from one column into the next
            y0, y1 = 0, h
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.random()
        crop = MaskCrop(top=y0, left=x0, pixels=mask[y0:y1, x0:x1])
        for full_mask_below in (0, None):  # the numpy run scan, and the small-image path through pycocotools
            got = encode_crop(crop, height=h, width=w, full_mask_below=full_mask_below)
            assert got == {"size": [h, w], "counts": pycocotools_counts(mask)}, (h, w, y0, y1, x0, x1, full_mask_below)


@pytest.mark.parametrize("fill", ["empty", "full", "last_pixel", "first_pixel", "big_runs"])
def test_crop_rle_edge_cases(fill: str) -> None:
    h, w = (3000, 2500) if fill == "big_runs" else (7, 5)  # runs > 2**20 need 5+ characters
    mask = np.zeros((h, w), np.uint8)
    if fill == "full":
        mask[:] = 1
    elif fill == "last_pixel":
        mask[-1, -1] = 1
    elif fill == "first_pixel":
        mask[0, 0] = 1
    elif fill == "big_runs":
        mask[10:2990, 3:2000] = 1
        mask[5, 2400] = 1
    ys, xs = np.nonzero(mask)
    crop = MaskCrop(0, 0, mask[:0, :0]) if ys.size == 0 else MaskCrop(
        int(ys.min()), int(xs.min()), mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    for full_mask_below in (0, None):
        assert encode_crop(crop, height=h, width=w, full_mask_below=full_mask_below)["counts"] == pycocotools_counts(mask)
        # A loose crop (not tight) describes the same mask.
        assert encode_crop(MaskCrop(0, 0, mask), height=h, width=w, full_mask_below=full_mask_below)["counts"] == pycocotools_counts(mask)


def test_compressed_counts_decode_back() -> None:
    counts = np.array([0, 1, 31, 32, 33, 1 << 20, 5, (1 << 20) - 7, 2], dtype=np.int64)
    rle = {"size": [int(counts.sum()), 1], "counts": compress_counts(counts)}
    decoded = mask_utils.decode(rle)[:, 0]
    expected = np.repeat(np.arange(counts.size) % 2, counts).astype(np.uint8)
    assert np.array_equal(decoded, expected)


def test_crop_outside_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_counts(MaskCrop(3, 0, np.ones((2, 2), np.uint8)), height=4, width=4)
    with pytest.raises(ValueError, match="outside"):
        encode_crop(MaskCrop(3, 0, np.ones((2, 2), np.uint8)), height=4, width=4)


def test_crops_from_torch_masks_encode_like_full_masks() -> None:
    gen = torch.Generator().manual_seed(3)
    masks = torch.zeros(4, 30, 20, dtype=torch.bool)
    masks[0, 5:9, 2:7] = torch.rand(4, 5, generator=gen) > 0.3
    masks[1, :, 19] = True  # full height, last column
    masks[3] = torch.rand(30, 20, generator=gen) > 0.5  # mask 2 stays empty
    crops = crops_from_masks(masks)
    assert crops[2].pixels.size == 0
    for m, c in zip(masks.numpy(), crops):
        assert encode_crop(c, height=30, width=20, full_mask_below=0)["counts"] == pycocotools_counts(m)
    assert crops_from_masks(masks[:0]) == []


def test_cpu_crops_equal_the_device_route() -> None:
    """The CPU route (numpy on the float masks, `keep` applied inside) cuts the very crops of the torch route."""
    gen = torch.Generator().manual_seed(4)
    probs = torch.rand(6, 1, 30, 20, generator=gen) * 0.6  # mostly below the threshold
    probs[0, 0, 5:9, 2:7] += 0.5
    probs[1, 0, :, 19] = 0.9  # full height, last column
    probs[2] = 0.2  # empty
    probs[3, 0, 0, 0] = 0.5  # exactly the threshold: not in the mask (strict >, as the torch route)
    probs[4, 0, 29, 0] = 0.51
    for keep in (torch.ones(6, dtype=torch.bool), torch.tensor([True, False, True, True, False, True]), torch.zeros(6, dtype=torch.bool)):
        want = crops_from_masks(probs[keep][:, 0] > 0.5)
        got = crops_from_cpu_probabilities(probs[:, 0].numpy(), keep.numpy(), threshold=0.5)
        assert [(c.top, c.left, c.pixels.shape) for c in got] == [(c.top, c.left, c.pixels.shape) for c in want]
        for g, w in zip(got, want):
            assert g.pixels.dtype == np.uint8 and np.array_equal(g.pixels, w.pixels)


def test_component_rle_equals_full_mask_rle() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random((40, 50)) < 0.15).astype(np.uint8) * 2
    labels[10:30, 5:25] = 1
    conf = np.full(labels.shape, 0.9, np.float16)
    pred = SemanticPrediction(ImageEntry(3, "x.png", Path("x.png"), 50, 40), labels, conf)
    results = component_results(pred, categories={1: 1, 2: 2}, score_threshold=0.0)
    assert len(results) > 5
    for r in results:
        n, cc = cv2.connectedComponents((labels == r["category_id"]).astype(np.uint8), connectivity=8)
        assert r["segmentation"]["counts"] in {pycocotools_counts(cc == k) for k in range(1, n)}


@pytest.fixture(scope="module")
def maskrcnn_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    root = tmp_path_factory.mktemp("mr")
    ds = write_dataset(root / "ds", [("a.png", 64, 48), ("b.png", 48, 64), ("c.png", 64, 40), ("d.png", 40, 40)])
    ckpt = root / "mrcnn.pt"
    model = save_model(ckpt, "maskrcnn_resnet50_fpn", card={"class_names": ["__background__", "pet"]})
    return ds, ckpt, model


def _lighter(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fewer proposals and detections (CPU time); records every model the engine builds."""
    real_build, built = infer_engine.build_model, []

    def lighter(*args: Any, **kw: Any) -> Any:
        model = real_build(*args, **kw)
        model.rpn._post_nms_top_n["testing"] = 50
        model.roi_heads.detections_per_img = 10
        built.append(model)
        return model

    monkeypatch.setattr(infer_engine, "build_model", lighter)
    return built


def test_parallel_output_stage_equals_single_thread_pycocotools(maskrcnn_setup: tuple[Path, Path, Any], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ds, ckpt, _ = maskrcnn_setup
    built = _lighter(monkeypatch)
    kw = dict(model="maskrcnn_resnet50_fpn", checkpoint=ckpt, dataset=ds, workers=0, batch_size=1, score_threshold=0.0,
              shard_size=2, resize="native")
    monkeypatch.setattr(infer_engine, "ENCODER_THREADS", 1)
    run_inference(out=tmp_path / "one", **kw)
    monkeypatch.setattr(infer_engine, "ENCODER_THREADS", 3)
    run_inference(out=tmp_path / "three", **kw)
    one = (tmp_path / "one" / "results.json").read_bytes()
    assert one == (tmp_path / "three" / "results.json").read_bytes()

    # The reference: the same model's full-size masks, thresholded at 0.5, through pycocotools, one at a time.
    from segpipe.inference.data import decode_image

    model = built[0].eval()
    results = json.loads(one)
    coco = json.loads((ds / "instances.json").read_text())
    expected = []
    for im in coco["images"]:
        x = torch.from_numpy(np.array(decode_image(ds / "img" / im["file_name"]))).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            out = model([x])[0]
        for score, mask in zip(out["scores"], out["masks"][:, 0]):
            expected.append((im["id"], round(float(score), 6), pycocotools_counts((mask > 0.5).numpy())))
    got = [(r["image_id"], r["score"], r["segmentation"]["counts"]) for r in results]
    assert len(got) > 10 and sorted(got) == sorted(expected)


def test_model_and_loader_built_once_per_task(maskrcnn_setup: tuple[Path, Path, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ds, ckpt, _ = maskrcnn_setup
    built = _lighter(monkeypatch)
    loaders: list[Any] = []
    real_loader = torch.utils.data.DataLoader

    class CountingLoader(real_loader):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            loaders.append(1)
            super().__init__(*args, **kw)

    monkeypatch.setattr(torch.utils.data, "DataLoader", CountingLoader)
    s = run_inference(model="maskrcnn_resnet50_fpn", checkpoint=ckpt, dataset=ds, out=tmp_path / "p", workers=0, batch_size=1,
                      score_threshold=0.5, shard_size=1, resize="native")  # 4 shards of 1 image in one task
    assert s.n_processed == 4 and len(list((tmp_path / "p" / ".shards").glob("0*.json"))) == 4
    assert len(built) == 1 and len(loaders) == 1

"""Speed settings: loader workers from the CPU affinity, cuDNN autotuning only for few input sizes, an opt-in
torch.compile of the backbone, and each inference bound to its own GPU."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from segpipe.inference import predictor as infer_predictor
from segpipe.inference import speed
from segpipe.inference.checkpoints import InferenceError
from segpipe.inference.engine import run_inference
from tests.pipeline.test_infer import save_model, write_dataset

torch.set_num_threads(1)  # 2 cores shared by many


def test_loader_workers_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host: not what a taskset/cgroup lets this process use
    assert speed.usable_cores() == 3 and speed.default_loader_workers("cuda") == 2
    assert speed.default_loader_workers("cpu") == 0  # the model's threads use every core; decoding waits its turn
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert speed.default_loader_workers("cuda") == 0  # one core: decoding in the main process, no worker to fork


def test_cudnn_autotuning_only_on_cuda_with_few_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert speed.few_input_shapes([(64, 48)] * 100) and not speed.few_input_shapes([(64, 48 + k) for k in range(9)])
    assert not speed.few_input_shapes([])
    assert speed.set_cudnn_benchmark(torch.device("cpu"), fixed_sizes=True) is False and torch.backends.cudnn.benchmark is False
    # A torch.device object for CUDA opens no context: the flag alone is set.
    assert speed.set_cudnn_benchmark(torch.device("cuda", 1), fixed_sizes=True) is True and torch.backends.cudnn.benchmark is True
    assert speed.set_cudnn_benchmark(torch.device("cuda", 1), fixed_sizes=False) is False and torch.backends.cudnn.benchmark is False


def test_each_inference_makes_its_gpu_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it, the pin-memory thread and empty_cache() open a context on GPU 0 in every worker process."""
    calls: list[Any] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    infer_predictor.bind_device(torch.device("cpu"))
    infer_predictor.bind_device(torch.device("cuda", 1))
    assert calls == [torch.device("cuda", 1)]


def test_compile_wraps_the_backbone_and_changes_no_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile's default (inductor) backend generates and builds C++ on the CPU: 45 s for a tiny U-Net on 2
    busy cores. Here dynamo traces the real backbone and runs it with the eager backend, which proves the
    wiring; the README gives the inductor figure."""
    ds = write_dataset(tmp_path / "ds", [("a.png", 40, 32), ("b.png", 40, 32), ("c.png", 36, 36)])
    ckpt = tmp_path / "lraspp.pt"
    save_model(ckpt, "lraspp_mobilenet_v3_large")
    compiled: list[str] = []
    real = torch.compile

    def eager_compile(module: Any, **kw: Any) -> Any:
        compiled.append(type(module).__name__)
        return real(module, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    kw: dict[str, Any] = dict(model="lraspp_mobilenet_v3_large", checkpoint=ckpt, dataset=ds, workers=0, batch_size=2)
    run_inference(out=tmp_path / "plain", **kw)
    run_inference(out=tmp_path / "compiled", compile=True, **kw)
    assert compiled == ["IntermediateLayerGetter"]  # the backbone only, not the head
    for name in ("a", "b", "c"):
        assert (tmp_path / "compiled" / "semantic" / f"{name}.png").read_bytes() == (tmp_path / "plain" / "semantic" / f"{name}.png").read_bytes()
    meta = json.loads((tmp_path / "compiled" / "meta.json").read_text())
    assert meta["compile"] is True and "compile" not in json.loads((tmp_path / "plain" / "meta.json").read_text())
    assert meta["cudnn_benchmark"] is False  # CPU


def test_compile_refuses_torchscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = write_dataset(tmp_path / "ds", [("a.png", 40, 32)])
    model = save_model(tmp_path / "unet.pt", "unet", unet_depth=2, unet_width=4)
    path = tmp_path / "unet.ts"
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 32, 32)), str(path))  # type: ignore[no-untyped-call]
    path.with_suffix(".json").write_text(json.dumps({"task": "semantic", "class_names": ["background", "pet"]}))
    with pytest.raises(InferenceError, match="TorchScript model cannot be compiled") as err:
        run_inference(model="torchscript", checkpoint=path, dataset=ds, out=tmp_path / "p", workers=0, trust_checkpoint=True, compile=True)
    assert err.value.field == "compile"


def test_the_run_process_itself_never_touches_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`segpipe run --devices`: building the graph, requires() and complete() in the scheduling process call
    nothing of torch.cuda (a CUDA context there would be inherited broken by every forked worker)."""
    from segpipe.runner.driver import run_pipeline
    from segpipe.tasks import evaluate
    from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, settings_for

    touched: list[str] = []
    for name in ("is_available", "device_count", "set_device", "init", "_lazy_init", "current_device"):
        real = getattr(torch.cuda, name)
        monkeypatch.setattr(torch.cuda, name, functools.partial(lambda n, r, *a, **k: (touched.append(n), r(*a, **k))[1], name, real))
    real_session = evaluate.open_session
    monkeypatch.setattr(evaluate, "open_session",  # tasks run in forked workers; on this CPU host, on the CPU
                        lambda **kw: real_session(**{**kw, "options": {**kw["options"], "device": "cpu"}}))
    monkeypatch.setattr("segpipe.runner.driver.cuda_device_count", lambda: 2)  # the two GPUs this host pretends to have
    dataset = make_dataset(tmp_path / "pets", n_images=4)
    make_checkpoint(tmp_path / "ckpts" / "a.pt", seed=0)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=2, devices=(0, 1),
                            infer={"device": "cuda", "loader_workers": 0})
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    assert [t for t in outcome.groups if t.startswith("EvalGroup_")]  # inference ran (in the workers)
    assert touched == []


def test_maskrcnn_on_the_cpu_runs_one_image_per_call_with_the_tutorials_detections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU a batched Mask R-CNN call was slower than one call per image (benchmarks/infer.py), and padding
    to a batch-mate's size changed the detections; each image now gets exactly the tutorial's one-image call."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    from segpipe.inference import engine as infer_engine
    from tests.pipeline.test_infer import write_dataset as write_ds

    ds = write_ds(tmp_path / "ds", [("a.png", 64, 48), ("b.png", 64, 48), ("c.png", 48, 64), ("d.png", 64, 40)])
    ckpt = tmp_path / "mrcnn.pt"
    save_model(ckpt, "maskrcnn_resnet50_fpn", card={"class_names": ["__background__", "pet"]})
    real_build = infer_engine.build_model
    calls: list[int] = []
    built: list[Any] = []

    def counted(*args: Any, **kw: Any) -> Any:
        model = real_build(*args, **kw)
        model.rpn._post_nms_top_n["testing"] = 50  # the box and mask heads dominate CPU time on 2 shared cores
        model.roi_heads.detections_per_img = 10
        real_forward = model.forward
        model.forward = lambda images, *a, **k: (calls.append(len(images)), real_forward(images, *a, **k))[1]
        built.append(model)
        return model

    monkeypatch.setattr(infer_engine, "build_model", counted)
    run_inference(model="maskrcnn_resnet50_fpn", checkpoint=ckpt, dataset=ds, out=tmp_path / "p", workers=0,
                  batch_size=4, score_threshold=0.0, resize="native", device="cpu")
    assert calls == [1, 1, 1, 1]
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["mean_batch_size"] == 1.0 and meta["planned_mean_batch"] > 1  # batches planned, one call per image
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    names = {im["id"]: im["file_name"] for im in json.loads((ds / "instances.json").read_text())["images"]}
    model = built[0]
    for image_id, name in sorted(names.items()):
        with torch.inference_mode():  # the tutorial: ToTensor, one image per call
            ref = model([TF.to_tensor(Image.open(ds / "img" / name).convert("RGB"))])[0]
        got = [r for r in results if r["image_id"] == image_id]
        assert got, name
        assert [r["score"] for r in got] == [round(float(s), 6) for s in ref["scores"]], name
        assert [r["bbox"] for r in got] == [[round(float(b[0]), 3), round(float(b[1]), 3), round(float(b[2] - b[0]), 3),
                                              round(float(b[3] - b[1]), 3)] for b in ref["boxes"]], name


def test_dense_models_run_channels_last_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faster on the CPU too (README "Speed", "Inference"); the labels stay the tutorial's (test_infer compares them)."""
    ds = write_dataset(tmp_path / "ds", [("a.png", 40, 32), ("b.png", 40, 32)])
    ckpt = tmp_path / "lraspp.pt"
    save_model(ckpt, "lraspp_mobilenet_v3_large")
    seen: list[bool] = []
    real_semantic = infer_predictor.DevicePredictor.semantic

    def spy(self: Any, samples: Any) -> Any:
        conv = next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last) and self.channels_last)
        return real_semantic(self, samples)

    monkeypatch.setattr(infer_predictor.DevicePredictor, "semantic", spy)
    run_inference(model="lraspp_mobilenet_v3_large", checkpoint=ckpt, dataset=ds, out=tmp_path / "p", workers=0, device="cpu")
    assert seen and all(seen)


def test_memory_format_benchmark_runs_and_reports_the_rounding(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/memory_format.py is where the README's channels_last figures come from: it must keep running."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_format.py"
    spec = importlib.util.spec_from_file_location("memory_format_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--models", "lraspp_mobilenet_v3_large", "--size", "64", "--batch-size", "1", "--repeats", "1"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("lraspp_mobilenet_v3_large") and "labels differing 0 of 4096" in line

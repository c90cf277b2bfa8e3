"""`--device cpu|cuda|cuda:N|auto` for infer and run alike, checked before any task; `run --devices 0,1`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.inference.devices import DeviceError, parse_device, parse_devices
from segpipe.runner.config import RunConfigError, parse_run_settings
from segpipe.plan.gpu_slots import gpu_slot
from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, settings_for

BASE = {"dataset": "d", "format": "oxford-pet", "model": "unet", "checkpoints": "c/*.pt", "out": "o"}


def test_device_names() -> None:
    assert [parse_device(d) for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:12")] == ["auto", "cpu", "cuda", "cuda:0", "cuda:12"]
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:01", "mps:0", "cuda:1,cuda:2"):
        with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
            parse_device(bad)
    assert parse_devices("0,1") == (0, 1) and parse_devices([2, 3]) == (2, 3)
    for bad in ("", "0,0", "a", "0,-1"):
        with pytest.raises(DeviceError):
            parse_devices(bad)


def test_infer_accepts_cuda_n_and_checks_it_before_loading_anything(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "unet.pt", seed=0)
    args = ["infer", "--model", "unet", "--checkpoint", str(ckpt), "--dataset", str(tmp_path), "-o", str(tmp_path / "p")]
    r = CliRunner().invoke(main, [*args, "--device", "gpu"])
    assert r.exit_code == 2 and "--device" in r.output and "auto, cpu, cuda or cuda:N" in r.output
    from segpipe.inference.engine import resolve_device

    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(Exception, match=f"cuda:{n} requested but torch sees {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_run_checks_devices_before_any_task() -> None:
    s = parse_run_settings(BASE, overrides={"infer": {"device": "cuda:1"}}, source="cmd")
    assert s.infer["device"] == "cuda:1" and s.devices == ()
    s = parse_run_settings({**BASE, "devices": [0, 1]}, overrides={}, source="run.toml")
    assert s.devices == (0, 1) and s.infer["device"] == "cuda"
    with pytest.raises(RunConfigError, match="run.toml: infer.device: 'gpu' is not a device"):
        parse_run_settings({**BASE, "infer": {"device": "gpu"}}, overrides={}, source="run.toml")
    with pytest.raises(RunConfigError, match="cmd: devices: .*cannot be combined with device 'cpu'"):
        parse_run_settings(BASE, overrides={"devices": "0,1", "infer": {"device": "cpu"}}, source="cmd")
    r = CliRunner().invoke(main, ["run", *sum((["--" + k, v] for k, v in BASE.items()), []), "--device", "cuda:x"])
    assert r.exit_code == 2 and "'cuda:x' is not a device" in r.output


def test_gpu_slots_are_exclusive_and_waiters_get_the_freed_one(tmp_path: Path) -> None:
    held: list[int] = []
    release = threading.Event()

    def hold() -> None:
        with gpu_slot(tmp_path, [0, 1], poll=0.01) as gpu:
            held.append(gpu)
            release.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(held) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(held) == [0, 1]
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(next(iter([_take(tmp_path)]))))
    waiter.start()
    time.sleep(0.1)
    assert got == []  # both GPUs busy: the third task waits
    release.set()
    waiter.join(10)
    assert got and got[0] in (0, 1)
    for t in threads:
        t.join(10)


def _take(cache: Path) -> int:
    with gpu_slot(cache, [0, 1], poll=0.01) as gpu:
        return gpu


def test_run_with_devices_gives_every_inference_task_a_gpu_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU-only host the shards record the GPU they were given, then run on the CPU. Two GPUs: two
    worker processes (forked by luigi, so the record is a file)."""
    from segpipe.runner.driver import run_pipeline
    from segpipe.tasks import evaluate

    real = evaluate.open_session  # called once per inference task (a group of shards): the model loads once
    log = tmp_path / "asked.txt"

    def record(**kw: Any) -> Any:
        with log.open("a") as f:
            f.write(kw["options"]["device"] + "\n")
        return real(**{**kw, "options": {**kw["options"], "device": "cpu"}})

    monkeypatch.setattr(evaluate, "open_session", record)
    monkeypatch.setattr("segpipe.runner.driver.cuda_device_count", lambda: 2)  # the two GPUs this host pretends to have
    dataset = make_dataset(tmp_path / "pets", n_images=6)
    make_checkpoint(tmp_path / "ckpts" / "a.pt", seed=0)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=2, devices=(0, 1),
                            infer={"device": "cuda", "loader_workers": 0})
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    asked = log.read_text().split()
    inference_tasks = [t for t in outcome.groups if t.startswith("EvalGroup_")]
    assert len(asked) == len(inference_tasks) >= 2 and set(asked) <= {"cuda:0", "cuda:1"}
    assert sorted(p.name.split("-gpu")[1] for p in (settings.cache / "gpu-slots").iterdir()) == ["0.lock", "1.lock"]


@pytest.mark.gpu
def test_run_on_the_gpus_of_this_host(tmp_path: Path) -> None:
    import torch

    from segpipe.runner.driver import run_pipeline

    dataset = make_dataset(tmp_path / "pets", n_images=6)
    make_checkpoint(tmp_path / "ckpts" / "a.pt", seed=0)
    gpus = tuple(range(torch.cuda.device_count()))
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=2, devices=gpus,
                            infer={"device": "cuda", "loader_workers": 0})
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    metas = [json.loads(p.read_text()) for p in (settings.cache / "infer").rglob("meta.json")]
    assert metas and {m["device"] for m in metas} <= {f"cuda:{g}" for g in gpus}


def test_option_errors_name_the_option_not_a_flag_and_the_cli_says_the_flag(tmp_path: Path) -> None:
    """Library errors about an option carry the option's name as their field; only the CLI speaks of flags."""
    from segpipe.inference.checkpoints import OPTIONS, InferenceError
    from segpipe.inference.predictor import resolve_device

    with pytest.raises(InferenceError) as info:
        resolve_device("cuda:99")
    assert (info.value.path, info.value.field) == (OPTIONS, "device")
    assert "--" not in info.value.path
    dataset = tmp_path / "ds"
    dataset.mkdir()
    (dataset / "instances.json").write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "pet"}]}')
    checkpoint = tmp_path / "m.pt"
    checkpoint.write_bytes(b"")
    result = CliRunner().invoke(main, ["infer", "--model", "unet", "--checkpoint", str(checkpoint), "--dataset", str(dataset),
                                       "-o", str(tmp_path / "out"), "--precision", "fp32", "--batch-size", "1", "--device", "cuda:99"])
    assert result.exit_code == 2, result.output
    assert "--device" in result.output and "cuda:99" in result.output

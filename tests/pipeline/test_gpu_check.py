"""benchmarks/gpu_check.py (`make gpu-check`) stays runnable: its CPU-side logic runs here on tiny data, and
without CUDA it fails clearly instead of measuring the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_dry_run_on_cpu_runs_every_step(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(CHECK), "--device", "cpu", "--tiny", "--no-install", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(k, v["status"]) for k, v in results["steps"].items()] == [(k, "ok") for k in ("env", "gpu_tests", "runs", "bench")]
    runs = results["steps"]["runs"]["data"]
    # Same device, another worker count: the comparison machinery must see identical predictions.
    assert runs["cpu_1_worker"]["pass"] and runs["cpu_1_worker"]["pixels_differing"] == 0 and runs["cpu_1_worker"]["label_maps"] == 6
    rows = {r["model"]: r for r in results["steps"]["bench"]["data"]["rows"]}
    assert set(rows) == {"lraspp_mobilenet_v3_large", "maskrcnn_resnet50_fpn"}
    for r in rows.values():
        assert r["tutorial_images_per_s"] > 0 and r["engine_fp32_images_per_s"] > 0 and r["ceiling_images_per_s"] > 0
    assert rows["maskrcnn_resnet50_fpn"]["output_images_per_s"] > 0  # the output stage's RLE was checked equal inside
    summary = (tmp_path / "summary.txt").read_text()
    assert "GPU CHECK SUMMARY" in summary and summary.rstrip().endswith("overall: PASS")
    assert proc.stdout.rstrip().endswith("overall: PASS")  # the table is printed last
    assert {p.name for p in tmp_path.iterdir()} == {"gpu_check.log", "results.json", "summary.txt"}  # few files back from $OUT


def test_fails_clearly_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(CHECK), "--no-install", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    log = (tmp_path / "gpu_check.log").read_text()
    assert "CUDA is not seen" in log
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"]["env"]["status"] == "FAILED"
    assert all(results["steps"][s]["status"] == "skipped" for s in ("gpu_tests", "runs", "bench"))
    assert proc.stdout.rstrip().endswith("overall: FAIL")

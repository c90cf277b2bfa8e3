"""An image that does not fit in memory is skipped with a row; the other images of the checkpoint are predicted.

The model is a TorchScript U-Net that asks torch's host allocator for an absurd buffer on inputs over 2,000
pixels: the genuine `RuntimeError: DefaultCPUAllocator: can't allocate memory` a 13000x13000 image raises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segpipe.cli.infer import EXIT_SKIPPED_ERRORS
from segpipe.inference.predictor import is_out_of_memory
from segpipe.inference.unet import UNet
from tests.pipeline.test_infer import read_png, reference_argmax, write_dataset

REPO = Path(__file__).resolve().parents[2]


class Greedy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(num_classes=2, depth=1, base_width=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if x.shape[2] * x.shape[3] > 2000:  # the buffer feeds the output, so TorchScript cannot drop it
            out = out + torch.empty([x.shape[2] * x.shape[3] * 1_000_000_000_000], dtype=torch.uint8)[0].float() * 0
        return out


def test_host_allocation_failures_count_as_out_of_memory() -> None:
    with pytest.raises(RuntimeError) as info:
        torch.empty([10**15], dtype=torch.uint8)
    assert is_out_of_memory(info.value) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_infer_skips_the_image_that_runs_out_of_memory_and_predicts_the_rest(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", [("a.png", 40, 30), ("big.png", 60, 50), ("c.png", 40, 30), ("d.png", 30, 40)])
    torch.manual_seed(0)
    greedy = Greedy().eval()
    model = tmp_path / "greedy.ts"
    torch.jit.save(torch.jit.script(greedy), str(model))
    (tmp_path / "greedy.toml").write_text('task = "semantic"\nclass_names = ["background", "pet"]\n', encoding="utf-8")
    args = ["infer", "--model", "torchscript", "--checkpoint", str(model), "--dataset", str(root), "-o", str(tmp_path / "p"),
            "--trust-checkpoint", "--device", "cpu", "--workers", "0", "--batch-size", "4"]
    code = f"import sys\nfrom segpipe.cli import main\nsys.exit(main.main(args={args!r}))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == EXIT_SKIPPED_ERRORS, done.stderr[-3000:]  # done, with a skipped image
    assert "Traceback" not in done.stderr
    rows = pd.read_csv(tmp_path / "p" / "inference_report.csv")
    assert list(zip(rows["file_name"], rows["code"])) == [("big.png", "out_of_memory")], rows
    assert "can't allocate memory" in rows["message"][0]
    for name in ("a", "c", "d"):
        np.testing.assert_array_equal(read_png(tmp_path / "p" / "semantic" / f"{name}.png"),
                                      reference_argmax(greedy.net, root / "img" / f"{name}.png"))
    assert not (tmp_path / "p" / "semantic" / "big.png").exists()

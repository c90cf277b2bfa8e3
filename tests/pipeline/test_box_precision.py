"""bf16 autocast must not put Mask R-CNN boxes on a grid: box coordinates are made in float32.

Under bf16 a coordinate in [512, 1024) can only be a multiple of 4 (8 significant bits). torchvision makes
anchors in the feature maps' dtype and decodes in the regression's dtype, so without the engine's hooks every
such coordinate of a bf16 run is a multiple of 4; with them, about as few are as in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from segpipe.inference.engine import load_model
from segpipe.inference.models import build_model, set_rcnn_resolution

torch.set_num_threads(1)  # 2 cores shared by many
W, H = 1000, 600  # coordinates up to 1000: the bf16 grid there is 4 px


def _grid_fraction(model: Any, image: torch.Tensor, *, bf16: bool) -> tuple[float, torch.dtype, int]:
    """Fraction of box coordinates >= 512 (image borders excluded: clipping makes those exact) on a 4-px grid."""
    model.rpn._post_nms_top_n["testing"] = 200  # fewer proposals: CPU time on shared cores
    model.roi_heads.mask_roi_pool = None  # boxes only: the mask head does not make coordinates
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model([image])[0]
    boxes = out["boxes"]
    big = boxes.float()[(boxes.float() >= 512) & (boxes.float() != W) & (boxes.float() != H)]
    return float(((big % 4) == 0).float().mean()), boxes.dtype, int(big.numel())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mrcnn.pt"
    torch.save(build_model("maskrcnn_resnet50_fpn", num_classes=3).state_dict(), path)
    return path


def test_bf16_boxes_leave_the_4px_grid(checkpoint: Path) -> None:
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(1))
    # Control: torchvision's model as built, same weights, no hooks: the grid is there under bf16.
    plain = build_model("maskrcnn_resnet50_fpn", num_classes=3)
    plain.load_state_dict(torch.load(checkpoint, weights_only=True))
    set_rcnn_resolution(plain, resize="native", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    plain.roi_heads.score_thresh = 0.0
    plain.eval()  # the new transform module starts in training mode
    frac, dtype, n = _grid_fraction(plain, image, bf16=True)
    assert n >= 10 and dtype == torch.bfloat16 and frac == 1.0

    # The engine's model (load_model, the path `segpipe infer` takes): float32 boxes, no grid.
    engine = load_model(name="maskrcnn_resnet50_fpn", task="instance", checkpoint=checkpoint, card=ModelCard(), n_outputs=3,
                        trust=False, resize="native", mean=IMAGENET_MEAN, std=IMAGENET_STD, score_threshold=0.0)
    frac_bf16, dtype, n = _grid_fraction(engine, image, bf16=True)
    assert n >= 10 and dtype == torch.float32
    frac_fp32, _, _ = _grid_fraction(engine, image, bf16=False)
    # Off-grid float32 coordinates are multiples of 4 with probability ~0; allow a few by chance.
    assert frac_bf16 <= 0.1 and frac_fp32 <= 0.1, (frac_bf16, frac_fp32)


def test_hooks_leave_fp32_results_and_state_dict_unchanged(checkpoint: Path) -> None:
    image = torch.rand(3, 320, 480, generator=torch.Generator().manual_seed(2))
    state = torch.load(checkpoint, weights_only=True)
    plain = build_model("maskrcnn_resnet50_fpn", num_classes=3)
    plain.load_state_dict(state)
    set_rcnn_resolution(plain, resize="native", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    plain.roi_heads.score_thresh = 0.0
    plain.eval()  # the new transform module starts in training mode
    engine = load_model(name="maskrcnn_resnet50_fpn", task="instance", checkpoint=checkpoint, card=ModelCard(), n_outputs=3,
                        trust=False, resize="native", mean=IMAGENET_MEAN, std=IMAGENET_STD, score_threshold=0.0)
    assert list(engine.state_dict()) == list(plain.state_dict())
    for m in (plain, engine):
        m.rpn._post_nms_top_n["testing"] = 100
        m.roi_heads.detections_per_img = 20
    with torch.inference_mode():
        a, b = plain([image])[0], engine([image])[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"]) and torch.equal(a["masks"], b["masks"])

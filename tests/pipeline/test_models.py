"""Model registry: every name builds with random init and nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

from segpipe.inference.checkpoints import InferenceError
from segpipe.cli.infer import MODEL_CHOICES
from segpipe.inference.models import (
    INSTANCE, MODEL_NAMES, MODELS, SEMANTIC, TORCHSCRIPT, build_model, drop_training_only_keys, model_spec,
    set_rcnn_resolution,
)
from segpipe.inference.unet import UNet

torch.set_num_threads(1)

ISSUE_NAMES = (
    "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large", "unet", "torchscript",
)


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_registry_has_exactly_the_issue_models() -> None:
    assert MODEL_NAMES == ISSUE_NAMES
    assert MODEL_CHOICES == ISSUE_NAMES  # the CLI lists them without importing torch
    assert {n for n, s in MODELS.items() if s.task == INSTANCE} == {"maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"}


# A forward pass of the small ones; the big ones are only built (a forward pass costs seconds on 2 cores).
@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50", "unet"])
def test_semantic_models_build_and_run(name: str, no_downloads: None) -> None:
    model = build_model(name, num_classes=3, unet_depth=2, unet_width=4)
    assert not model.training
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 32, 40))
    logits = out["out"] if isinstance(out, dict) else out
    assert logits.shape == (1, 3, 32, 40)
    if name != "unet":
        assert "aux_classifier" not in "".join(model.state_dict())


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet101", "maskrcnn_resnet50_fpn_v2"])
def test_big_models_build(name: str, no_downloads: None) -> None:
    model = build_model(name, num_classes=3)
    assert not model.training and sum(p.numel() for p in model.parameters()) > 10_000_000


def test_maskrcnn_resolution_default_native_and_short_side(no_downloads: None) -> None:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    model = build_model("maskrcnn_resnet50_fpn", num_classes=3)
    # The default is the model's own training resolution, as torchvision builds it (800/1333).
    reference = GeneralizedRCNNTransform(min_size=800, max_size=1333, image_mean=[0.5] * 3, image_std=[0.25] * 3).eval()
    set_rcnn_resolution(model, resize=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert (model.transform.min_size, model.transform.max_size) == ((800,), 1333)
    x = torch.rand(3, 50, 70)
    images, _ = model.eval().transform([x])
    assert images.image_sizes == [(800, 1120)] and torch.equal(images.tensors, reference([x])[0].tensors)
    images, _ = model.transform([torch.rand(3, 50, 200)])
    assert images.image_sizes == [(333, 1333)]  # the long side caps at 1333, as torchvision's transform does
    set_rcnn_resolution(model, resize="native", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images, _ = model.eval().transform([x])
    assert images.image_sizes == [(50, 70)]
    assert model.transform.image_mean == [0.5, 0.5, 0.5]
    set_rcnn_resolution(model, resize=100, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images, _ = model.eval().transform([x])
    assert images.image_sizes == [(100, 140)]


def test_unet_settings_from_card() -> None:
    model = build_model("unet", num_classes=2, unet_depth=3, unet_width=5, unet_bilinear=False)
    assert isinstance(model, UNet) and model.depth == 3 and model.base_width == 5


def test_unknown_and_torchscript_names() -> None:
    with pytest.raises(InferenceError, match="unknown model 'resnet'"):
        model_spec("resnet")
    assert model_spec(TORCHSCRIPT).task == SEMANTIC
    with pytest.raises(InferenceError, match="load_torchscript"):
        build_model(TORCHSCRIPT, num_classes=2)


def test_aux_classifier_keys_dropped_only_when_model_lacks_them() -> None:
    state = {"backbone.x": 1, "aux_classifier.0.weight": 2}
    assert drop_training_only_keys(state, model_keys={"backbone.x"}) == {"backbone.x": 1}
    assert drop_training_only_keys(state, model_keys=set(state)) == state

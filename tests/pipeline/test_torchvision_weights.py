"""Torchvision's published weight files load as segpipe checkpoints, one test per model family.

Nothing is downloaded: each model is built by torchvision itself with `weights=None` (random init), its
`state_dict()` saved exactly as torchvision publishes weights (a plain tensor mapping, `aux_classifier.*`
included where the weights have it), and loaded back through segpipe's loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from segpipe.inference.architectures import detect_architecture
from segpipe.inference.checkpoints import InferenceError, ModelCard
from segpipe.inference.class_tables import CLASS_TABLE_NAMES, CLASS_TABLES
from segpipe.inference.engine import load_model
from segpipe.inference.models import INSTANCE, MODEL_NAMES, SEMANTIC, TORCHSCRIPT

torch.set_num_threads(1)  # 2 cores shared by many

FAMILIES = [  # (model, aux head in the weight file)
    ("deeplabv3_resnet50", True), ("deeplabv3_resnet50", False), ("fcn_resnet50", True), ("fcn_resnet50", False),
    ("deeplabv3_mobilenet_v3_large", True), ("lraspp_mobilenet_v3_large", False),
    ("maskrcnn_resnet50_fpn", False), ("maskrcnn_resnet50_fpn_v2", False),
]


def torchvision_model(name: str, *, aux: bool, num_classes: int) -> Any:
    """The model as torchvision's own builder makes it (not segpipe's registry)."""
    from torchvision.models import detection, segmentation

    torch.manual_seed(0)
    if name.startswith("maskrcnn"):
        return getattr(detection, name)(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    kwargs = {"aux_loss": aux} if not name.startswith("lraspp") else {}
    return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs).eval()


def load(name: str, path: Path, *, n_outputs: int) -> Any:
    task = INSTANCE if name.startswith("maskrcnn") else SEMANTIC
    return load_model(name=name, task=task, checkpoint=path, card=ModelCard(), n_outputs=n_outputs, trust=False,
                      resize=None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), score_threshold=0.05)


@pytest.mark.parametrize(("name", "aux"), FAMILIES)
def test_torchvision_state_dict_layout_loads(tmp_path: Path, name: str, aux: bool) -> None:
    n = 91 if name.startswith("maskrcnn") else 21
    source = torchvision_model(name, aux=aux, num_classes=n)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    assert any(k.startswith("aux_classifier.") for k in source.state_dict()) == aux
    assert detect_architecture(source.state_dict()) == name
    model = load(name, path, n_outputs=n)
    loaded = model.state_dict()
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("aux_classifier.")}
    assert sorted(loaded) == sorted(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    if not name.startswith("maskrcnn"):  # same weights, same ops: the same logits as torchvision's own model
        x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            assert torch.equal(model(x)["out"], source(x)["out"])


def test_a_checkpoint_of_another_family_names_the_model_to_pass(tmp_path: Path) -> None:
    path = tmp_path / "deeplab.pth"
    torch.save(torchvision_model("deeplabv3_resnet50", aux=True, num_classes=21).state_dict(), path)
    with pytest.raises(InferenceError) as err:
        load("fcn_resnet50", path, n_outputs=21)
    assert str(path) in str(err.value) and "pass --model deeplabv3_resnet50" in str(err.value)
    mrcnn = tmp_path / "mrcnn_v2.pth"
    torch.save(torchvision_model("maskrcnn_resnet50_fpn_v2", aux=False, num_classes=91).state_dict(), mrcnn)
    with pytest.raises(InferenceError, match="pass --model maskrcnn_resnet50_fpn_v2"):
        load("maskrcnn_resnet50_fpn", mrcnn, n_outputs=91)


def test_every_registered_architecture_is_recognised_by_its_keys() -> None:
    from segpipe.inference.models import build_model

    for name in MODEL_NAMES:
        if name == TORCHSCRIPT or name in {f for f, _ in FAMILIES}:
            continue  # the loading test above covers those
        assert detect_architecture(build_model(name, num_classes=3).state_dict()) == name, name


def test_class_tables_are_torchvision_weight_categories() -> None:
    """Live against the weight enums' metadata (reading it downloads nothing)."""
    from segpipe.cli.infer import CLASS_TABLE_CHOICES
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, FCN_ResNet50_Weights, LRASPP_MobileNet_V3_Large_Weights

    assert CLASS_TABLES["coco"] == tuple(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    assert CLASS_TABLES["coco"] == tuple(MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"])
    for weights in (DeepLabV3_ResNet50_Weights, FCN_ResNet50_Weights, LRASPP_MobileNet_V3_Large_Weights):
        assert CLASS_TABLES["voc"] == tuple(weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])
    assert CLASS_TABLE_CHOICES == CLASS_TABLE_NAMES

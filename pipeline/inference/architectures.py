"""Which segpipe model a state_dict belongs to, from its key names alone (no tensors are compared).

Used only to word errors: when a checkpoint does not fit `--model`, the message says which `--model` it does
fit. The key layouts are those of torchvision's model definitions
(https://github.com/pytorch/vision/tree/main/torchvision/models/segmentation and .../detection/mask_rcnn.py)
and of segpipe's U-Net.
"""

from __future__ import annotations

from typing import Iterable

RESNET101_ONLY_KEY = "backbone.layer3.22."  # ResNet-101 has 23 blocks in layer3, ResNet-50 has 6
MOBILENET_V3_KEY = "backbone.0.0."  # torchvision's MobileNetV3 backbones are Sequential `features`


def detect_architecture(keys: Iterable[str]) -> str | None:
    """The segpipe `--model` name whose state_dict keys these are, or None when they fit no known layout.

    >>> detect_architecture(["roi_heads.mask_predictor.mask_fcn_logits.weight", "roi_heads.box_head.fc6.weight"])
    'maskrcnn_resnet50_fpn'
    >>> detect_architecture(["backbone.layer1.0.conv1.weight", "classifier.0.convs.0.0.weight"])
    'deeplabv3_resnet50'
    """
    prefixes: set[str] = set()
    for key in keys:
        parts = key.split(".")
        prefixes.update(".".join(parts[:i]) + "." for i in range(1, min(len(parts), 5)))

    def has(prefix: str) -> bool:
        return prefix in prefixes

    if has("roi_heads.mask_predictor."):
        return "maskrcnn_resnet50_fpn_v2" if has("roi_heads.box_head.0.0.") else "maskrcnn_resnet50_fpn"
    if has("inc.") and has("downs.") and has("head."):
        return "unet"
    if has("classifier.cbr.") or has("classifier.low_classifier."):
        return "lraspp_mobilenet_v3_large"
    backbone = "mobilenet_v3_large" if has(MOBILENET_V3_KEY) else "resnet101" if has(RESNET101_ONLY_KEY) else "resnet50"
    if has("classifier.0.convs."):
        return f"deeplabv3_{backbone}"
    if has("classifier.0.") and has("classifier.4.") and backbone != "mobilenet_v3_large":
        return f"fcn_{backbone}"
    return None


def architecture_hint(keys: Iterable[str], *, model: str) -> str | None:
    """'its keys are those of X: pass --model X' when the keys identify another model than `model`."""
    found = detect_architecture(keys)
    if found is None or found == model:
        return None
    return f"its keys are those of {found}, not {model}: pass --model {found}"

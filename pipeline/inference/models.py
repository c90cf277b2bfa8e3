"""Model registry: names -> builders, every one with `weights=None, weights_backbone=None`.

Nothing is ever downloaded: the weights come from the user's checkpoint only (an evaluation host may have no
network, and a silently downloaded weight file would be scored instead of the user's).
`torchscript` is the exception that carries its own architecture: the file is the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from segpipe.inference.checkpoints import InferenceError, OPTIONS, check_archive_inflation, require_torchscript_trust
from segpipe.inference.resolution import Resize, rcnn_sizes

SEMANTIC = "semantic"
INSTANCE = "instance"
TORCHSCRIPT = "torchscript"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # SEMANTIC or INSTANCE
    builder: Callable[..., Any] | None  # None for torchscript


def _tv_segmentation(fn_name: str) -> Callable[..., Any]:
    def build(*, num_classes: int, **_: Any) -> Any:
        from torchvision.models import segmentation

        # aux_loss=False: the aux head is training-only; checkpoints that carry it are accepted by dropping
        # `aux_classifier.*` keys (see `drop_training_only_keys`).
        return getattr(segmentation, fn_name)(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)

    return build


def _tv_maskrcnn(fn_name: str) -> Callable[..., Any]:
    def build(*, num_classes: int, **_: Any) -> Any:
        from torchvision.models import detection

        return getattr(detection, fn_name)(weights=None, weights_backbone=None, num_classes=num_classes)

    return build


def _unet(*, num_classes: int, unet_depth: int | None = None, unet_width: int | None = None, unet_bilinear: bool | None = None, **_: Any) -> Any:
    # Imported here, like torchvision above: the registry (names -> task) stays importable without torch,
    # so `segpipe run` can key inference on what a model reads without importing torch on a cached rerun.
    from segpipe.inference.unet import DEFAULT_BASE_WIDTH, DEFAULT_DEPTH, UNet

    return UNet(
        num_classes=num_classes,
        depth=unet_depth or DEFAULT_DEPTH,
        base_width=unet_width or DEFAULT_BASE_WIDTH,
        bilinear=True if unet_bilinear is None else unet_bilinear,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("maskrcnn_resnet50_fpn", INSTANCE, _tv_maskrcnn("maskrcnn_resnet50_fpn")),
        ModelSpec("maskrcnn_resnet50_fpn_v2", INSTANCE, _tv_maskrcnn("maskrcnn_resnet50_fpn_v2")),
        ModelSpec("deeplabv3_resnet50", SEMANTIC, _tv_segmentation("deeplabv3_resnet50")),
        ModelSpec("deeplabv3_resnet101", SEMANTIC, _tv_segmentation("deeplabv3_resnet101")),
        ModelSpec("deeplabv3_mobilenet_v3_large", SEMANTIC, _tv_segmentation("deeplabv3_mobilenet_v3_large")),
        ModelSpec("fcn_resnet50", SEMANTIC, _tv_segmentation("fcn_resnet50")),
        ModelSpec("fcn_resnet101", SEMANTIC, _tv_segmentation("fcn_resnet101")),
        ModelSpec("lraspp_mobilenet_v3_large", SEMANTIC, _tv_segmentation("lraspp_mobilenet_v3_large")),
        ModelSpec("unet", SEMANTIC, _unet),
        ModelSpec(TORCHSCRIPT, SEMANTIC, None),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise InferenceError(OPTIONS, "model", f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return MODELS[name]


def build_model(
    name: str,
    *,
    num_classes: int,
    unet_depth: int | None = None,
    unet_width: int | None = None,
    unet_bilinear: bool | None = None,
) -> Any:
    """An untrained model (random init, no download) in eval mode."""
    spec = model_spec(name)
    if spec.builder is None:
        raise InferenceError(OPTIONS, "model", "torchscript models are loaded with load_torchscript(), not built")
    model = spec.builder(num_classes=num_classes, unet_depth=unet_depth, unet_width=unet_width, unet_bilinear=unet_bilinear)
    return model.eval()


def drop_training_only_keys(state: dict[str, Any], *, model_keys: set[str]) -> dict[str, Any]:
    """Without the keys of heads used only in training (`aux_classifier.*`) when the model has none."""
    return {k: v for k, v in state.items() if not (k.startswith("aux_classifier.") and k not in model_keys)}


def load_torchscript(path: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """A TorchScript archive. Its code is a program (TorchScript can open files and call torch.ops), so it
    needs the same explicit trust as a pickle: refused unless `trust`, and loudly announced when trusted."""
    import torch

    require_torchscript_trust(path, trust=trust)
    check_archive_inflation(Path(path))
    try:
        return torch.jit.load(str(Path(path)), map_location="cpu").eval()  # type: ignore[no-untyped-call]  # torch.jit is unannotated
    except (RuntimeError, ValueError, OSError) as err:
        raise InferenceError(path, "", f"not a loadable TorchScript file: {err}") from err


def set_rcnn_resolution(model: Any, *, resize: Resize, mean: Sequence[float], std: Sequence[float]) -> None:
    """Give a torchvision Mask R-CNN the card's mean/std and the resolution `resize` asks for
    (segpipe.inference.resolution): None keeps its own 800/1333 training resolution, `native` feeds images
    unscaled, a number is the short side. Mutates `model`, which this module just built."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class NativeSizeTransform(GeneralizedRCNNTransform):  # type: ignore[misc]  # torchvision's class is untyped (Any)
        def resize(self, image: Any, target: Any = None) -> Any:
            return image, target

    old = model.transform
    sizes = rcnn_sizes(resize)
    if sizes is None:
        model.transform = NativeSizeTransform(
            min_size=old.min_size, max_size=old.max_size, image_mean=list(mean), image_std=list(std),
            size_divisible=old.size_divisible,
        )
    else:
        model.transform = GeneralizedRCNNTransform(
            min_size=sizes[0], max_size=sizes[1], image_mean=list(mean), image_std=list(std), size_divisible=old.size_divisible,
        )


def keep_box_coordinates_fp32(model: Any) -> Any:
    """Let a torchvision Mask R-CNN make every box coordinate in float32 while its backbone and heads run under
    bf16/fp16 autocast. Mutates and returns `model` (hooks only: its state_dict keys are unchanged).

    torchvision builds the anchors in the feature maps' dtype and decodes boxes in the regression's dtype
    (`AnchorGenerator.forward`, `BoxCoder.decode`, https://github.com/pytorch/vision/blob/main/torchvision/models/detection/_utils.py),
    so under bf16 autocast every coordinate >= 512 lands on a 4-pixel grid (bf16 keeps 8 significant bits),
    which moves boxes by up to 2 px and costs AP at strict IoU thresholds. Three hooks keep the coordinates
    in float32: the anchor generator sees float32 stand-ins of the feature maps (shape and dtype only, no
    copy), and the RPN head and box predictor hand float32 outputs to the decoders.
    """
    import torch

    def fp32_feature_shapes(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        image_list, feature_maps = args
        # A zero-stride view: the generator reads only .shape, .dtype and .device of each map.
        stand_ins = [torch.zeros((), dtype=torch.float32, device=f.device).expand(f.shape) for f in feature_maps]
        return image_list, stand_ins

    def outputs_to_fp32(_module: Any, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output.float()
        if isinstance(output, (list, tuple)):
            return type(output)(outputs_to_fp32(_module, _args, o) for o in output)
        return output

    model.rpn.anchor_generator.register_forward_pre_hook(fp32_feature_shapes)
    model.rpn.head.register_forward_hook(outputs_to_fp32)
    model.roi_heads.box_predictor.register_forward_hook(outputs_to_fp32)
    return model

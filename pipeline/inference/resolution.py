"""At which resolution a model sees the images: the `--resize` and `--size-bucket` options (no torch import).

`--resize` takes a short side in pixels, `native`, or nothing (the model's own default):
- semantic models: the default is the native size; `S` resizes the short side to S (bilinear), and the label
  map is resized back to the image's size (nearest) before it is written or scored;
- Mask R-CNN: the default is the model's own training resolution, torchvision's `GeneralizedRCNNTransform`
  with min_size=800, max_size=1333 (the numbers torchvision publishes are measured that way,
  https://github.com/pytorch/vision/blob/main/torchvision/models/detection/mask_rcnn.py); `native` feeds
  images unscaled; `S` uses min_size=S with max_size scaled alike. Boxes and masks always come back in the
  image's own pixels.

`--size-bucket M` (semantic models) rounds each side, after `--resize`, to the nearest multiple of M, so that
images of nearby sizes share a batch. Every image is still predicted exactly as it would be alone at that
size (a batch never holds two sizes, nothing is padded); what changes against no bucket is the size the
model sees: each side moves by at most M/2 pixels (the aspect ratio by a few percent).
"""

from __future__ import annotations

from typing import Any, Union

NATIVE = "native"
# torchvision's Mask R-CNN default transform (GeneralizedRCNNTransform in mask_rcnn.py / faster_rcnn.py).
RCNN_MIN_SIZE = 800
RCNN_MAX_SIZE = 1333
RESIZE_HELP = "short side in pixels, or 'native' (default: native for semantic models, 800/1333 for Mask R-CNN)"

Resize = Union[int, str, None]  # a short side, NATIVE, or None for the model's default


class ResolutionError(ValueError):
    """A `--resize` / `--size-bucket` value segpipe does not accept; the message says which ones it does."""


def parse_resize(value: Any, *, field: str = "--resize") -> Resize:
    """None, `native` or a positive short side (an int, or its digits as text).

    >>> parse_resize("Native"), parse_resize("512"), parse_resize(None)
    ('native', 512, None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == NATIVE:
            return NATIVE
        if text.isdigit() and int(text) > 0:
            return int(text)
        raise ResolutionError(f"{field}: {value!r} is not a size; give a short side in pixels (e.g. 512) or 'native'")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ResolutionError(f"{field}: {value!r} is not a size; give a short side in pixels (e.g. 512) or 'native'")
    return value


def parse_size_bucket(value: Any, *, field: str = "--size-bucket") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ResolutionError(f"{field}: must be a whole number of pixels from 1 to 1024, got {value!r}")
    return value


def rcnn_sizes(resize: Resize) -> tuple[int, int] | None:
    """(min_size, max_size) of the Mask R-CNN transform; None for native. max_size scales with min_size as
    torchvision's 800/1333 does, so long images are not capped early."""
    if resize == NATIVE:
        return None
    if resize is None:
        return RCNN_MIN_SIZE, RCNN_MAX_SIZE
    side = int(resize)
    return side, max(RCNN_MAX_SIZE, -(-side * RCNN_MAX_SIZE // RCNN_MIN_SIZE))


def semantic_short_side(resize: Resize) -> int | None:
    """The short side a semantic model's loader resizes to; None: native."""
    return None if resize is None or resize == NATIVE else int(resize)


def resolution_setting(*, task: str, resize: Resize, size_bucket: int | None = None) -> Any:
    """What the model sees, as JSON for keys and meta.json: 'native', a short side, or {min_size, max_size}."""
    if task == "instance":
        sizes = rcnn_sizes(resize)
        return NATIVE if sizes is None else {"min_size": sizes[0], "max_size": sizes[1]}
    side = semantic_short_side(resize)
    base: Any = NATIVE if side is None else side
    return base if size_bucket is None else {"short_side": base, "size_bucket": size_bucket}


def default_resolution_key(*, task: str | None, resize: Resize) -> str | None:
    """For a run's inference key: the resolution a model's *default* means, so that a changed default
    never reuses predictions made at the old one. None when `resize` is explicit or the task unknown."""
    if resize is not None or task != "instance":
        return None
    return f"{RCNN_MIN_SIZE}/{RCNN_MAX_SIZE}"

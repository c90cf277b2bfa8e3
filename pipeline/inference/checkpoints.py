"""Loading checkpoints safely, and the model card that may sit beside one.

`torch.load(weights_only=True)` only rebuilds tensors and plain containers: a pickle that would import or
call arbitrary code is refused before any of it runs. `trust=True` (`--trust-checkpoint`) lifts that for
files the user vouches for, with a loud warning (https://pytorch.org/docs/stable/generated/torch.load.html).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from segpipe.core import json_depth
from segpipe.core.errors import SegpipeError

# Keys under which training scripts nest the weights (torchvision references, Lightning-style exports).
NESTED_STATE_KEYS: tuple[str, ...] = ("model", "state_dict", "model_state_dict")
# Prefixes added by DataParallel/DDP (`module.`) and by wrapper modules (`model.`).
STRIPPED_PREFIXES: tuple[str, ...] = ("module.", "model.")
MODEL_CARD_SUFFIXES: tuple[str, ...] = (".json", ".toml")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Upper bounds on model-card numbers: far above any real model, low enough that a typo or a hostile card
# (a 40-stage U-Net, resize 100000) is refused with its field named instead of allocating gigabytes.
CARD_LIMITS: Mapping[str, int] = {"num_classes": 10_000, "resize": 8192, "unet.depth": 10, "unet.width": 1024}
# A torch.save archive stores its entries uncompressed (ratio ~1); a zip whose entries inflate to more than
# this many times the file's size (and over CHECKPOINT_INFLATE_FLOOR) is a decompression bomb, refused from
# its central directory before torch reads any entry.
CHECKPOINT_MAX_INFLATION = 8
CHECKPOINT_INFLATE_FLOOR = 64 * 1024 * 1024


# The `path` of an InferenceError about an option of run_inference (not a file): its `field` is the option's
# name, which the command line turns into its flag (`device` -> `--device`).
OPTIONS = "inference options"


class InferenceError(SegpipeError):
    """A problem with an inference input (checkpoint, model card, class list, dataset, or an option when `path`
    is OPTIONS), located by path and field."""


class UntrustedCheckpointWarning(UserWarning):
    """Emitted when a checkpoint is loaded with full unpickling (`--trust-checkpoint`)."""


@dataclass(frozen=True)
class ModelCard:
    """What a model card may declare; None means "not given"."""

    path: Path | None = None
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: int | str | None = None  # a short side, or "native" (segpipe.inference.resolution)
    unet_depth: int | None = None
    unet_width: int | None = None
    unet_bilinear: bool | None = None
    task: str | None = None  # "semantic" | "instance"; needed only for TorchScript files
    class_table: str | None = None  # a built-in class list (segpipe.inference.class_tables), instead of class_names
    class_map: Mapping[str, str] | None = None  # model class -> dataset class ('' drops it)


def read_checkpoint(path: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """The unpickled checkpoint object. Refuses pickled code unless `trust`; a broken file is called broken."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InferenceError(path, "", "checkpoint file not found")
    check_archive_inflation(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpicklers raise assorted types (UnpicklingError, EOFError...) on garbage
        from segpipe.inference.checkpoint_errors import diagnose_checkpoint

        diagnosis = diagnose_checkpoint(path)
        if not (trust and diagnosis.needs_trust):
            raise InferenceError(path, "", diagnosis.message) from err
    warnings.warn(
        f"LOADING {path} WITH FULL UNPICKLING (--trust-checkpoint): any code inside it runs now",
        UntrustedCheckpointWarning,
        stacklevel=2,
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # arbitrary code may raise anything
        raise InferenceError(path, "", f"could not load even with --trust-checkpoint: {err}") from err


def check_archive_inflation(path: Path) -> None:
    """Refuse a zip archive (torch.save and TorchScript format) whose entries would inflate far beyond its size."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy (pre-1.6) torch.save format is a plain pickle stream, bounded by its size
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise InferenceError(path, "", f"not a readable checkpoint archive: {err}") from err
    size = path.stat().st_size
    if inflated > CHECKPOINT_INFLATE_FLOOR and inflated > CHECKPOINT_MAX_INFLATION * size:
        raise InferenceError(path, "", f"refused: its entries inflate to {inflated} bytes from a {size}-byte file "
                                       f"(more than {CHECKPOINT_MAX_INFLATION}x; torch.save never compresses), a decompression bomb")


def require_torchscript_trust(path: str | os.PathLike[str], *, trust: bool) -> None:
    """Refuse a TorchScript file unless `trust`; warn loudly when trusted.

    A TorchScript archive is code, not data: its graph may call any registered torch operator, including ones
    that read and write files, and `torch.jit.load` has no `weights_only` mode to restrict it
    (https://pytorch.org/docs/stable/generated/torch.jit.load.html).
    """
    if not trust:
        raise InferenceError(path, "", "refused: a TorchScript file is a program and loading it runs that program "
                                       "(it can read and write files on this machine). If you trust where it came "
                                       "from, pass --trust-checkpoint (trust_checkpoint=True) to load it anyway")
    warnings.warn(
        f"LOADING TORCHSCRIPT {path} (--trust-checkpoint): the code inside it runs now",
        UntrustedCheckpointWarning,
        stacklevel=3,
    )


def parse_state_dict(obj: Any, *, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state_dict inside a checkpoint object, with wrapper prefixes stripped. Pure."""
    import torch

    state = obj
    if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
        for key in NESTED_STATE_KEYS:
            if key in obj:
                state = obj[key]
                break
    if isinstance(state, torch.nn.Module):  # a whole pickled model (only reachable when trusted)
        state = state.state_dict()
    if not isinstance(state, Mapping) or not _is_tensor_mapping(state):
        keys = sorted(str(k) for k in obj.keys())[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise InferenceError(path, "", f"no state_dict found (looked for a tensor mapping or keys {list(NESTED_STATE_KEYS)}; got {keys})")
    return {strip_prefixes(str(k)): v for k, v in state.items()}


def _is_tensor_mapping(obj: Mapping[Any, Any]) -> bool:
    import torch

    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_prefixes(key: str) -> str:
    """Drop leading wrapper prefixes, repeatedly.

    >>> strip_prefixes("module.model.backbone.conv1.weight")
    'backbone.conv1.weight'
    """
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def load_state_dict_into(model: Any, state: Mapping[str, Any], *, path: str | os.PathLike[str]) -> None:
    """Copy weights into `model`; every missing, unexpected or mis-shaped parameter is named in the error."""
    expected = model.state_dict()
    problems: list[str] = []
    for name in sorted(expected):
        if name not in state:
            problems.append(f"missing {name}")
        elif tuple(state[name].shape) != tuple(expected[name].shape):
            problems.append(f"{name}: checkpoint shape {tuple(state[name].shape)} != model shape {tuple(expected[name].shape)}")
    problems.extend(f"unexpected {name}" for name in sorted(set(state) - set(expected)))
    if problems:
        shown = "; ".join(problems[:20]) + (f"; ... {len(problems) - 20} more" if len(problems) > 20 else "")
        matching = len(set(state) & set(expected))
        raise InferenceError(path, "state_dict", (
            f"wrong model: the checkpoint's weights do not fit it ({len(problems)} problem(s); {matching} of "
            f"{len(expected)} parameter names match): {shown}. Was it trained for another --model, or with another "
            "number of classes or U-Net depth/width (say so in its model card)?"))
    model.load_state_dict(dict(state), strict=True)


def model_card_path(checkpoint: str | os.PathLike[str]) -> Path | None:
    """`<stem>.json` or `<stem>.toml` beside the checkpoint (JSON first), if present."""
    ckpt = Path(checkpoint)
    for suffix in MODEL_CARD_SUFFIXES:
        candidate = ckpt.with_suffix(suffix)
        if candidate != ckpt and candidate.is_file():
            return candidate
    return None


def read_model_card(checkpoint: str | os.PathLike[str]) -> ModelCard:
    path = model_card_path(checkpoint)
    if path is None:
        return ModelCard()
    try:
        text = path.read_text(encoding="utf-8")
        data = json_depth.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise InferenceError(path, "", f"unreadable model card: {err}") from err
    except RecursionError:  # tomllib recurses per nested array, as json does
        raise InferenceError(path, "", "unreadable model card: nested too deeply") from None
    return parse_model_card(data, path=path)


def parse_model_card(data: Any, *, path: Path) -> ModelCard:
    """Validate a model card mapping. Accepts `class_names` (or `classes`) or `class_table`, `class_map`,
    `num_classes`, `mean`, `std`, `resize`, `task`, and U-Net settings as `unet = {depth, width, bilinear}` or `unet_depth`/`unet_width`."""
    if not isinstance(data, Mapping):
        raise InferenceError(path, "", "model card must be a JSON object / TOML table")
    unet = data.get("unet", {})
    if not isinstance(unet, Mapping):
        raise InferenceError(path, "unet", "must be a table with depth/width")
    names = data.get("class_names", data.get("classes"))
    if names is not None and (not isinstance(names, Sequence) or isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise InferenceError(path, "class_names", "must be a list of strings")
    task = data.get("task")
    if task is not None and task not in ("semantic", "instance"):
        raise InferenceError(path, "task", f"must be 'semantic' or 'instance', got {task!r}")
    class_table = data.get("class_table")
    if class_table is not None and (not isinstance(class_table, str) or names is not None):
        raise InferenceError(path, "class_table", "must be the name of a built-in class table (e.g. \"coco\", \"voc\"), "
                             "given instead of class_names")
    class_map = data.get("class_map")
    if class_map is not None and (not isinstance(class_map, Mapping) or not all(isinstance(v, str) for v in class_map.values())):
        raise InferenceError(path, "class_map", "must be a table of model class -> dataset class names, e.g. {cat = \"pet\"}")
    bilinear = unet.get("bilinear")
    if bilinear is not None and not isinstance(bilinear, bool):
        raise InferenceError(path, "unet.bilinear", "must be true or false")
    return ModelCard(
        path=path,
        class_names=tuple(names) if names is not None else None,
        num_classes=_positive_int(data.get("num_classes"), path=path, field="num_classes"),  # bounded by CARD_LIMITS
        mean=_triple(data.get("mean"), path=path, field="mean"),
        std=_triple(data.get("std"), path=path, field="std"),
        resize="native" if data.get("resize") == "native" else _positive_int(data.get("resize"), path=path, field="resize"),
        unet_depth=_positive_int(unet.get("depth", data.get("unet_depth")), path=path, field="unet.depth"),
        unet_width=_positive_int(unet.get("width", data.get("unet_width")), path=path, field="unet.width"),
        unet_bilinear=bilinear,
        task=task,
        class_table=class_table,
        class_map=dict(class_map) if class_map is not None else None,
    )


def _positive_int(value: Any, *, path: Path, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InferenceError(path, field, f"must be a positive integer, got {value!r}")
    limit = CARD_LIMITS.get(field)
    if limit is not None and value > limit:
        raise InferenceError(path, field, f"must be at most {limit}, got {value!r}; fix the model card")
    return value


def _triple(value: Any, *, path: Path, field: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise InferenceError(path, field, f"must be three numbers (R, G, B), got {value!r}")
    if not all(math.isfinite(v) for v in value):  # JSON and TOML both spell NaN and infinities
        raise InferenceError(path, field, f"must be finite numbers, got {value!r}")
    if field == "std" and any(v <= 0 for v in value):
        raise InferenceError(path, field, f"must be positive, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))

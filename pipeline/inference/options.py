"""Every inference option, declared once: the frozen dataclass `InferenceOptions`.

From its fields are derived the options of `segpipe infer` (flags, types, defaults, help texts), the
inference options of `segpipe run` and the `[infer]` keys of run.toml, the inference part of a run's cache
key (`key_items`), what `segpipe.infer(**options)` accepts, and the checks every caller gets (a value the
command line refuses is refused from Python and run.toml too). A new option is one field here, and the
code in the engine that uses it.

Nothing heavy is imported here: the command line's help is built from this module without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from segpipe.inference.checkpoints import OPTIONS, InferenceError
from segpipe.inference.class_tables import CLASS_TABLE_NAMES
from segpipe.inference.devices import DEVICE_HELP, DeviceError, parse_device
from segpipe.inference.resolution import Resize, ResolutionError, parse_resize, parse_size_bucket

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def infer_option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, min_value: float | None = None,
                 max_value: float | None = None, number: type | None = None, flag: bool = False, metavar: str | None = None,
                 show_default: bool = False, check: bool = False, key: bool = True, run_key: str | None = None,
                 run_flag: str | None = None, run_help: str | None = None) -> Any:
    """A field of InferenceOptions with what its command-line option needs: its help text, `choices`, a
    `number` type (int or float) with an inclusive [`min_value`, `max_value`] range, `flag` (an on/off switch),
    `check`: `segpipe infer` checks the value while it parses the flag, before anything else happens. `key`: False for options that change how
    fast inference runs, never what it writes (left out of the cache key). `segpipe run` takes the option as
    the run.toml key `run_key` and the flag `run_flag` (default: the field's name), where the field's name is
    taken by another setting of a run; `run_help` when the help text must say more there."""
    meta = {"help": help, "choices": choices, "min_value": min_value, "max_value": max_value, "number": number,
            "flag": flag, "metavar": metavar, "show_default": show_default, "check": check, "key": key,
            "run_key": run_key, "run_flag": run_flag, "run_help": run_help}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class InferenceOptions:
    """How a checkpoint is run (everything but which model, which checkpoint, which images and where to).
    Constructing one checks every value: an InferenceError with `path` OPTIONS names the bad field."""

    num_classes: int | None = infer_option(None, "Model outputs (instance: including background).", number=int, min_value=1,
                                           run_help="Model outputs (when no model card says).")
    classes: tuple[str, ...] | None = infer_option(
        None, "Output class names in order: comma-separated, or a file with one per line.", run_flag="--model-classes",
        run_help="Model output class names, comma-separated or a file (when no model card says).")
    class_table: str | None = infer_option(
        None, "Built-in output classes of torchvision's weights: coco (Mask R-CNN, 91 slots), voc (DeepLabV3/FCN/LRASPP, 21).",
        choices=CLASS_TABLE_NAMES)
    class_map: Mapping[str, str] | str | None = infer_option(
        None, "Model class -> dataset class: 'cat=pet,dog=pet,person=' (empty target drops it), or a file with one a line.",
        metavar="MAP")
    device: str = infer_option("auto", f"{DEVICE_HELP}.", show_default=True, check=True,
                               run_help=f"Inference device: {DEVICE_HELP} (checked before anything runs).")
    batch_size: int = infer_option(
        4, "Images per forward pass; halved automatically on CUDA out-of-memory. On the CPU Mask R-CNN is called once "
        "per image (faster there).", number=int, min_value=1, show_default=True)
    precision: str = infer_option("fp32", "bf16/fp16 run under autocast.", choices=PRECISIONS, show_default=True)
    score_threshold: float = infer_option(0.05, "Instance models: drop detections below this score.", number=float,
                                          min_value=0.0, max_value=1.0, show_default=True)
    resize: Resize = infer_option(
        None, "Short side the model sees, in pixels, or 'native' [default: native for semantic models, 800/1333 for Mask R-CNN].",
        metavar="SHORT_SIDE|native", check=True)
    size_bucket: int | None = infer_option(
        None, "Semantic models: round each side (after --resize) to a multiple of PIXELS, so that more images share a batch.",
        number=int, min_value=1, max_value=1024, metavar="PIXELS")
    compile: bool = infer_option(False, "torch.compile the backbone (slow start; pays off on long GPU runs).", flag=True)
    trust_checkpoint: bool = infer_option(
        False, "Allow checkpoints that need arbitrary pickled code, and TorchScript files too (both run code!).", flag=True)
    workers: int | None = infer_option(
        None, "DataLoader decode workers [default: on CUDA min(4, usable cores - 1); on the CPU 0].", number=int, min_value=0,
        key=False, run_key="loader_workers", run_help="DataLoader workers per inference task [default: as segpipe infer --workers].")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _checked(f, getattr(self, f.name))
            if value is not getattr(self, f.name):
                object.__setattr__(self, f.name, value)  # a frozen dataclass normalises its own fields this way

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, names: str = "field") -> InferenceOptions:
        """From field names (`names="field"`: the API's keywords) or run.toml `[infer]` keys (`names="run"`);
        None means "not given". An unknown name is an InferenceError (OPTIONS) listing the known ones."""
        to_field = {option_name(f, names): f.name for f in FIELDS}
        unknown = sorted(set(values) - set(to_field))
        if unknown:
            raise InferenceError(OPTIONS, unknown[0], f"not an inference option (known: {', '.join(to_field)})")
        return cls(**{to_field[k]: v for k, v in values.items() if v is not None})

    def key_items(self) -> dict[str, Any]:
        """The options that decide what inference writes, as `run.toml` names them, where they differ from
        the defaults: the inference part of a run's cache key (speed options such as `workers` are left out)."""
        return {option_name(f, "run"): getattr(self, f.name) for f in FIELDS
                if f.metadata["key"] and getattr(self, f.name) != f.default}

    def run_items(self) -> dict[str, Any]:
        """Every option that differs from its default, by run.toml name (what a task of `segpipe run` is given)."""
        return {option_name(f, "run"): getattr(self, f.name) for f in FIELDS if getattr(self, f.name) != f.default}


FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(InferenceOptions)
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)


def option_name(f: dataclasses.Field[Any], names: str = "field") -> str:
    """A field's name, or (`names="run"`) its run.toml `[infer]` key."""
    return (f.metadata["run_key"] or f.name) if names == "run" else f.name


# The `[infer]` keys of run.toml, and the run.toml key of each field.
RUN_KEYS: tuple[str, ...] = tuple(option_name(f, "run") for f in FIELDS)


def checked_value(name: str, value: Any) -> Any:
    """One option's value, checked and normalised as InferenceOptions does it (the command line's parse-time
    checks of the fields declared with `check`); an InferenceError (OPTIONS) names the field."""
    return _checked(FIELDS[OPTION_NAMES.index(name)], value)


def _checked(f: dataclasses.Field[Any], value: Any) -> Any:
    """The field's value, checked against its declaration (and normalised: class names as a tuple, a class map
    as a mapping, a resize as 512 or 'native'); an InferenceError names the field."""
    meta, name = f.metadata, f.name
    if value is None or value == f.default:
        return value
    if name == "classes":
        return _class_names(value)
    if name == "class_map":  # read now (text or a file): its content, not a file name, is what keys and runs
        from segpipe.inference.class_maps import CLASS_OPTIONS, class_map_option

        return class_map_option(value, source=CLASS_OPTIONS)
    if name == "device":
        try:
            return parse_device(value)
        except DeviceError as err:
            raise InferenceError(OPTIONS, name, err.reason) from err
    if name in ("resize", "size_bucket"):
        try:
            return parse_resize(value) if name == "resize" else parse_size_bucket(value)
        except ResolutionError as err:
            raise InferenceError(OPTIONS, name, str(err).split(": ", 1)[1]) from err
    if meta["flag"]:
        if not isinstance(value, bool):
            raise InferenceError(OPTIONS, name, f"must be true or false, got {value!r}")
        return value
    if meta["choices"] is not None and value not in meta["choices"]:
        raise InferenceError(OPTIONS, name, f"must be one of {meta['choices']}, got {value!r}")
    number = meta["number"]
    if number is not None:
        kinds: tuple[type, ...] = (int,) if number is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise InferenceError(OPTIONS, name, f"must be a{'' if number is int else ' real'} number, got {value!r}")
        low, high = meta["min_value"], meta["max_value"]
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise InferenceError(OPTIONS, name, f"must be {bounds}, got {value!r}")
    return value


def _class_names(value: Any) -> tuple[str, ...]:
    """`classes`: names in order, or (as `--classes` takes it) comma-separated text or a file with one a line."""
    if isinstance(value, str):
        from segpipe.inference.data import parse_class_names

        names = parse_class_names(value)
        assert names is not None
        return names
    if not isinstance(value, Sequence) or not all(isinstance(n, str) for n in value):
        raise InferenceError(OPTIONS, "classes", f"must be a list of class names, got {value!r}")
    return tuple(value)

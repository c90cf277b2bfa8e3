"""Settings of `segpipe run`: a run.toml file (tomllib), overridden by command-line options.

    dataset = "data/pets"            # paths are relative to the run.toml's folder
    format = "oxford-pet"            # oxford-pet | voc | trimap | yolo | labelme | cvat | voc-seg
    model = "unet"
    checkpoints = ["ckpts/*.pt"]     # a glob or a list of globs
    out = "runs/nightly"
    iou_type = "segm"                # segm | bbox
    shard_size = 256
    workers = 1
    devices = [0, 1]                 # one inference task per GPU of this host at a time (workers >= GPUs)
    scheduler_url = "http://luigid-host:8082"   # omit for the local scheduler
    cache_dir = "/shared/segpipe-cache"          # default OUT/.cache
    audit = false
    html = true                      # HTML pages beside the tables
    images = "..."  classes = "..."  list_file = "..."   # voc/trimap inputs
    [convert]                        # converter options (border, categories, split, one_based, difficult, strict)
    [infer]                          # inference options (device, batch_size, precision, resize, ...):
                                     # the fields of segpipe.inference.options.InferenceOptions
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from segpipe.core.errors import SegpipeError
from segpipe.inference.options import RUN_KEYS, InferenceOptions
from segpipe.plan.formats import CONVERT_OPTIONS, FORMATS
from segpipe.plan.shards import DEFAULT_SHARD_SIZE

IOU_TYPES: tuple[str, ...] = ("segm", "bbox")
PATH_KEYS: tuple[str, ...] = ("dataset", "out", "cache_dir", "images", "classes", "list_file")
TOP_KEYS: tuple[str, ...] = (
    *PATH_KEYS, "format", "model", "checkpoints", "iou_type", "shard_size", "workers", "scheduler_url", "audit",
    "rehash", "html", "convert", "infer", "devices",
)


class RunConfigError(SegpipeError, ValueError):
    """A bad setting, naming the file (or `command line`) and the field."""

    def __init__(self, source: str, field_name: str, reason: str) -> None:
        super().__init__(source, field_name, reason)
        self.source = source


@dataclass(frozen=True)
class RunSettings:
    dataset: Path
    format: str
    model: str
    checkpoints: tuple[str, ...]
    out: Path
    cache_dir: Path | None = None
    iou_type: str = "segm"
    shard_size: int = DEFAULT_SHARD_SIZE
    workers: int = 1
    scheduler_url: str | None = None
    audit: bool = False
    rehash: bool = False
    html: bool = True  # report.html per checkpoint and OUT/leaderboard.html (matplotlib: seconds each)
    images: Path | None = None
    classes: Path | None = None
    list_file: Path | None = None
    convert: Mapping[str, Any] = field(default_factory=dict)
    infer: Mapping[str, Any] = field(default_factory=dict)  # the [infer] keys given (run.toml names), checked
    devices: tuple[int, ...] = ()  # GPU indices: each inference task takes a free one (segpipe.plan.gpu_slots)

    @property
    def inference(self) -> InferenceOptions:
        """The inference options of the run: `infer` with every other option at its default."""
        return InferenceOptions.from_mapping(self.infer, names="run")

    @property
    def cache(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.out / ".cache"


def read_run_config(path: Path) -> dict[str, Any]:
    """run.toml as a dict, with relative paths made relative to the file's folder."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RunConfigError(str(path), "", f"unreadable run config: {err}") from err
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise RunConfigError(str(path), unknown[0], f"unknown setting (known: {', '.join(TOP_KEYS)})")
    base = path.parent
    out = dict(data)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = str(base / out[key])
    globs = out.get("checkpoints")
    if isinstance(globs, str):
        globs = [globs]
    if globs is not None:
        out["checkpoints"] = [g if Path(g).is_absolute() else str(base / g) for g in globs]
    return out


def parse_run_settings(config: Mapping[str, Any], *, overrides: Mapping[str, Any], source: str) -> RunSettings:
    """Merge file settings and command-line overrides (None = not given) into validated settings. Pure."""
    merged: dict[str, Any] = dict(config)
    for key, value in overrides.items():
        if key in ("convert", "infer"):
            merged[key] = {**dict(merged.get(key, {})), **{k: v for k, v in value.items() if v is not None}}
        elif value is not None and value != ():
            merged[key] = value
    for required in ("dataset", "format", "model", "checkpoints", "out"):
        if not merged.get(required):
            raise RunConfigError(source, required, "missing (give it on the command line or in --config)")
    if merged["format"] not in FORMATS:
        raise RunConfigError(source, "format", f"{merged['format']!r} is not one of {', '.join(FORMATS)}")
    iou_type = merged.get("iou_type", "segm")
    if iou_type not in IOU_TYPES:
        raise RunConfigError(source, "iou_type", f"{iou_type!r} is not one of {', '.join(IOU_TYPES)}")
    convert = dict(merged.get("convert", {}))
    bad = sorted(set(convert) - set(CONVERT_OPTIONS[merged["format"]]))
    if bad:
        raise RunConfigError(source, f"convert.{bad[0]}", f"not an option of the {merged['format']} converter")
    infer = dict(merged.get("infer", {}))
    bad = sorted(set(infer) - set(RUN_KEYS))
    if bad:
        raise RunConfigError(source, f"infer.{bad[0]}", f"not an inference option ({', '.join(RUN_KEYS)})")
    infer, devices = _checked_devices(infer, merged.get("devices"), source=source)
    if isinstance(infer.get("class_map"), str):
        infer["class_map"] = _class_map(infer["class_map"], source=source)
    infer = _checked_options(infer, source=source)
    for key in ("shard_size", "workers"):
        if int(merged.get(key, 1)) < 1:
            raise RunConfigError(source, key, f"must be >= 1, got {merged[key]}")
    checkpoints = merged["checkpoints"]
    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]

    def path(key: str) -> Path | None:
        return Path(merged[key]) if merged.get(key) else None

    return RunSettings(
        dataset=Path(merged["dataset"]), format=merged["format"], model=str(merged["model"]),
        checkpoints=tuple(str(c) for c in checkpoints), out=Path(merged["out"]), cache_dir=path("cache_dir"),
        iou_type=iou_type, shard_size=int(merged.get("shard_size", DEFAULT_SHARD_SIZE)),
        workers=int(merged.get("workers", 1)), scheduler_url=merged.get("scheduler_url") or None,
        audit=bool(merged.get("audit", False)), rehash=bool(merged.get("rehash", False)),
        html=bool(merged.get("html", True)),
        images=path("images"), classes=path("classes"), list_file=path("list_file"), convert=convert, infer=infer,
        devices=devices,
    )


def _checked_devices(infer: dict[str, Any], devices: Any, *, source: str) -> tuple[dict[str, Any], tuple[int, ...]]:
    """`infer.device` and `devices` checked here, before any task starts (CUDA itself opens only in inference)."""
    from segpipe.inference.devices import DeviceError, parse_device, parse_devices

    try:
        if infer.get("device") is not None:
            infer["device"] = parse_device(infer["device"], field="infer.device", source=source)
        gpus = parse_devices(devices, source=source) if devices not in (None, "", (), []) else ()
    except DeviceError as err:
        raise RunConfigError(source, err.field, err.reason) from err
    if gpus:
        if infer.get("device", "cuda") not in ("auto", "cuda"):
            raise RunConfigError(source, "devices", f"--devices picks the GPU of each task; it cannot be combined with device {infer['device']!r}")
        infer["device"] = "cuda"  # the inference key: the same outputs whichever GPU runs a shard
    return infer, gpus


def _checked_options(infer: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Every `[infer]` value checked as InferenceOptions checks it (the same refusals as `segpipe infer`), kept as
    it normalises them (`resize` as 512 or 'native', class names read from a file or comma-separated text)
    whether they came from TOML or the command line: one inference key."""
    from segpipe.inference.checkpoints import OPTIONS, InferenceError

    try:
        options = InferenceOptions.from_mapping(infer, names="run")
    except InferenceError as err:
        reason = err.reason if err.path == OPTIONS else f"{err.path}: {err.reason}"
        raise RunConfigError(source, f"infer.{_run_key(err.field)}", reason) from err
    given = options.run_items()
    return {k: given.get(k, v) for k, v in infer.items() if v is not None}


def _run_key(name: str) -> str:
    from segpipe.inference.options import FIELDS, option_name

    return next((option_name(f, "run") for f in FIELDS if f.name == name), name)


def _class_map(text: str, *, source: str) -> dict[str, str]:
    """A class map given as text or a file, read now: its content (not its file name) goes into the inference key."""
    from segpipe.inference.checkpoints import InferenceError
    from segpipe.inference.class_maps import class_map_option

    try:
        return class_map_option(text, source="infer.class_map") or {}
    except InferenceError as err:
        raise RunConfigError(source, "infer.class_map", f"{err.path}: {err.reason}") from err

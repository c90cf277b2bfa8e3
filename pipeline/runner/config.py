"""Settings of `segpipe run`: a run.toml file (tomllib), overridden by command-line options.

    dataset = "data/pets"            # paths are relative to the run.toml's folder
    format = "oxford-pet"            # oxford-pet | voc | trimap | yolo | labelme | cvat | voc-seg
    model = "unet"
    checkpoints = ["ckpts/*.pt"]     # a glob or a list of globs
    out = "runs/nightly"
    iou_type = "segm"                # segm | bbox
    shard_size = 256
    workers = 1
    scheduler_url = "http://luigid-host:8082"   # omit for the local scheduler
    cache_dir = "/shared/segpipe-cache"          # default OUT/.cache
    audit = false
    html = true                      # HTML pages beside the tables
    images = "..."  classes = "..."  list_file = "..."   # voc/trimap inputs
    [convert]                        # converter options (border, categories, split, one_based, difficult, strict)
    [infer]                          # inference options (device, batch_size, precision, resize, ...)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from segpipe.runner.shards import DEFAULT_SHARD_SIZE, FORMATS
from segpipe.tasks.stages import CONVERT_OPTIONS, INFER_OPTIONS, INFER_SPEED_OPTIONS

IOU_TYPES: tuple[str, ...] = ("segm", "bbox")
PATH_KEYS: tuple[str, ...] = ("dataset", "out", "cache_dir", "images", "classes", "list_file")
TOP_KEYS: tuple[str, ...] = (
    *PATH_KEYS, "format", "model", "checkpoints", "iou_type", "shard_size", "workers", "scheduler_url", "audit",
    "rehash", "html", "convert", "infer",
)


class RunConfigError(ValueError):
    """A bad setting, naming the file (or `command line`) and the field."""

    def __init__(self, source: str, field_name: str, reason: str) -> None:
        self.source, self.field, self.reason = source, field_name, reason
        super().__init__(f"{source}: {field_name}: {reason}")


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
    infer: Mapping[str, Any] = field(default_factory=dict)

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
    bad = sorted(set(infer) - set(INFER_OPTIONS) - set(INFER_SPEED_OPTIONS))
    if bad:
        raise RunConfigError(source, f"infer.{bad[0]}", f"not an inference option ({', '.join(INFER_OPTIONS)})")
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
    )

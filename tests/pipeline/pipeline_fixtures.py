"""Helpers for the `segpipe run` tests: a tiny generated Oxford-IIIT-Pet dataset, tiny U-Net checkpoints
(random weights, depth 1, width 2: a few KB, milliseconds per image) and settings that run in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from segpipe.runner.config import RunSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
CARD = {"task": "semantic", "class_names": ["background", "pet"], "unet": {"depth": 1, "width": 2}}


def make_dataset(root: Path, *, n_images: int = 8, seed: int = 0) -> Path:
    from segpipe.demo.sample import generate_sample

    return generate_sample(root, n_images=n_images, seed=seed)


def make_checkpoint(path: Path, *, seed: int) -> Path:
    """A random-init tiny U-Net state_dict with its model card (`<stem>.json`)."""
    import torch

    from segpipe.inference.unet import UNet

    torch.manual_seed(seed)
    net = UNet(num_classes=2, depth=1, base_width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(CARD), encoding="utf-8")
    return path


def settings_for(tmp: Path, *, dataset: Path, ckpts: Path, out: Path | None = None, **extra: Any) -> RunSettings:
    values: dict[str, Any] = dict(
        dataset=dataset, format="oxford-pet", model="unet", checkpoints=(str(ckpts / "*.pt"),),
        out=out if out is not None else tmp / "out", shard_size=4, infer={"device": "cpu", "loader_workers": 0}, html=False,
    )
    values.update(extra)
    return RunSettings(**values)


def cli_args(settings: RunSettings) -> list[str]:
    """The same run as `segpipe run` arguments."""
    args = ["run", "--dataset", str(settings.dataset), "--format", settings.format, "--model", settings.model,
            "-o", str(settings.out), "--shard-size", str(settings.shard_size), "--device", "cpu", "--loader-workers", "0"]
    if not settings.html:
        args.append("--no-html")
    for pattern in settings.checkpoints:
        args += ["--checkpoints", pattern]
    if settings.cache_dir is not None:
        args += ["--cache-dir", str(settings.cache_dir)]
    if settings.scheduler_url:
        args += ["--scheduler-url", settings.scheduler_url]
    return args


def run_cli_subprocess(args: list[str], *, extra_code: str = "", timeout: float = 240, **popen: Any) -> subprocess.CompletedProcess[str]:
    """`segpipe ARGS` in a fresh interpreter; `extra_code` runs after it (e.g. to inspect sys.modules)."""
    code = (
        "import sys\nfrom segpipe.cli import main\n"
        f"try:\n    main.main(args={args!r}, standalone_mode=False)\n    rc = 0\n"
        "except SystemExit as e:\n    rc = e.code if isinstance(e.code, int) else 1\n"
        f"{extra_code}\nsys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=timeout, **popen)


def report_files(out: Path) -> dict[str, bytes]:
    """Every published report file (CSV, Parquet, JSON; HTML left out: it embeds plots) by relative path."""
    keep = (".csv", ".parquet", ".json")
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix in keep and ".cache" not in p.parts and p.name != "run_log.json"
    }


def families(task_ids: list[str]) -> list[str]:
    return sorted(t.split("_", 1)[0] for t in task_ids)

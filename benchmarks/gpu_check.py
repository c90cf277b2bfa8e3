"""`make gpu-check`: segpipe's CUDA path proven on a real GPU in one prepared run of at most 8 minutes.

    python benchmarks/gpu_check.py --prepare-only            # here (pip reaches PyPI): wheels into .gpu-wheels/
    python benchmarks/gpu_check.py --out "$OUT"              # on the GPU host (no registry), .gpu-wheels/ carried
    python benchmarks/gpu_check.py --device cpu --tiny --no-install --out /tmp/gc   # the CPU-side logic, in minutes
    python benchmarks/gpu_check.py --quick --out /tmp/gc                            # the same (as `make bench` runs it)

Steps, each in its own process group under its own timeout (a hang costs that step, not the device time):
  install     the carried wheels (packages the GPU image lacks, and segpipe itself) into a private folder
  env         GPU, driver, CUDA, cuDNN and library versions; fails clearly when torch sees no CUDA device
  gpu_tests   pytest -m gpu (CUDA vs CPU parity per model family, a real OOM, pinned/non_blocking, channels_last)
  runs        `segpipe run` on a generated 256-image dataset: CPU reference, CUDA with one Luigi worker, with two
              (CUDA inside forked workers), --device cuda:0, and bf16; predictions and leaderboards vs the CPU run
  bench       benchmarks/infer.py: tutorial loop, engine fp32 and bf16, ceiling loop, interleaved, medians,
              GPU busy %, output-stage images/s (deeplabv3_resnet50 @ 520 px, maskrcnn_resnet50_fpn @ 800x1066)
The summary table comes last; $OUT gets gpu_check.log (every step's output), results.json and summary.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".gpu-wheels"
SOURCE_STAMP = "segpipe-source.sha256"
# Runtime packages that the GPU image (python 3.12, torch, torchvision, numpy, pandas, pyarrow, opencv,
# pillow, click, tqdm, jinja2, matplotlib, pytest) does not hold; carried at the versions installed here.
CARRIED = ("pycocotools", "luigi", "tornado", "python-daemon", "lockfile", "tenacity", "defusedxml")
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
# Seconds per step: 470 in all, inside the 8 minutes the check may take, with the start-up around them.
TIMEOUTS = {"install": 40, "env": 40, "gpu_tests": 130, "runs": 120, "bench": 140}
# Predicted pixels allowed to differ from the CPU run. cuDNN runs fp32 convolutions in TF32 by default
# (torch.backends.cudnn.allow_tf32, https://pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices),
# rounding inputs to 10 mantissa bits; bf16 keeps 8. A pixel flips only where its two best class logits lie
# within that rounding of each other: a thin band along class boundaries, well under 0.1% (fp32) and 1% (bf16)
# of the pixels of a model that separates its classes. Dataset metrics move by less than these fractions.
PIXEL_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-2}
METRIC_TOLERANCE = {"fp32": 2e-3, "bf16": 1e-2}
TARGETS = {"deeplabv3_resnet50": 4.0, "maskrcnn_resnet50_fpn": 2.0}  # engine bf16 / tutorial
CEILING_MAX_RATIO, GPU_BUSY_MIN = 1.3, 80.0


def source_sha256() -> str:
    """Hash of what the segpipe wheel is built from: a carried wheel older than the tree is rebuilt."""
    digest = hashlib.sha256()
    for top in ("pipeline", "converters", "evaluators"):
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def prepare_wheels(wheels: Path) -> list[str]:
    """Fill `wheels` with the carried packages (pip download, skipped when present) and a segpipe wheel of this
    tree (rebuilt when the tree changed). Returns what it did; raises RuntimeError with the fix when it cannot."""
    from importlib.metadata import PackageNotFoundError, version

    wheels.mkdir(parents=True, exist_ok=True)
    done, missing = [], []
    for name in CARRIED:
        stem = name.replace("-", "_").lower()
        if not any(p.name.lower().startswith(stem + "-") for p in wheels.glob("*.whl")):
            try:
                missing.append(f"{name}=={version(name)}")
            except PackageNotFoundError:
                missing.append(name)
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *TARGET, "-d", str(wheels), *missing]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"could not download {missing} into {wheels}: run `make gpu-wheels` where pip reaches PyPI")
        done.append(f"downloaded {', '.join(missing)}")
    sha, stamp = source_sha256(), wheels / SOURCE_STAMP
    if not (stamp.is_file() and stamp.read_text().strip() == sha and list(wheels.glob("segpipe-*.whl"))):
        for old in wheels.glob("segpipe-*.whl"):
            old.unlink()
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(REPO)]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"could not build the segpipe wheel into {wheels} (needs setuptools and wheel): run `make gpu-wheels` here")
        stamp.write_text(sha + "\n")
        done.append("built segpipe wheel")
    return done or ["wheels up to date"]


class Log:
    """Everything printed goes to the console and to $OUT/gpu_check.log."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")
        self.lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)
            self.file.write(text + "\n")
            self.file.flush()


def run_step(name: str, args: list[str], *, log: Log, env: dict[str, str], timeout: float) -> tuple[int, float]:
    """Run `gpu_check.py --step NAME ...` in its own process group; kill the whole group on timeout."""
    log(f"==== {name} (timeout {timeout:.0f} s)")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--step", name, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    reader = threading.Thread(target=lambda: [log(f"  {line.rstrip()}") for line in proc.stdout or []], daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # Luigi workers and DataLoader workers with it
        proc.wait()
        rc = 124
        log(f"  !! {name} killed after {timeout:.0f} s")
    reader.join(timeout=5)
    return rc, time.perf_counter() - start


# --- Steps (each runs in a child process; writes WORK/<step>.json) ----------------------------------------------------

def step_env(opts: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia_smi"] = f"unavailable: {err}"
    import numpy
    import torch
    import torchvision

    info.update(torch=torch.__version__, torchvision=torchvision.__version__, numpy=numpy.__version__,
                cuda_build=torch.version.cuda, cuda_available=torch.cuda.is_available())
    for name in ("pycocotools", "luigi", "segpipe"):
        from importlib.metadata import version

        info[name] = version(name)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), tf32_conv=torch.backends.cudnn.allow_tf32, devices=torch.cuda.device_count())
    for k, v in info.items():
        print(f"{k}: {v}")
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not seen: torch.cuda.is_available() is False (torch "
                         f"{torch.__version__}, built for CUDA {torch.version.cuda}; nvidia-smi: {info['nvidia_smi']}). "
                         "Run this check on the GPU host, or pass --device cpu for the CPU-side dry run.")
    return info


def step_gpu_tests(opts: argparse.Namespace) -> dict[str, Any]:
    where = ["tests/pipeline/test_gpu.py"] if opts.tiny else ["tests"]  # --tiny: the machinery, not every file's collection
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs", *where], cwd=REPO,
                          capture_output=True, text=True)
    print(proc.stdout[-6000:], proc.stderr[-2000:])
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "deselected")}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", proc.stdout.splitlines()[-1] if proc.stdout else ""):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    ok = proc.returncode == 0 and (opts.device == "cpu" or (counts["passed"] > 0 and counts["skipped"] == 0))
    if not ok:
        counts["failures"] = f"exit {proc.returncode}; on a GPU every gpu test must run and pass"
    return counts


def _segpipe(args: list[str]) -> None:
    cmd = [sys.executable, "-c", "import sys; from segpipe.cli import main; sys.argv[0] = 'segpipe'; main()", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print("$ segpipe " + " ".join(args) + "\n" + proc.stdout[-1500:] + proc.stderr[-3000:])
    if proc.returncode != 0:
        raise SystemExit(f"segpipe {args[0]} exited {proc.returncode}")


def _predictions(run_dir: Path) -> dict[tuple[str, str], Path]:
    """(checkpoint key, PNG name) -> predicted label map, from the run's inference cache."""
    found = {}
    for png in (run_dir / ".cache" / "infer").glob("*/*/*/pred/semantic/*.png"):
        found[(png.relative_to(run_dir / ".cache" / "infer").parts[0], png.name)] = png
    return found


def compare_runs(ref_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Pixel disagreement of predicted label maps and the largest leaderboard metric difference."""
    import cv2
    import numpy as np
    import pandas as pd

    ref, got = _predictions(ref_dir), _predictions(run_dir)
    if not ref or set(ref) != set(got):
        raise SystemExit(f"{run_dir.name}: predictions differ in extent from the CPU run ({len(got)} vs {len(ref)} label maps)")
    differ = total = identical = 0
    for key, path in ref.items():
        a, b = cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.imread(str(got[key]), cv2.IMREAD_UNCHANGED)
        differ += int(np.count_nonzero(a != b))
        total += a.size
        identical += int(path.read_bytes() == got[key].read_bytes())
    la = pd.read_csv(ref_dir / "leaderboard.csv").set_index("checkpoint").sort_index()
    lb = pd.read_csv(run_dir / "leaderboard.csv").set_index("checkpoint").sort_index()
    numeric = [c for c in la.columns if c not in ("sha256", "status", "error") and pd.api.types.is_numeric_dtype(la[c])]
    cols = [c for c in numeric if not pd.api.types.is_bool_dtype(la[c])]  # flags (significantly_worse) are compared below
    return {"label_maps": len(ref), "identical_files": identical, "pixels_differing": differ, "pixel_fraction": differ / total,
            "max_metric_diff": float((la[cols] - lb[cols]).abs().max().max()), "status": list(lb["status"]),
            "flags_differing": int(sum((la[c] != lb[c]).sum() for c in numeric if c not in cols))}


def step_runs(opts: argparse.Namespace) -> dict[str, Any]:
    work = Path(opts.work)
    sample = work / "sample"
    _segpipe(["sample", "-o", str(sample), "--n-images", str(opts.images)])
    weights = "unet_e03.pt" if opts.tiny else "*.pt"  # three demo checkpoints: three Luigi inference tasks per run
    common = ["run", "--dataset", str(sample), "--format", "oxford-pet", "--model", "unet", "--checkpoints",
              str(REPO / "pipeline" / "demo" / "weights" / weights), "--no-html", "--no-audit"]
    gpu = opts.device == "cuda"
    variants = [("cpu_reference", "cpu", 2, "fp32")]
    if gpu:
        variants += [("cuda_1_worker", "cuda", 1, "fp32"), ("cuda_2_workers", "cuda", 2, "fp32"),
                     ("cuda0_1_worker", "cuda:0", 1, "fp32"), ("cuda_bf16", "cuda", 1, "bf16")]
    else:  # the dry run: the same comparison machinery on the CPU
        variants += [("cpu_1_worker", "cpu", 1, "fp32")]
    out: dict[str, Any] = {}
    failures = []
    for name, device, workers, precision in variants:
        start = time.perf_counter()
        try:
            _segpipe([*common, "-o", str(work / name), "--device", device, "--workers", str(workers), "--precision", precision])
        except SystemExit as err:
            out[name] = {"error": str(err)}
            failures.append(name)
            continue
        out[name] = {"seconds": round(time.perf_counter() - start, 1)}
        if name != "cpu_reference":
            try:
                cmp = compare_runs(work / "cpu_reference", work / name)
            except SystemExit as err:
                out[name]["error"] = str(err)
                failures.append(name)
                continue
            cmp["pass"] = (cmp["pixel_fraction"] <= PIXEL_TOLERANCE[precision] and cmp["max_metric_diff"] <= METRIC_TOLERANCE[precision]
                           and all(s == "ok" for s in cmp["status"]))
            out[name].update(cmp)
            print(f"{name}: {cmp}")
            if not cmp["pass"]:
                failures.append(name)
    if failures:
        out["failures"] = failures  # not within tolerance of the CPU run, or did not run
    return out


def step_bench(opts: argparse.Namespace) -> dict[str, Any]:
    path = Path(opts.work) / "bench_rows.json"
    args = [sys.executable, str(REPO / "benchmarks" / "infer.py"), "--device", opts.device, "--json", str(path)]
    if opts.tiny:
        args += ["--tiny", "--precisions", "fp32", "--workers", "0", "--threads", "1"]
    else:
        args += ["--images", str(opts.bench_images), "--repeats", "3", "--batch-size", "16", "--precisions", "fp32,bf16"]
    proc = subprocess.run(args, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks/infer.py exited {proc.returncode}")
    return {"rows": json.loads(path.read_text())}


STEPS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "env": step_env, "gpu_tests": step_gpu_tests, "runs": step_runs, "bench": step_bench,
}


# --- The summary ----------------------------------------------------------------------------------------------------------

def summary_table(results: dict[str, Any]) -> str:
    lines = ["", "GPU CHECK SUMMARY", f"{'step':10s} {'status':8s} {'seconds':>8s}  details", "-" * 78]
    for name, r in results["steps"].items():
        lines.append(f"{name:10s} {r['status']:8s} {r['seconds']:8.1f}  {r.get('note', '')}"[:200])
    env = results["steps"].get("env", {}).get("data") or {}
    if env:
        lines.append(f"device: {env.get('gpu', 'cpu')} | driver/smi: {env.get('nvidia_smi', '')} | torch {env.get('torch')} "
                     f"(CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}) | torchvision {env.get('torchvision')}")
    runs = results["steps"].get("runs", {}).get("data") or {}
    if runs:
        lines += ["", f"{'segpipe run':16s} {'seconds':>8s} {'px differ':>10s} {'fraction':>10s} {'max dMetric':>12s} {'same files':>11s}  pass"]
        for name, r in runs.items():
            if name == "failures":
                continue
            if "pixel_fraction" in r:
                lines.append(f"{name:16s} {r['seconds']:8.1f} {r['pixels_differing']:10d} {r['pixel_fraction']:10.2e} "
                             f"{r['max_metric_diff']:12.2e} {r['identical_files']:5d}/{r['label_maps']:<5d}  {r['pass']}")
            else:
                lines.append(f"{name:16s} {r.get('seconds', 0):8.1f}  {r.get('error', 'reference')}")
    rows = (results["steps"].get("bench", {}).get("data") or {}).get("rows", [])
    if rows:
        lines += ["", f"{'model':24s} {'tutorial':>9s} {'eng fp32':>9s} {'eng bf16':>9s} {'ceiling':>9s} {'eng/tut':>9s} "
                  f"{'ceil/eng':>9s} {'busy%':>6s} {'output':>8s}  (images/s; ratios of the bf16 engine where it ran)"]
        for r in rows:
            best = "bf16" if "engine_bf16_images_per_s" in r else "fp32"
            busy = r.get(f"engine_{best}_gpu_busy_percent")
            lines.append(
                f"{r['model']:24s} {r['tutorial_images_per_s']:9.2f} {r.get('engine_fp32_images_per_s', float('nan')):9.2f} "
                f"{r.get('engine_bf16_images_per_s', float('nan')):9.2f} {r['ceiling_images_per_s']:9.2f} "
                f"{r[f'engine_{best}_vs_tutorial']:9.2f} {r[f'ceiling_vs_engine_{best}']:9.2f} "
                f"{busy if busy is not None else float('nan'):6.0f} {r.get('output_images_per_s', float('nan')):8.1f}")
            if results["device"] == "cuda":
                target = TARGETS.get(r["model"])
                verdict = [f"engine {r[f'engine_{best}_vs_tutorial']:.2f}x tutorial (target >= {target})",
                           f"ceiling {r[f'ceiling_vs_engine_{best}']:.2f}x engine (target <= {CEILING_MAX_RATIO})",
                           f"GPU busy {busy if busy is not None else 'n/a'}% (target >= {GPU_BUSY_MIN:.0f})"]
                lines.append("    " + "; ".join(verdict))
    lines.append(f"overall: {'PASS' if results['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"), help="[default: $OUT]")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the dry run of the CPU-side logic")
    parser.add_argument("--tiny", action="store_true", help="tiny data (seconds; what the CPU test suite runs)")
    parser.add_argument("--quick", action="store_true", help="`make bench`'s smoke run: --device cpu --tiny --no-install")
    parser.add_argument("--no-install", action="store_true", help="use this Python's packages instead of the carried wheels")
    parser.add_argument("--prepare-only", action="store_true", help="only fill --wheels (needs pip with PyPI) and exit")
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--images", type=int, default=None, help="images of the `segpipe run` dataset [default: 256; --tiny 6]")
    parser.add_argument("--bench-images", type=int, default=64)
    parser.add_argument("--steps", default=",".join(["install", *STEPS]), help="comma-separated subset of the steps")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.device, opts.tiny, opts.no_install = "cpu", True, True
    opts.images = opts.images or (6 if opts.tiny else 256)

    if opts.step:  # a child: run one step, write its JSON
        data = STEPS[opts.step](opts)
        Path(opts.work, f"{opts.step}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
        if data.get("failures"):
            print(f"{opts.step} FAILED: {data['failures']}")
            return 1
        return 0
    if opts.prepare_only:
        for line in prepare_wheels(opts.wheels):
            print(line)
        print(f"wheels ready in {opts.wheels}: carry it to the GPU host and run `make gpu-check` there")
        return 0

    opts.out.mkdir(parents=True, exist_ok=True)
    log = Log(opts.out / "gpu_check.log")
    work = Path(tempfile.mkdtemp(prefix="segpipe-gpu-check-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {"device": opts.device, "steps": {}, "ok": True}
    wanted = opts.steps.split(",")
    log(f"segpipe gpu check: device {opts.device}, work {work}, out {opts.out}")
    if "install" in wanted and not opts.no_install:
        start = time.perf_counter()
        try:
            notes = prepare_wheels(opts.wheels)
            site = work / "site"
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                   "--target", str(site), *map(str, sorted(opts.wheels.glob("*.whl")))]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUTS["install"])
            if proc.returncode != 0:
                raise RuntimeError(f"pip install of the carried wheels failed: {proc.stderr[-1500:]}")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
            results["steps"]["install"] = {"status": "ok", "note": "; ".join(notes)}
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            results["steps"]["install"] = {"status": "FAILED", "note": str(err)}
            results["ok"] = False
        results["steps"]["install"]["seconds"] = time.perf_counter() - start
        log(f"==== install: {results['steps']['install']}")
    for name in STEPS:
        if name not in wanted:
            continue
        if results["steps"].get("install", {}).get("status") == "FAILED" and name != "env":
            results["steps"][name] = {"status": "skipped", "seconds": 0.0, "note": "the carried wheels did not install"}
            continue
        args = ["--device", opts.device, "--work", str(work), "--images", str(opts.images), "--bench-images", str(opts.bench_images)]
        rc, seconds = run_step(name, args + (["--tiny"] if opts.tiny else []), log=log, env=env, timeout=TIMEOUTS[name])
        data_path = work / f"{name}.json"
        data = json.loads(data_path.read_text()) if data_path.is_file() else None
        status = "ok" if rc == 0 and data is not None else ("TIMEOUT" if rc == 124 else "FAILED")
        note = "" if status == "ok" else f"exit {rc}: {(data or {}).get('failures', 'see gpu_check.log')}"
        results["steps"][name] = {"status": status, "seconds": seconds, "data": data, "note": note}
        if status != "ok":
            results["ok"] = False
            if name == "env":  # no CUDA, no point in the rest
                for rest in [s for s in STEPS if s != "env" and s in wanted]:
                    results["steps"][rest] = {"status": "skipped", "seconds": 0.0, "note": "env failed (CUDA not seen?)"}
                break
    if results["steps"].get("gpu_tests", {}).get("data"):
        results["steps"]["gpu_tests"]["note"] += " " + str({k: v for k, v in results["steps"]["gpu_tests"]["data"].items() if k != "failures"})
    (opts.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    table = summary_table(results)
    (opts.out / "summary.txt").write_text(table + "\n")
    log(table)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

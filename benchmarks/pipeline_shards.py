"""How many shards `segpipe run` reruns after small dataset edits (real data, real pipeline).

A generated Oxford-IIIT-Pet-style dataset (default 2,000 images, shard size 256) and 2 tiny U-Net
checkpoints (random weights, CPU). After a first run, in this order, each edit followed by a run:

1. one image removed (its image, trimap and XML moved away);
2. one image added (the same files back under a new name of the same breed);
3. one annotation edited (a trimap's pixels);
4. `--categories breed` -> `species` (a conversion option at category level).

Printed: inference and evaluation shards rerun per checkpoint (targets: inference <= 1, <= 1, 0, 0).

    python benchmarks/pipeline_shards.py
    python benchmarks/pipeline_shards.py --quick         # 200 images, shard size 64 (smoke run)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from segpipe.demo.sample import generate_sample  # noqa: E402
from segpipe.runner.config import RunSettings  # noqa: E402
from segpipe.runner.driver import run_pipeline  # noqa: E402

CARD = {"task": "semantic", "class_names": ["background", "pet"], "unet": {"depth": 1, "width": 2}}
CHECKPOINTS = ("m0", "m1")


def make_checkpoint(path: Path, *, seed: int) -> None:
    import torch

    from segpipe.inference.unet import UNet

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(UNet(num_classes=2, depth=1, base_width=2).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(CARD), encoding="utf-8")


def stem_files(root: Path, stem: str) -> list[Path]:
    return [p for p in (root / "images" / f"{stem}.jpg", root / "annotations" / "trimaps" / f"{stem}.png",
                        root / "annotations" / "xmls" / f"{stem}.xml") if p.is_file()]


def report(label: str, settings: RunSettings) -> None:
    started = time.perf_counter()
    outcome = run_pipeline(settings)
    seconds = time.perf_counter() - started
    if outcome.exit_code not in (0, 3):
        raise SystemExit(f"{label}: run failed (exit {outcome.exit_code}): {outcome.failed}")
    counts = {family: max(sum(1 for t in outcome.ran if t.startswith(f"{family}_{c}_")) for c in CHECKPOINTS)
              for family in ("InferShard", "EvalShard")}
    convert = sum(1 for t in outcome.ran if t.startswith("ConvertShard_"))
    print(f"{label:<28} {counts['InferShard']:>9} {counts['EvalShard']:>9} {convert:>9} {seconds:8.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="200 images, shard size 64 (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.shard_size = 200, 64
    with tempfile.TemporaryDirectory() as tmp_name:
        work = Path(tmp_name)
        dataset = generate_sample(work / "pets", n_images=args.images, seed=0)
        for seed, name in enumerate(CHECKPOINTS):
            make_checkpoint(work / "ckpts" / f"{name}.pt", seed=seed)
        settings = RunSettings(dataset=dataset, format="oxford-pet", model="unet", checkpoints=(str(work / "ckpts" / "*.pt"),),
                               out=work / "out", shard_size=args.shard_size, infer={"device": "cpu", "loader_workers": 0},
                               html=False)
        n_images = len({p.stem for p in (dataset / "images").iterdir()})
        print(f"dataset: {n_images} images, {len(CHECKPOINTS)} checkpoints, shard size {args.shard_size}")
        print(f"{'':<28} {'inference':>9} {'eval':>9} {'convert':>9}   (shards rerun, per checkpoint)")
        report("first run", settings)
        stems = sorted(p.stem for p in (dataset / "images").iterdir())
        stem = stems[len(stems) // 2]
        aside = work / "aside"
        aside.mkdir()
        moved = {path.parent: aside / path.name for path in stem_files(dataset, stem)}
        for folder, target in moved.items():
            (folder / target.name).rename(target)
        report("one image removed", settings)
        new_stem = f"{stem.rsplit('_', 1)[0]}_{10**6}"  # the same breed under a new number
        for folder, target in moved.items():
            target.rename(folder / f"{new_stem}{target.suffix}")
        report("one image added", settings)
        from PIL import Image

        trimap_path = dataset / "annotations" / "trimaps" / f"{stems[len(stems) // 3]}.png"
        trimap = np.array(Image.open(trimap_path))
        trimap[:2, :2] = 3
        Image.fromarray(trimap).save(trimap_path, format="PNG")
        report("one annotation edited", settings)
        report("--categories species", replace(settings, convert={"categories": "species"}))


if __name__ == "__main__":
    main()

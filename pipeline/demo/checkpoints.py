"""Re-create the demo checkpoints shipped in pipeline/demo/weights/ (the default models of `segpipe demo`).

A tiny U-Net (depth 2, base width 8: about 30 k parameters, ~130 KB on disk) is trained on the embedded
sample (segpipe.demo.sample, 24 images) for background/pet segmentation, and saved after a few epochs each, so
the leaderboard has checkpoints of visibly different quality. Seeds are fixed; on one machine the files
come out the same every time. Each checkpoint gets a JSON model card beside it (`<stem>.json`) that tells
the inference engine the classes and the U-Net's shape.

    python -m segpipe.demo.checkpoints [-o pipeline/demo/weights]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segpipe.core.atomic_write import atomic_write_text
from segpipe.inference.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from segpipe.core.layout import SEMANTIC_DIR

DEMO_EPOCHS: tuple[int, ...] = (1, 2, 3)
DEMO_DEPTH = 2
DEMO_WIDTH = 8
DEMO_SEED = 0
DEMO_LR = 0.0005  # small on purpose: the three epochs score visibly apart (0.65, 0.98, 0.995 mIoU)
DEMO_CLASSES: tuple[str, ...] = ("background", "pet")
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
# The inference engine normalises with these unless a model card says otherwise (segpipe.inference.checkpoints).


def model_card(*, epochs: int, depth: int, width: int) -> dict[str, Any]:
    return {
        "task": "semantic", "class_names": list(DEMO_CLASSES), "unet": {"depth": depth, "width": width},
        "notes": f"demo U-Net trained {epochs} epoch(s) on the embedded sample (pipeline/demo/checkpoints.py)",
    }


def read_training_pairs(converted: Path, *, sample: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB uint8 HxWx3, label uint8 HxW with 255 = ignore) for every converted image, in sorted order."""
    from PIL import Image

    pairs = []
    for label_path in sorted((converted / SEMANTIC_DIR).glob("*.png")):
        with Image.open(sample / "images" / f"{label_path.stem}.jpg") as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        with Image.open(label_path) as lm:
            label = np.asarray(lm, dtype=np.uint8)
        pairs.append((image, label))
    return pairs


def train_unet(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, save_at: Sequence[int], depth: int, width: int, seed: int
) -> dict[int, dict[str, Any]]:
    """Train with Adam, one image per step (sizes differ; no padding), and return state_dicts by epoch."""
    import torch

    from segpipe.inference.unet import UNet

    torch.manual_seed(seed)
    net = UNet(num_classes=len(DEMO_CLASSES), depth=depth, base_width=width)
    optimiser = torch.optim.Adam(net.parameters(), lr=DEMO_LR)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    tensors = [
        ((torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std, torch.from_numpy(lab.astype(np.int64))[None])
        for img, lab in pairs
    ]
    order_rng = np.random.default_rng(seed)
    saved: dict[int, dict[str, Any]] = {}
    net.train()
    for epoch in range(1, max(save_at) + 1):
        for i in order_rng.permutation(len(tensors)):
            x, y = tensors[int(i)]
            optimiser.zero_grad()
            loss_fn(net(x), y).backward()
            optimiser.step()
        if epoch in save_at:
            saved[epoch] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return saved


def make_demo_checkpoints(out: Path, *, epochs: Sequence[int] = DEMO_EPOCHS, depth: int = DEMO_DEPTH, width: int = DEMO_WIDTH,
                          seed: int = DEMO_SEED, n_images: int = 24) -> list[Path]:
    """Generate the sample, convert it, train, and write `unet_eNN.pt` + `unet_eNN.json` per epoch."""
    import io

    import torch

    from segpipe.core.atomic_write import atomic_write_bytes
    from segpipe.converters.oxford_pet import convert_oxford_pet
    from segpipe.demo.sample import generate_sample

    with tempfile.TemporaryDirectory() as tmp:
        sample = generate_sample(Path(tmp) / "sample", n_images=n_images, seed=seed)
        convert_oxford_pet(sample, Path(tmp) / "converted", workers=1)
        pairs = read_training_pairs(Path(tmp) / "converted", sample=sample)
    states = train_unet(pairs, save_at=epochs, depth=depth, width=width, seed=seed)
    written = []
    for epoch in sorted(states):
        stem = f"unet_e{epoch:02d}"
        buf = io.BytesIO()
        torch.save(states[epoch], buf)
        written.append(atomic_write_bytes(out / f"{stem}.pt", buf.getvalue()))
        card = model_card(epochs=epoch, depth=depth, width=width)
        atomic_write_text(out / f"{stem}.json", json.dumps(card, sort_keys=True, indent=2) + "\n")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args(argv)
    for path in make_demo_checkpoints(args.out):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

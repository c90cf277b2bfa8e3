"""Would image evidence tell a missing label from the model's false positive? A probe, not part of the audit.

The model checks see labels and predictions only: a confident false positive reads like a deleted label, and a
label the model missed without a trace reads like a spurious one. The pixels could break the tie if a region
holding an object differed from its surroundings and one on background did not. This measures that difference,
per region, on a downsampled image (longer side SIDE px):

    colour contrast = |mean colour inside - mean colour in a ring around it| / pooled standard deviation + 1
    edge ratio      = mean gradient magnitude on the region's outline / mean over the whole image

on three kinds of data, and prints the distributions (min / p10 / median / p90 / max) and the AUC of real
objects against regions with none (1.0: every object scores above every empty region; 0.5: no signal):

1. the recall benchmark's simulator (audit_recall.py): its images are blank, so there is nothing to measure;
2. the shipped demo U-Nets on the embedded Oxford-IIIT Pet sample, with 10 % of the pets deleted and as many
   spurious ellipses drawn on free background: real model false positives, but synthetic pictures (warm pets on
   cool clutter, made for a tiny U-Net to separate);
3. the LabelImg peer fixture (two real photos, 51 hand-drawn boxes) against as many boxes of the same size
   placed at random where no label is, when ../shared/peers is present; also at 4 x SIDE, where a labelled
   box's outline follows the object's edges. A random box is the kindest stand-in for an error: a detector
   places its false positives on edges as it places its true ones, and a label drawn on the wrong thing
   follows that thing's edges, so an edge ratio that separates labels from random boxes says nothing yet
   about those.

    python benchmarks/audit_image_contrast.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segpipe.evaluators.audit.model_checks import SPECK_FRACTION  # noqa: E402

SIDE = 64
GROUPS_REAL = ("confirmed label", "label the model missed", "deleted pet (its prediction)")
GROUPS_EMPTY = ("spurious label (injected)", "model false positive")


def _decode(seg: dict[str, Any]) -> np.ndarray:
    counts = seg["counts"]
    return np.asarray(mask_utils.decode({"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}))


def contrast(image: np.ndarray, mask: np.ndarray, side: int = SIDE) -> tuple[float, float]:
    """(colour contrast, edge ratio) of a region against a ring of a quarter of its size around it (NaN when too small)."""
    h, w = mask.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    r = max(2, int(round(0.25 * np.sqrt(np.count_nonzero(m)))))
    ring = (cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0) & ~m
    if np.count_nonzero(ring) < 4 or np.count_nonzero(m) < 4:
        return float("nan"), float("nan")
    inside, around = im[m], im[ring]
    pooled = float(np.sqrt((inside.var(axis=0).mean() + around.var(axis=0).mean()) / 2)) + 1.0
    colour = float(np.linalg.norm(inside.mean(axis=0) - around.mean(axis=0))) / pooled
    gray = cv2.cvtColor(np.clip(im, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    outline = (cv2.dilate(m.astype(np.uint8), k3) > 0) & ~(cv2.erode(m.astype(np.uint8), k3) > 0)
    return colour, float(grad[outline].mean()) / (float(grad.mean()) + 1e-6)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a real object's value > an empty region's), ties half (the Mann-Whitney U statistic / (n m))."""
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(np.count_nonzero(diff > 0) + 0.5 * np.count_nonzero(diff == 0)) / diff.size


def table(title: str, rows: dict[str, list[tuple[float, float]]], real: tuple[str, ...], empty: tuple[str, ...]) -> list[str]:
    lines = [title, f"  {'':<30} {'n':>5}  colour contrast min/p10/med/p90/max   edge ratio min/p10/med/p90/max"]
    arrays = {k: np.array(v, dtype=np.float64).reshape(-1, 2) for k, v in rows.items()}
    for k, v in arrays.items():
        def q(c: int, v: np.ndarray = v) -> str:
            finite = v[np.isfinite(v[:, c]), c]
            return " ".join(f"{x:5.2f}" for x in np.percentile(finite, [0, 10, 50, 90, 100])) if len(finite) else "    (none measurable)       "
        lines.append(f"  {k:<30} {len(v):>5}  {q(0)}   {q(1)}")
    pos = np.concatenate([arrays[k] for k in real if k in arrays] or [np.zeros((0, 2))])
    for k in empty:
        if k in arrays and len(arrays[k]):
            lines.append(f"  AUC real objects vs {k}: colour {auc(pos[:, 0], arrays[k][:, 0]):.3f}, edge {auc(pos[:, 1], arrays[k][:, 1]):.3f}")
    return lines


def simulator(n_images: int, seed: int) -> list[str]:
    from audit_recall import generate_clean, write_images

    coco, _, _ = generate_clean(n_images, seed=seed, model_errors=0.05)
    with tempfile.TemporaryDirectory() as tmp:
        write_images(coco, Path(tmp))
        values = {int(v) for im in coco["images"] for v in np.unique(cv2.imread(str(Path(tmp) / im["file_name"]), cv2.IMREAD_GRAYSCALE))}
    return [f"recall simulator ({n_images} images): its images hold {len(values)} distinct grey values (blank but for a 4-byte id): "
            "no object, false positive or spurious label is drawn, so image evidence has nothing to measure there"]


def demo(n_images: int, checkpoint: str, seed: int) -> list[str]:
    from audit_recall import demo_unet_predictions

    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in (*GROUPS_REAL, *GROUPS_EMPTY, "speck false positive")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = demo_unet_predictions(root, checkpoint=checkpoint, n_images=n_images, seed=seed)
        if isinstance(made, str):
            return [f"demo {checkpoint}: {made}"]
        coco, preds = made
        anns = coco["annotations"]
        speck = SPECK_FRACTION * float(np.median([a["area"] for a in anns]))  # what the audit calls a speck
        n_err = max(4, len(anns) // 10)
        deleted = {int(i) for i in rng.choice([a["id"] for a in anns], size=n_err, replace=False)}
        for im in coco["images"]:
            image = cv2.imread(str(root / "sample" / "images" / im["file_name"]), cv2.IMREAD_COLOR)
            labels = [(a["id"], _decode(a["segmentation"])) for a in anns if a["image_id"] == im["id"]]
            kept = [m for i, m in labels if i not in deleted]
            found = [_decode(p["segmentation"]) for p in preds if p["image_id"] == im["id"] and p["score"] >= 0.5]

            def iou(a: np.ndarray, b: np.ndarray) -> float:
                union = np.count_nonzero(a | b)
                return np.count_nonzero(a & b) / union if union else 0.0

            for m in kept:
                rows[GROUPS_REAL[0] if any(iou(m, p) >= 0.5 for p in found) else GROUPS_REAL[1]].append(contrast(image, m))
            for p in found:
                if any(iou(m, p) >= 0.5 for m in kept):
                    continue
                if any(i in deleted and iou(m, p) >= 0.5 for i, m in labels):
                    rows[GROUPS_REAL[2]].append(contrast(image, p))
                else:
                    rows["speck false positive" if np.count_nonzero(p) < speck else GROUPS_EMPTY[1]].append(contrast(image, p))
        for image_id in rng.choice([im["id"] for im in coco["images"]], size=n_err, replace=False):
            im = next(i for i in coco["images"] if i["id"] == int(image_id))
            pets = [_decode(a["segmentation"]) for a in anns if a["image_id"] == im["id"]]
            for _ in range(100):  # an ellipse on free background
                ax = rng.uniform(0.08, 0.16) * min(im["width"], im["height"])
                ay = ax * rng.uniform(0.6, 1.4)
                centre = (int(rng.uniform(ax, im["width"] - ax)), int(rng.uniform(ay, im["height"] - ay)))
                m = np.zeros((im["height"], im["width"]), np.uint8)
                cv2.ellipse(m, centre, (int(ax), int(ay)), 0, 0, 360, 1, -1)
                if all(np.count_nonzero(m & p) == 0 for p in pets):
                    image = cv2.imread(str(root / "sample" / "images" / im["file_name"]), cv2.IMREAD_COLOR)
                    rows[GROUPS_EMPTY[0]].append(contrast(image, m))
                    break
    title = f"demo {checkpoint} on the embedded sample ({n_images} images, seed {seed}), {n_err} pets deleted, {n_err} spurious ellipses"
    return table(title, rows, GROUPS_REAL, (*GROUPS_EMPTY, "speck false positive"))


def labelimg(peers: Path, seed: int, side: int = SIDE) -> list[str]:
    import defusedxml.ElementTree as ET

    folder = peers / "labelimg"
    if not folder.is_dir():
        return ["LabelImg peer: ../shared/peers not found (set SEGPIPE_PEERS)"]
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, float]]] = {"labelled box": [], "random box where no label is": []}
    for xml in sorted(folder.glob("*.xml")):
        root = ET.parse(xml).getroot()
        image = cv2.imread(str(folder / str(root.findtext("filename"))), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        boxes = [[int(float(o.findtext(f"bndbox/{k}") or 0)) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]

        def box_mask(b: list[int], h: int = h, w: int = w) -> np.ndarray:
            m = np.zeros((h, w), np.uint8)
            m[b[1] : b[3], b[0] : b[2]] = 1
            return m

        def overlap(a: list[int], b: list[int]) -> float:
            inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
            return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

        for b in boxes:
            rows["labelled box"].append(contrast(image, box_mask(b), side))
            bw, bh = b[2] - b[0], b[3] - b[1]
            for _ in range(200):
                x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                if all(overlap([x, y, x + bw, y + bh], o) < 0.1 for o in boxes):
                    rows["random box where no label is"].append(contrast(image, box_mask([x, y, x + bw, y + bh]), side))
                    break
    return table(f"LabelImg peer (two real photos, boxes), at {side} px", rows, ("labelled box",), ("random box where no label is",))


def main() -> None:
    from audit_false_positives import default_peers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48 sample images and the 1-epoch U-Net only (else 96 images, 1 and 3 epochs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = 48 if args.quick else 96
    print("\n".join(simulator(40, args.seed)))
    for checkpoint in ("unet_e01",) if args.quick else ("unet_e01", "unet_e03"):
        print("\n".join(demo(n, checkpoint, args.seed)))
    for side in (SIDE, 4 * SIDE):
        print("\n".join(labelimg(default_peers(), args.seed, side)))


if __name__ == "__main__":
    main()

"""Boundary IoU for semantic label maps (Cheng, Girshick, Dollár, Berg, Kirillov, "Boundary IoU: Improving
Object-Centric Image Segmentation Evaluation", CVPR 2021, https://arxiv.org/abs/2103.16562).

For a class c and an image, G_d / P_d are the pixels of the GT / predicted mask of c lying within d pixels of
that mask's contour (the mask minus its erosion by d, the image border counting as contour), with
d = max(1, round(dilation_ratio * image diagonal)); the paper's default ratio is 0.02. Per class,
boundary IoU = sum over images |G_d ∩ P_d| / sum over images |G_d ∪ P_d|: dataset-level, like IoU here.
Ignored GT pixels (the ignore index) take the predicted label before the contours are drawn, so an ignore band
(the Oxford-IIIT Pet trimap border) neither creates nor removes boundary, and they are left out of the counts. NaN for a class with no boundary
pixels anywhere; the mean leaves NaN out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from segpipe.evaluators.semantic.confusion import IGNORE_INDEX
from segpipe.core.errors import EvaluationError

DEFAULT_DILATION_RATIO = 0.02
COLUMNS = ("class", "boundary_IoU", "intersection", "union", "dilation_ratio", "dilation_px")
_KERNEL = np.ones((3, 3), dtype=np.uint8)


def boundary_width(shape: tuple[int, int], dilation_ratio: float) -> int:
    """d in pixels for an image of `shape` (height, width).

    >>> boundary_width((100, 100), 0.02)
    3
    """
    return max(1, int(round(dilation_ratio * float(np.hypot(*shape)))))


def mask_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of a boolean mask within `width` pixels of its contour (the image border included).

    >>> int(mask_boundary(np.ones((5, 5), dtype=bool), 1).sum())  # the 16 pixels of the outer ring
    16
    """
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _KERNEL, iterations=width)[1:-1, 1:-1]
    boundary: np.ndarray = mask & (eroded == 0)
    return boundary


def boundary_update(gt: np.ndarray, pred: np.ndarray | None, *, num_classes: int, dilation_ratio: float = DEFAULT_DILATION_RATIO,
                    ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 [num_classes, 2]: boundary intersection and union per class for one image (additive over images)."""
    width = boundary_width(gt.shape, dilation_ratio)
    labelled = gt != ignore_index
    filled = gt if pred is None else np.where(labelled, gt, pred)
    counts = np.zeros((num_classes, 2), dtype=np.int64)
    for c in range(num_classes):
        g = filled == c
        p = (pred == c) if pred is not None else np.zeros_like(g)
        if not g.any() and not p.any():
            continue
        gb = mask_boundary(g, width) & labelled
        pb = mask_boundary(p, width) & labelled
        counts[c] = (np.count_nonzero(gb & pb), np.count_nonzero(gb | pb))
    return counts


def boundary_table(counts: np.ndarray, *, class_names: Sequence[str], dilation_ratio: float, dilation_px: str) -> pd.DataFrame:
    iou = np.full(len(class_names), np.nan)
    np.divide(counts[:, 0], counts[:, 1], out=iou, where=counts[:, 1] > 0)
    table = pd.DataFrame({"class": list(class_names), "boundary_IoU": iou, "intersection": counts[:, 0], "union": counts[:, 1],
                          "dilation_ratio": dilation_ratio, "dilation_px": dilation_px})
    kept = iou[~np.isnan(iou)]
    mean = {"class": "(mean)", "boundary_IoU": float(kept.mean()) if kept.size else np.nan, "intersection": int(counts[:, 0].sum()),
            "union": int(counts[:, 1].sum()), "dilation_ratio": dilation_ratio, "dilation_px": dilation_px}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)[list(COLUMNS)]


def boundary_iou_dirs(gt_dir: Path, pred_dir: Path, *, class_names: Sequence[str], dilation_ratio: float = DEFAULT_DILATION_RATIO) -> pd.DataFrame:
    """Boundary IoU per class over every GT label map of `gt_dir` and the same-stem map of `pred_dir`."""
    from segpipe.evaluators.semantic.evaluation import label_maps_by_stem, read_label_map

    if not 0 < dilation_ratio < 1:
        raise EvaluationError("boundary IoU options", "dilation_ratio", f"must be between 0 and 1, got {dilation_ratio}")
    gt_maps, pred_maps = label_maps_by_stem(gt_dir), label_maps_by_stem(pred_dir)
    total = np.zeros((len(class_names), 2), dtype=np.int64)
    widths = set()
    for stem in sorted(gt_maps):
        gt = read_label_map(gt_maps[stem])
        pred = read_label_map(pred_maps[stem]) if stem in pred_maps else None
        if pred is not None and pred.shape != gt.shape:
            raise EvaluationError(pred_maps[stem], "size", f"prediction is {pred.shape[::-1]}, ground truth {gt.shape[::-1]} (width, height)")
        total += boundary_update(gt, pred, num_classes=len(class_names), dilation_ratio=dilation_ratio)
        widths.add(boundary_width(gt.shape, dilation_ratio))
    px = "-".join(str(w) for w in sorted(widths)) if len(widths) <= 1 else f"{min(widths)}-{max(widths)}"
    return boundary_table(total, class_names=class_names, dilation_ratio=dilation_ratio, dilation_px=px)

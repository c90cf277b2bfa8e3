"""Audit recall/precision on injected label errors, and audit speed.

A clean generated dataset (ellipse masks, 5 classes with their own size/shape, ~5 objects per image) gets
near-perfect predictions (the true mask moved by at most 1 px, score 0.75-0.99, plus low-score noise). Then 5%
of the annotations get one known error each: shift, grow, swap class, delete, spurious (added), erode/dilate.
The audit runs; among its top 2 x (number injected) findings we count

    recall    = injected errors pointed at by at least one of those findings / injected errors (per type too)
    precision = those findings that point at an injected error / findings in that top list

A finding points at an error when it names the modified or added annotation, or, for a deleted one, is a
`possibly_missing` finding of the same image and class. When cleanlab is importable, its
`object_detection.find_label_issues` ranks images on the same data; both are compared at the image level.

    python benchmarks/audit_recall.py            # 10,000 images / ~50,000 annotations
    python benchmarks/audit_recall.py --quick    # 400 images, model error rates 0, 0.05, 0.1, 0.2
    python benchmarks/audit_recall.py --quick --model-errors 0.05
    make bench-audit                             # --quick --demo beside cleanlab, in a throwaway environment

`--model-errors` makes the simulated model imperfect (that share of objects missed, as many misplaced, as many
confident false positives); `--misses` says what a missed object leaves: `nothing` (a miss then looks exactly
like a spurious label) or `low-score` (its mask at score 0.05-0.45, as a detector that keeps unconfident
detections leaves it); both by default. Per rate it prints recall per error kind and precision per check among the top
2 x (injected) findings, and, when cleanlab is importable, cleanlab's `segmentation.find_label_issues` /
`get_label_quality_scores` on the semantic version of the same data (64 x 64 label maps, pixel probabilities
from the predictions) beside segpipe at the image level. `--demo` adds a real model: the shipped demo U-Net's
predictions on the embedded Oxford-IIIT Pet sample, with sloppy outlines, a box, a shifted duplicate and a
deleted pet injected into its labels.

It also prints the false-positive rate of the statistical checks on correct labels (the embedded sample,
the sample at mixed resolutions, the LabelImg peer): benchmarks/audit_false_positives.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.converters.coco import encode_mask as _encode
from segpipe.evaluators.audit.dataset import audit_dataset  # noqa: E402
from segpipe.evaluators.audit.findings import CHECK_POSSIBLY_MISSING  # noqa: E402

ERROR_TYPES: tuple[str, ...] = ("shift", "grow", "swap", "delete", "spurious", "erode_dilate")
MODEL_ERROR_RATES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
SEMANTIC_SIDE = 64  # cleanlab's semantic comparison at 64 x 64: pixel probabilities for 400 images fit in memory
ERROR_FRACTION = 0.05
IMAGE_SIZE = 256
# Per class: (mean semi-axis in px, aspect ratio a/b) so that classes differ in size and shape.
CLASS_SHAPES: tuple[tuple[float, float], ...] = ((20.0, 1.0), (30.0, 1.6), (18.0, 0.7), (40.0, 2.2), (34.0, 1.2))
CLASS_NAMES: tuple[str, ...] = ("round", "wide", "tall", "long", "big")


@dataclass(frozen=True)
class Injected:
    kind: str
    image_id: int
    annotation_id: int | None  # the modified / added annotation; None for a deletion
    category_id: int  # deletion: the deleted annotation's class


def _ellipse_mask(cx: float, cy: float, a: float, b: float, angle: float, size: int = IMAGE_SIZE) -> np.ndarray:
    m = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(m, (int(round(cx)), int(round(cy))), (max(1, int(round(a))), max(1, int(round(b)))), angle, 0, 360, 1, -1)
    return m


def _ann(ann_id: int, image_id: int, cat: int, mask: np.ndarray) -> dict[str, Any]:
    rle = _encode(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "iscrowd": 0,
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


def _random_object(rng: np.random.Generator) -> tuple[int, tuple[float, float, float, float, float]]:
    cat = int(rng.integers(len(CLASS_SHAPES)))
    mean, aspect = CLASS_SHAPES[cat]
    # Semi-axes within [12, 60] px with the class's aspect ratio kept exactly (no clipping of one axis only).
    a = float(np.clip(mean * np.exp(rng.normal(0, 0.15)), 12 * max(1.0, aspect), 60 * min(1.0, aspect)))
    b = a / aspect
    margin = max(a, b) + 2
    cx, cy = rng.uniform(margin, IMAGE_SIZE - margin, size=2)
    return cat + 1, (float(cx), float(cy), a, b, 0.0)


MISSES: tuple[str, ...] = ("nothing", "low-score")
# A missed object's leftover detection: unconfident (under the audit's 0.5), above the 0.05 floor that
# torchvision's Mask R-CNN keeps (box_score_thresh=0.05,
# https://pytorch.org/vision/stable/models/generated/torchvision.models.detection.maskrcnn_resnet50_fpn.html).
MISS_SCORE_RANGE = (0.05, 0.45)


def generate_clean(
    n_images: int, *, seed: int, model_errors: float = 0.0, misses: str = "nothing"
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, tuple]]:
    """A clean COCO dataset, near-perfect predictions, and each annotation's ellipse parameters.

    `model_errors` > 0 makes the model imperfect: it misses that fraction of the objects, outlines as many
    sloppily (moved by a quarter of their size) and adds as many confident false positives per object.
    `misses`: "nothing" leaves no prediction for a missed object (a semantic model's lost component, and the
    hardest case: a miss then looks exactly like a spurious label); "low-score" leaves the object's mask at a
    score in MISS_SCORE_RANGE, as a detector that keeps its unconfident detections does.
    """
    if misses not in MISSES:
        raise ValueError(f"misses must be one of {MISSES}, not {misses!r}")
    rng = np.random.default_rng(seed)
    # Its own stream, so that both `misses` settings draw the same dataset and the same model errors.
    miss_rng = np.random.default_rng(seed + 2)
    images, anns, preds, shapes = [], [], [], {}
    ann_id = 1
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"img_{image_id:06d}.png", "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for _ in range(int(rng.integers(3, 8))):
            cat, shape = _random_object(rng)
            anns.append(_ann(ann_id, image_id, cat, _ellipse_mask(*shape)))
            shapes[ann_id] = shape
            dx, dy = rng.integers(-1, 2, size=2) * (rng.random(2) < 0.5)
            if rng.random() < model_errors:
                dx, dy = 0.5 * shape[2], 0.5 * shape[3]
            pmask = _ellipse_mask(shape[0] + dx, shape[1] + dy, *shape[2:])
            if rng.random() >= model_errors:
                preds.append({"image_id": image_id, "category_id": cat, "score": float(rng.uniform(0.75, 0.99)), "segmentation": _encode(pmask)})
            elif misses == "low-score":
                preds.append({"image_id": image_id, "category_id": cat, "score": float(miss_rng.uniform(*MISS_SCORE_RANGE)), "segmentation": _encode(pmask)})
            if rng.random() < model_errors:
                cat_fp, shape_fp = _random_object(rng)
                preds.append(
                    {
                        "image_id": image_id,
                        "category_id": cat_fp,
                        "score": float(rng.uniform(0.5, 0.9)),
                        "segmentation": _encode(_ellipse_mask(*shape_fp)),
                    }
                )
            ann_id += 1
        if rng.random() < 0.7:  # low-score noise that any real detector emits
            cat, shape = _random_object(rng)
            preds.append(
                {"image_id": image_id, "category_id": cat, "score": float(rng.uniform(0.05, 0.3)), "segmentation": _encode(_ellipse_mask(*shape))}
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    return {"images": images, "annotations": anns, "categories": categories}, preds, shapes


def _decode(ann: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode("ascii")})


def inject_errors(
    coco: dict[str, Any], shapes: dict[int, tuple], *, seed: int, fraction: float = ERROR_FRACTION
) -> tuple[dict[str, Any], list[Injected]]:
    """A copy of `coco` with `fraction` of its annotations given one known error each (types in equal shares)."""
    rng = np.random.default_rng(seed + 1)
    anns = [dict(a) for a in coco["annotations"]]
    n_err = max(len(ERROR_TYPES), int(round(fraction * len(anns))))
    chosen = rng.choice(len(anns), size=n_err, replace=False)
    injected: list[Injected] = []
    deleted: set[int] = set()
    next_id = max(a["id"] for a in anns) + 1
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    for k, idx in enumerate(chosen):
        kind = ERROR_TYPES[k % len(ERROR_TYPES)]
        a = anns[idx]
        cx, cy, ea, eb, angle = shapes[a["id"]]
        if kind == "shift":
            frac = rng.uniform(0.35, 0.5)
            sign = rng.choice([-1, 1], size=2)
            mask = _ellipse_mask(cx + sign[0] * frac * 2 * ea, cy + sign[1] * frac * 2 * eb, ea, eb, angle)
            anns[idx] = _ann(a["id"], a["image_id"], a["category_id"], mask)
        elif kind == "grow":
            g = rng.uniform(1.5, 1.8)
            anns[idx] = _ann(a["id"], a["image_id"], a["category_id"], _ellipse_mask(cx, cy, ea * g, eb * g, angle))
        elif kind == "swap":
            anns[idx] = {**a, "category_id": int((a["category_id"] - 1 + rng.integers(1, len(CLASS_SHAPES))) % len(CLASS_SHAPES) + 1)}
        elif kind == "erode_dilate":
            r = max(3, int(round(0.25 * min(ea, eb))))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            op = cv2.erode if rng.random() < 0.5 else cv2.dilate
            anns[idx] = _ann(a["id"], a["image_id"], a["category_id"], op(_decode(a), kernel))
        if kind == "delete":
            deleted.add(a["id"])
            injected.append(Injected(kind, a["image_id"], None, a["category_id"]))
            continue
        if kind == "spurious":
            for _ in range(50):  # somewhere free: a label on top of another object is a different error
                cat, shape = _random_object(rng)
                mask = _ellipse_mask(*shape)
                if all(np.count_nonzero(mask & _decode(o)) == 0 for o in by_image[a["image_id"]]):
                    break
            anns.append(_ann(next_id, a["image_id"], cat, mask))
            injected.append(Injected(kind, a["image_id"], next_id, cat))
            next_id += 1
            continue
        injected.append(Injected(kind, a["image_id"], a["id"], anns[idx]["category_id"]))
    kept = [a for a in anns if a["id"] not in deleted]
    return {**coco, "annotations": kept}, injected


def score_findings(findings: Any, injected: list[Injected]) -> dict[str, Any]:
    """Recall per type and precision among the top 2 x len(injected) findings."""
    k = 2 * len(injected)
    top = findings.head(k)
    by_ann = {e.annotation_id: i for i, e in enumerate(injected) if e.annotation_id is not None}
    deletions: dict[tuple[int, int], list[int]] = {}
    for i, e in enumerate(injected):
        if e.kind == "delete":
            deletions.setdefault((e.image_id, e.category_id), []).append(i)
    found: set[int] = set()
    hits = 0
    for row in top.itertuples(index=False):
        idx: list[int] = []
        if row.annotation_id is not None and not _isna(row.annotation_id) and int(row.annotation_id) in by_ann:
            idx = [by_ann[int(row.annotation_id)]]
        elif row.check == CHECK_POSSIBLY_MISSING and not _isna(row.image_id):
            cat_id = CLASS_NAMES.index(row.category) + 1 if row.category in CLASS_NAMES else -1
            idx = deletions.get((int(row.image_id), cat_id), [])
        if idx:
            hits += 1
            found.update(idx)
    per_type = {t: (sum(1 for i in found if injected[i].kind == t), sum(1 for e in injected if e.kind == t)) for t in ERROR_TYPES}
    # Rows that name no image (dataset-level notes: model_habit, few_instances) count against precision as any
    # other row; how many there were is said beside it.
    notes = sum(1 for v in top["image_id"] if _isna(v))
    return {"k": k, "rows": len(top), "recall": len(found) / len(injected), "precision": hits / max(1, len(top)),
            "per_type": per_type, "notes": notes, "label_precision": hits / max(1, len(top) - notes)}


def _isna(v: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def image_ranking_scores(ranked_images: list[int], injected: list[Injected], n_images: int) -> tuple[float, float]:
    """Image-level (precision, recall) among the top 2 x (images with an injected error)."""
    bad = {e.image_id for e in injected}
    top = ranked_images[: 2 * len(bad)]
    hits = sum(1 for i in top if i in bad)
    return hits / max(1, len(top)), len(bad & set(top)) / max(1, len(bad))


def run_cleanlab(coco: dict[str, Any], preds: list[dict[str, Any]]) -> tuple[list[int], list[int]] | None:
    """cleanlab on the same boxes: (image ids that find_label_issues flags, ranked; all image ids ranked by
    get_label_quality_scores, worst first), or None when cleanlab is not importable."""
    try:
        from cleanlab.object_detection.filter import find_label_issues
        from cleanlab.object_detection.rank import get_label_quality_scores
    except ImportError:
        return None
    if not hasattr(np, "in1d"):
        # cleanlab 2.9.0 still calls np.in1d, which NumPy 2.4 removed; np.isin is its documented replacement.
        np.in1d = np.isin  # type: ignore[attr-defined]
    ids = [im["id"] for im in coco["images"]]
    n_cls = len(coco["categories"])
    labels, predictions = [], []
    gt_by, pr_by = {i: [] for i in ids}, {i: [] for i in ids}
    for a in coco["annotations"]:
        gt_by[a["image_id"]].append(a)
    for p in preds:
        pr_by[p["image_id"]].append(p)
    for i in ids:
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in gt_by[i])], dtype=np.float32).reshape(-1, 4)
        labels.append({"bboxes": boxes, "labels": np.array([a["category_id"] - 1 for a in gt_by[i]], dtype=np.int64)})
        per_class = []
        for c in range(n_cls):
            rows = []
            for p in pr_by[i]:
                if p["category_id"] - 1 == c:
                    x, y, w, h = mask_utils.toBbox(p["segmentation"]) if "bbox" not in p else p["bbox"]
                    rows.append([x, y, x + w, y + h, p["score"]])
            per_class.append(np.array(rows, dtype=np.float32).reshape(-1, 5))
        predictions.append(per_class)
    flagged = find_label_issues(labels, predictions, return_indices_ranked_by_score=True)
    quality = np.asarray(get_label_quality_scores(labels, predictions))
    by_quality = np.argsort(quality, kind="stable")
    return [ids[int(j)] for j in flagged], [ids[int(j)] for j in by_quality]


def write_images(coco: dict[str, Any], root: Path) -> None:
    """Small PNGs with distinct content (else every image would be a 'duplicate')."""
    for im in coco["images"]:
        pixels = np.zeros((im["height"], im["width"]), dtype=np.uint8)
        pixels.reshape(-1)[:4] = np.frombuffer(int(im["id"]).to_bytes(4, "little"), dtype=np.uint8)
        cv2.imwrite(str(root / im["file_name"]), pixels)


def iou_floor(coco: dict[str, Any], preds: list[dict[str, Any]]) -> None:
    """Baseline: only the per-image pycocotools IoU matrices the model checks need."""
    gt_by: dict[int, list] = {}
    pr_by: dict[int, list] = {}
    for a in coco["annotations"]:
        gt_by.setdefault(a["image_id"], []).append(a["segmentation"])
    for p in preds:
        pr_by.setdefault(p["image_id"], []).append(p["segmentation"])
    for i, g in gt_by.items():
        if i in pr_by:
            mask_utils.iou(pr_by[i], g, [0] * len(g))


def precision_per_check(findings: Any, injected: list[Injected]) -> dict[str, tuple[int, int]]:
    """Per check among the top 2 x len(injected) findings: (rows that point at an injected error, rows)."""
    top = findings.head(2 * len(injected))
    out: dict[str, tuple[int, int]] = {}
    for check, rows in top.groupby("check", sort=True):
        hits = score_findings(rows.reset_index(drop=True), injected)["precision"] * len(rows)
        out[str(check)] = (int(round(hits)), len(rows))
    return out


def semantic_version(coco: dict[str, Any], preds: list[dict[str, Any]], ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(labels N x S x S, pred_probs N x K x S x S) at SEMANTIC_SIDE: class 0 background, later annotations on top;
    a class's probability is the best score of its predicted masks over the pixel, the background the rest."""
    n_cls = len(coco["categories"]) + 1
    side = SEMANTIC_SIDE
    index = {i: k for k, i in enumerate(ids)}
    labels = np.zeros((len(ids), side, side), dtype=np.int64)
    probs = np.zeros((len(ids), n_cls, side, side), dtype=np.float32)

    def small(seg: dict[str, Any]) -> np.ndarray:
        m = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]})
        return cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST).astype(bool)

    for a in coco["annotations"]:
        if a["image_id"] in index:
            labels[index[a["image_id"]]][small(a["segmentation"])] = a["category_id"]
    for p in preds:
        if p["image_id"] in index:
            k = index[p["image_id"]]
            np.maximum(probs[k, p["category_id"]], small(p["segmentation"]) * np.float32(p["score"]), out=probs[k, p["category_id"]])
    fg = probs[:, 1:].sum(axis=1)
    probs[:, 0] = np.clip(1 - probs[:, 1:].max(axis=1), 0.01, 1)
    probs += 1e-3
    probs /= (probs[:, 0] + fg + n_cls * 1e-3)[:, None]
    return labels, probs


def run_cleanlab_semantic(coco: dict[str, Any], preds: list[dict[str, Any]], ids: list[int]) -> tuple[list[int], list[int]] | None:
    """cleanlab.segmentation on the semantic version: (images with any flagged pixel, by issue pixels; all images by
    get_label_quality_scores, worst first), or None when cleanlab is not importable."""
    try:
        from cleanlab.segmentation.filter import find_label_issues
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError:
        return None
    labels, probs = semantic_version(coco, preds, ids)
    issues = np.asarray(find_label_issues(labels, probs, verbose=False, n_jobs=1))
    per_image = issues.reshape(len(ids), -1).sum(axis=1)
    flagged = [ids[int(k)] for k in np.argsort(-per_image, kind="stable") if per_image[k] > 0]
    scores, _ = get_label_quality_scores(labels, probs, verbose=False)
    return flagged, [ids[int(k)] for k in np.argsort(np.asarray(scores), kind="stable")]


def run_rate(args: argparse.Namespace, n_images: int, repeats: int, model_errors: float, misses: str = "nothing") -> dict[str, float]:
    t0 = time.perf_counter()
    clean, preds, shapes = generate_clean(n_images, seed=args.seed, model_errors=model_errors, misses=misses)
    dirty, injected = inject_errors(clean, shapes, seed=args.seed)
    print(
        f"\n=== model error rate {model_errors:.0%}, misses leave {misses}: {n_images} images, {len(clean['annotations'])} annotations, "
        f"{len(preds)} predictions; "
        f"injected {len(injected)} errors in {time.perf_counter() - t0:.1f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_images(dirty, Path(tmp))
        audit_times, floor_times = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            iou_floor(dirty, preds)
            floor_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = audit_dataset(dirty, image_root=Path(tmp), predictions=preds)
            audit_times.append(time.perf_counter() - t)
    audit_s, floor_s = statistics.median(audit_times), statistics.median(floor_times)
    print(
        f"audit (image files, format, geometry, model checks): {audit_s:.1f} s median of {repeats}; "
        f"IoU-matrix floor {floor_s:.2f} s; ratio audit/floor {audit_s / floor_s:.1f}x"
        + ("" if n_images == 10_000 else f" (scaled to 10,000 images: ~{audit_s * 10_000 / n_images:.0f} s)")
    )
    s = score_findings(result.findings, injected)
    print(f"segpipe audit: top {s['k']} findings ({s['rows']} rows): recall {s['recall']:.3f}, precision {s['precision']:.3f} "
          f"({s['label_precision']:.3f} among the {s['rows'] - s['notes']} rows that name an image; {s['notes']} dataset-level notes)")
    for t, (hit, total) in s["per_type"].items():
        print(f"  {t:<13} recall {hit / max(1, total):.3f} ({hit}/{total})")
    for check, (hit, rows) in precision_per_check(result.findings, injected).items():
        print(f"  {check:<24} precision {hit / max(1, rows):.3f} ({hit}/{rows} of the top {s['k']})")
    first_seen: dict[int, None] = {}
    for v in result.findings["image_id"].dropna():
        first_seen.setdefault(int(v), None)
    n_cl = min(n_images, args.cleanlab_images)
    sub_ids = set(range(1, n_cl + 1))
    sub_inj = [e for e in injected if e.image_id in sub_ids]
    ours = image_ranking_scores([i for i in first_seen if i in sub_ids], sub_inj, n_cl)
    k_img = 2 * len({e.image_id for e in sub_inj})
    sub = {
        **dirty,
        "images": [im for im in dirty["images"] if im["id"] in sub_ids],
        "annotations": [a for a in dirty["annotations"] if a["image_id"] in sub_ids],
    }
    sub_preds = [p for p in preds if p["image_id"] in sub_ids]
    t = time.perf_counter()
    cl = run_cleanlab(sub, sub_preds) if n_cl > 0 else None
    cl_sem = run_cleanlab_semantic(sub, sub_preds, sorted(sub_ids)) if cl is not None else None
    if cl is None or cl_sem is None:
        why = "--cleanlab-images 0" if n_cl == 0 else "not importable here (`make bench-audit` compares against it)"
        print(f"cleanlab: {why}; segpipe image level: precision {ours[0]:.3f}, recall {ours[1]:.3f}")
        return {"recall": s["recall"], "precision": s["precision"]}
    cl_s = time.perf_counter() - t
    print(f"image level, first {n_cl} images, top {k_img} = 2 x (images with an injected error); cleanlab took {cl_s:.1f} s:")
    print(f"  {'':<48} {'precision':>9} {'recall':>7}")
    print(f"  {'segpipe audit':<48} {ours[0]:>9.3f} {ours[1]:>7.3f}")
    rankings = (
        ("cleanlab object_detection find_label_issues", cl[0]),
        ("cleanlab object_detection quality scores", cl[1]),
        (f"cleanlab segmentation find_label_issues ({SEMANTIC_SIDE}px)", cl_sem[0]),
        (f"cleanlab segmentation quality scores ({SEMANTIC_SIDE}px)", cl_sem[1]),
    )
    ours_top = set([i for i in first_seen if i in sub_ids][:k_img])
    per_type = ", ".join(
        f"{t} {sum(1 for e in sub_inj if e.kind == t and e.image_id in ours_top) / max(1, sum(1 for e in sub_inj if e.kind == t)):.2f}"
        for t in ERROR_TYPES
    )
    print(f"  {'segpipe audit, per type':<48} {'':>17}   per type: {per_type}")
    for name, ranked in rankings:
        p, r = image_ranking_scores(ranked, sub_inj, n_cl)
        top = set(ranked[:k_img])
        per_type = ", ".join(
            f"{t} {sum(1 for e in sub_inj if e.kind == t and e.image_id in top) / max(1, sum(1 for e in sub_inj if e.kind == t)):.2f}"
            for t in ERROR_TYPES
        )
        print(f"  {name:<48} {p:>9.3f} {r:>7.3f}   per type: {per_type}")
    return {"recall": s["recall"], "precision": s["precision"]}


DEMO_KINDS: tuple[str, ...] = ("shift", "shift", "erode", "dilate", "box", "box", "delete", "duplicate")


def demo_unet_predictions(root: Path, *, checkpoint: str = "unet_e03", n_images: int = 24,
                          seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]] | str:
    """The embedded sample (`n_images`, `seed`) under root/sample, converted with one 'pet' category (root/conv)
    and predicted on the CPU by the shipped demo U-Net `checkpoint` (root/pred), both through the CLI:
    (COCO dataset, results), or the failing command's output."""
    from click.testing import CliRunner

    from segpipe.cli import main as cli
    from segpipe.demo.sample import generate_sample

    weights = Path(__file__).resolve().parents[1] / "pipeline" / "demo" / "weights" / f"{checkpoint}.pt"
    generate_sample(root / "sample", n_images=n_images, seed=seed)
    for argv in (
        ["convert", "oxford-pet", str(root / "sample"), "-o", str(root / "conv"), "--categories", "pet"],
        ["infer", "--model", "unet", "--checkpoint", str(weights), "--dataset", str(root / "conv"), "-o", str(root / "pred"), "--device", "cpu"],
    ):
        run = CliRunner().invoke(cli, argv)
        if run.exit_code != 0:
            return f"`segpipe {' '.join(argv[:2])}` failed ({run.exit_code}): {run.output[-300:]}"
    coco = json.loads((root / "conv" / "instances.json").read_text(encoding="utf-8"))
    preds = json.loads((root / "pred" / "results.json").read_text(encoding="utf-8"))
    return coco, preds


def demo_setting(*, seed: int) -> list[str]:
    """The shipped demo U-Net (pipeline/demo/weights/unet_e03.pt) predicts the embedded sample converted with one
    'pet' category; DEMO_KINDS errors go into the labels; lines with what the audit's top 2 x 8 finds."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = demo_unet_predictions(root)
        if isinstance(made, str):
            return [f"demo U-Net setting: {made}"]
        coco, preds = made
        image_root = root / "sample" / "images"
        anns = coco["annotations"]
        chosen = rng.choice(len(anns), size=len(DEMO_KINDS), replace=False)
        marks: dict[str, list[int]] = {}  # kind -> annotation ids (image ids for a deletion)
        deleted: set[int] = set()
        next_id = max(a["id"] for a in anns) + 1
        added = []
        for kind, idx in zip(DEMO_KINDS, chosen):
            a = anns[int(idx)]
            mask = _decode(a)
            x, y, w, h = (int(v) for v in a["bbox"])
            if kind == "shift":
                frac = rng.uniform(0.25, 0.35)
                moved = np.roll(np.roll(mask, int(round(frac * w)), axis=1), int(round(frac * h)), axis=0)
                anns[int(idx)] = {**_ann(a["id"], a["image_id"], a["category_id"], moved)}
            elif kind in ("erode", "dilate"):
                r = max(2, int(round(0.08 * np.sqrt(a["area"]))))
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
                anns[int(idx)] = _ann(a["id"], a["image_id"], a["category_id"], (cv2.erode if kind == "erode" else cv2.dilate)(mask, kernel))
            elif kind == "box":
                box = np.zeros_like(mask)
                box[y : y + h, x : x + w] = 1
                anns[int(idx)] = _ann(a["id"], a["image_id"], a["category_id"], box)
            elif kind == "delete":
                deleted.add(a["id"])
                marks.setdefault(kind, []).append(a["image_id"])
                continue
            else:  # a copy moved by 2-3 px
                d = int(rng.integers(2, 4))
                added.append(_ann(next_id, a["image_id"], a["category_id"], np.roll(mask, d, axis=1)))
                marks.setdefault(kind, []).append(next_id)
                next_id += 1
                continue
            marks.setdefault(kind, []).append(a["id"])
        dirty = {**coco, "annotations": [a for a in anns if a["id"] not in deleted] + added}
        t = time.perf_counter()
        findings = audit_dataset(dirty, image_root=image_root, predictions=preds).findings
        took = time.perf_counter() - t
    k = 2 * len(DEMO_KINDS)
    top = findings.head(k)
    by_ann = {ann_id: kind for kind, ids in marks.items() if kind != "delete" for ann_id in ids}
    hit_rows, found = 0, set()
    for row in top.itertuples(index=False):
        key = None
        if not _isna(row.annotation_id) and int(row.annotation_id) in by_ann:
            key = ("ann", int(row.annotation_id))
        elif not _isna(row.image_id) and int(row.image_id) in marks.get("delete", []) and _isna(row.annotation_id):
            key = ("img", int(row.image_id))
        if key:
            hit_rows += 1
            found.add(key)
    lines = [f"demo U-Net (unet_e03) on the embedded sample, {len(dirty['images'])} images, {len(DEMO_KINDS)} injected label errors, "
             f"audit {took:.1f} s, {len(findings)} findings; top {k}: precision {hit_rows / max(1, len(top)):.3f}"]
    for kind in dict.fromkeys(DEMO_KINDS):
        ids = marks.get(kind, [])
        n_found = sum(1 for i in ids if ("img" if kind == "delete" else "ann", i) in found)
        lines.append(f"  {kind:<10} found {n_found}/{len(ids)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 images instead of 10,000")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (median) [3 quick, 1 full]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cleanlab-images", type=int, default=400, help="cap on the images given to cleanlab (its speed and memory)")
    parser.add_argument("--model-errors", type=float, nargs="+", default=list(MODEL_ERROR_RATES),
                        help="imperfect model: fraction of objects missed / misplaced / hallucinated, one run per value [0 0.05 0.1 0.2]")
    parser.add_argument("--misses", nargs="+", choices=MISSES, default=list(MISSES),
                        help="what a missed object leaves: no prediction, or an unconfident one in place [both]")
    parser.add_argument("--demo", action="store_true", help="also the demo U-Net's real predictions on the embedded sample (needs torch)")
    args = parser.parse_args()
    n_images = args.images or (400 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 1)
    # At rate 0 nothing is missed: the settings are the same run.
    runs = [(rate, m) for rate in args.model_errors for m in args.misses if rate > 0 or m == args.misses[0]]
    summary = [(rate, m, run_rate(args, n_images, repeats, rate, m)) for rate, m in runs]
    # Beside recall, how often the statistical checks flag labels known to be right (see that module).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from audit_false_positives import default_peers, measure

    print()
    print("\n".join(measure(n_images=120 if args.quick else 240, seed=args.seed, peers=default_peers())))
    if args.demo:
        print("\n".join(demo_setting(seed=args.seed)))
    print("\nsummary (top 2 x injected):")
    for rate, m, r in summary:
        print(f"  model error {rate:>5.0%}, misses leave {m:<9}: recall {r['recall']:.3f}, precision {r['precision']:.3f}")


if __name__ == "__main__":
    main()

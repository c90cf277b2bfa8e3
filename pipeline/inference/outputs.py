"""Inference outputs: COCO results records, semantic PNGs, shard files, and the final merged files.

Everything here runs on the CPU, in the encoder thread, off the device's critical path. Deterministic:
results are sorted by image id, then score (descending), then category and box, and written with sorted
keys, so the same checkpoint and dataset give byte-identical `results.json` and PNGs on every run.
Volatile facts (device, images/s, timings) go to `meta.json` only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.inference.data import DatasetInfo, ImageEntry
from segpipe.inference.mask_rle import MaskCrop, encode_crop
from segpipe.core.layout import INFERENCE_REPORT_FILE, META_FILE, RESULTS_FILE, SEMANTIC_DIR  # noqa: F401  (re-exported)

REPORT_FILE = INFERENCE_REPORT_FILE
SHARDS_DIR = ".shards"
PLAN_FILE = "plan.json"
REPORT_COLUMNS: tuple[str, ...] = ("image_id", "file_name", "code", "message")
# Mask R-CNN's masks are per-pixel probabilities; torchvision's references threshold them at 0.5 before COCO
# evaluation (https://github.com/pytorch/vision/blob/main/references/detection/coco_eval.py).
MASK_THRESHOLD = 0.5
# pycocotools scores at most maxDets=100 detections per image: more components only cost disk and time.
MAX_COMPONENTS_PER_IMAGE = 100
SCORE_DECIMALS = 6
BBOX_DECIMALS = 3


@dataclass(frozen=True)
class InstancePrediction:
    entry: ImageEntry
    scores: np.ndarray  # float32 [N]
    category_ids: np.ndarray  # int64 [N], dataset COCO ids
    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2
    masks: Sequence[MaskCrop]  # N thresholded masks, each as its tight crop of the entry's height x width image


@dataclass(frozen=True)
class SemanticPrediction:
    entry: ImageEntry
    labels: np.ndarray  # uint8 [H, W] dataset class indices
    confidence: np.ndarray | None  # float16 [H, W] probability of the predicted class; None if not needed


@dataclass(frozen=True)
class SkippedImage:
    entry: ImageEntry
    code: str
    message: str


def _result(*, image_id: int, category_id: int, score: float, bbox: Sequence[float], segmentation: dict[str, Any]) -> dict[str, Any]:
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "score": round(float(score), SCORE_DECIMALS),
        "bbox": [round(float(v), BBOX_DECIMALS) for v in bbox],
        "segmentation": segmentation,
    }


def instance_results(pred: InstancePrediction) -> list[dict[str, Any]]:
    """COCO results for one image of a detector (bbox from the detector's box, xywh)."""
    out = []
    height, width = pred.entry.height, pred.entry.width
    for i in range(len(pred.scores)):
        x1, y1, x2, y2 = (float(v) for v in pred.boxes[i])
        out.append(_result(image_id=pred.entry.image_id, category_id=int(pred.category_ids[i]), score=float(pred.scores[i]),
                           bbox=(x1, y1, x2 - x1, y2 - y1), segmentation=encode_crop(pred.masks[i], height=height, width=width)))
    return out


def component_results(
    pred: SemanticPrediction, *, categories: Mapping[int, int], score_threshold: float
) -> list[dict[str, Any]]:
    """One COCO result per 8-connected component of each non-background class that maps onto a COCO
    category; score = mean probability of that class inside the component."""
    import cv2

    if pred.confidence is None:
        return []
    conf = pred.confidence.astype(np.float64).ravel()
    found: list[tuple[float, int, tuple[float, float, float, float], np.ndarray, int]] = []
    for class_index in sorted(categories):
        binary = (pred.labels == class_index).astype(np.uint8)
        if not binary.any():
            continue
        n, cc, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
        sums = np.bincount(cc.ravel(), weights=conf, minlength=n)
        counts = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
        for k in range(1, n):
            score = sums[k] / counts[k]
            if score < score_threshold:
                continue
            x, y, w, h = (float(v) for v in stats[k, :4])
            found.append((round(float(score), SCORE_DECIMALS), categories[class_index], (x, y, w, h), cc, k))
    # Highest scores first; ties broken by category and position so the choice is deterministic.
    found.sort(key=lambda t: (-t[0], t[1], t[2][1], t[2][0]))
    height, width = pred.labels.shape
    out = []
    for score, cat, (x, y, w, h), cc, k in found[:MAX_COMPONENTS_PER_IMAGE]:
        # The component lies inside its stats box: encode that crop only (same RLE as the full mask).
        crop = MaskCrop(top=int(y), left=int(x), pixels=cc[int(y):int(y + h), int(x):int(x + w)] == k)
        out.append(_result(image_id=pred.entry.image_id, category_id=cat, score=score, bbox=(x, y, w, h),
                           segmentation=encode_crop(crop, height=height, width=width)))
    return out


def semantic_png_path(out: Path, entry: ImageEntry) -> Path:
    return out / SEMANTIC_DIR / f"{Path(entry.file_name).stem}.png"


def write_semantic_png(out: Path, pred: SemanticPrediction) -> Path:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pred.labels, dtype=np.uint8))
    if not ok:
        raise OSError(f"could not encode PNG for {pred.entry.file_name}")
    return atomic_write_bytes(semantic_png_path(out, pred.entry), encoded.tobytes())


def result_sort_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record["image_id"], -record["score"], record["category_id"], tuple(record["bbox"]))


def dumps_results(results: Sequence[Mapping[str, Any]]) -> bytes:
    return (json.dumps(sorted(results, key=result_sort_key), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


def skipped_row(skip: SkippedImage) -> dict[str, Any]:
    return {"image_id": skip.entry.image_id, "file_name": skip.entry.file_name, "code": skip.code, "message": skip.message}


def write_shard(path: Path, *, results: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, Any]], image_ids: Sequence[int]) -> Path:
    payload = {"image_ids": sorted(int(i) for i in image_ids), "results": sorted(results, key=result_sort_key),
               "skipped": sorted(skipped, key=lambda r: r["image_id"])}
    return atomic_write_text(path, json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n")


def read_shard(path: Path) -> dict[str, Any]:
    shard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return shard


def shard_path(out: Path, index: int) -> Path:
    return out / SHARDS_DIR / f"{index:06d}.json"


def read_plan_fingerprint(out: Path) -> str | None:
    path = out / SHARDS_DIR / PLAN_FILE
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def start_fresh_plan(out: Path, *, fingerprint: str, n_shards: int) -> None:
    """Forget shards (and PNGs) of a run with other settings, then record this plan."""
    shards = out / SHARDS_DIR
    if shards.is_dir():
        for p in sorted(shards.iterdir()):
            if p.is_file():
                p.unlink()
    semantic = out / SEMANTIC_DIR
    if semantic.is_dir():
        for p in sorted(semantic.glob("*.png")):
            p.unlink()
    atomic_write_text(shards / PLAN_FILE, json.dumps({"fingerprint": fingerprint, "n_shards": n_shards}, sort_keys=True) + "\n")


def write_final_outputs(out: Path, *, n_shards: int, meta: Mapping[str, Any]) -> tuple[int, int]:
    """Merge shard files into results.json and inference_report.csv, write meta.json (last: it marks the
    run complete). Returns (processed, skipped) image counts."""
    import pandas as pd
    from segpipe.reports.tables import write_table

    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    processed = 0
    for index in range(n_shards):
        shard = read_shard(shard_path(out, index))
        results.extend(shard["results"])
        skipped.extend(shard["skipped"])
        processed += len(shard["image_ids"]) - len(shard["skipped"])
    atomic_write_bytes(out / RESULTS_FILE, dumps_results(results))
    rows: list[dict[str, Any]] = sorted(skipped, key=lambda r: r["image_id"])
    table = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    write_table(out, Path(REPORT_FILE).stem, table, parquet=False)
    full_meta = {**meta, "images_processed": processed, "images_skipped": len(skipped), "n_results": len(results)}
    atomic_write_text(out / META_FILE, json.dumps(full_meta, sort_keys=True, indent=2) + "\n")
    from segpipe.core.out_manifest import mark_complete

    mark_complete(out)
    return processed, len(skipped)


def prepare_out_dir(out: str | os.PathLike[str], *, dataset: DatasetInfo | None = None) -> Path:
    """Claim OUT for this inference (segpipe.core.out_manifest): refused when another command wrote it; marked
    incomplete until `write_final_outputs` ends, so that no reader takes an interrupted run's files (or an
    earlier run's results.json beside them) for finished predictions. The manifest also records the dataset's
    label space (category ids and names, semantic class names) and image count: the readers compare them
    with the ground truth they are given."""
    from segpipe.core.out_manifest import INFER, OWNED, claim_output_folder

    path = Path(out)
    space: dict[str, Any] = {}
    if dataset is not None:
        space = {"dataset": str(dataset.root.resolve()), "n_images": len(dataset.images),
                 "categories": [[int(i), str(n)] for i, n in dataset.categories],
                 "semantic_classes": [str(c) for c in dataset.semantic_classes]}
    claim_output_folder(path, command=INFER, what="`segpipe infer` predictions", owns=OWNED[INFER], complete=False, **space)
    (path / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    return path


def finished_image_ids(out: Path) -> set[int]:
    """Images of OUT's shard files (finished shards of this or an interrupted run)."""
    done: set[int] = set()
    shards = Path(out) / SHARDS_DIR
    for path in sorted(shards.glob("[0-9]*.json")) if shards.is_dir() else ():
        try:
            done.update(int(i) for i in read_shard(path)["image_ids"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return done

"""The relabel loop on the embedded sample, end to end: inject known label errors, audit with a demo
checkpoint, write the relabel task, accept every suggestion (as an annotator who trusts the model would),
apply, and compare the findings and the metrics before and after.

    python benchmarks/relabel_loop.py                    # 24 images, CVAT and LabelMe tasks
    python benchmarks/relabel_loop.py --n-images 12 --format labelme

Injected (one each, on different images; the sample holds one pet per image, category `pet`): a deleted
pet (missing label), a pet mask shifted by a third of its width (sloppy), a pet mask dilated by 12 px
(sloppy), a spurious `pet` blob on the background. The demo U-Net (pipeline/demo/weights/unet_e03.pt) gives
the predictions: its pet connected components. Printed: which injected errors the audit flags at the task's
score threshold, the changes applied, the model-check findings and COCO segm AP of the U-Net against the
dirty, fixed and clean labels, and each injected image's label IoU with its clean label before and after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.converters.coco import dumps_coco, encode_mask, mask_bbox  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[1] / "pipeline" / "demo" / "weights" / "unet_e03.pt"
# Images with a model finding scored at least this go into the task. The U-Net's speckle components (a few
# pixels, scored about 0.5-0.55: their mean pet probability) are flagged as possibly missing pets too; the pets
# it finds score above 0.8, so only predictions above SUGGEST_MIN_SCORE become suggestions.
TASK_MIN_SCORE = 0.25
SUGGEST_MIN_SCORE = 0.8
INJECTED_KINDS: tuple[str, ...] = ("delete", "shift", "grow", "spurious")
MODEL_CHECKS: tuple[str, ...] = ("possibly_missing", "possibly_spurious", "possibly_wrong_class", "possibly_sloppy_outline")


@dataclass(frozen=True)
class Injected:
    kind: str
    image_id: int
    annotation_id: int | None


def _decode(seg: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return np.ascontiguousarray(mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")}), dtype=bool)


def _set_mask(ann: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    return {**ann, "segmentation": encode_mask(mask), "bbox": list(mask_bbox(mask)), "area": float(mask.sum())}


def prepare(work: Path, *, n_images: int, seed: int) -> tuple[Path, Path]:
    """The sample converted with one `pet` category (the U-Net's class), and the U-Net's predictions."""
    from segpipe.converters.oxford_pet import convert_oxford_pet
    from segpipe.demo.sample import generate_sample
    from segpipe.inference.engine import run_inference

    generate_sample(work / "sample", n_images=n_images, seed=seed)
    convert_oxford_pet(work / "sample", work / "clean", categories="pet")
    run_inference(model="unet", checkpoint=CHECKPOINT, dataset=work / "clean", out=work / "pred")
    return work / "clean", work / "pred"


def inject(clean: Path, dirty: Path) -> list[Injected]:
    """DIRTY = CLEAN with one error of each kind on the first four images (sorted by file name)."""
    shutil.copytree(clean, dirty)
    coco = json.loads((clean / "instances.json").read_text())
    anns = {a["image_id"]: a for a in coco["annotations"]}
    images = sorted(coco["images"], key=lambda im: im["file_name"])[: len(INJECTED_KINDS)]
    injected: list[Injected] = []
    out = []
    next_id = max(a["id"] for a in coco["annotations"]) + 1
    for kind, im in zip(INJECTED_KINDS, images):
        a = anns[im["id"]]
        mask = _decode(a["segmentation"])
        if kind == "delete":
            injected.append(Injected(kind, im["id"], None))
            del anns[im["id"]]
        elif kind == "shift":
            dx = int(round(mask_bbox(mask)[2] / 3))
            shifted = np.zeros_like(mask)
            shifted[:, dx:] = mask[:, :-dx]
            anns[im["id"]] = _set_mask(a, shifted)
            injected.append(Injected(kind, im["id"], a["id"]))
        elif kind == "grow":
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25))
            anns[im["id"]] = _set_mask(a, cv2.dilate(mask.astype(np.uint8), kernel).astype(bool))
            injected.append(Injected(kind, im["id"], a["id"]))
        else:
            blob = np.zeros(mask.shape, dtype=np.uint8)
            h, w = mask.shape
            corner = (w // 8, h // 8) if not mask[: h // 4, : w // 4].any() else (w - w // 8, h - h // 8)
            cv2.ellipse(blob, corner, (max(4, w // 10), max(3, h // 12)), 0, 0, 360, 1, -1)
            spurious = blob.astype(bool) & ~mask
            out.append(_set_mask({"id": next_id, "image_id": im["id"], "category_id": a["category_id"], "iscrowd": 0}, spurious))
            injected.append(Injected(kind, im["id"], next_id))
    kept = [anns[a["image_id"]] for a in coco["annotations"] if a["image_id"] in anns] + out  # one pet per image
    (dirty / "instances.json").write_bytes(dumps_coco({**coco, "annotations": kept}))
    return injected


def model_findings(dataset: Path, pred: Path) -> Any:
    from segpipe.evaluators.audit.dataset import audit_path

    findings = audit_path(dataset, pred=pred).findings
    return findings[findings["check"].isin(MODEL_CHECKS)]


def flagged(findings: Any, injected: list[Injected], *, min_score: float) -> dict[str, bool]:
    strong = findings[findings["score"] >= min_score]
    found = {}
    for e in injected:
        rows = strong[strong["image_id"] == e.image_id]
        if e.annotation_id is not None:
            rows = rows[rows["annotation_id"] == e.annotation_id]
        else:
            rows = rows[rows["check"] == "possibly_missing"]
        found[e.kind] = not rows.empty
    return found


def segm_ap(gt: Path, pred: Path) -> float:
    from segpipe.api import evaluate_instances

    return float(evaluate_instances(gt / "instances.json", pred / "results.json", iou_type="segm").stats[0])


def label_iou(dataset: Path, clean: Path, image_ids: list[int]) -> dict[int, float]:
    """Per image: IoU of the union of its labels with the union of its clean labels."""
    def unions(path: Path) -> dict[int, np.ndarray]:
        coco = json.loads((path / "instances.json").read_text())
        sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
        out = {i: np.zeros(sizes[i], bool) for i in image_ids}
        for a in coco["annotations"]:
            if a["image_id"] in out:
                out[a["image_id"]] |= _decode(a["segmentation"])
        return out

    mine, ref = unions(dataset), unions(clean)
    return {i: float((mine[i] & ref[i]).sum() / max(1, (mine[i] | ref[i]).sum())) for i in image_ids}


def run_loop(work: Path, *, fmt: str, clean: Path, pred: Path, injected: list[Injected], dirty: Path) -> dict[str, Any]:
    from segpipe.relabel import accept_all, apply_relabel, write_relabel_task
    from segpipe.evaluators.audit.dataset import read_predictions

    before = model_findings(dirty, pred)
    task = work / f"task_{fmt}"
    tasks = write_relabel_task(dirty, before, task, fmt=fmt, predictions=read_predictions(pred), min_score=TASK_MIN_SCORE,
                               suggest_min_score=SUGGEST_MIN_SCORE)
    accepted = accept_all(task)
    result = apply_relabel(task, dirty, work / f"fixed_{fmt}")
    fixed = work / f"fixed_{fmt}"
    after = model_findings(fixed, pred)
    ids = [e.image_id for e in injected]
    return {
        "format": fmt,
        "task_images": [t.image.file_name for t in tasks],
        "accepted": accepted,
        "changes": result.changes,
        "stale_semantic_maps": result.stale_semantic_maps,
        "found_before": flagged(before, injected, min_score=TASK_MIN_SCORE),
        "found_after": flagged(after, injected, min_score=TASK_MIN_SCORE),
        "findings_before": before[before["score"] >= TASK_MIN_SCORE]["check"].value_counts().to_dict(),
        "findings_after": after[after["score"] >= TASK_MIN_SCORE]["check"].value_counts().to_dict(),
        "ap_dirty": segm_ap(dirty, pred), "ap_fixed": segm_ap(fixed, pred), "ap_clean": segm_ap(clean, pred),
        "label_iou_before": label_iou(dirty, clean, ids), "label_iou_after": label_iou(fixed, clean, ids),
    }


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("cvat", "labelme", "both"), default="both")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        clean, pred = prepare(work, n_images=args.n_images, seed=args.seed)
        injected = inject(clean, work / "dirty")
        print(f"sample: {args.n_images} images; U-Net predictions in {time.perf_counter() - t0:.1f} s (shared, loaded machine)")
        print("injected: " + ", ".join(f"{e.kind} (image {e.image_id}, ann {e.annotation_id})" for e in injected))
        for fmt in (("cvat", "labelme") if args.format == "both" else (args.format,)):
            r = run_loop(work, fmt=fmt, clean=clean, pred=pred, injected=injected, dirty=work / "dirty")
            counts = r["changes"]["change"].value_counts().to_dict()
            print(f"\n[{fmt}] task: {len(r['task_images'])} image(s); {r['accepted']} suggestion(s) accepted; "
                  f"changes: {counts}")
            print(f"  injected errors flagged (score >= {TASK_MIN_SCORE}): before {r['found_before']}")
            print(f"                                              after  {r['found_after']}")
            print(f"  model-check findings scored >= {TASK_MIN_SCORE}: before {r['findings_before']}, after {r['findings_after']}")
            print(f"  U-Net segm AP against the labels: dirty {r['ap_dirty']:.4f}, fixed {r['ap_fixed']:.4f}, clean {r['ap_clean']:.4f}")
            for e in injected:
                print(f"  {e.kind:<9} image {e.image_id}: label IoU with the clean label {r['label_iou_before'][e.image_id]:.3f} -> "
                      f"{r['label_iou_after'][e.image_id]:.3f}")


if __name__ == "__main__":
    main()

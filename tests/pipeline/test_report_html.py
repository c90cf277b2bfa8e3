"""HTML report pages built from synthetic but realistic report tables.

The builders here (`make_*`) are shared with test_browser.py: a tiny COCO dataset with real JPEGs, RLE
masks and detections; the tables the evaluate/run/audit commands write beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from segpipe.reports import data as rd
from segpipe.reports.gallery import GallerySource, instance_thumbnail
from segpipe.reports.overlay import class_colours
from segpipe.reports.html import rank_findings, render_audit_report, render_evaluate_report, render_leaderboard
from segpipe.reports.plots import natural_key, plot_confusion
from segpipe.reports.tables import write_table

CATEGORIES = ("cat", "dog", "bird", "horse")  # horse has no ground truth: COCO reports −1
INPUT_MTIME = 1_600_000_000  # 2020-09-13 12:26:40 UTC
INPUT_DATE = "2020-09-13 12:26:40 UTC"


def _ellipse_mask(h: int, w: int, *, cx: int, cy: int, ax: int, ay: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    cv2.ellipse(m, (cx, cy), (ax, ay), 0, 0, 360, 1, thickness=-1)
    return m.astype(bool)


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def make_instance_dataset(root: Path, *, n_images: int = 8, seed: int = 0, write_images: int | None = None) -> GallerySource:
    """images/img_XXXX.jpg + instances.json (RLE masks) + results.json (shifted masks, a false positive)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        h, w = 240, 320
        name = f"img_{i:04d}.jpg"
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        canvas = np.full((h, w, 3), rng.integers(140, 210, size=3), dtype=np.uint8)
        canvas = cv2.add(canvas, rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8))
        for k in range(1 + i % 3):
            cat = 1 + (i + k) % 3
            cx, cy = int(rng.integers(60, w - 60)), int(rng.integers(50, h - 50))
            m = _ellipse_mask(h, w, cx=cx, cy=cy, ax=int(rng.integers(20, 50)), ay=int(rng.integers(20, 40)))
            # Muted, textured objects like real photos (saturated blobs would look like overlays).
            tone = np.array([(70, 95, 125), (120, 120, 110), (60, 75, 90)][cat - 1], dtype=np.int16)
            canvas[m] = np.clip(tone + rng.integers(-25, 25, size=(int(m.sum()), 3)), 0, 255).astype(np.uint8)
            x, y, bw, bh = cv2.boundingRect(m.astype(np.uint8))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": _rle(m), "area": float(m.sum()),
                         "bbox": [float(x), float(y), float(bw), float(bh)], "iscrowd": 0})
            if k == 0 or i % 2:  # some objects are missed
                shifted = np.roll(m, shift=(int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
                dets.append({"image_id": i, "category_id": cat, "segmentation": _rle(shifted),
                             "score": round(float(rng.uniform(0.5, 0.99)), 3), "bbox": [float(x), float(y), float(bw), float(bh)]})
        if i % 3 == 0:  # a false positive
            fp = _ellipse_mask(h, w, cx=40, cy=40, ax=25, ay=18)
            dets.append({"image_id": i, "category_id": 1 + i % 3, "segmentation": _rle(fp), "score": 0.77, "bbox": [15.0, 22.0, 50.0, 36.0]})
        if write_images is None or i <= write_images:
            cv2.imwrite(str(root / "images" / name), canvas)
    coco = {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORIES)]}
    (root / "instances.json").write_text(json.dumps(coco, sort_keys=True))
    (root / "results.json").write_text(json.dumps(dets, sort_keys=True))
    for p in (root / "instances.json", root / "results.json"):
        os.utime(p, (INPUT_MTIME, INPUT_MTIME))
    return GallerySource(image_root=root / "images", gt_coco=root / "instances.json", results=root / "results.json")


def match_image(gts: list[dict], dts: list[dict], *, threshold: float = 0.5) -> tuple[int, int, int, float]:
    """(tp, fp, fn, mean IoU of matched pairs): greedy by score, same category, mask IoU >= threshold."""
    used: set[int] = set()
    ious = []
    for d in sorted(dts, key=lambda d: -d["score"]):
        best, best_iou = None, threshold
        for k, g in enumerate(gts):
            if k in used or g["category_id"] != d["category_id"]:
                continue
            iou = float(mask_utils.iou([d["segmentation"]], [g["segmentation"]], [0])[0][0])
            if iou >= best_iou:
                best, best_iou = k, iou
        if best is not None:
            used.add(best)
            ious.append(best_iou)
    tp = len(used)
    return tp, len(dts) - tp, len(gts) - tp, float(np.mean(ious)) if ious else float("nan")


def make_instance_tables(report: Path, source: GallerySource, *, categories: tuple[str, ...] = CATEGORIES, seed: int = 0,
                         quality: float = 1.0) -> Path:
    """The tables `segpipe evaluate instances` writes, with plausible numbers for `source`'s images
    (per-image tp/fp/fn from real mask matching; class AP scaled by `quality`)."""
    rng = np.random.default_rng(seed)
    report.mkdir(parents=True, exist_ok=True)
    stats = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    write_table(report, "summary", pd.DataFrame({"metric": stats, "value": np.round(quality * rng.uniform(0.6, 0.9, len(stats)), 6)}))
    rows, curves = [], []
    recall = np.linspace(0, 1, 101)
    for k, cat in enumerate(categories):
        has_gt = cat != "horse"
        ap = quality * float(rng.uniform(0.5, 0.9)) if has_gt else -1.0
        rows.append({"category": cat, "AP": ap, "AP50": min(1.0, ap + 0.15) if has_gt else -1.0, "AP75": ap * 0.8 if has_gt else -1.0,
                     "APs": -1.0, "APm": ap if has_gt else -1.0, "APl": ap * 0.9 if has_gt else -1.0,
                     "AR100": min(1.0, ap + 0.1) if has_gt else -1.0, "n_gt": int(rng.integers(3, 40)) if has_gt else 0,
                     "n_dt": int(rng.integers(2, 50))})
        for iou, label in ((0.5, "0.50"), (0.75, "0.75"), (None, "0.50:0.95")):
            drop = {0.5: 0.6, 0.75: 0.9, None: 0.8}[iou]
            prec = np.clip(1.0 - drop * recall ** (1.5 + k), 0, 1) if has_gt else np.full(101, -1.0)
            prec[recall > (0.95 if iou == 0.5 else 0.8)] = 0.0 if has_gt else -1.0
            curves += [{"category": cat, "iou_threshold": label, "recall": float(r), "precision": float(p)} for r, p in zip(recall, prec)]
    write_table(report, "per_class", pd.DataFrame(rows))
    write_table(report, "pr_curves", pd.DataFrame(curves))
    per_image = []
    for im in source.coco["images"]:
        gts = source.annotations_by_image.get(im["id"], [])
        dts = source.detections_by_image.get(im["id"], [])
        tp, fp, fn, mean_iou = match_image(gts, dts)
        per_image.append({"image_id": im["id"], "file_name": im["file_name"], "n_gt": len(gts), "n_dt": len(dts), "tp": tp,
                          "fp": fp, "fn": fn, "mean_iou": mean_iou})
    write_table(report, "per_image", pd.DataFrame(per_image))
    header = {"dataset": str(source.gt_coco.parent), "checkpoint": "epoch_10.pth", "checkpoint_sha256": "ab" * 32,
              "model": "maskrcnn_resnet50_fpn_v2", "iou_type": "segm"}
    (report / "header.json").write_text(json.dumps(header, sort_keys=True))
    return report


def make_semantic_dataset(root: Path, *, n_images: int = 6, seed: int = 1) -> GallerySource:
    """images/pet_XX.jpg, gt/pet_XX.png (0 background, 1 pet, 255 border) and pred/pet_XX.png, plus a COCO
    index of the images so label maps find their photos."""
    rng = np.random.default_rng(seed)
    for d in ("images", "gt", "pred"):
        (root / d).mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(1, n_images + 1):
        h, w = 180, 240
        stem = f"pet_{i:02d}"
        m = _ellipse_mask(h, w, cx=int(rng.integers(80, 160)), cy=int(rng.integers(70, 110)), ax=int(rng.integers(40, 70)), ay=40)
        border = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~m
        gt = np.where(m, 1, 0).astype(np.uint8)
        gt[border] = 255
        pred = np.roll(m, shift=int(rng.integers(-3 * i, 3 * i + 1)), axis=1).astype(np.uint8)
        photo = np.clip(np.array((120, 150, 140), np.int16) + rng.integers(-30, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
        photo[m] = np.clip(np.array((60, 85, 120), np.int16) + rng.integers(-20, 20, size=(int(m.sum()), 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), photo)
        cv2.imwrite(str(root / "gt" / f"{stem}.png"), gt)
        cv2.imwrite(str(root / "pred" / f"{stem}.png"), pred)
        for p in (root / "gt" / f"{stem}.png", root / "pred" / f"{stem}.png"):
            os.utime(p, (INPUT_MTIME, INPUT_MTIME))
        images.append({"id": i, "file_name": f"{stem}.jpg", "width": w, "height": h})
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "pet"}]}
    (root / "instances.json").write_text(json.dumps(coco, sort_keys=True))
    os.utime(root / "instances.json", (INPUT_MTIME, INPUT_MTIME))
    return GallerySource(image_root=root / "images", gt_coco=root / "instances.json", gt_semantic_dir=root / "gt",
                         pred_semantic_dir=root / "pred")


def make_semantic_tables(report: Path, source: GallerySource, *, names: tuple[str, ...] = ("background", "pet")) -> Path:
    """summary/per_class/per_image/confusion computed with plain numpy from the label maps."""
    report.mkdir(parents=True, exist_ok=True)
    n = len(names)
    total = np.zeros((n, n), dtype=np.int64)
    per_image = []
    for gt_path in sorted(source.gt_semantic_dir.glob("*.png")):
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED).ravel()
        pred = cv2.imread(str(source.pred_semantic_dir / gt_path.name), cv2.IMREAD_UNCHANGED).ravel()
        keep = gt != 255
        cm = np.bincount(gt[keep].astype(np.int64) * n + pred[keep], minlength=n * n).reshape(n, n)
        total += cm
        tp = np.diag(cm)
        iou = tp / (cm.sum(0) + cm.sum(1) - tp)
        dice = 2 * tp / (cm.sum(0) + cm.sum(1))
        per_image.append({"file": gt_path.name, "IoU": float(np.nanmean(iou)), "Dice": float(np.nanmean(dice)), "aAcc": float(tp.sum() / cm.sum())})
    tp = np.diag(total)
    iou = tp / (total.sum(0) + total.sum(1) - tp)
    dice = 2 * tp / (total.sum(0) + total.sum(1))
    write_table(report, "per_class", pd.DataFrame({"class": list(names), "IoU": iou, "Dice": dice, "precision": tp / total.sum(0),
                                                   "recall": tp / total.sum(1), "gt_pixels": total.sum(1), "pred_pixels": total.sum(0)}))
    write_table(report, "per_image", pd.DataFrame(per_image))
    write_table(report, "summary", pd.DataFrame({"metric": ["mIoU", "mDice", "aAcc"], "value": [iou.mean(), dice.mean(), tp.sum() / total.sum()]}))
    write_table(report, "confusion", pd.DataFrame({"gt": list(names), **{nm: total[:, j] for j, nm in enumerate(names)}}))
    (report / "header.json").write_text(json.dumps({"dataset": str(source.gt_semantic_dir.parent), "model": "unet",
                                                    "checkpoint": "unet_best.pt", "checkpoint_sha256": "cd" * 32}, sort_keys=True))
    return report


CHECKPOINTS = ("epoch_10", "epoch_2", "epoch_1", "epoch_3", "best")
FAILED_CHECKPOINT = "epoch_3"


def make_run_output(out: Path, source: GallerySource) -> Path:
    """What `segpipe run` publishes: OUT/leaderboard.csv (one failed checkpoint), per_class_by_checkpoint.csv
    (checkpoint, evaluation, category, metric, value) and checkpoints/<name>/segm/ evaluate reports with pages."""
    rows, per_class = [], []
    for k, name in enumerate(CHECKPOINTS):
        row = {"checkpoint": name, "sha256": hashlib.sha256(name.encode()).hexdigest(), "status": "ok", "error": ""}
        if name == FAILED_CHECKPOINT:
            rows.append({**row, "status": "failed", "error": "CUDA out of memory", "AP": np.nan, "AP50": np.nan, "AP75": np.nan, "AR100": np.nan})
            continue
        epoch = int(name.split("_")[1]) if "_" in name else 12
        report = make_instance_tables(out / "checkpoints" / name / "segm", source, seed=k, quality=min(1.0, 0.55 + 0.04 * epoch))
        render_evaluate_report(report, gallery=None, n_worst=4)
        pc = pd.read_csv(report / "per_class.csv")
        summary = dict(pd.read_csv(report / "summary.csv").itertuples(index=False, name=None))
        rows.append({**row, **{m: summary[m] for m in ("AP", "AP50", "AP75", "AR100")}})
        for rec in pc.itertuples(index=False):
            per_class += [{"checkpoint": name, "evaluation": "segm", "category": rec.category, "metric": m, "value": getattr(rec, m)}
                          for m in ("AP", "AP50", "n_gt")]
    write_table(out, "leaderboard", pd.DataFrame(rows))
    write_table(out, "per_class_by_checkpoint", pd.DataFrame(per_class))
    return out


def make_audit_tables(audit: Path, source: GallerySource) -> Path:
    audit.mkdir(parents=True, exist_ok=True)
    anns = source.coco["annotations"]
    rows = [
        {"check": "low_iou_with_prediction", "severity": "warning", "image_id": a["image_id"], "file_name": f"img_{a['image_id']:04d}.jpg",
         "annotation_id": a["id"], "category": CATEGORIES[a["category_id"] - 1], "score": round(0.3 + 0.05 * a["id"], 3),
         "message": f"best prediction IoU {0.6 - 0.03 * a['id']:.2f}"} for a in anns[:7]
    ]
    rows += [
        {"check": "empty_mask", "severity": "error", "image_id": 2, "file_name": "img_0002.jpg", "annotation_id": anns[2]["id"],
         "category": "dog", "score": 1.0, "message": "segmentation has 0 pixels"},
        {"check": "unreadable_image", "severity": "error", "image_id": 99, "file_name": "missing.jpg", "annotation_id": np.nan,
         "category": "", "score": 1.0, "message": "file not found"},
        {"check": "tiny_box", "severity": "info", "image_id": np.nan, "file_name": "", "annotation_id": np.nan,
         "category": "bird", "score": 0.1, "message": "category has boxes under 4 px"},
    ]
    # Nullable integer ids, as the audit writes them (pd.NA where a finding names no image or annotation).
    findings = pd.DataFrame(rows).astype({"image_id": "Int64", "annotation_id": "Int64"})
    write_table(audit, "findings", findings)
    write_table(audit, "summary", findings.groupby("check").size().rename("count").reset_index())
    return audit


# --- tests -------------------------------------------------------------------------------------------------


def _srcs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


def test_instance_page_is_self_contained_and_complete(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds")
    report = make_instance_tables(tmp_path / "report", source)
    page = render_evaluate_report(report, gallery=source, n_worst=5)
    html = page.read_text(encoding="utf-8")
    assert page.name == "report.html"
    assert all(s.startswith(("data:image/", "#")) for s in _srcs(html)), "only data URIs and in-page anchors"
    assert "http://" not in html.replace("http-equiv", "") and "https://" not in html
    assert html.count('<img src="data:image/jpeg') == 5  # gallery
    assert 'id="per-class-table" class="sortable"' in html and "PR curves" in html
    for name in ("cat", "dog", "bird", "horse", "maskrcnn_resnet50_fpn_v2", "ab" * 32, INPUT_DATE):
        assert name in html
    saved = json.loads((report / "report_inputs.json").read_text())
    assert saved["kind"] == "evaluate-instances" and saved["gallery"]["gt_coco"] == str(source.gt_coco.resolve())


def test_pages_are_byte_identical_and_cli_rerenders_from_saved_tables(tmp_path: Path) -> None:
    from segpipe.cli import main

    source = make_instance_dataset(tmp_path / "ds")
    report = make_instance_tables(tmp_path / "report", source)
    first = render_evaluate_report(report, gallery=source, n_worst=4).read_bytes()
    assert render_evaluate_report(report, gallery=source, n_worst=4).read_bytes() == first
    (report / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(report)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    assert (report / "report.html").read_bytes() == first


def test_header_shows_input_mtime_not_run_time(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds")
    report = make_instance_tables(tmp_path / "report", source)
    html = render_evaluate_report(report, gallery=source).read_text(encoding="utf-8")
    assert f"<th>inputs modified</th><td>{INPUT_DATE}</td>" in html


def test_semantic_page_has_confusion_and_worst_first(tmp_path: Path) -> None:
    source = make_semantic_dataset(tmp_path / "ds")
    report = make_semantic_tables(tmp_path / "report", source)
    html = render_evaluate_report(report, gallery=source, n_worst=3).read_text(encoding="utf-8")
    assert "Confusion matrix" in html and "Semantic evaluation" in html and html.count('<img src="data:image/jpeg') == 3
    per_image = pd.read_csv(report / "per_image.csv").sort_values("IoU")
    worst_files = re.findall(r"<figcaption>(pet_\d+\.png): IoU", html)
    assert worst_files == list(per_image["file"].head(3))


def test_leaderboard_in_csv_order_with_links_and_heatmap(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds", n_images=4)
    out = make_run_output(tmp_path / "out", source)
    html = render_leaderboard(out).read_text(encoding="utf-8")
    # The table lists the checkpoints exactly as leaderboard.csv ranks them (segpipe run writes it best first).
    csv_order = [str(c) for c in pd.read_csv(out / "leaderboard.csv")["checkpoint"]]
    order = re.findall(r'<tr><td title="sha256 [0-9a-f]{64}">(best|epoch_\d+)</td>', html)
    assert order == csv_order and sorted(order) == sorted(CHECKPOINTS)
    links = re.findall(r'<a href="(checkpoints/[^"]+)">', html)
    assert links == [f"checkpoints/{c}/segm/report.html" for c in csv_order if c != FAILED_CHECKPOINT]
    # the trend plot still reads in training order
    assert re.search(r"checkpoints in natural order", html)
    assert all((out / link).is_file() for link in links)
    assert html.count('<img src="data:image/png') == 3  # line plot + AP and AP50 heatmaps
    assert "AP (segm) per class" in html and INPUT_DATE in html  # the checkpoints' inputs, not the run
    mtime = (out / "leaderboard.html").stat().st_mtime_ns
    render_leaderboard(out)
    assert (out / "leaderboard.html").stat().st_mtime_ns == mtime  # unchanged bytes are not rewritten
    from segpipe.cli import main

    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0 and "leaderboard page" in result.output, result.output


def test_audit_page_counts_groups_and_thumbnails(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds")
    audit = make_audit_tables(tmp_path / "audit", source)
    html = render_audit_report(audit, gallery=source, top=5).read_text(encoding="utf-8")
    assert html.count('<img src="data:image/jpeg') == 5
    for check, n in pd.read_csv(audit / "findings.csv").groupby("check").size().items():
        assert f"<summary>{check} ({n})</summary>" in html
    captions = re.findall(r'<span class="sev-(\w+)">', html.split('id="top"')[1].split('id="by-check"')[0])
    assert captions[:2] == ["error", "error"] and captions[2:] == ["warning"] * 3  # errors first, missing image included


def test_rank_findings_orders_severity_then_score() -> None:
    t = pd.DataFrame({"check": ["a", "b", "c", "d", "e"], "severity": ["info", "warning", "warning", "error", "error"],
                      "score": [0.9, 0.2, 0.8, np.nan, 0.8]})
    assert list(rank_findings(t)["check"]) == ["a", "e", "c", "b", "d"]


def test_unreadable_image_becomes_placeholder(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds", n_images=3)
    (source.image_root / "img_0002.jpg").write_bytes(b"not a jpeg")
    thumb = instance_thumbnail(source, image_id=2, colours=class_colours(list(CATEGORIES)))
    assert thumb.uri.startswith("data:image/jpeg;base64,") and thumb.height <= 200 + 16 and thumb.width > 0


def test_thousand_image_report_with_80_classes_stays_small(tmp_path: Path) -> None:
    """The page size target: a 1,000-image evaluation, 80 classes, a 24-image gallery of 640x480 photos."""
    categories = tuple(f"class_{k:02d}" for k in range(79)) + ("horse",)
    source = make_instance_dataset(tmp_path / "ds", n_images=24)
    rng = np.random.default_rng(0)
    for im in source.coco["images"]:  # realistic photo size and entropy for the drawn images
        cv2.imwrite(str(source.image_root / im["file_name"]), rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8))
    report = make_instance_tables(tmp_path / "report", source, categories=categories)
    per_image = pd.read_csv(report / "per_image.csv")
    perfect = pd.DataFrame({"image_id": range(25, 1001), "file_name": [f"img_{i:04d}.jpg" for i in range(25, 1001)],
                            "n_gt": 2, "n_dt": 2, "tp": 2, "fp": 0, "fn": 0, "mean_iou": 0.97})
    write_table(report, "per_image", pd.concat([per_image, perfect], ignore_index=True))
    page = render_evaluate_report(report, gallery=source, n_worst=24)
    size = page.stat().st_size
    assert page.read_text(encoding="utf-8").count('<img src="data:image/jpeg') == 24
    assert size < 5_000_000, f"report.html is {size} bytes"


def test_natural_key_and_tidy_helpers() -> None:
    assert sorted(["epoch_10", "epoch_2", "epoch_1"], key=natural_key) == ["epoch_1", "epoch_2", "epoch_10"]
    pr = pd.DataFrame({"category_name": ["a"] * 3, "iouThr": ["0.50", "0.75", "0.50:0.95"], "recall": [0.0, 0.0, 0.0], "precision": [-1.0, 0.5, 0.4]})
    tidy = rd.tidy_pr_curves(pr)
    assert list(tidy["iou"]) == [0.5, 0.75] and np.isnan(tidy["precision"].iloc[0])
    wide, rows, cols = rd.tidy_confusion(pd.DataFrame({"class": ["bg", "pet"], "bg": [5, 1], "pet": [2, 7], "(no prediction)": [0, 0]}))
    assert rows == cols == ["bg", "pet"] and wide.tolist() == [[5, 2], [1, 7]]  # an all-zero extra column is dropped
    wide, rows, cols = rd.tidy_confusion(pd.DataFrame({"class": ["bg", "pet"], "bg": [5, 1], "pet": [2, 7], "(no prediction)": [3, 0]}))
    assert cols == ["bg", "pet", "(no prediction)"] and wide.tolist() == [[5, 2, 3], [1, 7, 0]]
    long, _, _ = rd.tidy_confusion(pd.DataFrame({"gt": ["bg", "pet", "pet"], "pred": ["pet", "bg", "pet"], "count": [2, 1, 7]}), class_names=["bg", "pet"])
    assert long.tolist() == [[0, 2], [1, 7]]
    assert rd.format_cell(0.123456789) == ("0.1235", "0.123456789") and rd.format_cell(float("nan")) == ("", "")
    assert rd.format_cell(pd.NA) == ("", "") and rd.format_cell(np.int64(7)) == ("7", "7")


def test_class_colours_distinct_and_plots_deterministic() -> None:
    names = [f"c{k}" for k in range(40)]
    colours = class_colours(names, background="c0")
    assert len(set(colours.values())) == 40 and class_colours(names, background="c0") == colours
    cm = np.array([[90, 10], [5, 45]])
    assert plot_confusion(cm, class_names=["background", "pet"]) == plot_confusion(cm, class_names=["background", "pet"])


def test_missing_tables_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        render_evaluate_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="leaderboard.csv"):
        render_leaderboard(tmp_path)


def test_pages_from_the_real_commands(tmp_path: Path) -> None:
    """`segpipe evaluate instances|semantic` and `segpipe audit` tables render, images found through header.json."""
    from segpipe.core.dataset_layout import write_dataset_meta
    from segpipe.cli import main

    source = make_instance_dataset(tmp_path / "ds", n_images=6)
    write_dataset_meta(tmp_path / "ds", format="coco", image_root=source.image_root, options={})
    runner = CliRunner()
    gt, pred = str(source.gt_coco), str(source.results)
    result = runner.invoke(main, ["evaluate", "instances", "--gt", gt, "--pred", pred, "-o", str(tmp_path / "inst")])
    assert result.exit_code == 0, result.output
    html = render_evaluate_report(tmp_path / "inst", n_worst=4).read_text(encoding="utf-8")  # gallery from header.json
    assert html.count('<img src="data:image/jpeg') == 4 and "Precision–recall curves" in html and INPUT_DATE in html
    assert json.loads((tmp_path / "inst" / "report_inputs.json").read_text())["gallery"]["image_root"] == str(source.image_root.resolve())

    sem = make_semantic_dataset(tmp_path / "sds", n_images=4)
    write_dataset_meta(tmp_path / "sds", format="trimap", image_root=sem.image_root, options={})
    result = runner.invoke(main, ["evaluate", "semantic", "--gt", str(sem.gt_semantic_dir), "--pred", str(sem.pred_semantic_dir),
                                  "--classes", "background,pet", "-o", str(tmp_path / "sem")])
    assert result.exit_code == 0, result.output
    html = render_evaluate_report(tmp_path / "sem", n_worst=2).read_text(encoding="utf-8")  # label maps + photos via header.json
    assert html.count('<img src="data:image/jpeg') == 2 and "Confusion matrix" in html
    saved = json.loads((tmp_path / "sem" / "report_inputs.json").read_text())["gallery"]
    assert saved["image_root"] == str(sem.image_root.resolve()) and saved["pred_semantic_dir"] == str(sem.pred_semantic_dir.resolve())

    result = runner.invoke(main, ["audit", str(tmp_path / "ds"), "--pred", pred, "-o", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    first = render_audit_report(tmp_path / "audit", gallery=source, top=3).read_bytes()
    (tmp_path / "audit" / "audit.html").unlink()
    result = runner.invoke(main, ["report", str(tmp_path / "audit")])  # kind and gallery from report_inputs.json
    assert result.exit_code == 0 and "audit page" in result.output, result.output
    html = (tmp_path / "audit" / "audit.html").read_text(encoding="utf-8")
    assert html.encode("utf-8") == first
    findings = pd.read_csv(tmp_path / "audit" / "findings.csv")
    assert html.count('<img src="data:image/jpeg') == min(3, int(findings["image_id"].notna().sum()))
    for check, n in findings.groupby("check").size().items():
        assert f"<summary>{check} ({n})</summary>" in html

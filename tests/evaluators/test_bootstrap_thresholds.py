"""Paired bootstrap (against a plain numpy / live pycocotools resampling) and F1-optimal thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from segpipe.evaluators.analysis.bootstrap import instance_headline, instance_intervals, semantic_intervals, ImageRows
from segpipe.evaluators.instance.evaluation import instance_update
from segpipe.evaluators.analysis.thresholds import threshold_tables
from tests.evaluators.test_instance import make_dataset, reference_eval


def _resampled_coco(gt: dict[str, Any], results: list[dict[str, Any]], picks: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The drawn images as a new COCO dataset: copy j of image i gets id j + 1 (so COCOeval keeps the draw order)."""
    by_id = {im["id"]: im for im in gt["images"]}
    ids = sorted(by_id)
    images, anns, res = [], [], []
    for j, i in enumerate(picks):
        old = ids[int(i)]
        images.append({**by_id[old], "id": j + 1})
        anns += [{**a, "image_id": j + 1, "id": len(anns) + k + 1}
                 for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == old)]
        res += [{**r, "image_id": j + 1} for r in results if r["image_id"] == old]
    return {**gt, "images": images, "annotations": anns}, res


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_instance_headline_equals_pycocotools_on_resampled_images(iou_type: str) -> None:
    gt, results = make_dataset(seed=3, n_images=8)
    stats = instance_update(gt, results, iou_type=iou_type)
    ref = reference_eval(gt, results, iou_type)
    got = instance_headline(stats)
    assert got["AP"] == pytest.approx(ref.stats[0], abs=1e-12) and got["AP50"] == pytest.approx(ref.stats[1], abs=1e-12)
    rows = ImageRows.of(stats)
    for picks in np.random.default_rng(7).integers(0, 8, size=(3, 8)):
        rgt, rres = _resampled_coco(gt, results, picks)
        ref = reference_eval(rgt, rres, iou_type)
        got = instance_headline(stats, picks, rows)
        assert (got["AP"], got["AP50"]) == pytest.approx((ref.stats[0], ref.stats[1]), abs=1e-12)


def _numpy_miou(confusions: np.ndarray, picks: np.ndarray) -> float:
    total = confusions[picks].sum(axis=0)
    n = total.shape[0]
    tp = np.diag(total[:, :n]).astype(float)
    union = total.sum(axis=1) + total[:, :n].sum(axis=0) - tp
    iou = np.array([t / u if u else np.nan for t, u in zip(tp, union)])
    return float(np.nanmean(iou))


def test_semantic_bootstrap_equals_plain_numpy_resampling() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 50, size=(20, 3, 4))
    b = a.copy()
    b[:, [0, 1, 2], [0, 1, 2]] += rng.integers(0, 30, size=(20, 3))  # B: more true positives on most images
    table = semantic_intervals(a, b, replicates=200, seed=5)
    draws = np.random.default_rng(5).integers(0, 20, size=(200, 20))
    deltas = np.array([_numpy_miou(b, d) - _numpy_miou(a, d) for d in draws])
    row = table.set_index("metric").loc["mIoU"]
    assert row["delta"] == pytest.approx(_numpy_miou(b, np.arange(20)) - _numpy_miou(a, np.arange(20)), abs=1e-12)
    assert (row["delta_low"], row["delta_high"]) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])), abs=1e-12)
    assert bool(row["significant"]) and row["delta_low"] > 0
    pd.testing.assert_frame_equal(table, semantic_intervals(a, b, replicates=200, seed=5))
    assert not table.equals(semantic_intervals(a, b, replicates=200, seed=6))
    same = semantic_intervals(a, a, replicates=50, seed=5).set_index("metric")
    assert not same["significant"].any() and (same["delta_low"] == 0).all()


def test_instance_intervals_pair_the_draws() -> None:
    gt, results = make_dataset(seed=2, n_images=6)
    stats = instance_update(gt, results, iou_type="segm")
    worse = [r for r in results if r["score"] > 0.5]
    stats_b = instance_update(gt, worse, iou_type="segm")
    table = instance_intervals(stats, stats_b, replicates=20, seed=0).set_index("metric")
    draws = np.random.default_rng(0).integers(0, 6, size=(20, 6))
    deltas = [instance_headline(stats_b, d)["AP"] - instance_headline(stats, d)["AP"] for d in draws]
    assert (table.loc["AP", "delta_low"], table.loc["AP", "delta_high"]) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))


# One class, 10 GT boxes in one image; detections in score order: 7 hits, 3 misses, 2 hits.
_PATTERN = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1]


def _threshold_case() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    boxes = [[float(20 * i), 0.0, 10.0, 10.0] for i in range(10)]
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 220}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": b}
                          for i, b in enumerate(boxes)]}
    hits = iter(boxes)
    results = [{"image_id": 1, "category_id": 1, "score": round(0.95 - 0.05 * k, 2),
                "bbox": next(hits) if hit else [float(10 * k), 60.0, 5.0, 5.0]} for k, hit in enumerate(_PATTERN)]
    return gt, results


def test_f1_optimal_threshold_uses_actual_detections_not_the_interpolated_curve() -> None:
    gt, results = _threshold_case()
    curves, optimum = threshold_tables(instance_update(gt, results, iou_type="bbox"))
    best = optimum.iloc[0]
    # Worked out by hand: at 0.65 (7th detection) P = 7/7, R = 7/10, F1 = 14/17; at 0.40 (all 12) P = 9/12, R = 9/10, F1 = 9/11 < 14/17.
    assert best["threshold"] == 0.65 and best["F1"] == pytest.approx(14 / 17) and best["precision"] == 1.0
    last = curves.iloc[-1]
    assert (last["threshold"], last["precision"], last["recall"]) == (0.4, 0.75, 0.9)
    # The interpolated route (precision at the 101 recall thresholds, as faster-coco-eval's extended_metrics
    # reads it) picks another threshold: recall 0.7 is not reachable on the float grid np.linspace(0, 1, 101).
    ref = reference_eval(gt, results, "bbox")
    precision = ref.eval["precision"][0, :, 0, 0, 2]
    scores = ref.eval["scores"][0, :, 0, 0, 2]
    recall = ref.params.recThrs
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    assert scores[int(np.argmax(f1))] == 0.4 != best["threshold"]


def test_deltas_and_intervals_agree_with_hotcoco_compare(tmp_path: Any) -> None:
    """hotcoco.compare (when installed): the same metric and per-category AP deltas. Its intervals differ by
    design: hotcoco 1.3 de-duplicates each draw into a set of images (about 63% of them, its bootstrap.rs
    "Sampling convention"), while here an image drawn twice counts twice (Efron's bootstrap), so ours are wider."""
    hotcoco = pytest.importorskip("hotcoco")
    from segpipe.evaluators.analysis.comparison import compare_instances
    from segpipe.evaluators.instance.evaluation import instance_compute
    from tests.evaluators.test_error_analysis import _hotcoco_eval

    gt, results = make_dataset(seed=2, n_images=6)
    worse = [r for r in results if r["score"] > 0.5]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    ev_a, ev_b = _hotcoco_eval(gt, results, "segm", tmp_path / "a"), _hotcoco_eval(gt, worse, "segm", tmp_path / "b")
    ev_a.accumulate(), ev_b.accumulate()
    ref = hotcoco.compare(ev_a, ev_b, n_bootstrap=1000, seed=0)
    sides = []
    for res in (results, worse):
        stats = instance_update(gt, res, iou_type="segm")
        report = instance_compute(stats)
        sides.append((stats, {"per_class": report.per_class, "per_image": report.per_image.assign(f1=0.0)}))
    tables = compare_instances(sides[0], sides[1], replicates=1000, seed=0)
    intervals = tables["intervals"].set_index("metric")
    for metric in ("AP", "AP50"):
        assert intervals.loc[metric, "delta"] == pytest.approx(ref["deltas"][metric], abs=1e-12)
        assert intervals.loc[metric, "delta_low"] <= ref["ci"][metric]["lower"] and intervals.loc[metric, "delta_high"] >= ref["ci"][metric]["upper"] - 0.02
    per_class = tables["per_class_delta"].set_index("category")
    for row in ref["per_category"]:
        assert per_class.loc[row["cat_name"], "AP_delta"] == pytest.approx(row["delta"], abs=1e-12)


def test_f1_optimum_agrees_with_faster_coco_eval(tmp_path: Any) -> None:
    """faster-coco-eval (when installed; 1.8 reads precision from the actual detections,
    https://github.com/MiXaiLL76/faster_coco_eval/issues/73): the same precision and recall at the F1-optimal
    threshold on the case above."""
    fce = pytest.importorskip("faster_coco_eval")
    import json

    gt, results = _threshold_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    coco = fce.COCO(str(tmp_path / "gt.json"))
    ev = fce.COCOeval_faster(coco, coco.loadRes(str(tmp_path / "res.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    ref = next(row for row in ev.extended_metrics["class_map"] if row["class"] == "thing")
    _, optimum = threshold_tables(instance_update(gt, results, iou_type="bbox"))
    assert (optimum["precision"].iloc[0], optimum["recall"].iloc[0]) == pytest.approx((ref["precision"], ref["recall"]), abs=1e-12)

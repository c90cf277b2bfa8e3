"""segpipe.evaluators.instance.evaluation against pycocotools COCOeval, live, on generated data: numbers, tables, shards, order."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import pickle
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.converters.coco import encode_mask as rle_of
from segpipe.evaluators.instance.evaluation import InstanceStats, evaluate_instances, instance_compute, instance_update

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")

TOL = 1e-12


# ---------------------------------------------------------------- reference and data (imported by sibling tests)
def reference_eval(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> COCOeval:
    """Plain pycocotools: loadRes (bbox dropped for segm, as our convention), evaluate, accumulate, summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        dets = [{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")} for r in copy.deepcopy(results)]
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def uncompressed_rle_of(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _box_mask(h: int, w: int, x0: int, y0: int, bw: int, bh: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[max(0, y0) : max(0, y0 + bh), max(0, x0) : max(0, x0 + bw)] = True
    return m


def make_dataset(*, seed: int = 0, n_images: int = 12, ties: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GT with compressed RLE, polygons, crowd uncompressed RLE, all three area ranges, a category without GT,
    an image without detections; results with jitter, false positives, score ties, >100 per (image, category)."""
    rng = np.random.default_rng(seed)
    h, w = 190, 170  # not square: catches height/width swaps
    images, anns, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"img_{image_id:03d}.png", "height": h, "width": w})
        for j in range(int(rng.integers(1, 6))):
            cat = int(rng.integers(1, 4))  # category 4 never has GT
            side = int(rng.choice([12, 40, 150]))  # small, medium, large
            x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            bw, bh = max(3, int(side * rng.uniform(0.6, 1.0))), max(3, int(side * rng.uniform(0.6, 1.0)))
            mask = _box_mask(h, w, x0, y0, bw, bh)
            crowd = int(rng.random() < 0.1)
            style = "crowd" if crowd else ("poly" if j % 3 == 1 else "rle")
            if style == "poly":
                x1, y1 = min(w, x0 + bw), min(h, y0 + bh)
                segm: Any = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            else:
                segm = uncompressed_rle_of(mask) if crowd else rle_of(mask)
                rle = mask_utils.frPyObjects(segm, h, w) if crowd else segm
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                         "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                         "segmentation": segm})
            if image_id == 3 or rng.random() < 0.15:  # image 3 gets no detections at all
                continue
            dm = _box_mask(h, w, x0 + int(rng.integers(-4, 5)), y0 + int(rng.integers(-4, 5)), bw + int(rng.integers(-3, 4)), bh)
            results.append(_det(image_id, cat if rng.random() > 0.1 else int(rng.integers(1, 5)), dm, rng, ties))
        if image_id == 3:
            continue
        for _ in range(int(rng.integers(0, 4))):
            dm = _box_mask(h, w, int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(3, 60)), int(rng.integers(3, 60)))
            results.append(_det(image_id, int(rng.integers(1, 5)), dm, rng, ties))
    # one (image, category) with more than maxDets=100 detections
    for k in range(105):
        dm = _box_mask(h, w, k % 100, (k * 7) % 120, 20, 20)
        results.append(_det(5, 2, dm, rng, ties))
    cats = [{"id": c, "name": n, "supercategory": ""} for c, n in ((1, "cat"), (2, "dog"), (3, "bird"), (4, "fish"))]
    return {"images": images, "annotations": anns, "categories": cats}, results


def _det(image_id: int, cat: int, mask: np.ndarray, rng: np.random.Generator, ties: bool) -> dict[str, Any]:
    score = round(float(rng.random()), 1) if ties else float(rng.random())
    rle = rle_of(mask) if mask.any() else rle_of(_box_mask(*mask.shape, 0, 0, 2, 2))
    return {"image_id": image_id, "category_id": cat, "score": score, "segmentation": rle,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


# ---------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def data() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return make_dataset(seed=0)


@pytest.fixture(scope="module")
def refs(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, COCOeval]:
    """pycocotools on the module's data, once per iou type."""
    gt, results = data
    return {kind: reference_eval(gt, results, kind) for kind in ("segm", "bbox")}


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_matches_pycocotools_arrays_and_stats(data: tuple[dict[str, Any], list[dict[str, Any]]], refs: dict[str, COCOeval], iou_type: str) -> None:
    gt, results = data
    frozen = copy.deepcopy((gt, results))
    report = evaluate_instances(gt, results, iou_type=iou_type)
    ref = refs[iou_type]
    assert (gt, results) == frozen  # inputs are not mutated
    assert np.array_equal(report.precision, ref.eval["precision"])
    assert np.array_equal(report.recall, ref.eval["recall"])
    assert np.max(np.abs(np.array(report.stats) - ref.stats)) <= TOL
    assert list(report.summary["metric"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert 0 < report.stats[0] < 1  # the data is neither trivial nor hopeless


def _slice_mean(s: np.ndarray) -> float:
    return -1.0 if not (s > -1).any() else float(np.mean(s[s > -1]))


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_per_class_from_pycocotools_slices(data: tuple[dict[str, Any], list[dict[str, Any]]], refs: dict[str, COCOeval], iou_type: str) -> None:
    gt, results = data
    report = evaluate_instances(gt, results, iou_type=iou_type)
    ref = refs[iou_type]
    prec, rec = ref.eval["precision"], ref.eval["recall"]  # [T,R,K,A,M], [T,K,A,M]; M index 2 = 100 dets
    table = report.per_class.set_index("category")
    for k, name in enumerate(["cat", "dog", "bird", "fish"]):
        row = table.loc[name]
        expected = {
            "AP": _slice_mean(prec[:, :, k, 0, 2]), "AP50": _slice_mean(prec[0, :, k, 0, 2]),
            "AP75": _slice_mean(prec[5, :, k, 0, 2]), "APs": _slice_mean(prec[:, :, k, 1, 2]),
            "APm": _slice_mean(prec[:, :, k, 2, 2]), "APl": _slice_mean(prec[:, :, k, 3, 2]),
            "AR100": _slice_mean(rec[:, k, 0, 2]),
        }
        for metric, value in expected.items():
            assert abs(row[metric] - value) <= TOL, (name, metric)
        assert row["n_gt"] == sum(1 for a in gt["annotations"] if a["category_id"] == k + 1 and not a["iscrowd"])
    assert (table.loc["fish", ["AP", "AP50", "APs", "AR100"]] == -1).all()  # category without GT
    assert table.loc["fish", "n_gt"] == 0 and table.loc["fish", "n_dt"] > 0


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_per_image_counts_match_coco_evalimgs(data: tuple[dict[str, Any], list[dict[str, Any]]], refs: dict[str, COCOeval], iou_type: str) -> None:
    gt, results = data
    report = evaluate_instances(gt, results, iou_type=iou_type)
    ref = refs[iou_type]
    tp: dict[int, int] = {}
    fp: dict[int, int] = {}
    n_gt: dict[int, int] = {}
    ious: dict[int, list[float]] = {}
    for e in ref.evalImgs:
        if e is None or e["aRng"] != [0, 1e10]:
            continue
        i = e["image_id"]
        matched, ignored = e["dtMatches"][0] > 0, e["dtIgnore"][0] > 0
        tp[i] = tp.get(i, 0) + int(np.sum(matched & ~ignored))
        fp[i] = fp.get(i, 0) + int(np.sum(~matched & ~ignored))
        n_gt[i] = n_gt.get(i, 0) + int(np.sum(e["gtIgnore"] == 0))
        iou_mat = ref.ious[i, e["category_id"]]
        for d, gt_id in enumerate(e["dtMatches"][0]):
            if gt_id > 0 and not ignored[d]:
                g = e["gtIds"].index(int(gt_id))
                order = np.argsort([g_["_ignore"] for g_ in ref._gts[i, e["category_id"]]], kind="mergesort")
                ious.setdefault(i, []).append(float(iou_mat[d, order[g]]))
    table = report.per_image.set_index("image_id")
    assert list(table.index) == sorted(im["id"] for im in gt["images"])
    for i in table.index:
        row = table.loc[i]
        assert (row["tp"], row["fp"], row["n_gt"]) == (tp.get(i, 0), fp.get(i, 0), n_gt.get(i, 0))
        assert row["fn"] == n_gt.get(i, 0) - tp.get(i, 0)
        if ious.get(i):
            assert abs(row["mean_iou"] - np.mean(ious[i])) <= TOL
        else:
            assert np.isnan(row["mean_iou"])
    assert table.loc[3, "n_dt"] == 0 and table.loc[3, "tp"] == 0  # the image without detections
    assert table.loc[3, "file_name"] == "img_003.png"


def test_pr_curves_are_precision_slices(data: tuple[dict[str, Any], list[dict[str, Any]]], refs: dict[str, COCOeval]) -> None:
    gt, results = data
    report = evaluate_instances(gt, results, iou_type="segm")
    ref = refs["segm"]
    curves = report.pr_curves
    assert set(curves["iou"]) == {"0.50", "0.75", "0.50:0.95"}
    assert len(curves) == 4 * 3 * 101
    dog = curves[curves["category"] == "dog"]
    assert np.array_equal(dog[dog["iou"] == "0.50"]["precision"].to_numpy(), ref.eval["precision"][0, :, 1, 0, 2])
    assert np.array_equal(dog[dog["iou"] == "0.75"]["precision"].to_numpy(), ref.eval["precision"][5, :, 1, 0, 2])
    assert np.allclose(dog[dog["iou"] == "0.50:0.95"]["precision"].to_numpy(), ref.eval["precision"][:, :, 1, 0, 2].mean(axis=0), atol=TOL)
    assert np.array_equal(dog[dog["iou"] == "0.50"]["recall"].to_numpy(), np.linspace(0, 1, 101))
    fish = curves[curves["category"] == "fish"]
    assert (fish["precision"] == -1).all()


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_shards_merge_to_one_pass(data: tuple[dict[str, Any], list[dict[str, Any]]], refs: dict[str, COCOeval], iou_type: str) -> None:
    gt, results = data
    ids = sorted(im["id"] for im in gt["images"])
    shards = [ids[0::3], ids[1::3], ids[2::3]]
    parts = [instance_update(gt, results, iou_type=iou_type, image_ids=s) for s in [*shards, []]]  # + an empty shard
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]  # shards travel between processes
    merged = instance_compute(InstanceStats.merge_all(parts[::-1]))
    pairwise = instance_compute(InstanceStats.merge(InstanceStats.merge(parts[2], parts[0]), InstanceStats.merge(parts[3], parts[1])))
    one = evaluate_instances(gt, results, iou_type=iou_type)
    ref = refs[iou_type]
    for report in (merged, pairwise):
        assert np.array_equal(report.precision, one.precision)
        assert np.array_equal(report.recall, one.recall)
        assert report.per_class.equals(one.per_class)
        assert report.per_image.equals(one.per_image)
        assert np.max(np.abs(np.array(report.stats) - ref.stats)) <= TOL


def test_overlapping_shards_are_refused(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = data
    a = instance_update(gt, results, iou_type="bbox", image_ids=[1, 2])
    b = instance_update(gt, results, iou_type="bbox", image_ids=[2, 3])
    with pytest.raises(Exception, match="overlap"):
        InstanceStats.merge(a, b)
    with pytest.raises(Exception, match="different settings"):
        InstanceStats.merge(a, instance_update(gt, results, iou_type="segm", image_ids=[4]))


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_image_and_annotation_order_do_not_matter(iou_type: str) -> None:
    # distinct scores: with equal scores COCOeval itself depends on the results' order
    gt, results = make_dataset(seed=1, ties=False)
    base = evaluate_instances(gt, results, iou_type=iou_type)
    rng = np.random.default_rng(7)
    shuffled = {**gt, "images": [gt["images"][i] for i in rng.permutation(len(gt["images"]))],
                "annotations": [gt["annotations"][i] for i in rng.permutation(len(gt["annotations"]))],
                "categories": gt["categories"][::-1]}
    other = evaluate_instances(shuffled, [results[i] for i in rng.permutation(len(results))], iou_type=iou_type)
    assert np.array_equal(base.precision, other.precision)
    assert base.summary.equals(other.summary)
    assert base.per_class.equals(other.per_class)
    assert base.per_image.equals(other.per_image)


def test_empty_results_score_zero_with_warning(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, _ = data
    with pytest.raises(IndexError):  # what pycocotools does with an empty list: our reason to handle it
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
            coco_gt.loadRes([])
    report = evaluate_instances(gt, [], iou_type="segm")
    stats = dict(zip(report.summary["metric"], report.summary["value"]))
    assert all(v == 0 for v in stats.values())
    per_class = report.per_class.set_index("category")
    assert (per_class.loc[["cat", "dog", "bird"], "AP"] == 0).all()
    assert per_class.loc["fish", "AP"] == -1
    assert any("results list is empty" in w for w in report.warnings)
    assert (report.per_image["fn"] == report.per_image["n_gt"]).all()


def test_default_iou_type_follows_results(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = data
    assert evaluate_instances(gt, results).iou_type == "segm"
    boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    report = evaluate_instances(gt, boxes)
    assert report.iou_type == "bbox"
    assert np.max(np.abs(np.array(report.stats) - reference_eval(gt, boxes, "bbox").stats)) <= TOL


def test_per_image_counts_leave_out_gt_that_cocoeval_never_scores() -> None:
    """Annotation id 2 is used twice; its last copy names category 9, which is not declared. COCO.loadAnns
    files both copies under that copy, so COCOeval scores neither: per_image.csv must agree with the summary."""
    box = [10.0, 10.0, 20.0, 20.0]
    gt = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "pet"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 400.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [40.0, 40.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [40.0, 40.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0},
        ],
    }
    results = [{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9}]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ref = COCOeval(coco, coco.loadRes(results), "bbox")
        ref.evaluate()
    scored = sum(int(np.sum(e["gtIgnore"] == 0)) for e in ref.evalImgs if e is not None and e["aRng"] == [0, 1e10])
    report = evaluate_instances(gt, results, iou_type="bbox")
    row = report.per_image.set_index("image_id").loc[1]
    assert scored == 1
    assert (row["n_gt"], row["tp"], row["fn"]) == (scored, 1, 0)
    assert report.per_class.set_index("category").loc["pet", "n_gt"] == scored

"""Bad results (clear errors with counts, never silent drops) and COCOeval's ground-truth traps (warned about)."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.evaluation import evaluate_instances, validate_results
from tests.evaluators.test_instance import TOL, make_dataset, reference_eval, rle_of, uncompressed_rle_of

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")

H, W = 40, 60


def _mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _tiny_gt(anns: list[tuple[int, int, np.ndarray, int]]) -> dict[str, Any]:
    """anns: (annotation id, category id, mask, iscrowd) on image 1."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
        "annotations": [
            {"id": i, "image_id": 1, "category_id": c, "iscrowd": crowd, "area": float(m.sum()),
             "bbox": [float(v) for v in _bbox(m)], "segmentation": rle_of(m)}
            for i, c, m, crowd in anns
        ],
    }


def _bbox(m: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(m)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _perfect(m: np.ndarray, score: float = 0.9, cat: int = 1) -> dict[str, Any]:
    return {"image_id": 1, "category_id": cat, "score": score, "segmentation": rle_of(m), "bbox": [float(v) for v in _bbox(m)]}


A_MASK, B_MASK = _mask(2, 2, 20, 20), _mask(30, 5, 55, 35)


# ---------------------------------------------------------------- COCOeval traps (../shared/peers/README.md)
def test_annotation_id_zero_is_never_matched() -> None:
    gt = _tiny_gt([(0, 1, A_MASK, 0)])
    results = [_perfect(A_MASK)]
    report = evaluate_instances(gt, results, iou_type="segm")
    assert report.stats[0] == 0.0 == reference_eval(gt, results, "segm").stats[0]
    assert any("id 0" in w for w in report.warnings)


def test_duplicated_annotation_ids_misscore_like_pycocotools() -> None:
    gt = _tiny_gt([(1, 1, A_MASK, 0), (1, 1, B_MASK, 0)])
    results = [_perfect(A_MASK, 0.9), _perfect(B_MASK, 0.8)]
    report = evaluate_instances(gt, results, iou_type="segm")
    ref = reference_eval(gt, results, "segm")
    assert np.max(np.abs(np.array(report.stats) - ref.stats)) <= TOL
    assert round(report.stats[0], 3) == 0.252  # the README's figure, not 1.0
    assert any("duplicated" in w for w in report.warnings)
    assert evaluate_instances(_tiny_gt([(1, 1, A_MASK, 0), (2, 1, B_MASK, 0)]), results, iou_type="segm").stats[0] == 1.0


def test_crowd_masks_are_ignored_with_warning() -> None:
    gt = _tiny_gt([(1, 1, A_MASK, 1)])
    results = [_perfect(A_MASK)]
    report = evaluate_instances(gt, results, iou_type="segm")
    assert report.stats[0] == -1 == reference_eval(gt, results, "segm").stats[0]
    warning = next(w for w in report.warnings if "iscrowd=1" in w)
    assert "only crowd" in warning and "thing" in warning
    assert report.per_image.loc[0, ["tp", "fp", "n_gt"]].tolist() == [0, 0, 0]


# ---------------------------------------------------------------- bad results
@pytest.fixture(scope="module")
def data() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return make_dataset(seed=2, n_images=5)


def _broken(results: list[dict[str, Any]], index: int, **change: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(results)
    for key, value in change.items():
        if value is _DELETE:
            del out[index][key]
        else:
            out[index][key] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"image_id": 999}, "unknown image_id"),
        ({"image_id": "1"}, "unknown image_id"),
        ({"category_id": 77}, "unknown category_id"),
        ({"score": _DELETE}, "missing or non-finite score"),
        ({"score": math.nan}, "missing or non-finite score"),
        ({"score": "high"}, "missing or non-finite score"),
        ({"segmentation": {"size": [W, H], "counts": "PPYo0"}}, "bad segmentation"),
        ({"segmentation": _DELETE}, "missing segmentation"),
    ],
)
def test_each_bad_result_is_an_error_naming_it(data: tuple[dict[str, Any], list[dict[str, Any]]], change: dict[str, Any], kind: str) -> None:
    gt, results = data
    bad = _broken(results, 4, **change)
    with pytest.raises(EvaluationError) as info:
        evaluate_instances(gt, bad, iou_type="segm")
    message = str(info.value)
    assert f"{kind}: 1 " in message and "results[4]" in message
    assert f"1 of {len(results)} results are invalid" in message


def test_rle_size_mismatch_says_both_sizes(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = data
    image = next(im for im in gt["images"] if im["id"] == results[0]["image_id"])
    wrong = rle_of(np.ones((image["width"], image["height"]), dtype=bool))  # transposed
    with pytest.raises(EvaluationError, match=r"RLE size \[170, 190\] differs from the image's \[height, width\] = \[190, 170\]"):
        evaluate_instances(gt, _broken(results, 0, segmentation=wrong), iou_type="segm")


def test_counts_and_first_examples_of_every_kind(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = data
    bad = copy.deepcopy(results)
    for i in (1, 3, 5, 7, 9):
        bad[i]["image_id"] = 1000 + i
    bad[2]["category_id"] = 99
    bad[4]["score"] = None
    with pytest.raises(EvaluationError) as info:
        validate_results(gt, bad, iou_type="segm")
    message = str(info.value)
    assert f"7 of {len(bad)} results are invalid" in message
    assert "unknown image_id: 5 (e.g. results[1]: image_id=1001; results[3]: image_id=1003; results[5]: image_id=1005)" in message
    assert "results[7]" not in message  # first examples only
    assert "unknown category_id: 1 (e.g. results[2]: category_id=99)" in message
    assert "missing or non-finite score: 1" in message


def test_drop_invalid_reports_what_it_dropped(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = data
    bad = _broken(_broken(results, 0, image_id=555), 1, score=math.inf)
    report = evaluate_instances(gt, bad, iou_type="segm", drop_invalid=True)
    clean = evaluate_instances(gt, results[2:], iou_type="segm")
    assert np.array_equal(report.precision, clean.precision)
    dropped = next(w for w in report.warnings if "dropped" in w)
    assert f"2 of {len(bad)} results are invalid" in dropped and "unknown image_id: 1" in dropped


def test_not_a_list_and_bad_boxes(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = data
    with pytest.raises(EvaluationError, match="expected a list of results"):
        evaluate_instances(gt, {"annotations": results}, iou_type="bbox")  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="bad bbox: 1"):
        evaluate_instances(gt, _broken(results, 0, bbox=[1, 2, -3, 4]), iou_type="bbox")
    with pytest.raises(EvaluationError, match="bad bbox: 1"):
        evaluate_instances(gt, _broken(results, 0, bbox=[1, 2, 3]), iou_type="bbox")


def test_polygon_and_uncompressed_results_equal_their_rle(data: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt = _tiny_gt([(1, 1, A_MASK, 0), (2, 1, B_MASK, 0)])
    as_rle = [_perfect(_mask(2, 2, 18, 20), 0.9), _perfect(_mask(30, 5, 50, 35), 0.8)]
    as_other = copy.deepcopy(as_rle)
    as_other[0]["segmentation"] = [[2.0, 2.0, 18.0, 2.0, 18.0, 20.0, 2.0, 20.0]]
    as_other[1]["segmentation"] = uncompressed_rle_of(_mask(30, 5, 50, 35))
    ours = evaluate_instances(gt, as_other, iou_type="segm")
    from pycocotools import mask as mask_utils

    merged = copy.deepcopy(as_other)
    merged[0]["segmentation"] = mask_utils.merge(mask_utils.frPyObjects(as_other[0]["segmentation"], H, W))
    merged[1]["segmentation"] = mask_utils.frPyObjects(as_other[1]["segmentation"], H, W)
    assert np.max(np.abs(np.array(ours.stats) - reference_eval(gt, merged, "segm").stats)) <= TOL
    assert 0 < ours.stats[0] <= 1


def test_ground_truth_problems_name_the_field() -> None:
    gt = _tiny_gt([(1, 1, A_MASK, 0)])
    no_area = copy.deepcopy(gt)
    del no_area["annotations"][0]["area"]
    with pytest.raises(EvaluationError, match=r"annotations\[0\]\.area"):
        evaluate_instances(no_area, [], iou_type="segm")
    wrong_size = copy.deepcopy(gt)
    wrong_size["annotations"][0]["segmentation"] = rle_of(np.ones((W, H), dtype=bool))
    with pytest.raises(EvaluationError, match=r"annotation id 1\.segmentation: RLE size"):
        evaluate_instances(wrong_size, [], iou_type="segm")
    with pytest.raises(EvaluationError, match="images"):
        evaluate_instances({"annotations": []}, [], iou_type="segm")


@pytest.mark.parametrize(("bbox", "why"), [
    ([1e308, 0.0, 1e308, 1.0], None),  # finite, though the sum of the four overflows
    ([0.0, 0.0, -0.0, 1.0], None),
    ([0, 0, 3, 4], None),
    ((0.0, 0.0, 3.0, 4.0), None),
    ([0.0, 0.0, -1.0, 1.0], "negative width or height"),
    ([0.0, float("nan"), 1.0, 1.0], "4 finite numbers"),
    ([0.0, float("inf"), 1.0, float("-inf")], "4 finite numbers"),
    ([0.0, True, 1.0, 1.0], "4 finite numbers"),
    ([0.0, 0.0, 1.0], "4 finite numbers"),
])
def test_bbox_problem_edges(bbox: Any, why: str | None) -> None:
    from segpipe.evaluators.instance.coco_results import bbox_problem

    found = bbox_problem(bbox)
    assert found is None if why is None else why in (found or "")

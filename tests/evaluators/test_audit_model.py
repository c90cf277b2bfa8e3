"""Model-assisted checks: possibly missing / spurious / wrong class / sloppy outline, each triggered and not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.dataset import audit_dataset
from segpipe.core.errors import EvaluationError
from tests.evaluators.test_audit_format import rle_of
from tests.evaluators.test_audit_geometry import S, dataset, rect

OBJECTS = [(1, (4, 4, 24, 24)), (2, (36, 36, 60, 58)), (1, (36, 4, 58, 20))]


def coco_and_preds(*, boxes_only: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One image with three objects and a perfect, confident prediction for each."""
    coco = dataset([[(c, rect(*b)) for c, b in OBJECTS]])
    preds = [pred(c, rect(*b), 0.9, boxes_only=boxes_only) for c, b in OBJECTS]
    if boxes_only:
        for a in coco["annotations"]:
            a["segmentation"] = []
            a["area"] = a["bbox"][2] * a["bbox"][3]
    return coco, preds


def pred(cat: int, mask: np.ndarray, score: float, *, boxes_only: bool = False, image_id: int = 1) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    p = {
        "image_id": image_id,
        "category_id": cat,
        "score": score,
        "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
    }
    if not boxes_only:
        p["segmentation"] = rle_of(mask)
    return p


def model_findings(coco: dict[str, Any], preds: list[dict[str, Any]]) -> pd.DataFrame:
    f = audit_dataset(coco, image_root=None, predictions=preds).findings
    return f[f["check"].isin(F.MODEL_CHECKS)]


def habit_rows(coco: dict[str, Any], preds: list[dict[str, Any]]) -> pd.DataFrame:
    f = audit_dataset(coco, image_root=None, predictions=preds).findings
    return f[f["check"] == F.CHECK_MODEL_HABIT].reset_index(drop=True)


@pytest.mark.parametrize("boxes_only", [False, True])
def test_perfect_predictions_give_no_model_findings(boxes_only: bool) -> None:
    coco, preds = coco_and_preds(boxes_only=boxes_only)
    low = pred(2, rect(26, 26, 34, 34), 0.2, boxes_only=boxes_only)  # unconfident noise is not a "missing" object
    assert model_findings(coco, preds + [low]).empty


def test_no_predictions_give_no_model_findings() -> None:
    coco, _ = coco_and_preds()
    assert model_findings(coco, []).empty


@pytest.mark.parametrize("boxes_only", [False, True])
def test_possibly_missing(boxes_only: bool) -> None:
    coco, preds = coco_and_preds(boxes_only=boxes_only)
    coco["annotations"] = coco["annotations"][:2]  # the third object was never labelled
    f = model_findings(coco, preds)
    assert f["check"].tolist() == [F.CHECK_POSSIBLY_MISSING]
    assert f["category"].tolist() == ["cat"] and f["annotation_id"].isna().all()
    assert f["score"].item() == pytest.approx(0.9)


def test_possibly_spurious() -> None:
    coco, preds = coco_and_preds()
    f = model_findings(coco, preds[:2])  # the model does not see object 3 although it is confident elsewhere
    assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SPURIOUS, 3]]
    # ...but when the model is confident nowhere in the image, an unseen annotation is not suspicious
    unsure = [{**p, "score": 0.3} for p in preds[:2]]
    assert model_findings(coco, unsure).empty


def test_possibly_wrong_class() -> None:
    coco, preds = coco_and_preds()
    coco["annotations"][1]["category_id"] = 1  # labelled cat, the model says dog at IoU 1
    f = model_findings(coco, preds)
    assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_WRONG_CLASS, 2]]
    assert f["score"].item() == pytest.approx(0.9)


def test_possibly_sloppy_outline() -> None:
    coco, preds = coco_and_preds()
    preds[0] = pred(1, rect(4, 4, 14, 24), 0.9)  # the model's object is half the labelled one: IoU 0.5
    f = model_findings(coco, preds)
    assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SLOPPY, 1]]
    # No other label of the class disagrees with the model: nothing discounts its confidence.
    assert f["score"].item() == pytest.approx(0.9)
    assert "IoU 0.50" in f["message"].item() and "label area 2.00x" in f["message"].item()
    preds[0] = pred(1, rect(4, 4, 23, 24), 0.9)  # IoU 0.95: a fine outline
    assert model_findings(coco, preds).empty


def test_scores_grow_with_confidence_and_shrink_with_overlap() -> None:
    coco, preds = coco_and_preds()
    coco["annotations"] = coco["annotations"][:2]
    sure = model_findings(coco, preds)["score"].item()
    unsure = model_findings(coco, preds[:2] + [{**preds[2], "score": 0.6}])["score"].item()
    assert sure > unsure



def grid_dataset(n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """n images with one 12x12 cat each and a perfect confident prediction for it."""
    boxes = [(8 + i % 7, 8 + i % 5, 20 + i % 7, 20 + i % 5) for i in range(n)]
    coco = dataset([[(1, rect(*b))] for b in boxes])
    preds = [pred(1, rect(*b), 0.9, image_id=i + 1) for i, b in enumerate(boxes)]
    return coco, preds


def shifted(p: dict[str, Any], dx: int) -> dict[str, Any]:
    x0, y0, w, h = (int(v) for v in p["bbox"])
    return pred(1, rect(x0 + dx, y0, x0 + dx + w, y0 + h), p["score"], image_id=p["image_id"])


def test_the_models_ordinary_misplacement_sinks_and_a_rarer_disagreement_rises() -> None:
    """Calibration: 4 of 40 predictions are misplaced by 4 px (the model's habit), one label is off by 8 px and
    one is grown: the habit scores below both, and below its uncalibrated confidence."""
    coco, preds = grid_dataset(40)
    for k in range(4):
        preds[k] = shifted(preds[k], 4)  # IoU 0.5: the model's own mistake, 10 % of the class
    preds[10] = shifted(preds[10], 8)  # IoU 0.2: further off than any of the model's habits
    x0, y0 = (int(v) for v in coco["annotations"][20]["bbox"][:2])
    grown = rect(x0 - 4, y0 - 4, x0 + 16, y0 + 16)  # 20x20 label around a 12x12 object
    coco["annotations"][20] = {**coco["annotations"][20], "segmentation": rle_of(grown), "area": float(grown.sum()),
                               "bbox": [float(x0 - 4), float(y0 - 4), 20.0, 20.0]}
    f = model_findings(coco, preds).set_index("annotation_id")["score"]
    # p / e by hand for the 8 px shift: no other label is as far off on IoU (p = 0), so it keeps its evidence.
    assert f[11] == pytest.approx(0.9)
    # The grown label: no other label's area differs from the model's (p = 0 on the area ratio).
    assert f[21] == pytest.approx(0.9) and "label area 2.78x" in model_findings(coco, preds).set_index("annotation_id").loc[21, "message"]
    # Each habit: the 5 other outline disagreements are at least as strong on IoU (p = 5/39) out of the 6 of 40
    # labels the model disagrees with on the outline (e = 6/40): little is left of its confidence.
    habit = [f[k + 1] for k in range(4)]
    assert habit == pytest.approx([0.9 * (1 - (5 / 39) / (6 / 40))] * 4, abs=1e-6)  # scores are rounded to 6 places
    assert max(habit) < 0.2 < 0.9 == pytest.approx(f[11])


def test_missing_scored_by_the_models_reliability_at_that_confidence() -> None:
    """A confident unexplained detection counts as much as the model's detections at that confidence are right."""
    coco, preds = grid_dataset(20)
    extra = [pred(2, rect(40, 40, 52, 52), s, image_id=i + 1) for i, s in enumerate([0.6] * 4 + [0.96])]
    f = model_findings(coco, preds + extra)
    f = f[f["check"] == F.CHECK_POSSIBLY_MISSING].set_index("image_id")["score"]
    # Dogs are never confirmed at 0.6 (reliability 0) but the lone 0.96 has no neighbour: all others count (0/4).
    assert f.to_dict() == {}
    extra[4] = pred(1, rect(40, 40, 52, 52), 0.91, image_id=5)  # a cat where cats at 0.85-0.95 are all right
    f = model_findings(coco, preds + extra)
    f = f[f["check"] == F.CHECK_POSSIBLY_MISSING]
    assert f[["image_id", "category"]].values.tolist() == [[5, "cat"]]
    assert f["score"].item() == pytest.approx(0.91)


def test_prediction_order_does_not_change_findings() -> None:
    coco, preds = coco_and_preds()
    coco["annotations"] = coco["annotations"][1:]
    preds = preds + [pred(2, rect(4, 4, 24, 24), 0.8)]
    a = model_findings(coco, preds)
    b = model_findings(coco, list(reversed(preds)))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"image_id": 42}, "image_id"),
        ({"category_id": 9}, "category_id"),
        ({"score": float("nan")}, "score"),
        ({"segmentation": {"size": [S + 1, S], "counts": "0"}}, "segmentation.size"),
        ({"segmentation": {"size": [S, S], "counts": "o?o?o?"}}, "segmentation.counts"),
    ],
)
def test_malformed_predictions_raise(bad: dict[str, Any], field: str) -> None:
    coco, preds = coco_and_preds()
    with pytest.raises(EvaluationError, match=field):
        audit_dataset(coco, image_root=None, predictions=[{**preds[0], **bad}])


def test_specks_are_not_missing_objects() -> None:
    """A semantic model's stray pixels (connected components under SPECK_FRACTION of a cat) raise nothing; the
    same prediction at a cat's size does."""
    from segpipe.evaluators.audit.model_checks import SPECK_FRACTION

    coco, preds = grid_dataset(10)
    speck = [pred(1, rect(40, 40, 41, 42), 0.9, image_id=1)]  # 2 px against 144 px cats: below 2 %
    assert 2 < SPECK_FRACTION * 144 and model_findings(coco, preds + speck).empty
    whole = [pred(1, rect(40, 40, 52, 52), 0.9, image_id=1)]
    assert model_findings(coco, preds + whole)["check"].tolist() == [F.CHECK_POSSIBLY_MISSING]


def test_a_model_whose_outlines_all_differ_the_same_way_raises_no_sloppy_outline() -> None:
    """Every label is 2 px larger than the model's mask on each side (a trimap border the model leaves out):
    IoU ~0.56 everywhere is the model's habit, not 12 sloppy labels; one label 6 px larger still stands out."""
    coco, preds = grid_dataset(12)
    preds = [pred(1, rect(int(p["bbox"][0]) + 2, int(p["bbox"][1]) + 2, int(p["bbox"][0]) + 10, int(p["bbox"][1]) + 10), 0.9,
                  image_id=p["image_id"]) for p in preds]
    assert model_findings(coco, preds).empty
    x0, y0 = (int(v) for v in coco["annotations"][5]["bbox"][:2])
    big = rect(x0 - 4, y0 - 4, x0 + 16, y0 + 16)
    coco["annotations"][5] = {**coco["annotations"][5], "segmentation": rle_of(big), "area": float(big.sum()),
                              "bbox": [float(x0 - 4), float(y0 - 4), 20.0, 20.0]}
    f = model_findings(coco, preds)
    assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SLOPPY, 6]]


def test_pair_boundary_iou_matches_the_semantic_boundary_evaluator() -> None:
    """The audit's boundary IoU of two masks equals evaluators.boundary's on the label maps they make (class 1)."""
    from segpipe.evaluators.audit.model_checks import pair_boundary_iou
    from segpipe.evaluators.semantic.boundary import boundary_update, boundary_width

    gt = rect(4, 4, 30, 40).astype(bool)
    for pr in (rect(6, 4, 32, 40), rect(4, 4, 30, 20), rect(0, 0, 64, 64), rect(40, 40, 50, 50)):
        pr = pr.astype(bool)
        counts = boundary_update(gt.astype(np.uint8), pr.astype(np.uint8), num_classes=2)
        expected = counts[1, 0] / counts[1, 1]
        ys, xs = np.nonzero(gt | pr)
        assert pair_boundary_iou(gt, pr, boundary_width(gt.shape, 0.02)) == pytest.approx(expected)
        boxes = [[float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]]
        assert pair_boundary_iou(gt, pr, boundary_width(gt.shape, 0.02), boxes=boxes) == pytest.approx(expected)


def octagon(x0: int, y0: int, side: int = 12, cut: int = 3) -> np.ndarray:
    m = rect(x0, y0, x0 + side, y0 + side)
    for k in range(cut):  # cut the four corners: fills ~85 % of its box
        m[y0 + k, x0 : x0 + cut - k] = 0
        m[y0 + k, x0 + side - cut + k : x0 + side] = 0
        m[y0 + side - 1 - k, x0 : x0 + cut - k] = 0
        m[y0 + side - 1 - k, x0 + side - cut + k : x0 + side] = 0
    return m


def test_a_box_replaced_outline_is_found_where_iou_and_area_pass() -> None:
    """Octagonal objects, labelled and predicted alike; one label replaced by its box: IoU 0.83 and area ratio
    1.2 pass the fixed bounds, the box shape where the model sees none does not."""
    objs = [octagon(8 + i % 7, 8 + i % 5) for i in range(12)]
    coco = dataset([[(1, m)] for m in objs])
    preds = [pred(1, m, 0.9, image_id=i + 1) for i, m in enumerate(objs)]
    assert model_findings(coco, preds).empty
    x0, y0 = 8 + 5 % 7, 8 + 5 % 5
    box = rect(x0, y0, x0 + 12, y0 + 12)
    iou, ratio = objs[5].sum() / box.sum(), box.sum() / objs[5].sum()  # the octagon lies inside its box
    assert iou > 0.8 and ratio < 1.25
    coco["annotations"][5] = {**coco["annotations"][5], "segmentation": rle_of(box), "area": float(box.sum()),
                              "bbox": [float(x0), float(y0), 12.0, 12.0]}
    f = model_findings(coco, preds)
    assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SLOPPY, 6]]
    message = f["message"].item()
    assert "box-shaped label" in message and "(< 0.8)" not in message and "x the model's" not in message, message


def test_a_small_class_whose_outlines_all_miss_the_border_band_raises_no_sloppy_outline() -> None:
    """Four labels (too few for the class's outline statistics), each 1-3 px wider on every side than the
    model's mask, as a U-Net trained on trimaps predicts them: IoU passes its bound (>= 0.81), boundary IoU
    does not. That is the model's habit, not a label error: only IoU or a box shape flags an outline alone."""
    box = (2, 2, 62, 62)
    insets = [1, 2, 2, 3]
    coco = dataset([[(1, rect(*box))] for _ in insets])
    x0, y0, x1, y1 = box
    preds = [pred(1, rect(x0 + k, y0 + k, x1 - k, y1 - k), 0.9, image_id=i + 1) for i, k in enumerate(insets)]
    from segpipe.evaluators.audit.model_checks import SLOPPY_BOUNDARY_IOU, pair_boundary_iou
    from segpipe.evaluators.semantic.boundary import DEFAULT_DILATION_RATIO, boundary_width

    width = boundary_width((S, S), DEFAULT_DILATION_RATIO)
    worst = pair_boundary_iou(rect(*box).astype(bool), rect(x0 + 3, y0 + 3, x1 - 3, y1 - 3).astype(bool), width)
    assert worst < SLOPPY_BOUNDARY_IOU
    assert model_findings(coco, preds).empty
    preds[0] = pred(1, rect(x0 + 1, y0 + 1, x0 + 26, y1 - 1), 0.9)  # under half the label: IoU 0.40, still flagged
    assert model_findings(coco, preds)[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SLOPPY, 1]]


def test_a_label_nothing_covers_stands_out_from_the_models_unconfident_misses() -> None:
    """20 images, each with two cats. The model misses the second cat in six of them but leaves an unconfident
    detection there (as a detector keeping scores down to 0.05 does), and has nothing at all on the second cat
    of image 7: that label is the one to check, and the six misses do not make it look ordinary."""
    left, right = rect(4, 4, 20, 20), rect(36, 36, 52, 52)
    coco = dataset([[(1, left), (1, right)] for _ in range(20)])
    weak_mask = rect(40, 36, 56, 52)  # the miss's leftover detection, 4 px off
    preds = [pred(1, left, 0.9, image_id=i + 1) for i in range(20)]
    preds += [pred(1, weak_mask, 0.2, image_id=i + 1) for i in range(6)]
    preds += [pred(1, right, 0.9, image_id=i + 1) for i in range(7, 20)]
    f = model_findings(coco, preds).set_index("annotation_id")
    assert set(f["check"]) == {F.CHECK_POSSIBLY_SPURIOUS}
    # Image 7's second cat: nothing covers it, no other label is seen that little (p = 0): the top confidence.
    assert f.loc[14, "score"] == pytest.approx(0.9)
    # The misses: evidence 0.9 x (1 - IoU of the weak detection), IoU by hand; 5 of the 39 other labels are
    # seen the same way (p), 7 of the 40 disagree with the model at all, this one counted (e).
    iou = np.count_nonzero(right & weak_mask) / np.count_nonzero(right | weak_mask)
    expected = 0.9 * (1 - iou) * (1 - (5 / 39) / (7 / 40))
    assert [f.loc[2 * i + 2, "score"] for i in range(6)] == pytest.approx([expected] * 6, abs=1e-6)
    assert "an unconfident detection matches it at IoU 0.60" in f.loc[2, "message"]
    # Without the leftover detections all seven are alike: each as common as the model's misses, so each sinks
    # (p = 6/39 of e = 7/40), listed all the same: seven labels nothing covers could be seven spurious ones.
    bare = [p for p in preds if p["score"] >= 0.5]
    f = model_findings(coco, bare)
    assert sorted(f["annotation_id"]) == [2, 4, 6, 8, 10, 12, 14] and set(f["check"]) == {F.CHECK_POSSIBLY_SPURIOUS}
    assert f["score"].tolist() == pytest.approx([0.9 * (1 - (6 / 39) / (7 / 40))] * 7, abs=1e-6)


def test_a_misplacement_the_model_repeats_sinks_however_strong() -> None:
    """60 cats; six predictions misplaced by 4 px on cats 12, 13 and 14 px wide (IoU 0.50, 0.53, 0.56: one habit,
    spread by the sizes) and one label moved by 8 px. The strongest habit has few disagreements beyond it, but others
    alike (within 0.05 of its 1 - IoU): it is weighed against those, and the rare shift keeps its confidence."""
    widths = [12, 12, 13, 13, 14, 14] + [12] * 54
    objs = [rect(8 + i % 7, 8 + i % 5, 8 + i % 7 + w, 20 + i % 5) for i, w in enumerate(widths)]
    coco = dataset([[(1, m)] for m in objs])
    moved = [np.roll(m, 4, axis=1) if i < 6 else m for i, m in enumerate(objs)]
    preds = [pred(1, m, 0.9, image_id=i + 1) for i, m in enumerate(moved)]
    shifted_label = np.roll(objs[10], 8, axis=1)
    coco["annotations"][10] = {**coco["annotations"][10], "segmentation": rle_of(shifted_label), "area": float(shifted_label.sum()),
                               "bbox": [float(8 + 10 % 7 + 8), float(8 + 10 % 5), 12.0, 12.0]}
    f = model_findings(coco, preds).set_index("annotation_id")
    assert set(f.index) == {1, 2, 3, 4, 5, 6, 11} and set(f["check"]) == {F.CHECK_POSSIBLY_SLOPPY}
    labels = [shifted_label if i == 10 else m for i, m in enumerate(objs)]
    bad = np.array([1 - np.count_nonzero(g & p) / np.count_nonzero(g | p) for g, p in zip(labels, moved)])  # 1 - IoU
    flagged = np.zeros(len(bad), dtype=bool)
    flagged[[0, 1, 2, 3, 4, 5, 10]] = True
    n, e = len(bad) - 1, 7 / 60
    assert f.loc[11, "score"] == pytest.approx(0.9)  # no other disagreement as strong, none alike
    for k in range(6):
        others = flagged & (np.arange(len(bad)) != k)
        tail = np.count_nonzero(others & (bad >= bad[k])) / n
        alike = np.count_nonzero(others & (np.abs(bad - bad[k]) <= 0.05)) / n
        assert f.loc[k + 1, "score"] == pytest.approx(0.9 * (1 - max(tail, alike) / e), abs=1e-6), k
    # The strongest habit (IoU 0.50): one disagreement beyond it besides its twin, three alike.
    assert f.loc[1, "score"] < 0.9 * (1 - (2 / 59) / e) and "or alike" in f.loc[1, "message"]


def test_a_disagreement_the_model_makes_with_many_labels_alike_is_its_habit_and_not_listed() -> None:
    """60 cats; ten predictions misplaced by 4 px (IoU 0.5, alike): more than half of the model's outline
    disagreements with the class and at least eight of them, so the model's habit, not listed; the label moved by
    8 px has nothing alike and keeps its confidence."""
    coco, preds = grid_dataset(60)
    for k in range(10):
        preds[k] = shifted(preds[k], 4)
    preds[30] = shifted(preds[30], 8)
    f = model_findings(coco, preds).set_index("annotation_id")
    assert f.index.tolist() == [31] and f["check"].tolist() == [F.CHECK_POSSIBLY_SLOPPY]
    assert f.loc[31, "score"] == pytest.approx(0.9)
    # Left out, but not in silence: one info row for the class says how many and which.
    habit = habit_rows(coco, preds)
    assert habit[["severity", "category", "score"]].values.tolist() == [["info", "cat", 0.1]]
    assert "the model's outlines of 10 'cat' labels differ from theirs alike" in habit["message"].item()
    assert "Annotation ids: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10" in habit["message"].item()
    # Seven alike are not a habit yet (under MIN_INSTANCES_FOR_STATS others): listed, sunk by p / e.
    coco, preds = grid_dataset(60)
    for k in range(8):
        preds[k] = shifted(preds[k], 4)
    f = model_findings(coco, preds).set_index("annotation_id")
    assert sorted(f.index) == list(range(1, 9)) and habit_rows(coco, preds).empty
    assert f["score"].tolist() == pytest.approx([0.9 * (1 - (7 / 59) / (8 / 60))] * 8, abs=1e-6)


def test_three_label_errors_alike_under_a_perfect_model_are_all_listed() -> None:
    """The weakest of a class's label errors has all the others as strong or stronger, and three erosions by one
    annotator are alike: neither makes a habit, since the model agrees with every other label."""
    coco, preds = grid_dataset(40)
    for k in (3, 17, 29):
        x0, y0 = (int(v) for v in coco["annotations"][k]["bbox"][:2])
        eroded = rect(x0 + 2, y0 + 2, x0 + 10, y0 + 10)  # 8x8 inside the 12x12 object
        coco["annotations"][k] = {**coco["annotations"][k], "segmentation": rle_of(eroded), "area": float(eroded.sum()),
                                  "bbox": [float(x0 + 2), float(y0 + 2), 8.0, 8.0]}
    x0, y0 = (int(v) for v in coco["annotations"][35]["bbox"][:2])
    moved = rect(x0 + 8, y0, x0 + 20, y0 + 12)
    coco["annotations"][35] = {**coco["annotations"][35], "segmentation": rle_of(moved), "area": float(moved.sum()),
                               "bbox": [float(x0 + 8), float(y0), 12.0, 12.0]}
    f = model_findings(coco, preds)
    assert sorted(f["annotation_id"]) == [4, 18, 30, 36] and set(f["check"]) == {F.CHECK_POSSIBLY_SLOPPY}


def test_a_neighbours_detection_is_not_this_labels_outline_or_class() -> None:
    """A cat the model saw only unsure (score 0.2, exact), touched by a neighbour's confident detection that
    matches the neighbour: that detection is the neighbour's, so the cat's outline and class are not in doubt."""
    cat = rect(10, 10, 30, 30)
    neighbours = {1: rect(24, 10, 44, 30), 2: rect(24, 10, 44, 30)}  # overlaps the cat at IoU 6/34
    for other_class, neighbour in neighbours.items():
        coco = dataset([[(1, cat), (other_class, neighbour)]] + [[(1, rect(4, 4, 20, 20))] for _ in range(9)])
        preds = [pred(1, cat, 0.2), pred(other_class, neighbour, 0.9)]
        preds += [pred(1, rect(4, 4, 20, 20), 0.9, image_id=i) for i in range(2, 11)]
        f = model_findings(coco, preds)
        assert f.empty, (other_class, f[["check", "annotation_id", "message"]].values.tolist())
        # Without the unsure detection the neighbour's is still not the cat's outline: what is left is a cat the
        # model does not see while confident next to it.
        f = model_findings(coco, [p for p in preds if p["score"] >= 0.5])
        assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SPURIOUS, 1]], other_class


def test_misses_the_model_leaves_an_unsure_detection_on_are_its_habit_when_most_misses_are_so() -> None:
    """30 images, two cats each. The model misses the second cat in ten images, leaving an unconfident detection
    there each time, and has nothing at all on the second cat of image 11: ten alike misses, more than half of the
    labels no confident prediction covers, are the model's habit and not listed; the bare label is."""
    left, right = rect(4, 4, 20, 20), rect(36, 36, 52, 52)
    coco = dataset([[(1, left), (1, right)] for _ in range(30)])
    preds = [pred(1, left, 0.9, image_id=i + 1) for i in range(30)]
    preds += [pred(1, rect(40, 36, 56, 52), 0.2, image_id=i + 1) for i in range(10)]
    preds += [pred(1, right, 0.9, image_id=i + 1) for i in range(11, 30)]
    f = model_findings(coco, preds)
    assert f[["check", "annotation_id"]].values.tolist() == [[F.CHECK_POSSIBLY_SPURIOUS, 22]]
    assert f["score"].item() == pytest.approx(0.9)
    habit = habit_rows(coco, preds)["message"].item()
    assert habit.startswith("10 'cat' labels are seen only by an unconfident detection") and "2, 4, 6" in habit


def test_a_detection_where_the_model_is_wrong_more_often_than_right_is_not_listed() -> None:
    """Dogs at 0.6: six unmatched, two confirmed. For each unmatched one, the class's other detections near 0.6
    are unmatched more often than confirmed (reliability under a half, prior included): the model's habit."""
    boxes = [(8 + i % 7, 8 + i % 5, 20 + i % 7, 20 + i % 5) for i in range(20)]
    objs = [[(1, rect(*b))] for b in boxes[:10]] + [[(2, rect(*b))] for b in boxes[10:]]
    coco = dataset(objs)
    preds = [pred(c, m, 0.9, image_id=i + 1) for i, [(c, m)] in enumerate(objs)]
    preds[10], preds[11] = {**preds[10], "score": 0.6}, {**preds[11], "score": 0.6}
    stray = rect(40, 40, 52, 52)
    preds += [pred(2, stray, 0.6, image_id=i + 1) for i in range(6)]
    f = model_findings(coco, preds)
    assert f.empty
    habit = habit_rows(coco, preds)
    assert habit["category"].tolist() == ["dog"]
    assert habit["message"].item().startswith("6 confident 'dog' detections match no label") and "Image ids: 1, 2, 3, 4, 5, 6" in habit["message"].item()
    # One stray at a confidence where dogs are right (0.9): listed, by the reliability there.
    f = model_findings(coco, preds + [pred(2, stray, 0.9, image_id=7)])
    assert f[["check", "image_id"]].values.tolist() == [[F.CHECK_POSSIBLY_MISSING, 7]]


def test_a_confusion_the_model_makes_on_most_of_a_class_is_one_model_habit_row() -> None:
    """20 cats; the model calls ten of them 'dog' (same masks, confident): ten alike swaps, all of its
    disagreements with the class, are its habit. None is listed one by one; one info row names all ten."""
    coco, preds = grid_dataset(20)
    for k in range(10):
        preds[k] = {**preds[k], "category_id": 2}
    assert model_findings(coco, preds).empty
    habit = habit_rows(coco, preds)
    assert habit[["severity", "category"]].values.tolist() == [["info", "cat"]]
    assert habit["message"].item().startswith("the model predicts 'dog' on 10 'cat' labels")
    assert "Annotation ids: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10" in habit["message"].item()
    # Three such swaps are no habit: each is listed.
    coco, preds = grid_dataset(20)
    for k in range(3):
        preds[k] = {**preds[k], "category_id": 2}
    assert model_findings(coco, preds)["check"].tolist() == [F.CHECK_POSSIBLY_WRONG_CLASS] * 3
    assert habit_rows(coco, preds).empty

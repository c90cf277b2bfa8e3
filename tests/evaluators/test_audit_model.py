"""Model-assisted checks: possibly missing / spurious / wrong class / sloppy outline, each triggered and not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from segpipe.evaluators import audit_findings as F
from segpipe.evaluators.audit import audit_dataset
from segpipe.evaluators.errors import EvaluationError
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
    assert f["score"].item() == pytest.approx(0.9 * 0.5)
    preds[0] = pred(1, rect(4, 4, 23, 24), 0.9)  # IoU 0.95: a fine outline
    assert model_findings(coco, preds).empty


def test_scores_grow_with_confidence_and_shrink_with_overlap() -> None:
    coco, preds = coco_and_preds()
    coco["annotations"] = coco["annotations"][:2]
    sure = model_findings(coco, preds)["score"].item()
    unsure = model_findings(coco, preds[:2] + [{**preds[2], "score": 0.6}])["score"].item()
    assert sure > unsure
    coco2, preds2 = coco_and_preds()
    preds2[0] = pred(1, rect(4, 4, 14, 24), 0.9)
    half = model_findings(coco2, preds2)["score"].item()
    preds2[0] = pred(1, rect(4, 4, 18, 24), 0.9)
    closer = model_findings(coco2, preds2)["score"].item()
    assert half > closer


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

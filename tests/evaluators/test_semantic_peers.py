"""Peer figures for semantic metrics (../shared/peers/README.md): bdd100k, TensorFlow mean_iou, chainercv.

Convention check: bdd100k reports its mIoU "over classes present in GT" on a 19-class config where 17
classes have neither GT nor predicted pixels. Our absent-class rule (NaN, left out of the means) gives the
same figure. For the missing prediction, bdd100k/scalabel fill the prediction with the ignore class,
which only adds false negatives; our last confusion column ("no prediction") does exactly that.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from segpipe.evaluators.semantic.evaluation import confusion_update, evaluate_semantic_dirs, semantic_compute


def bdd100k_classes(folder: Path) -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((folder / "sem_seg.toml").read_text(encoding="utf-8"))
    return [category["name"] for category in config["scalabel"]["categories"]]


def test_bdd100k_pair(peers: Path) -> None:
    folder = peers / "bdd100k_semantic"
    names = bdd100k_classes(folder)
    assert len(names) == 19
    report = evaluate_semantic_dirs(folder / "gt", folder / "pred", class_names=names)
    matrix = report.confusion.iloc[:, 1:].to_numpy()
    np.testing.assert_array_equal(matrix[:2, :2], [[93, 1], [4, 2]])
    assert matrix.sum() == 100
    assert report.metric("mIoU") * 100 == pytest.approx(61.73469387755102, abs=1e-10)
    assert report.metric("aAcc") * 100 == pytest.approx(95.0, abs=1e-10)
    iou = report.per_class.set_index("class")["IoU"]
    assert iou["road"] == pytest.approx(0.9489795918, abs=1e-10)
    assert iou["sidewalk"] == pytest.approx(0.2857142857, abs=1e-10)
    assert int(iou.isna().sum()) == 17  # absent from GT and prediction: NaN, not 0, so the mean matches


def test_bdd100k_missing_prediction_counts_as_all_wrong(peers: Path) -> None:
    folder = peers / "bdd100k_semantic"
    report = evaluate_semantic_dirs(folder / "gt+", folder / "pred", class_names=bdd100k_classes(folder))
    assert report.metric("mIoU") * 100 == pytest.approx(31.911057692307693, abs=1e-10)
    assert report.metric("aAcc") * 100 == pytest.approx(47.5, abs=1e-10)
    assert report.notes.to_dict("records") == [{"file": "b.png", "issue": "missing_prediction"}]


def test_tensorflow_mean_iou_vector() -> None:
    labels = np.array([[[0, 0, 1, 1, 0, 0], [1, 0, 0, 0, 0, 1]], [[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]])
    predictions = np.array([[[0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]]])
    matrix = confusion_update(labels, predictions, num_classes=3)
    np.testing.assert_array_equal(matrix[:, :3], [[9, 5, 0], [3, 7, 0], [0, 0, 0]])
    report = semantic_compute(matrix, class_names=["a", "b", "c"])
    assert report.metric("mIoU") == pytest.approx(0.4980392156862745, abs=1e-15)
    assert math.isnan(report.per_class["IoU"][2])


def test_chainercv_vector_with_ignore_minus_one() -> None:
    pred = np.array([[1, 1, 0], [0, 0, 1]])
    gt = np.array([[1, 0, 0], [0, -1, 1]])
    matrix = sum(confusion_update(gt, pred, num_classes=2, ignore_index=-1) for _ in range(2))
    report = semantic_compute(matrix, class_names=["zero", "one"])
    np.testing.assert_allclose(report.per_class["IoU"], [4 / 6, 4 / 6], rtol=0, atol=1e-15)
    np.testing.assert_allclose(report.per_class["recall"], [2 / 3, 1.0], rtol=0, atol=1e-15)
    assert report.metric("aAcc") == pytest.approx(4 / 5, abs=1e-15)
    assert report.metric("mAcc") == pytest.approx((2 / 3 + 1) / 2, abs=1e-15)

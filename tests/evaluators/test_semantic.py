"""segpipe.evaluators.semantic.evaluation against an independent numpy computation, plus its properties and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from segpipe.core.errors import EvaluationError
from segpipe.evaluators.semantic.evaluation import (
    IGNORE_INDEX, MISSING_PREDICTION, PREDICTION_WITHOUT_GT, SUMMARY_METRICS, confusion_update, evaluate_semantic_dirs,
    per_image_row, semantic_compute, unpredicted_update,
)

N = 5
NAMES = [f"c{i}" for i in range(N)]


def reference_scores(pairs: list[tuple[np.ndarray, np.ndarray]], *, n: int, ignore: int) -> dict[str, object]:
    """Plain numpy, explicit loops over classes; shares no code with segpipe.evaluators.semantic.evaluation."""
    gt = np.concatenate([g.ravel().astype(np.int64) for g, _ in pairs])
    pred = np.concatenate([p.ravel().astype(np.int64) for _, p in pairs])
    valid = gt != ignore
    iou, dice, precision, recall = [], [], [], []
    tp_total = 0
    for c in range(n):
        tp = int(np.sum((gt == c) & (pred == c) & valid))
        fp = int(np.sum((gt != c) & (pred == c) & valid))
        fn = int(np.sum((gt == c) & (pred != c) & valid))
        tp_total += tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
        precision.append(tp / (tp + fp) if tp + fp else math.nan)
        recall.append(tp / (tp + fn) if tp + fn else math.nan)
    gt_share = [int(np.sum((gt == c) & valid)) / int(valid.sum()) for c in range(n)]
    return {"iou": iou, "dice": dice, "precision": precision, "recall": recall,
            "aAcc": tp_total / int(valid.sum()), "mIoU": float(np.nanmean(iou)), "mDice": float(np.nanmean(dice)),
            "mAcc": float(np.nanmean(recall)),
            "fwIoU": sum(share * v for share, v in zip(gt_share, iou) if share > 0)}


def random_pairs(seed: int, *, count: int = 6, shape: tuple[int, int] = (23, 31), n: int = N,
                 dtype: type = np.uint8, ignore: int = IGNORE_INDEX) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        gt = rng.integers(0, n, shape)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, n, shape))
        gt[rng.random(shape) < 0.1] = ignore
        pred[rng.random(shape) < 0.03] = ignore  # a prediction may say "no class": a miss
        pairs.append((gt.astype(dtype), pred.astype(dtype)))
    return pairs


def total_confusion(pairs: list[tuple[np.ndarray, np.ndarray]], *, n: int = N, ignore: int = IGNORE_INDEX) -> np.ndarray:
    return sum(confusion_update(g, p, num_classes=n, ignore_index=ignore) for g, p in pairs)


@pytest.mark.parametrize(("dtype", "ignore"), [(np.uint8, 255), (np.uint16, 255), (np.int32, -1), (np.int64, 1000)])
def test_matches_independent_numpy(dtype: type, ignore: int) -> None:
    pairs = random_pairs(1, dtype=dtype, ignore=ignore)
    report = semantic_compute(total_confusion(pairs, ignore=ignore), class_names=NAMES)
    ref = reference_scores(pairs, n=N, ignore=ignore)
    np.testing.assert_allclose(report.per_class["IoU"], ref["iou"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.per_class["Dice"], ref["dice"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.per_class["precision"], ref["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.per_class["recall"], ref["recall"], rtol=0, atol=1e-12)
    for metric in ("aAcc", "mIoU", "mDice", "mAcc", "fwIoU"):
        assert report.metric(metric) == pytest.approx(ref[metric], abs=1e-12)


@pytest.mark.parametrize("shape", [(64, 80), (23, 31), (1, 3), (0, 5), (7,), (2, 3, 5)])
def test_uint8_fast_path_equals_generic_path_and_mmseg_pattern(shape: tuple[int, ...]) -> None:
    for gt, pred in random_pairs(2, count=3, shape=shape):
        fast = confusion_update(gt, pred, num_classes=N)
        generic = confusion_update(gt.astype(np.int16), pred.astype(np.int16), num_classes=N)
        np.testing.assert_array_equal(fast, generic)
        keep = (gt != IGNORE_INDEX) & (pred != IGNORE_INDEX)
        mmseg = np.bincount(N * gt[keep].astype(np.int64) + pred[keep], minlength=N * N).reshape(N, N)
        np.testing.assert_array_equal(fast[:, :N], mmseg)
        np.testing.assert_array_equal(fast[:, N], [np.sum((gt == c) & (pred == IGNORE_INDEX)) for c in range(N)])
        assert fast.dtype == np.int64 and fast.shape == (N, N + 1)


def test_histogram_stays_exact_beyond_float32_counts() -> None:
    # cv2.calcHist counts in float32 (exact to 2**24); chunking must keep int64 counts exact.
    size = (1 << 24) + 3
    gt = np.zeros(size, dtype=np.uint8)
    pred = np.zeros(size, dtype=np.uint8)
    pred[-1] = 1
    matrix = confusion_update(gt, pred, num_classes=2)
    assert matrix[0, 0] == size - 1 and matrix[0, 1] == 1 and matrix.sum() == size


def test_absent_class_is_nan_and_predicted_absent_class_scores_zero() -> None:
    gt = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 2], [1, 1]], dtype=np.uint8)  # class 2 predicted, absent from GT; class 3 nowhere
    report = semantic_compute(confusion_update(gt, pred, num_classes=4), class_names=["a", "b", "c", "d"])
    iou = report.per_class.set_index("class")["IoU"]
    assert iou["a"] == 0.5 and iou["b"] == 1.0 and iou["c"] == 0.0 and math.isnan(iou["d"])
    assert report.metric("mIoU") == pytest.approx(0.5)
    assert any("d" in w for w in report.warnings)


def test_prediction_value_out_of_range_names_file_and_values() -> None:
    gt = np.zeros((4, 4), dtype=np.uint8)
    pred = np.zeros((4, 4), dtype=np.uint8)
    pred[0, :3] = [7, 9, 9]
    with pytest.raises(EvaluationError) as info:
        confusion_update(gt, pred, num_classes=N, path="preds/x.png")
    assert info.value.path == "preds/x.png" and info.value.field == "prediction values"
    assert "7 (1 px)" in str(info.value) and "9 (2 px)" in str(info.value)
    # Also under ignored GT pixels, and on the generic path.
    gt[0, :3] = IGNORE_INDEX
    with pytest.raises(EvaluationError, match="9"):
        confusion_update(gt, pred, num_classes=N)
    with pytest.raises(EvaluationError, match=r"-2 \(1 px\)"):
        confusion_update(np.zeros(3, int), np.array([0, -2, 1]), num_classes=N, ignore_index=-1)


def test_gt_value_out_of_range_and_shape_mismatch() -> None:
    gt = np.full((3, 3), 6, dtype=np.uint8)
    with pytest.raises(EvaluationError) as info:
        confusion_update(gt, np.zeros((3, 3), np.uint8), num_classes=N, path="gt/a.png")
    assert info.value.field == "ground truth values" and "6 (9 px)" in str(info.value)
    with pytest.raises(EvaluationError, match="shape"):
        confusion_update(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8), num_classes=N)
    with pytest.raises(EvaluationError, match="integers"):
        confusion_update(np.zeros(3), np.zeros(3), num_classes=N)
    with pytest.raises(ValueError, match="class index"):
        confusion_update(gt, gt, num_classes=N, ignore_index=2)


def test_shard_and_sum_equals_one_pass_and_order_does_not_matter() -> None:
    pairs = random_pairs(3, count=9)
    one_pass = confusion_update(np.stack([g for g, _ in pairs]), np.stack([p for _, p in pairs]), num_classes=N)
    shards = [total_confusion(pairs[i:i + 4]) for i in range(0, 9, 4)]
    np.testing.assert_array_equal(sum(shards), one_pass)
    reversed_total = total_confusion(pairs[::-1])
    np.testing.assert_array_equal(reversed_total, one_pass)
    a = semantic_compute(one_pass, class_names=NAMES)
    b = semantic_compute(reversed_total, class_names=NAMES)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    pd.testing.assert_frame_equal(a.per_class, b.per_class)


def test_unpredicted_update_and_per_image_row() -> None:
    gt = np.array([[0, 1, 255], [1, 1, 0]], dtype=np.uint8)
    missed = unpredicted_update(gt, num_classes=2)
    np.testing.assert_array_equal(missed, [[0, 0, 2], [0, 0, 3]])
    row = per_image_row(missed, file="a.png", prediction=MISSING_PREDICTION)
    assert row["IoU"] == 0.0 and row["Dice"] == 0.0 and row["aAcc"] == 0.0 and row["gt_pixels"] == 5
    perfect = per_image_row(confusion_update(gt, gt, num_classes=3), file="b.png")
    assert perfect["IoU"] == 1.0 and perfect["aAcc"] == 1.0  # class 2 absent from both: left out
    assert math.isnan(per_image_row(np.zeros((2, 3), np.int64), file="c.png")["IoU"])


def test_compute_accepts_square_matrix_and_checks_names() -> None:
    square = np.array([[9, 5, 0], [3, 7, 0], [0, 0, 0]])
    report = semantic_compute(square, class_names=["a", "b", "c"])
    assert list(report.summary["metric"]) == list(SUMMARY_METRICS)
    assert list(report.confusion.columns) == ["class", "a", "b", "c", "(no prediction)"]
    assert square.tolist() == [[9, 5, 0], [3, 7, 0], [0, 0, 0]]  # not mutated
    with pytest.raises(ValueError, match="class names"):
        semantic_compute(square, class_names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        semantic_compute(square, class_names=["a", "a", "b"])


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def write_pairs(tmp_path: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Path, Path]:
    for i, (gt, pred) in enumerate(pairs):
        write_png(tmp_path / "gt" / f"img{i:02d}.png", gt)
        write_png(tmp_path / "pred" / f"img{i:02d}.png", pred)
    return tmp_path / "gt", tmp_path / "pred"


@pytest.mark.parametrize("workers", [1, 2])
def test_dirs_match_in_memory_and_numpy(tmp_path: Path, workers: int) -> None:
    pairs = random_pairs(4, count=7)
    gt_dir, pred_dir = write_pairs(tmp_path, pairs)
    report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES, workers=workers)
    expected = semantic_compute(total_confusion(pairs), class_names=NAMES)
    pd.testing.assert_frame_equal(report.per_class, expected.per_class)
    assert report.metric("mIoU") == pytest.approx(reference_scores(pairs, n=N, ignore=255)["mIoU"], abs=1e-12)
    per_image_ref = [reference_scores([pair], n=N, ignore=255)["mIoU"] for pair in pairs]
    np.testing.assert_allclose(report.per_image["IoU"], per_image_ref, rtol=0, atol=1e-12)
    assert report.metric("mIoU_per_image") == pytest.approx(np.mean(per_image_ref), abs=1e-12)
    assert list(report.per_image["file"]) == [f"img{i:02d}.png" for i in range(7)]
    assert report.notes.empty


def test_dirs_missing_prediction_and_orphan(tmp_path: Path) -> None:
    pairs = random_pairs(5, count=3)
    gt_dir, pred_dir = write_pairs(tmp_path, pairs)
    (pred_dir / "img01.png").unlink()
    write_png(pred_dir / "extra.png", pairs[0][1])
    report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES)
    missing_gt = pairs[1][0]
    # Every labelled pixel of the missing prediction is a miss: counted by class in the "(no prediction)" column.
    expected = total_confusion([pairs[0], pairs[2]])
    expected[:, N] += np.bincount(missing_gt[missing_gt != IGNORE_INDEX].astype(np.int64), minlength=N)
    np.testing.assert_array_equal(report.confusion.iloc[:, 1:].to_numpy(), expected)
    assert report.notes.to_dict("records") == [
        {"file": "img01.png", "issue": MISSING_PREDICTION}, {"file": "extra.png", "issue": PREDICTION_WITHOUT_GT}]
    row = report.per_image.set_index("file").loc["img01.png"]
    assert row["IoU"] == 0.0 and row["prediction"] == MISSING_PREDICTION
    assert len(report.per_image) == 3 and any("no prediction" in w for w in report.warnings)


def test_dirs_bad_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    pairs = random_pairs(6, count=2)
    gt_dir, pred_dir = write_pairs(tmp_path, pairs)
    write_png(pred_dir / "img00.png", np.zeros((23, 31, 3), np.uint8))
    with pytest.raises(EvaluationError) as info:
        evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES)
    assert info.value.path.endswith("img00.png") and info.value.field == "channels"
    write_png(pred_dir / "img00.png", np.zeros((10, 31), np.uint8))
    with pytest.raises(EvaluationError) as info:
        evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES)
    assert info.value.field == "size" and "31x10" in info.value.reason
    write_png(pred_dir / "img00.png", np.full((23, 31), 17, np.uint8))
    (pred_dir / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(EvaluationError) as info:
        evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES, workers=2)
    assert info.value.path == str(pred_dir / "img00.png") and "17" in info.value.reason
    assert "img01.png" in info.value.reason  # the other bad file is named too
    write_png(pred_dir / "img00.png", pairs[0][1])
    write_png(pred_dir / "img01.png", pairs[1][1])
    write_png(gt_dir / "img01.png", np.full((23, 31), 9, np.uint8))
    with pytest.raises(EvaluationError) as info:
        evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES)
    assert info.value.path == str(gt_dir / "img01.png") and info.value.field == "ground truth values"


def test_dirs_uint16_maps_and_empty_gt(tmp_path: Path) -> None:
    pairs = random_pairs(7, count=2, n=300, dtype=np.uint16, ignore=65535)
    gt_dir, pred_dir = write_pairs(tmp_path, pairs)
    names = [f"k{i}" for i in range(300)]
    report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, ignore_index=65535)
    assert report.metric("mIoU") == pytest.approx(reference_scores(pairs, n=300, ignore=65535)["mIoU"], abs=1e-12)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no .png label maps"):
        evaluate_semantic_dirs(tmp_path / "empty", pred_dir, class_names=names, ignore_index=65535)
    with pytest.raises(ValueError, match="class index"):
        evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names)  # 255 is one of the 300 classes


def test_dirs_skip_dot_files_and_reject_duplicate_stems(tmp_path: Path) -> None:
    pairs = random_pairs(8, count=2)
    gt_dir, pred_dir = write_pairs(tmp_path, pairs)
    write_png(gt_dir / ".img00.png.tmp-1-0.png", pairs[0][0])  # left by a killed atomic writer
    (gt_dir / "classes.txt").write_text("c0\n", encoding="utf-8")
    report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES)
    assert list(report.per_image["file"]) == ["img00.png", "img01.png"]
    write_png(pred_dir / "img00.PNG", pairs[0][1])
    with pytest.raises(EvaluationError, match="share the stem"):
        evaluate_semantic_dirs(gt_dir, pred_dir, class_names=NAMES)

"""Results ingested as columns: the compiled column reader against the map() reader, the vectorised validation
against the per-result checks, the per-image cap against a plain sort, the C accumulate against pycocotools, and
the JSON reader against the standard library's."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segpipe.evaluators.instance import coco_results
from segpipe.evaluators import kernel
from segpipe.evaluators.instance.coco_ground_truth import parse_ground_truth
from segpipe.evaluators.instance.coco_results import (
    MAX_DETECTIONS_PER_IMAGE_ENV,
    cap_detections_per_image,
    result_problem,
    validate_result_columns,
    validate_results,
)
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.evaluation import evaluate_instances
from segpipe.evaluators.json_files import read_json_file
from tests.evaluators.test_instance import make_dataset, reference_eval

BUILT = kernel.KERNEL


@pytest.fixture(params=["kernel", "numpy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on both paths: the compiled kernel (skipped where it is not built) and numpy."""
    if request.param == "kernel":
        if BUILT is None:
            pytest.skip("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set")
        monkeypatch.setattr(kernel, "KERNEL", BUILT)
    else:
        monkeypatch.setattr(kernel, "KERNEL", None)
    return str(request.param)


def _gt() -> dict[str, Any]:
    images = [{"id": i, "file_name": f"{i}.png", "height": 4, "width": 3} for i in (1, 2, 7)]
    return {"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}]}


def _rle(h: int = 4, w: int = 3) -> dict[str, Any]:
    mask = np.zeros((h, w), dtype=np.uint8, order="F")
    mask[1:3, 1:] = 1
    return {"size": [h, w], "counts": mask_utils.encode(mask)["counts"].decode("ascii")}


def _tricky_results() -> list[Any]:
    """Every kind of row the fast check must hand to the per-result checks, between good ones."""
    good = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": _rle(), "bbox": [0.0, 1.0, 2.0, 3.0]}
    rows: list[Any] = [dict(good), dict(good, image_id=7, score=0.25)]
    for key, value in [("image_id", True), ("image_id", 3), ("image_id", 2**70), ("image_id", 1.0), ("category_id", 2),
                       ("category_id", False), ("score", 1), ("score", math.nan), ("score", math.inf), ("score", None),
                       ("score", True), ("bbox", [0, 1, 2, 3]), ("bbox", [0.0, 1.0, 2.0]), ("bbox", (0.0, 1.0, 2.0, 3.0)),
                       ("bbox", [0.0, 1.0, -2.0, 3.0]), ("bbox", [0.0, math.nan, 2.0, 3.0]), ("bbox", [0.0, 1.0, True, 3.0]),
                       ("bbox", [0.0, 1.0, 2.0, 2**1100]), ("bbox", [0, 1, 2, 2**70]), ("bbox", "0 1 2 3"),
                       ("segmentation", {"size": [4, 3], "counts": _rle()["counts"].encode()}),
                       ("segmentation", {"size": [3, 4], "counts": _rle(3, 4)["counts"]}),
                       ("segmentation", {"size": (4, 3), "counts": _rle()["counts"]}),
                       ("segmentation", {"size": [4, True], "counts": _rle()["counts"]}),
                       ("segmentation", {"size": [4, 3], "counts": "0\x7f"}), ("segmentation", {"size": [4, 3], "counts": "é"}),
                       ("segmentation", {"size": [4, 3], "counts": [0, 12]}), ("segmentation", [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0]]),
                       ("segmentation", {"size": [4, 3]}), ("segmentation", None)]:
        rows.append(dict(good, **{key: value}))
    rows += [{k: v for k, v in good.items() if k != drop} for drop in ("image_id", "score", "bbox", "segmentation")]
    rows += [[1, 1, 0.5], None, "result", {}]
    return rows


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_column_readers_agree(iou_type: str) -> None:
    """The C reader and the map() reader give the same flags and values on every kind of row."""
    if BUILT is None:
        pytest.skip("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set")
    results = _tricky_results() * 3
    reads = []
    for module in (BUILT, None):
        kernel.KERNEL = module
        try:
            reads.append(coco_results._read_columns(results, segm=iou_type == "segm"))
        finally:
            kernel.KERNEL = BUILT
    c, p = reads
    assert c.ok.any() and not c.ok.all()
    for name in ("ok", "image_id", "category_id", "score", *(("size_h", "size_w") if iou_type == "segm" else ())):
        np.testing.assert_array_equal(getattr(c, name)[c.ok], getattr(p, name)[p.ok], err_msg=name)
    np.testing.assert_array_equal(c.ok, p.ok)
    if iou_type == "bbox":
        np.testing.assert_array_equal(c.plain, p.plain)
        np.testing.assert_array_equal(c.boxes[c.ok], p.boxes[p.ok])
    else:
        assert [x for x, good in zip(c.counts, c.ok) if good] == [x for x, good in zip(p.counts, p.ok) if good]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_validation_equals_per_result_checks(path: str, iou_type: str) -> None:
    """Kept rows, their columns and every message equal what checking each result on its own gives."""
    gt, results = _gt(), _tricky_results()
    truth = parse_ground_truth(gt)
    problems = [result_problem(r, truth=truth, iou_type=iou_type) for r in results]
    expected_kept = [r for r, why in zip(results, problems) if why is None]
    expected_bad = [(i, why) for i, why in enumerate(problems) if why is not None]
    assert len(expected_kept) >= 4 and len(expected_bad) >= 20
    columns, warnings = validate_result_columns(gt, results, iou_type=iou_type, drop_invalid=True)
    assert columns.dicts() == expected_kept
    assert all(a is b for a, b in zip(columns.dicts(), expected_kept))
    np.testing.assert_array_equal(columns.image_id, [r["image_id"] for r in expected_kept])
    np.testing.assert_array_equal(columns.category_id, [r["category_id"] for r in expected_kept])
    np.testing.assert_array_equal(columns.score, [float(r["score"]) for r in expected_kept])
    (warning,) = warnings
    assert f"dropped {len(expected_bad)} of {len(results)} results are invalid" in warning
    for kind in {why[0] for _, why in expected_bad}:
        examples = [f"results[{i}]: {why[1]}" for i, why in expected_bad if why[0] == kind]
        assert f"{kind}: {len(examples)} (e.g. {'; '.join(examples[:3])})" in warning
    with pytest.raises(EvaluationError) as err:
        validate_results(gt, results, iou_type=iou_type)
    assert warning.split("dropped ", 1)[1] in str(err.value)


def test_cap_keeps_each_images_best_by_score_ties_in_file_order(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-image cap over columns equals Python's stable sort on -score, image by image."""
    monkeypatch.setenv(MAX_DETECTIONS_PER_IMAGE_ENV, "5")
    rng = np.random.default_rng(3)
    gt = _gt()
    truth = parse_ground_truth(gt)
    kept = [{"image_id": int(rng.choice([1, 2, 7])), "category_id": 1, "score": float(rng.integers(0, 4)) / 4,
             "bbox": [0.0, 0.0, 1.0, 1.0], "n": i} for i in range(60)]
    out, warning = cap_detections_per_image(kept, truth=truth, drop=True)
    expected: set[int] = set()
    for image_id in (1, 2, 7):
        rows = [r for r in kept if r["image_id"] == image_id]
        expected.update(r["n"] for r in sorted(rows, key=lambda r: -r["score"])[:5])
    assert [r["n"] for r in out] == sorted(expected)
    assert warning is not None and f"dropped the {60 - len(expected)} lowest-scoring detections of 3 image(s)" in warning
    with pytest.raises(EvaluationError, match="3 image\\(s\\) with more than 5 detections"):
        cap_detections_per_image(kept, truth=truth, drop=False)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_accumulate_paths_equal_pycocotools(path: str, iou_type: str) -> None:
    """precision/recall arrays (the C lanes and numpy's) are pycocotools' own, bit for bit."""
    gt, results = make_dataset(seed=5, n_images=8)
    ref = reference_eval(gt, results, iou_type)
    report = evaluate_instances(gt, results, iou_type=iou_type)
    np.testing.assert_array_equal(report.precision, ref.eval["precision"])
    np.testing.assert_array_equal(report.recall, ref.eval["recall"])
    assert report.stats == list(ref.stats)


def test_accumulate_lanes_equal_numpy_curves_bit_for_bit() -> None:
    """The C lanes compute precision at the true positives only; on random lanes (false positives, detections that
    are neither, a first detection of each kind, no true positive, all true positives, one detection) they give
    numpy's `_curves` floats (pycocotools' arithmetic), bit for bit."""
    if BUILT is None:
        pytest.skip("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set")
    from segpipe.evaluators.instance.accumulate import _curves
    from segpipe.evaluators.instance.stats import RECALL_THRESHOLDS

    rng = np.random.default_rng(7)
    for case in range(400):
        n = int(rng.integers(1, 60)) if case % 5 else 1
        lanes = int(rng.integers(1, 6))
        kind = rng.choice(3, size=(lanes, n), p=rng.dirichlet(np.ones(3)))  # 0 tp, 1 fp, 2 neither
        if case % 7 == 0:
            kind[0] = 1  # no true positive
        if case % 11 == 0:
            kind[-1] = 0  # all true positives
        tps, fps = kind == 0, kind == 1
        npig = max(int(tps.sum(axis=1).max()), 1) + int(rng.integers(0, 4))
        q = np.empty((lanes, len(RECALL_THRESHOLDS)))
        final = np.empty(lanes)
        kernel.accumulate_lanes(tps=tps, fps=fps, npig=np.full(lanes, float(npig)), thresholds=RECALL_THRESHOLDS,
                                precision=q, recall=final)
        ref_q, ref_final = _curves(np.cumsum(tps, axis=1).astype(float), np.cumsum(fps, axis=1).astype(float), npig, n)
        assert q.tobytes() == ref_q.tobytes() and final.tobytes() == ref_final.tobytes(), case


@pytest.mark.parametrize("text", ['[{"score": NaN}, 1e999, -Infinity]', "[18446744073709551615, -9223372036854775808]",
                                  '["\\ud800"]', '{"a": 1, "a": [2.5, 1e-320, 0.1]}', "[1, 2", "\ufeff[1]"])
def test_json_reader_reads_as_the_standard_library(tmp_path: Path, text: str) -> None:
    """Whatever orjson refuses is read by json: the same values, or json's own error message."""
    file = tmp_path / "x.json"
    file.write_text(text, encoding="utf-8")
    try:
        expected = json.loads(text.encode("utf-8"))  # as json.load of the file opened in binary mode
    except ValueError as err:
        with pytest.raises(EvaluationError, match=re.escape(f"cannot read results JSON: {err}")):
            read_json_file(file, what="results")
        return
    got = read_json_file(file, what="results")
    assert json.dumps(got) == json.dumps(expected)


def test_json_integers_beyond_64_bits_read_as_floats(tmp_path: Path) -> None:
    """orjson reads an integer beyond 64 bits as the nearest float (https://github.com/ijl/orjson#int); json keeps
    it exact. No such number is a usable id, size or count: the ground truth refuses it as an id either way."""
    file = tmp_path / "gt.json"
    file.write_text('{"images": [{"id": 123456789012345678901234567890, "file_name": "a.png", "height": 2, "width": 2}], '
                    '"annotations": [], "categories": []}', encoding="utf-8")
    value = read_json_file(file, what="ground truth")["images"][0]["id"]
    assert value == 123456789012345678901234567890 or value == pytest.approx(1.2345678901234568e29)
    if isinstance(value, float):
        with pytest.raises(EvaluationError, match="images\\[0\\].id|expected an integer"):
            parse_ground_truth(read_json_file(file, what="ground truth"))


def test_column_and_lane_kernels_check_their_buffers() -> None:
    """result_columns and accumulate_lanes take keyword arguments only and refuse buffers of the wrong type or
    length (rather than reading or writing past them)."""
    if BUILT is None:
        pytest.skip("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set")
    n = 3
    good: dict[str, Any] = dict(results=[{}] * n, segm=False, image_id=np.zeros(n, np.int64), category_id=np.zeros(n, np.int64),
                                score=np.zeros(n), ok=np.zeros(n, bool), plain=np.zeros(n, bool), sizes=np.zeros((0, 2), np.int64),
                                boxes=np.zeros((n, 4)))
    assert kernel.result_columns(**good) is None and not good["ok"].any()
    for name, wrong, error in [("boxes", np.zeros((n - 1, 4)), ValueError), ("score", np.zeros(n, np.float32), TypeError),
                               ("image_id", np.zeros(n + 1, np.int64), ValueError), ("sizes", np.zeros((n, 2), np.int64), ValueError),
                               ("ok", np.zeros(n - 1, bool), ValueError)]:
        with pytest.raises(error, match=name):
            kernel.result_columns(**{**good, name: wrong})
    with pytest.raises(ValueError, match="boxes"):  # segm takes no boxes
        kernel.result_columns(**{**good, "segm": True, "sizes": np.zeros((n, 2), np.int64)})
    lanes: dict[str, Any] = dict(tps=np.ones((2, 4), bool), fps=np.zeros((2, 4), bool), npig=np.array([4.0, 8.0]),
                                 thresholds=np.linspace(0, 1, 5), precision=np.empty((2, 5)), recall=np.empty(2))
    kernel.accumulate_lanes(**lanes)
    np.testing.assert_array_equal(lanes["recall"], [1.0, 0.5])
    for name, wrong in [("fps", np.zeros((2, 3), bool)), ("precision", np.empty((2, 4))), ("recall", np.empty(3))]:
        with pytest.raises(ValueError, match=name):
            kernel.accumulate_lanes(**{**lanes, name: wrong})
    with pytest.raises(ValueError, match="tps: expected L rows"):  # 7 values are no 2 rows of 3
        kernel.accumulate_lanes(**{**lanes, "tps": np.ones(7, bool), "fps": np.zeros(6, bool)})
    with pytest.raises(TypeError):
        BUILT.accumulate_lanes(*lanes.values())


@pytest.mark.parametrize("parser", ["orjson", "json"])
def test_json_reader_deep_nesting_is_a_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parser: str) -> None:
    """Nesting beyond the parsers' depth (orjson stops at 1024 levels, json at the recursion limit) is the file's
    located EvaluationError through either parser, never a RecursionError."""
    from segpipe.evaluators import json_files

    if parser == "json":
        monkeypatch.setattr(json_files, "_ORJSON", None)
    elif json_files._ORJSON is None:
        pytest.skip("orjson is not installed")
    file = tmp_path / "deep.json"
    file.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(EvaluationError, match=re.escape(f"{file}: cannot read results JSON: nested too deeply")):
        read_json_file(file, what="results")

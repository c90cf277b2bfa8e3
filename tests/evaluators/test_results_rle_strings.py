"""Compressed RLE `counts` strings in results are decoded and checked, not trusted (pycocotools trusts them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from segpipe.converters.coco import encode_mask as _string_rle
from segpipe.evaluators.instance.coco_results import segmentation_problem, validate_results
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.evaluation import evaluate_instances
from segpipe.cli import main
from tests.evaluators.test_instance import TOL, make_dataset, reference_eval

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")

H, W = 40, 60


def _gt_and_result(counts: str | bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    mask = np.zeros((H, W), dtype=bool)
    mask[5:20, 10:30] = True
    gt = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(mask.sum()),
                         "bbox": [10.0, 5.0, 20.0, 15.0], "segmentation": _string_rle(mask)}],
    }
    good = {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _string_rle(mask)}
    bad = {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": {"size": [H, W], "counts": counts}}
    return gt, [good, bad]


BAD_COUNTS = [
    pytest.param("0000000000", "decodes to 0 pixels, not 2400", id="runs-sum-to-0"),
    pytest.param("!!!!", "corrupt", id="outside-alphabet"),
    pytest.param(b"!!!!", "corrupt", id="bytes-outside-alphabet"),
    pytest.param("5o", "corrupt", id="cut-off-run"),  # 'o' carries the continuation bit and ends the string
    pytest.param("@", "corrupt", id="negative-run"),  # "@" = 16: one 5-bit chunk with the sign bit set
    pytest.param("é", "corrupt", id="non-ascii"),
    # "?aZ2" is a valid 40x60 string (15 background pixels, then foreground); with its "?" a lone surrogate,
    # which pycocotools' _frString refuses, it was once read as "?" (str.encode's "replace") and scored
    pytest.param("\udc80aZ2", "corrupt", id="lone-surrogate"),
    pytest.param("?aZ2\ud800", "corrupt", id="trailing-surrogate"),
    pytest.param(mask_utils.encode(np.zeros((H, W + 1, 1), dtype=np.uint8, order="F"))[0]["counts"].decode(), "not 2400",
                 id="another-image-size"),
]


@pytest.mark.parametrize(("counts", "why"), BAD_COUNTS)
def test_bad_counts_strings_are_an_error_with_counts(counts: str | bytes, why: str) -> None:
    gt, results = _gt_and_result(counts)
    with pytest.raises(EvaluationError) as err:
        validate_results(gt, results, iou_type="segm")
    message = str(err.value)
    assert "1 of 2 results are invalid" in message and "bad segmentation: 1" in message
    assert "results[1]" in message and why in message
    with pytest.raises(EvaluationError):
        evaluate_instances(gt, results, iou_type="segm")


@pytest.mark.parametrize(("counts", "why"), BAD_COUNTS)
def test_drop_invalid_drops_and_counts_them(counts: str | bytes, why: str) -> None:
    gt, results = _gt_and_result(counts)
    kept, warnings = validate_results(gt, results, iou_type="segm", drop_invalid=True)
    assert kept == results[:1]
    assert any("dropped 1 of 2 results are invalid" in w and why in w for w in warnings)
    report = evaluate_instances(gt, results, iou_type="segm", drop_invalid=True)
    assert abs(report.stats[0] - reference_eval(gt, results[:1], "segm").stats[0]) <= TOL
    assert report.stats[0] == pytest.approx(1.0)


def test_mask_only_results_in_bbox_mode_are_checked_too() -> None:
    gt, results = _gt_and_result("0000000000")
    with pytest.raises(EvaluationError, match="decodes to 0 pixels"):
        validate_results(gt, results, iou_type="bbox")
    with_box = [results[0], {**results[1], "bbox": [1.0, 1.0, 5.0, 5.0]}]
    assert validate_results(gt, with_box, iou_type="bbox") == (with_box, [])  # bbox mode ignores the mask


def test_valid_strings_pass_and_score_like_pycocotools() -> None:
    gt, all_results = make_dataset(seed=5, n_images=4)
    known = {im["id"] for im in gt["images"]}
    results = [r for r in all_results if r["image_id"] in known and "segmentation" in r]
    as_str = results  # make_dataset writes compressed counts as str
    kept, _ = validate_results(gt, as_str, iou_type="segm")
    assert kept == as_str
    as_bytes = [{**r, "segmentation": {**r["segmentation"], "counts": r["segmentation"]["counts"].encode()}} for r in results]
    assert validate_results(gt, as_bytes, iou_type="segm")[0] == as_bytes
    report = evaluate_instances(gt, as_str, iou_type="segm")
    assert np.max(np.abs(np.array(report.stats) - reference_eval(gt, results, "segm").stats)) <= TOL


def test_segmentation_problem_decodes_alone_or_with_a_precomputed_total() -> None:
    rle = _string_rle(np.ones((H, W), dtype=bool))
    assert segmentation_problem(rle, height=H, width=W) is None
    assert segmentation_problem({**rle, "counts": "0000000000"}, height=H, width=W) is not None
    assert segmentation_problem(rle, height=H, width=W, total=H * W) is None
    assert segmentation_problem(rle, height=H, width=W, total=-1) is not None


def test_cli_exits_1_with_counts_and_drop_invalid_scores(tmp_path: Path) -> None:
    gt, results = _gt_and_result("0000000000")
    (tmp_path / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    args = ["evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json")]
    failed = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "r1")], catch_exceptions=False)
    assert failed.exit_code == 1 and "1 of 2 results are invalid" in failed.stderr and "bad segmentation: 1" in failed.stderr
    assert not (tmp_path / "r1").exists()
    dropped = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "r2"), "--drop-invalid"], catch_exceptions=False)
    assert dropped.exit_code == 0 and "dropped 1 of 2" in dropped.stderr


@pytest.mark.parametrize(("counts", "why"), BAD_COUNTS)
def test_bad_gt_counts_strings_name_the_annotation(counts: str | bytes, why: str) -> None:
    """GT strings are checked in one batched pass, and the error still names the annotation that is bad."""
    gt, results = _gt_and_result(counts)
    ok_ann = gt["annotations"][0]
    gt["images"].append({"id": 2, "file_name": "b.png", "height": H, "width": W})
    gt["annotations"] = [ok_ann, {**ok_ann, "id": 7, "image_id": 2, "segmentation": {"size": [H, W], "counts": counts}}]
    with pytest.raises(EvaluationError, match=rf"annotation id 7\.segmentation.*{why}"):
        evaluate_instances(gt, results[:1], iou_type="segm")


def test_the_first_bad_gt_is_named_whichever_check_finds_it() -> None:
    """A corrupt string (checked in one batch) before a GT of the wrong size (checked one by one): the first is named."""
    gt, results = _gt_and_result("5o")
    ok_ann = gt["annotations"][0]
    gt["images"].append({"id": 2, "file_name": "b.png", "height": H, "width": W})
    gt["annotations"] = [ok_ann, {**ok_ann, "id": 7, "segmentation": {"size": [H, W], "counts": "5o"}},
                         {**ok_ann, "id": 8, "image_id": 2, "segmentation": {"size": [H, W + 1], "counts": "5o"}}]
    with pytest.raises(EvaluationError, match=r"annotation id 7\.segmentation.*corrupt"):
        evaluate_instances(gt, results[:1], iou_type="segm")
    gt["annotations"] = [ok_ann, {**ok_ann, "id": 7, "segmentation": {"size": [H, W + 1], "counts": "5o"}},
                         {**ok_ann, "id": 8, "image_id": 2, "segmentation": {"size": [H, W], "counts": "5o"}}]
    with pytest.raises(EvaluationError, match=r"annotation id 7\.segmentation: RLE size"):
        evaluate_instances(gt, results[:1], iou_type="segm")


def test_rle_totals_in_chunks_equal_one_string_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from segpipe.evaluators.instance import rle_strings

    rng = np.random.default_rng(3)
    strings = [mask_utils.encode(np.asfortranarray(rng.random((H, W)) < p))["counts"] for p in rng.random(40)]
    strings += [b"!!!!", b"", b"5o", b"@", b"0000000000"]
    strings = [strings[i] for i in rng.permutation(len(strings))]
    alone = [int(rle_strings.rle_totals([s])[0]) for s in strings]
    assert sorted(set(alone))[:1] == [rle_strings.INVALID_RLE] and H * W in alone
    for chunk in (1, 7, 100, 1 << 20):  # a chunk smaller than one string still takes whole strings
        monkeypatch.setattr(rle_strings, "_CHUNK_CHARS", chunk)
        assert rle_strings.rle_totals(strings).tolist() == alone


def _reference_total(counts: bytes) -> int:
    """pycocotools' rleFrString (maskApi.c) read character by character, with the checks segpipe adds: a
    character outside '0'..'o', a string that ends inside a run, a run of more than 7 characters or a negative
    run make the string corrupt (-1); otherwise the sum of its runs."""
    runs: list[int] = []
    x = k = 0
    for p, byte in enumerate(counts):
        c = byte - 48
        if not 0 <= c <= 63:
            return -1
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            if k >= 7 or p == len(counts) - 1:
                return -1
            continue
        if c & 0x10:
            x -= 1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return -1
        runs.append(x)
        x = k = 0
    return sum(runs)


def test_rle_totals_equal_a_character_by_character_decoder() -> None:
    from segpipe.evaluators.instance.rle_strings import rle_totals

    rng = np.random.default_rng(11)
    strings = [mask_utils.encode(np.asfortranarray(rng.random((H, W)) < p))["counts"] for p in rng.random(200)]
    alphabet = np.frombuffer(b"0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmno!~ ", dtype=np.uint8)
    strings += [bytes(rng.choice(alphabet, int(rng.integers(0, 12)))) for _ in range(3000)]
    expected = [_reference_total(s) for s in strings]
    assert expected.count(-1) > 100 and expected.count(H * W) >= 200  # both kinds are exercised
    assert rle_totals(strings).tolist() == expected

"""The compiled kernel (segpipe.evaluators._kernel) against its references: the numpy rle_totals on random and
corrupt strings, and pycocotools' COCOeval (evalImgs' dtMatches / dtIgnore, its IoUs) on random small masks with
crowd GTs, GT id 0, empty masks, IoU ties and area-range edges. The matching tests run on both paths."""

from __future__ import annotations

import importlib
import io
import os
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segpipe.evaluators import kernel
from segpipe.evaluators.instance import instance_update
from segpipe.evaluators.instance_matching import AREA_HI, AREA_LO, THRESHOLDS, A, T
from segpipe.evaluators.rle_strings import rle_totals, rle_totals_numpy
from tests.evaluators.test_instance import make_dataset, reference_eval, uncompressed_rle_of

# Set where an install is expected to lack the kernel (no C compiler): the build assertion below then skips.
KERNEL_ABSENT_OK_ENV = "SEGPIPE_KERNEL_ABSENT_OK"


BUILT = kernel.KERNEL  # taken at import, before any test switches paths


@pytest.fixture()
def compiled(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The kernel, switched on for the test (the module-scoped both_evaluation_paths may have it off)."""
    if BUILT is None:
        pytest.skip("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set")
    monkeypatch.setattr(kernel, "KERNEL", BUILT)
    return BUILT


def test_kernel_is_built() -> None:
    """CI installs with a compiler, so its numbers are the fast path's; the test says so when they are not."""
    if os.environ.get(KERNEL_ABSENT_OK_ENV, "") not in ("", "0"):
        pytest.skip(f"{KERNEL_ABSENT_OK_ENV} is set: this install may lack the kernel")
    module = importlib.import_module("segpipe.evaluators._kernel")  # ImportError: the build failed or was skipped
    if os.environ.get(kernel.NO_KERNEL_ENV, "") in ("", "0"):
        assert BUILT is module


# ---------------------------------------------------------------- rle_totals


def _valid_strings(rng: np.random.Generator, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        mask = rng.random((h, w)) < rng.choice([0.0, 0.02, 0.5, 0.98, 1.0])
        out.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"])
    return out


def _mutated(rng: np.random.Generator, s: bytes) -> bytes:
    b = bytearray(s)
    kind = int(rng.integers(0, 5))
    if kind == 0 and b:  # flip one character to any byte
        b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    elif kind == 1 and b:  # cut off
        del b[int(rng.integers(0, len(b))):]
    elif kind == 2:  # insert a character of the alphabet, or just outside it
        b.insert(int(rng.integers(0, len(b) + 1)), int(rng.integers(46, 114)))
    elif kind == 3:  # a wide run: continuation characters ('P'..'o') then an end
        b += bytes(int(rng.integers(80, 112)) for _ in range(int(rng.integers(4, 10)))) + bytes([int(rng.integers(48, 80))])
    else:  # duplicate a slice
        i = int(rng.integers(0, len(b) + 1))
        b[i:i] = b[: int(rng.integers(0, len(b) + 1))]
    return bytes(b)


@pytest.mark.parametrize("seed", range(6))
def test_rle_totals_kernel_equals_numpy(compiled: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    valid = _valid_strings(rng, 200)
    corrupt = [_mutated(rng, s) for s in valid for _ in range(3)]
    garbage = [bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8)) for _ in range(300)]
    alphabet = [bytes(rng.integers(48, 112, int(rng.integers(0, 30)), dtype=np.uint8)) for _ in range(300)]
    strings = valid + corrupt + garbage + alphabet + [b"", b"\x00", b"0\x00", b"o" * 7 + b"0", b"o" * 6 + b"0", b"_" * 6 + b"0"]
    order = rng.permutation(len(strings))
    strings = [strings[i] for i in order]
    ours = rle_totals(strings)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, rle_totals_numpy(strings))
    assert (rle_totals(valid) >= 0).all()
    # str goes to the kernel as str.encode("utf-8", "replace") would give it (non-ASCII and lone surrogates included)
    text = [s.decode("latin-1") for s in strings] + ["5\udce9", "é51", "\x00"]
    out = np.empty(len(text), dtype=np.int64)
    compiled.rle_totals(text, out)
    np.testing.assert_array_equal(out, rle_totals_numpy([t.encode("utf-8", "replace") for t in text]))


def test_rle_totals_kernel_checks_its_arguments(compiled: Any) -> None:
    with pytest.raises(TypeError, match=r"strings\[1\]: expected bytes or str, got int"):
        compiled.rle_totals([b"0", 0], np.empty(2, dtype=np.int64))
    with pytest.raises(ValueError, match="expected 2 items"):
        compiled.rle_totals([b"0", b"0"], np.empty(3, dtype=np.int64))
    with pytest.raises(TypeError, match="wrong item type"):
        compiled.rle_totals([b"0"], np.empty(1, dtype=np.int32))
    with pytest.raises(TypeError, match="writable"):
        compiled.rle_totals([b"0"], np.frombuffer(bytes(8), dtype=np.int64))  # read-only


def test_match_segm_refuses_inconsistent_inputs(compiled: Any) -> None:
    good = mask_utils.encode(np.asfortranarray(np.ones((4, 5), dtype=np.uint8)))["counts"]
    other_size = mask_utils.encode(np.asfortranarray(np.ones((4, 6), dtype=np.uint8)))["counts"]

    def call(dets: list[bytes], gts: list[bytes], blocks: list[list[int]]) -> None:
        n, g = len(dets), len(gts)
        compiled.match_segm(dets, gts, np.array(blocks, dtype=np.int64).reshape(-1, 6), np.zeros(g, bool), np.ones(g, bool),
                            np.zeros((g, A), bool), AREA_LO, AREA_HI, THRESHOLDS, np.empty((n, A, T), bool),
                            np.empty((n, A, T), bool), np.empty(n))

    call([good], [good], [[4, 5, 0, 1, 0, 1]])
    with pytest.raises(ValueError, match="does not cover 20 pixels"):
        call([other_size], [good], [[4, 5, 0, 1, 0, 1]])
    with pytest.raises(ValueError, match="corrupt"):
        call([good], [good[:-1] + b"o"], [[4, 5, 0, 1, 0, 1]])
    with pytest.raises(ValueError, match="tile"):
        call([good], [good], [[4, 5, 0, 2, 0, 1]])
    with pytest.raises(ValueError, match="do not cover"):
        call([good, good], [good], [[4, 5, 0, 1, 0, 1]])
    with pytest.raises(ValueError, match="height/width"):
        call([good], [good], [[-4, 5, 0, 1, 0, 1]])
    for bad_lo in (AREA_LO.astype(np.int64), AREA_LO[::2]):  # the first buffer checked: nothing else is held yet
        with pytest.raises((TypeError, ValueError), match="area_lo"):
            compiled.match_segm([good], [good], np.array([[4, 5, 0, 1, 0, 1]], dtype=np.int64), np.zeros(1, bool), np.ones(1, bool),
                                np.zeros((1, A), bool), bad_lo, AREA_HI, THRESHOLDS, np.empty((1, A, T), bool), np.empty((1, A, T), bool),
                                np.empty(1))
    with pytest.raises(ValueError, match="det_matched: expected"):
        compiled.match_bbox(np.zeros((1, 4)), np.zeros(1), np.zeros((1, 4)), np.array([[0, 1, 0, 1]], dtype=np.int64), np.zeros(1, bool),
                            np.ones(1, bool), np.zeros((1, A), bool), AREA_LO, AREA_HI, THRESHOLDS, np.empty((2, A, T), bool),
                            np.empty((1, A, T), bool), np.empty(1))


# ---------------------------------------------------------------- matching against COCOeval

# COCO's area limits and a hair either side: GT `area` is a free number, so the edges are exercised exactly.
_EDGE_AREAS = [0.0, 1.0, 32.0**2, np.nextafter(32.0**2, 0), np.nextafter(32.0**2, 1e9), 96.0**2, np.nextafter(96.0**2, 0), 1e10, 2e10]


def _random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = int(rng.integers(0, 4))
    m = np.zeros((h, w), dtype=bool)
    if kind == 0:
        return m  # empty
    if kind == 1:  # scattered pixels: many runs
        return rng.random((h, w)) < rng.uniform(0.05, 0.6)
    y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
    m[y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = True
    return m


def _fuzz_dataset(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, 7):
        h, w = [(7, 5), (40, 33), (110, 100)][int(rng.integers(0, 3))]  # only the largest can be "large"
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        gt_masks = []
        for _ in range(int(rng.integers(0, 6))):
            mask = gt_masks[-1] if gt_masks and rng.random() < 0.2 else _random_mask(rng, h, w)  # twins: IoU ties
            gt_masks.append(mask)
            crowd = int(rng.random() < 0.25)
            area = float(mask.sum()) if rng.random() < 0.5 else float(rng.choice(_EDGE_AREAS))
            segm = uncompressed_rle_of(mask) if crowd and rng.random() < 0.5 else \
                {"size": [h, w], "counts": mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()}
            box = [float(v) for v in rng.uniform(0, 30, 4)] if rng.random() < 0.5 else [float(v) for v in mask_utils.toBbox(
                mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 3)), "iscrowd": crowd,
                         "area": area, "bbox": box, "segmentation": segm})
        for _ in range(int(rng.integers(0, 8))):
            if gt_masks and rng.random() < 0.6:
                mask = gt_masks[int(rng.integers(0, len(gt_masks)))].copy()
                if rng.random() < 0.5:  # jitter a little
                    mask = np.roll(mask, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
            else:
                mask = _random_mask(rng, h, w)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            box = [float(v) + float(rng.normal(0, 0.7)) for v in mask_utils.toBbox(rle)]
            box[2], box[3] = abs(box[2]), abs(box[3])
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, 3)), "score": float(rng.choice([0.5, 0.9, rng.random()])),
                            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}, "bbox": box})
    if anns and seed % 2 == 0:  # id 0: COCOeval stores the match as 0, i.e. unmatched
        anns[int(rng.integers(0, len(anns)))]["id"] = 0
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}, results


@pytest.mark.usefixtures("both_evaluation_paths")
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", range(40))
def test_matching_equals_cocoeval_evalimgs(seed: int, iou_type: str) -> None:
    gt, results = _fuzz_dataset(seed)
    if not results:
        pytest.skip("no detections drawn")
    ours = instance_update(gt, results, iou_type=iou_type)
    ev = reference_eval(gt, results, iou_type)  # evalImgs of plain pycocotools
    img_ids, cat_ids = list(ev.params.imgIds), list(ev.params.catIds)
    n_img = len(img_ids)
    rank_rows: dict[tuple[int, int], list[int]] = {}
    for row, (image_id, cat) in enumerate(zip(ours.det_image.tolist(), ours.det_category.tolist())):
        rank_rows.setdefault((image_id, cat), []).append(row)
    seen = 0
    for k, cat in enumerate(cat_ids):
        for i, image_id in enumerate(img_ids):
            rows = rank_rows.get((image_id, cat), [])
            for a in range(A):
                e = ev.evalImgs[k * A * n_img + a * n_img + i]
                if e is None:
                    assert not rows
                    continue
                assert len(rows) == len(e["dtIds"])
                np.testing.assert_array_equal(ours.det_matched[rows, a, :].T, e["dtMatches"] > 0)
                np.testing.assert_array_equal(ours.det_ignored[rows, a, :].T, e["dtIgnore"].astype(bool))
                ours_gt = ours.gt_ignored[(ours.gt_image == image_id) & (ours.gt_category == cat), a]
                np.testing.assert_array_equal(np.sort(ours_gt), np.sort(np.asarray(e["gtIgnore"], dtype=bool)))
                if a == 0 and rows:  # the IoU of the match at 0.5, bit for bit: COCOeval's own ious matrix
                    gts = ev._gts[image_id, cat]
                    for rank, row in enumerate(rows):
                        gid = int(e["dtMatches"][0, rank])
                        if gid == 0:
                            assert np.isnan(ours.det_iou[row])
                        else:
                            col = [g["id"] for g in gts].index(gid)
                            assert ours.det_iou[row] == ev.ious[image_id, cat][rank, col]
                seen += len(rows)
    assert seen == A * len(ours.det_score)


def _odd_dataset(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """make_dataset, or a fuzz dataset whose last annotation repeats an earlier id under an undeclared category
    (COCO.loadAnns then files both copies there) and which declares a category no annotation uses."""
    if seed == 0:
        return make_dataset(seed=5, n_images=8)
    gt, results = _fuzz_dataset(seed)
    if len(gt["annotations"]) > 1:
        gt["annotations"].append({**gt["annotations"][-1], "id": gt["annotations"][0]["id"], "category_id": 9})
    gt["categories"].append({"id": 7, "name": "unused"})
    return gt, results


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", range(8))
def test_kernel_records_are_the_numpy_paths_bytes(compiled: Any, monkeypatch: pytest.MonkeyPatch, iou_type: str, seed: int) -> None:
    """Shard records (`InstanceStats.to_arrays`, what `segpipe run` stores per shard) do not depend on the path."""
    gt, results = _odd_dataset(seed)
    shard = sorted(im["id"] for im in gt["images"])[1::2]
    fast = instance_update(gt, results, iou_type=iou_type, image_ids=shard)
    monkeypatch.setattr(kernel, "KERNEL", None)
    slow = instance_update(gt, results, iou_type=iou_type, image_ids=shard)
    (fast_arrays, fast_meta), (slow_arrays, slow_meta) = fast.to_arrays(), slow.to_arrays()
    assert fast_meta == slow_meta and list(fast_arrays) == list(slow_arrays)
    for name, array in fast_arrays.items():
        a, b = io.BytesIO(), io.BytesIO()
        np.save(a, array, allow_pickle=False)
        np.save(b, slow_arrays[name], allow_pickle=False)
        assert a.getvalue() == b.getvalue(), name

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
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.evaluation import evaluate_instances, instance_update
from segpipe.evaluators.instance.matching import AREA_HI, AREA_LO, THRESHOLDS, A, T
from segpipe.evaluators.instance.rle_strings import INVALID_RLE, rle_totals, rle_totals_numpy
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
    # str goes to the kernel as str.encode("utf-8", "surrogatepass") gives it: non-ASCII and lone surrogates are
    # bytes >= 0x80, out of the alphabet (pycocotools' _frString refuses a lone surrogate)
    surrogates = [(t := s.decode())[: (k := int(rng.integers(0, len(t) + 1)))] + chr(int(rng.integers(0xD800, 0xE000))) + t[k:]
                  for s in valid]
    text = [s.decode("latin-1") for s in strings] + surrogates + ["5\udce9", "é51", "\x00", "\udc805", "\ud8005"]
    out = np.empty(len(text), dtype=np.int64)
    compiled.rle_totals(strings=text, out=out)
    np.testing.assert_array_equal(out, rle_totals_numpy([t.encode("utf-8", "surrogatepass") for t in text]))
    assert out[-5 - len(surrogates):].tolist() == [INVALID_RLE] * (5 + len(surrogates))


def test_rle_totals_kernel_checks_its_arguments(compiled: Any) -> None:
    with pytest.raises(TypeError, match=r"strings\[1\]: expected bytes or str, got int"):
        compiled.rle_totals(strings=[b"0", 0], out=np.empty(2, dtype=np.int64))
    with pytest.raises(ValueError, match="expected 2 items"):
        compiled.rle_totals(strings=[b"0", b"0"], out=np.empty(3, dtype=np.int64))
    with pytest.raises(TypeError, match="wrong item type"):
        compiled.rle_totals(strings=[b"0"], out=np.empty(1, dtype=np.int32))
    with pytest.raises(TypeError, match="writable"):
        compiled.rle_totals(strings=[b"0"], out=np.frombuffer(bytes(8), dtype=np.int64))  # read-only


def _match_args(n_det: int, gts: list[Any], blocks: list[list[int]], *, n_gt: int | None = None, area_lo: np.ndarray = AREA_LO,
                area_hi: np.ndarray = AREA_HI, thresholds: np.ndarray = THRESHOLDS) -> dict[str, Any]:
    """The keyword arguments of match_segm (gt_strings = gts) or, with n_gt and no gts, of match_bbox, less the detections."""
    g, a, t = len(gts) if n_gt is None else n_gt, len(area_lo), len(thresholds)
    args = {"blocks": np.array(blocks, dtype=np.int64).reshape(len(blocks), -1), "gt_crowd": np.zeros(g, bool),
            "gt_id_nonzero": np.ones(g, bool), "gt_ignored": np.zeros((g, a), bool), "area_lo": area_lo, "area_hi": area_hi,
            "thresholds": thresholds, "det_matched": np.empty((n_det, a, t), bool), "det_ignored": np.empty((n_det, a, t), bool),
            "det_iou": np.empty(n_det)}
    return {"gt_strings": gts, **args} if n_gt is None else args


def test_match_segm_refuses_inconsistent_inputs(compiled: Any) -> None:
    good = mask_utils.encode(np.asfortranarray(np.ones((4, 5), dtype=np.uint8)))["counts"]
    other_size = mask_utils.encode(np.asfortranarray(np.ones((4, 6), dtype=np.uint8)))["counts"]

    def call(dets: list[bytes], gts: list[bytes], blocks: list[list[int]]) -> None:
        compiled.match_segm(det_strings=dets, **_match_args(len(dets), gts, blocks))

    call([good], [good], [[4, 5, 0, 1, 0, 1]])
    with pytest.raises(kernel.DetStringError, match="does not cover 20 pixels") as det_err:
        call([other_size], [good], [[4, 5, 0, 1, 0, 1]])
    assert det_err.value.index == 0
    with pytest.raises(kernel.GtStringError, match="corrupt") as gt_err:
        call([good], [good, good[:-1] + b"o"], [[4, 5, 0, 1, 0, 2]])
    assert gt_err.value.index == 1 and isinstance(gt_err.value, ValueError)
    with pytest.raises(ValueError, match="tile"):
        call([good], [good], [[4, 5, 0, 2, 0, 1]])
    with pytest.raises(ValueError, match="do not cover"):
        call([good, good], [good], [[4, 5, 0, 1, 0, 1]])
    with pytest.raises(ValueError, match="height/width"):
        call([good], [good], [[-4, 5, 0, 1, 0, 1]])
    for bad_lo in (AREA_LO.astype(np.int64), AREA_LO[::2]):  # the first buffer checked: nothing else is held yet
        with pytest.raises((TypeError, ValueError), match="area_lo"):
            compiled.match_segm(det_strings=[good], **{**_match_args(1, [good], [[4, 5, 0, 1, 0, 1]]), "area_lo": bad_lo})
    with pytest.raises(ValueError, match="det_matched: expected"):
        compiled.match_bbox(det_boxes=np.zeros((1, 4)), det_area=np.zeros(1), gt_boxes=np.zeros((1, 4)),
                            **{**_match_args(1, [], [[0, 1, 0, 1]], n_gt=1), "det_matched": np.empty((2, A, T), bool)})


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


def _fuzz_dataset(seed: int, *, noncanonical: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random masks, crowd GTs, twins and near-twins; `noncanonical`: every compressed string re-encoded with
    zero-length runs (leading, inside, between twins' equal boundaries) and padded tokens (see _recode)."""
    rng = np.random.default_rng(seed)
    recode_rng = np.random.default_rng(seed + 10_000)

    def counts_of(mask: np.ndarray) -> str:
        counts: str = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        return _runs_string(_recode(_string_runs(counts), recode_rng), recode_rng) if noncanonical else counts

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
            segm = uncompressed_rle_of(mask) if crowd and rng.random() < 0.5 else {"size": [h, w], "counts": counts_of(mask)}
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
                            "segmentation": {"size": [h, w], "counts": counts_of(mask)}, "bbox": box})
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
    _assert_records_are_cocoevals(gt, results, iou_type)


@pytest.mark.usefixtures("both_evaluation_paths")
@pytest.mark.parametrize("seed", range(60))
def test_matching_equals_cocoeval_on_noncanonical_rles(seed: int) -> None:
    """Zero-length runs and padded tokens in GT and detection strings: COCOeval's matches and IoUs bit for bit,
    rleIou's early end of its merge walk included."""
    gt, results = _fuzz_dataset(seed, noncanonical=True)
    if not results:
        pytest.skip("no detections drawn")
    _assert_records_are_cocoevals(gt, results, "segm")


def _assert_records_are_cocoevals(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> None:
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


# ---------------------------------------------------------------- non-canonical strings, text, sizes


def _string_runs(counts: str) -> list[int]:
    """maskApi.c rleFrString in Python (the reference the recoding below is checked with)."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


def _token(x: int, pad: int) -> str:
    """One rleToString token of x, then `pad` redundant characters (sign fill; still one token, at most 7 characters,
    6 for a negative one)."""
    out = []
    while True:
        c = x & 0x1F
        x >>= 5
        more = x != -1 if c & 0x10 else x != 0
        # a negative token stays below 7 characters: pycocotools misreads those (test_seven_character_negative_runs_are_corrupt)
        if not more and pad > 0 and len(out) < (5 if c & 0x10 else 6):
            more, pad = True, pad - 1
        out.append(chr(48 + (c | 0x20 if more else c)))
        if not more:
            return "".join(out)


def _runs_string(runs: list[int], rng: np.random.Generator, pad_rate: float = 0.2) -> str:
    """rleToString of `runs`, some tokens padded."""
    tokens = [runs[i] - runs[i - 2] if i > 2 else runs[i] for i in range(len(runs))]
    out = "".join(_token(x, int(rng.integers(1, 7)) if rng.random() < pad_rate else 0) for x in tokens)
    assert _string_runs(out) == runs
    return out


def _recode(runs: list[int], rng: np.random.Generator) -> list[int]:
    """The same mask with zero-length runs: a leading (0, 0), runs split around a 0, (0, 0) after runs."""
    p = float(rng.choice([0.0, 0.1, 0.3, 0.6]))
    out = [0, 0] if rng.random() < p else []
    for r in runs:
        if r > 0 and rng.random() < p:
            k = int(rng.integers(0, r + 1))
            out += [k, 0, r - k]
        else:
            out.append(r)
        if rng.random() < p:
            out += [0, 0]
    return out


def _random_runs(rng: np.random.Generator, pixels: int) -> list[int]:
    """Any runs of `pixels` in total, zero-length ones at the start, inside and at the end included."""
    k = int(rng.integers(1, 12))
    cuts = np.sort(rng.integers(0, pixels + 1, k - 1))
    runs = np.diff(np.r_[0, cuts, pixels]).tolist()
    return [int(r) for r in runs]


def _kernel_ious(compiled: Any, pairs: list[tuple[str, str, int, int, int]]) -> np.ndarray:
    """The kernel's IoU of each (detection, GT, height, width, crowd) pair: one block per pair, one threshold just
    above 0, so every pair with an IoU > 0 is matched and its IoU read back (NaN -> 0)."""
    n = len(pairs)
    thresholds = np.array([np.nextafter(0.0, 1.0)])
    blocks = [[h, w, i, i + 1, i, i + 1] for i, (_, _, h, w, _) in enumerate(pairs)]
    args = _match_args(n, [g for _, g, _, _, _ in pairs], blocks, area_lo=np.array([0.0]), area_hi=np.array([1e10]), thresholds=thresholds)
    args["gt_crowd"] = np.array([c for *_, c in pairs], dtype=bool)
    compiled.match_segm(det_strings=[d for d, *_ in pairs], **args)
    return np.nan_to_num(args["det_iou"], nan=0.0)


def _pair_fuzz(rng: np.random.Generator, n: int) -> list[tuple[str, str, int, int, int]]:
    pairs = []
    for _ in range(n):
        h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        if rng.random() < 0.5:  # any runs, zero-length ones anywhere
            d, g = _random_runs(rng, h * w), _random_runs(rng, h * w)
            if rng.random() < 0.3:
                g = list(d)  # equal runs: both sides at a zero-length run at the same pixel
        else:  # masks, re-encoded with zero-length runs
            m = _random_mask(rng, h, w)
            other = m if rng.random() < 0.4 else _random_mask(rng, h, w)
            runs = [_string_runs(mask_utils.encode(np.asfortranarray(x.astype(np.uint8)))["counts"].decode()) for x in (m, other)]
            d, g = _recode(runs[0], rng), _recode(runs[1], rng)
        pairs.append((_runs_string(d, rng), _runs_string(g, rng), h, w, int(rng.random() < 0.2)))
    return pairs


def _true_iou(d: str, g: str, h: int, w: int, crowd: int) -> float:
    a, b = (mask_utils.decode({"size": [h, w], "counts": s}).astype(bool) for s in (d, g))
    inter, union = int((a & b).sum()), int(a.sum()) if crowd else int((a | b).sum())
    return inter / union if inter else 0.0


def test_kernel_ious_are_pycocotools_on_noncanonical_rles(compiled: Any) -> None:
    """Pairwise IoUs of random strings with zero-length runs and padded tokens, against pycocotools' mask.iou
    (rleIou) live: equal bit for bit, also where rleIou's walk ends early and its IoU is not the true one."""
    pairs = _pair_fuzz(np.random.default_rng(2026), 4000)
    ours = _kernel_ious(compiled, pairs)
    ref = np.array([mask_utils.iou([{"size": [h, w], "counts": d}], [{"size": [h, w], "counts": g}], [c])[0, 0] for d, g, h, w, c in pairs])
    mismatches = np.flatnonzero(ours != ref)
    assert not mismatches.size, [pairs[i] for i in mismatches[:5]]
    quirk = sum(ref[i] != _true_iou(*pairs[i]) for i in range(len(pairs)))
    assert quirk > 50  # the fuzzing reaches the early end of rleIou's walk


@pytest.mark.usefixtures("both_evaluation_paths")
@pytest.mark.parametrize(("size", "gt_counts", "det_counts"), [((2, 1), "010O1", "0100"), ((3, 1), "00021", "0003")])
def test_zero_length_runs_score_as_pycocotools(size: tuple[int, int], gt_counts: str, det_counts: str) -> None:
    """GT runs (0, 1, 0, 0, 1) against a detection (0, 1, 0, 1): rleIou stops when both reach a zero-length run
    at the same pixel, so COCOeval scores IoU 1.0 (true IoU 0.5); the kernel once gave the true IoU (AP 0.1)."""
    h, w = size
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0, "bbox": [0.0, 0.0, 1.0, 1.0],
                           "segmentation": {"size": [h, w], "counts": gt_counts}}]}
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": {"size": [h, w], "counts": det_counts}}]
    _assert_records_are_cocoevals(gt, results, "segm")
    report = evaluate_instances(gt, results, iou_type="segm")
    assert report.stats == pytest.approx(list(reference_eval(gt, results, "segm").stats), abs=1e-12)


@pytest.mark.usefixtures("both_evaluation_paths")
def test_seven_character_negative_runs_are_corrupt() -> None:
    """rleFrString reads a negative token of 7 characters with an int shifted by 35 bits (undefined): pycocotools
    misreads it (an x86 build reads -10 as -2) and can hang in rleIou, so both paths refuse such a string as
    corrupt; 6 characters are read right and accepted."""
    runs = [2, 2, 1, 1]  # tokens 2, 2, 1, 1 - 2 = -1 on a 3x2 image
    six, seven = "221" + "o" * 5 + "O", "221" + "o" * 6 + "O"  # -1 in 6 and in 7 characters
    assert len(six) == 9 and len(seven) == 10 and _string_runs(six) == _string_runs(seven) == runs
    assert mask_utils.area({"size": [3, 2], "counts": six}) == 3
    # pycocotools on a 7-character -10 (runs 0, 20, 10, 6, 0 of a 6x6 image): its decode refuses the mask
    with pytest.raises(ValueError, match="Invalid RLE"):
        mask_utils.decode({"size": [6, 6], "counts": "P0d0ZPPPP0BfoooooO"})
    assert rle_totals([six.encode(), seven.encode(), b"P0d0ZPPPP0BfoooooO"]).tolist() == [6, INVALID_RLE, INVALID_RLE]
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 3, "width": 2}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 3.0, "bbox": [0.0, 0.0, 2.0, 2.0],
                           "segmentation": {"size": [3, 2], "counts": six}}]}
    ok = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": {"size": [3, 2], "counts": six}}]
    assert evaluate_instances(gt, ok, iou_type="segm").stats[0] == pytest.approx(1.0)
    with pytest.raises(EvaluationError, match=r"results\[0\].*corrupt"):
        instance_update(gt, [{**ok[0], "segmentation": {"size": [3, 2], "counts": seven}}], iou_type="segm")


def _one_image(h: int, w: int, gt_segm: Any) -> dict[str, Any]:
    return {"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}], "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0.0, 0.0, 2.0, 2.0],
                             "segmentation": gt_segm}]}


@pytest.mark.usefixtures("both_evaluation_paths")
@pytest.mark.parametrize("text", ["\udc805", "\ud8005", "5\udfff"])
def test_lone_surrogates_are_a_located_error(text: str) -> None:
    """A lone surrogate in a counts string: pycocotools' _frString refuses it (UnicodeEncodeError). Both paths
    refuse it with an EvaluationError naming the result or annotation; the kernel once read it as '?' (a valid
    RLE character: "\\udc805" became "?5", 20 pixels) and scored it."""
    h, w = 4, 5
    with pytest.raises(UnicodeEncodeError):
        mask_utils.area({"size": [h, w], "counts": text})
    good = mask_utils.encode(np.asfortranarray(np.ones((h, w), dtype=np.uint8)))["counts"].decode()
    gt = _one_image(h, w, {"size": [h, w], "counts": good})
    det = {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": {"size": [h, w], "counts": text}}
    with pytest.raises(EvaluationError, match=r"results\[0\]") as err:
        instance_update(gt, [det], iou_type="segm")
    assert "corrupt" in str(err.value)
    bad_gt = _one_image(h, w, {"size": [h, w], "counts": text})
    with pytest.raises(EvaluationError, match=r"annotation id 1") as err:
        instance_update(bad_gt, [{**det, "segmentation": {"size": [h, w], "counts": good}}], iou_type="segm")
    assert "corrupt" in str(err.value)


def test_images_of_2_31_pixels_or_more_are_scored_by_pycocotools(compiled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 70000 x 70000 image with polygon masks (4.9e9 pixels: pycocotools' uint pixel total wraps): the records
    are the numpy path's (pycocotools'), where the kernel once refused the GT as "corrupt"; the kernel itself
    refuses such a block."""
    h = w = 70000
    square = [[100.0, 100.0, 100.0, 300.0, 300.0, 300.0, 300.0, 100.0]]
    shifted = [[110.0, 100.0, 110.0, 300.0, 310.0, 300.0, 310.0, 100.0]]
    gt = _one_image(h, w, square)
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": shifted},
               {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": square}]
    fast = instance_update(gt, results, iou_type="segm")
    monkeypatch.setattr(kernel, "KERNEL", None)
    slow = instance_update(gt, results, iou_type="segm")
    for name, array in fast.to_arrays()[0].items():
        np.testing.assert_array_equal(array, slow.to_arrays()[0][name], err_msg=name)
    assert fast.det_matched[:, 0, 0].tolist() == [True, False]
    # COCO.loadRes takes no polygon results: the reference gets them as pycocotools' own RLE of the polygon
    as_rle = [{**r, "segmentation": mask_utils.merge(mask_utils.frPyObjects(r["segmentation"], h, w))} for r in results]
    assert evaluate_instances(gt, results, iou_type="segm").stats == pytest.approx(list(reference_eval(gt, as_rle, "segm").stats), abs=1e-12)
    assert not kernel.takes_image(h, w) and kernel.takes_image(46340, 46340) and not kernel.takes_image(1 << 16, 1 << 15)
    one = mask_utils.encode(np.asfortranarray(np.ones((1, 1), dtype=np.uint8)))["counts"]
    with pytest.raises(ValueError, match="2147483648 pixels"):
        compiled.match_segm(det_strings=[one], **_match_args(1, [one], [[1 << 16, 1 << 15, 0, 1, 0, 1]]))


def test_size_products_that_overflow_are_refused(compiled: Any) -> None:
    """n_det * A * T = 2**22 * 2**21 * 2**21 = 2**64 once wrapped to 0, passed the size check of det_matched
    (0 items) and the matching wrote past it. Now an OverflowError before any buffer is written."""
    one = mask_utils.encode(np.asfortranarray(np.ones((1, 1), dtype=np.uint8)))["counts"]
    n, wide = 1 << 22, np.zeros(1 << 21)
    args = _match_args(0, [one], [[1, 1, 0, n, 0, 1]], area_lo=wide, area_hi=wide, thresholds=wide)
    args["gt_ignored"] = np.zeros((1, 1 << 21), bool)
    args["det_matched"] = args["det_ignored"] = np.empty(0, bool)
    args["det_iou"] = np.empty(n)
    with pytest.raises(OverflowError, match="det_matched"):
        compiled.match_segm(det_strings=[one] * n, **args)
    with pytest.raises(OverflowError, match="det_matched"):
        compiled.match_bbox(det_boxes=np.zeros((n, 4)), det_area=np.zeros(n), gt_boxes=np.zeros((0, 4)),
                            **{**_match_args(0, [], [[0, n, 0, 0]], n_gt=0, area_lo=wide, area_hi=wide, thresholds=wide),
                               "det_matched": np.empty(0, bool), "det_ignored": np.empty(0, bool), "det_iou": np.empty(n)})


def test_the_kernel_takes_keyword_arguments_as_its_stub_declares(compiled: Any) -> None:
    """_kernel.pyi, the compiled functions and kernel.py's wrappers name the same keyword-only arguments; a
    positional call or a missing argument is a TypeError; a corrupt string is GtStringError / DetStringError."""
    import ast
    import inspect
    from pathlib import Path

    stub = ast.parse((Path(kernel.__file__).parent / "_kernel.pyi").read_text())
    declared = {f.name: [a.arg for a in f.args.kwonlyargs] for f in stub.body if isinstance(f, ast.FunctionDef)}
    assert set(declared) == {"rle_totals", "match_segm", "match_bbox", "accumulate_lanes", "result_columns"}
    for name, names in declared.items():
        assert not [a for a in ast.walk(stub) if isinstance(a, ast.FunctionDef) and a.name == name and a.args.args]
        wrapper = inspect.signature(getattr(kernel, name))
        assert [p for p, v in wrapper.parameters.items() if v.kind is v.KEYWORD_ONLY] == names, name
        with pytest.raises(TypeError):
            getattr(compiled, name)(*([None] * len(names)))
        with pytest.raises(TypeError, match=f"missing keyword argument '{names[-1]}'"):
            getattr(compiled, name)(**{n: [] if n.endswith("strings") or n == "results" else None for n in names[:-1]})
    assert issubclass(kernel.GtStringError, kernel.KernelStringError) and issubclass(kernel.DetStringError, kernel.KernelStringError)
    assert not issubclass(kernel.GtStringError, kernel.DetStringError) and issubclass(kernel.KernelStringError, ValueError)

"""Conformance fuzzing of the evaluator against live pycocotools on non-canonical RLE strings (zero-length runs at
the start, inside and at the end, padded tokens) and on strings with lone surrogates. Prints cases and mismatches:

1. pairwise mask IoUs: the compiled kernel against pycocotools' mask.iou (rleIou), and how many of those IoUs
   are not the true IoU (rleIou ends its merge walk early when both masks reach a zero-length run together);
2. whole evaluations: match records of random datasets with non-canonical strings against COCOeval's evalImgs
   (dtMatches, dtIgnore, gtIgnore and the IoU of each match), on the kernel and on the numpy path;
3. lone surrogates inserted into valid strings: pycocotools raises, and both paths refuse the result with an
   EvaluationError.

    python benchmarks/kernel_conformance.py [--pairs 50000] [--datasets 300] [--surrogates 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segpipe.evaluators import kernel  # noqa: E402
from segpipe.core.errors import EvaluationError  # noqa: E402
from segpipe.evaluators.instance.evaluation import instance_update  # noqa: E402
from tests.evaluators import test_kernel as tk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50000)
    parser.add_argument("--datasets", type=int, default=300)
    parser.add_argument("--surrogates", type=int, default=2000)
    args = parser.parse_args()
    built = kernel.KERNEL
    if built is None:
        sys.exit("the compiled kernel is not built or SEGPIPE_NO_KERNEL is set")

    pairs = tk._pair_fuzz(np.random.default_rng(7), args.pairs)
    ours = tk._kernel_ious(built, pairs)
    ref = np.array([mask_utils.iou([{"size": [h, w], "counts": d}], [{"size": [h, w], "counts": g}], [c])[0, 0] for d, g, h, w, c in pairs])
    quirk = sum(ref[i] != tk._true_iou(*pairs[i]) for i in range(len(pairs)))
    print(f"pairwise IoU, kernel vs pycocotools: {len(pairs)} pairs, {int((ours != ref).sum())} mismatches "
          f"({quirk} pairs where pycocotools' IoU is not the true IoU)")

    for path in ("kernel", "numpy"):
        kernel.KERNEL = built if path == "kernel" else None
        cases = mismatches = dets = 0
        for seed in range(1000, 1000 + args.datasets):
            gt, results = tk._fuzz_dataset(seed, noncanonical=True)
            if not results:
                continue
            cases += 1
            dets += len(results)
            try:
                tk._assert_records_are_cocoevals(gt, results, "segm")
            except AssertionError:
                mismatches += 1
        print(f"COCOeval records on non-canonical strings, {path} path: {cases} datasets ({dets} detections), {mismatches} mismatches")
    kernel.KERNEL = built

    rng = np.random.default_rng(11)
    refused = {"kernel": 0, "numpy": 0}
    pycoco_raises = 0
    for _ in range(args.surrogates):
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        good = mask_utils.encode(np.asfortranarray(tk._random_mask(rng, h, w).astype(np.uint8)))["counts"].decode()
        k = int(rng.integers(0, len(good) + 1))
        text = good[:k] + chr(int(rng.integers(0xD800, 0xE000))) + good[k:]
        try:
            mask_utils.area({"size": [h, w], "counts": text})
        except UnicodeEncodeError:
            pycoco_raises += 1
        gt = tk._one_image(h, w, {"size": [h, w], "counts": good})
        det = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [h, w], "counts": text}}
        for path in refused:
            kernel.KERNEL = built if path == "kernel" else None
            try:
                instance_update(gt, [det], iou_type="segm")
            except EvaluationError:
                refused[path] += 1
    kernel.KERNEL = built
    print(f"lone surrogates: {args.surrogates} strings, pycocotools raises on {pycoco_raises}, EvaluationError on the kernel path "
          f"{refused['kernel']}, on the numpy path {refused['numpy']}")


if __name__ == "__main__":
    main()

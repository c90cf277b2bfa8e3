"""COCO results lists: checking them against the ground truth, and turning geometry into what COCOeval compares.

Bad results are never dropped silently: `validate_results` raises one `EvaluationError` that counts
every kind of problem and shows the first examples, or, when asked to drop them, returns the kept results and a
warning with the same counts for the report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence, TypeGuard

from segpipe.converters.images import configured_limit
from segpipe.evaluators.rle_strings import INVALID_RLE, compressed_counts, rle_totals
from segpipe.evaluators.coco_ground_truth import GroundTruth, parse_ground_truth
from segpipe.evaluators.errors import EvaluationError
from segpipe.evaluators.polygon_bounds import polygon_extent_problem

RESULTS_PATH = "results"
# Detections per image, far above any real model (torchvision's detectors keep 100, Detectron2's 100, an
# unthresholded YOLO export a few thousand); COCOeval scores only the best 100 per image and category anyway.
MAX_DETECTIONS_PER_IMAGE_DEFAULT = 10_000
MAX_DETECTIONS_PER_IMAGE_ENV = "SEGPIPE_MAX_DETECTIONS_PER_IMAGE"
IOU_TYPES = ("segm", "bbox")
EXAMPLES_SHOWN = 3
_CORRUPT = "RLE counts string is corrupt (a character outside the RLE alphabet, a cut-off run or a negative run)"


def default_iou_type(results: Sequence[Any]) -> str:
    """`segm` when any result carries a mask, else `bbox`."""
    return "segm" if any(isinstance(r, dict) and "segmentation" in r for r in results) else "bbox"


def _is_number(value: Any) -> TypeGuard[float]:
    kind = type(value)  # exact types: bool is not a number here, and this runs once per result field
    if kind is float:
        return math.isfinite(value)
    return kind is int or (kind is not bool and isinstance(value, (int, float)) and math.isfinite(value))


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int or (not isinstance(value, bool) and isinstance(value, int))


def segmentation_problem(segm: Any, *, height: int, width: int, total: int | None = None) -> str | None:
    """Why `segm` is not a usable mask for an image of height x width, or None when it is.

    `total` is `rle_totals()` of its compressed counts string when the caller decoded many at once; without it
    the string is decoded here. pycocotools trusts the string, so a corrupt one or one of the wrong pixel total
    would decode past the mask buffer or compare masks of different sizes.
    """
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if type(size) is list and len(size) == 2 and size[0] == height and size[1] == width \
                and type(size[0]) is int and type(size[1]) is int and total is not None and type(counts) in (str, bytes):
            # the common case, checked without the general path's per-field calls (this runs once per mask)
            if total == INVALID_RLE:
                return _CORRUPT
            return None if total == height * width else f"RLE counts string decodes to {total} pixels, not {height * width}"
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)):
            return f"RLE size is not [height, width]: {size!r}"
        if list(size) != [height, width]:
            return f"RLE size {list(size)} differs from the image's [height, width] = [{height}, {width}]"
        if isinstance(counts, (str, bytes)):
            if total is None:
                total = int(rle_totals([compressed_counts(segm) or b""])[0])
            if total == INVALID_RLE:
                return _CORRUPT
            return None if total == height * width else f"RLE counts string decodes to {total} pixels, not {height * width}"
        if isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts):
            return None if sum(counts) == height * width else f"RLE counts sum to {sum(counts)}, not {height * width}"
        return "RLE counts must be a string or a list of non-negative integers"
    if isinstance(segm, list):
        for poly in segm:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 and all(_is_number(v) for v in poly)):
                return "polygon must be a list of at least 3 finite x,y pairs"
            if far := polygon_extent_problem(poly, height=height, width=width):  # pycocotools would crash
                return far
        return None
    return f"segmentation must be an RLE object or a list of polygons, got {type(segm).__name__}"


def bbox_problem(bbox: Any) -> str | None:
    if type(bbox) is list and len(bbox) == 4:  # the common case first (this runs once per box)
        x, y, w, h = bbox
        # a finite sum means four finite floats; an overflowing one takes the checks below
        if type(x) is float and type(y) is float and type(w) is float and type(h) is float and math.isfinite(x + y + w + h) \
                and w >= 0 and h >= 0:
            return None
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox has a negative width or height: {list(bbox)}"
    return None


def result_problem(result: Any, *, truth: GroundTruth, iou_type: str, total: int | None = None) -> tuple[str, str] | None:
    """(kind, detail) of the first problem with one result, or None; `total` as in `segmentation_problem`."""
    if not isinstance(result, dict):
        return "not an object", type(result).__name__
    image_id = result.get("image_id")
    if not _is_int(image_id) or image_id not in truth.images:
        return "unknown image_id", f"image_id={image_id!r}"
    category_id = result.get("category_id")
    if not _is_int(category_id) or category_id not in truth.category_ids:
        return "unknown category_id", f"category_id={category_id!r}"
    score = result.get("score")
    if not _is_number(score):
        return "missing or non-finite score", f"score={score!r}"
    image = truth.images[image_id]
    if iou_type == "segm":
        if "segmentation" not in result:
            return "missing segmentation", "segm evaluation needs a mask"
        why = segmentation_problem(result["segmentation"], height=image.height, width=image.width, total=total)
        return ("bad segmentation", why) if why else None
    if "bbox" in result:
        why = bbox_problem(result["bbox"])
        return ("bad bbox", why) if why else None
    if "segmentation" in result:  # pycocotools derives the box from the mask
        why = segmentation_problem(result["segmentation"], height=image.height, width=image.width, total=total)
        return ("bad segmentation", why) if why else None
    return "missing bbox", "bbox evaluation needs a bbox or a mask"


def _counts_totals(results: Sequence[Any], *, iou_type: str) -> dict[int, int]:
    """rle_totals() of the compressed counts strings of the results whose mask gets checked, by result index."""
    strings: dict[int, bytes] = {}
    for i, result in enumerate(results):
        if isinstance(result, dict) and (iou_type == "segm" or "bbox" not in result):
            counts = compressed_counts(result.get("segmentation"))
            if counts is not None:
                strings[i] = counts
    return dict(zip(strings, rle_totals(list(strings.values())).tolist(), strict=True))


def validate_results(
    gt: Mapping[str, Any] | GroundTruth,
    results: Any,
    *,
    iou_type: str | None = None,
    drop_invalid: bool = False,
    path: str = RESULTS_PATH,
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Check every result against the ground truth; returns (kept results, warnings).

    Raises EvaluationError listing counts and first examples of each problem, unless `drop_invalid`, in which
    case the bad results are left out and the same counts come back as a warning.
    """
    truth = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt)
    if not isinstance(results, list):
        raise EvaluationError(path, "", f"expected a list of results, got {type(results).__name__}")
    kind = iou_type or default_iou_type(results)
    if kind not in IOU_TYPES:
        raise EvaluationError(path, "iou_type", f"must be one of {IOU_TYPES}, got {kind!r}")
    totals = _counts_totals(results, iou_type=kind)
    bad: dict[str, list[str]] = defaultdict(list)
    kept: list[Mapping[str, Any]] = []
    images, categories = truth.images, frozenset(truth.category_ids)
    for i, result in enumerate(results):
        if type(result) is dict:
            # The common cases accepted in one expression (this runs once per result): exact int ids that exist, a
            # finite float score, and for segm a compressed RLE of the image's size whose string decodes to its
            # pixel count, for bbox a good box. Anything else takes result_problem's checks, which accept these too.
            image_id, score = result.get("image_id"), result.get("score")
            if type(image_id) is int and type(result.get("category_id")) is int and type(score) is float \
                    and math.isfinite(score) and result["category_id"] in categories and (image := images.get(image_id)) is not None:
                if kind == "segm":
                    segm = result.get("segmentation")
                    size = segm.get("size") if type(segm) is dict else None
                    if type(size) is list and len(size) == 2 and size[0] == image.height and size[1] == image.width \
                            and type(size[0]) is int and type(size[1]) is int \
                            and (total := totals.get(i, INVALID_RLE)) != INVALID_RLE and total == image.height * image.width:
                        kept.append(result)
                        continue
                elif (bbox := result.get("bbox")) is not None and bbox_problem(bbox) is None:
                    kept.append(result)
                    continue
        problem = result_problem(result, truth=truth, iou_type=kind, total=totals.get(i))
        if problem is None:
            kept.append(result)
        else:
            bad[problem[0]].append(f"results[{i}]: {problem[1]}")
    warnings: list[str] = []
    kept, capped = cap_detections_per_image(kept, truth=truth, drop=drop_invalid, path=path)
    if not results:
        warnings.append(f"{path}: the results list is empty: every category with ground truth scores 0")
    if bad:
        n_bad = sum(len(v) for v in bad.values())
        lines = [
            f"{name}: {len(examples)} (e.g. {'; '.join(examples[:EXAMPLES_SHOWN])})"
            for name, examples in sorted(bad.items())
        ]
        summary = f"{n_bad} of {len(results)} results are invalid: " + " | ".join(lines)
        if not drop_invalid:
            raise EvaluationError(path, "results", summary + " (use --drop-invalid to leave them out and report them)")
        warnings.append(f"{path}: dropped {summary}")
    if capped:
        warnings.append(capped)
    return kept, warnings


def max_detections_per_image() -> int:
    """The limit on valid detections per image: SEGPIPE_MAX_DETECTIONS_PER_IMAGE, else 10,000."""
    try:
        return configured_limit(MAX_DETECTIONS_PER_IMAGE_ENV, MAX_DETECTIONS_PER_IMAGE_DEFAULT)
    except ValueError as err:
        raise EvaluationError("environment", MAX_DETECTIONS_PER_IMAGE_ENV, str(err).split(": ", 1)[-1]) from None


def cap_detections_per_image(
    kept: list[Mapping[str, Any]], *, truth: GroundTruth, drop: bool, path: str = RESULTS_PATH
) -> tuple[list[Mapping[str, Any]], str | None]:
    """`kept` when no image has more detections than the limit; else an EvaluationError naming the images, or,
    with `drop`, each such image's best `limit` by score (ties: file order, as COCOeval's stable sort) and a
    warning with the counts. Dropping only the lowest scores leaves the numbers as pycocotools' on the whole
    file unless a category of that image is left with fewer than 100 detections."""
    limit = max_detections_per_image()
    per_image: dict[int, list[int]] = defaultdict(list)
    for i, result in enumerate(kept):
        per_image[result["image_id"]].append(i)
    over = sorted(image_id for image_id, rows in per_image.items() if len(rows) > limit)
    if not over:
        return kept, None
    examples = "; ".join(f"image_id {i} ({truth.images[i].file_name}): {len(per_image[i])}" for i in over[:EXAMPLES_SHOWN])
    what = f"{len(over)} image(s) with more than {limit} detections (e.g. {examples})"
    if not drop:
        raise EvaluationError(path, "results", f"{what}: over the limit per image; COCOeval scores only the best 100 "
                              "per image and category: cap the model's output (e.g. torchvision's box_detections_per_img), "
                              f"raise the limit with {MAX_DETECTIONS_PER_IMAGE_ENV}, or use --drop-invalid to keep the "
                              f"best {limit} by score of each such image")
    dropped: set[int] = set()
    for image_id in over:
        ranked = sorted(per_image[image_id], key=lambda i: -kept[i]["score"])  # stable: file order on ties
        dropped.update(ranked[limit:])
    return [r for i, r in enumerate(kept) if i not in dropped], (
        f"{path}: dropped the {len(dropped)} lowest-scoring detections of {what}, over the limit per image "
        f"({MAX_DETECTIONS_PER_IMAGE_ENV})")

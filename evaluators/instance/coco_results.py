"""COCO results lists: checking them against the ground truth, and turning geometry into what COCOeval compares.

Bad results are never dropped silently: `validate_results` raises one `EvaluationError` that counts
every kind of problem and shows the first examples, or, when asked to drop them, returns the kept results and a
warning with the same counts for the report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Mapping, Sequence, TypeGuard

import numpy as np

from segpipe.core.images import configured_limit
from segpipe.evaluators.instance.rle_strings import INVALID_RLE, compressed_counts, rle_totals
from segpipe.evaluators.instance.coco_ground_truth import GroundTruth, parse_ground_truth
from segpipe.evaluators import kernel
from segpipe.core.errors import EvaluationError
from segpipe.core.polygon_bounds import polygon_extent_problem

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


@dataclass(frozen=True, eq=False)
class ResultColumns:
    """The valid results of a list, as columns in file order (what `validate_result_columns` keeps).

    `plain` marks the rows whose geometry is in the columns: for segm a compressed RLE string of the image's size
    (`counts`), for bbox four finite numbers (`boxes`); any other kept row (polygons, uncompressed RLE, a mask-only
    bbox result, numbers of other types) is read back from `results[rows[i]]`.
    """

    results: Sequence[Any]
    rows: np.ndarray  # int64 [N]: index into `results` of each kept result
    image_id: np.ndarray  # int64 [N]
    category_id: np.ndarray  # int64 [N]
    score: np.ndarray  # float64 [N]
    plain: np.ndarray  # bool [N]
    counts: list[Any]  # segm: [N] the counts string of each plain row, None elsewhere; bbox: []
    boxes: np.ndarray  # bbox: float64 [N, 4], NaN rows where not plain; segm: [0, 4]

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, keep: np.ndarray) -> "ResultColumns":
        """The rows where the bool mask `keep` is True."""
        where = np.flatnonzero(keep)
        return ResultColumns(
            results=self.results, rows=self.rows[where], image_id=self.image_id[where], category_id=self.category_id[where],
            score=self.score[where], plain=self.plain[where], counts=[self.counts[i] for i in where.tolist()] if self.counts else [],
            boxes=self.boxes[where] if len(self.boxes) else self.boxes)

    def dicts(self) -> list[Mapping[str, Any]]:
        """The kept results themselves, in file order."""
        results = self.results
        return [results[i] for i in self.rows.tolist()]


_NO_FIELDS: dict[str, Any] = {}  # stands in for a row that is not a dict: every field reads as missing
_NO_PAIR = (None, None)


def _values(objs: list[Any], key: str) -> list[Any]:
    """objs[i].get(key) for every dict of `objs` (one C-level pass: this runs over whole columns)."""
    return list(map(dict.get, objs, repeat(key)))


def _exactly(values: list[Any], *kinds: type) -> np.ndarray:
    """Bool mask: type(value) is one of `kinds` (exact types: a bool is no int here, as in the per-result checks)."""
    if set(map(type, values)) <= set(kinds):
        return np.ones(len(values), dtype=bool)
    return np.fromiter((type(v) in kinds for v in values), dtype=bool, count=len(values))


def _or_placeholder(values: list[Any], ok: np.ndarray, placeholder: Any) -> list[Any]:
    return values if ok.all() else [v if good else placeholder for v, good in zip(values, ok.tolist())]


def _array(values: list[Any], ok: np.ndarray, dtype: type) -> np.ndarray:
    """`values` as an array where `ok` (0 elsewhere); rows whose number does not fit `dtype` are cleared from `ok`
    (they take the per-result checks, which say what is wrong with them)."""
    try:
        return np.array(_or_placeholder(values, ok, 0), dtype=dtype)
    except OverflowError:
        out: np.ndarray = np.zeros(len(values), dtype=dtype)
        for i in np.flatnonzero(ok).tolist():
            try:
                out[i] = values[i]
            except OverflowError:
                ok[i] = False
        return out


@dataclass
class _Read:
    """The common form of every result, read into columns (`_read_columns`), before any check against the GT."""

    ok: np.ndarray  # bool [N]: the fields below hold the result's values
    plain: np.ndarray  # bool [N]: bbox: ok and four floats
    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    size_h: np.ndarray  # segm
    size_w: np.ndarray  # segm
    counts: list[Any]  # segm: the counts str/bytes where ok, else None
    boxes: np.ndarray  # bbox: [N, 4]


def _read_columns(results: list[Any], *, segm: bool) -> _Read:
    """Columns of the results in their common form: one C pass (segpipe/evaluators/_kernel.c, result_columns), else
    one map() per field. Both give the same columns and flags."""
    n = len(results)
    if kernel.available():
        cols = _Read(ok=np.zeros(n, dtype=bool), plain=np.zeros(n, dtype=bool), image_id=np.zeros(n, dtype=np.int64),
                     category_id=np.zeros(n, dtype=np.int64), score=np.zeros(n), size_h=np.zeros(0, dtype=np.int64),
                     size_w=np.zeros(0, dtype=np.int64), counts=[], boxes=np.zeros((n, 4)) if not segm else np.zeros((0, 4)))
        size_pairs = np.zeros((n, 2) if segm else (0, 2), dtype=np.int64)
        counts = kernel.result_columns(results=results, segm=segm, image_id=cols.image_id, category_id=cols.category_id,
                                       score=cols.score, ok=cols.ok, plain=cols.plain, sizes=size_pairs, boxes=cols.boxes)
        if segm:
            assert counts is not None  # a list for segm
            cols.counts, cols.size_h, cols.size_w = counts, size_pairs[:, 0], size_pairs[:, 1]
        return cols
    dicts = _or_placeholder(results, _exactly(results, dict), _NO_FIELDS)
    image_values, category_values, score_values = _values(dicts, "image_id"), _values(dicts, "category_id"), _values(dicts, "score")
    ok = _exactly(image_values, int) & _exactly(category_values, int) & _exactly(score_values, float)
    cols = _Read(ok=ok, plain=np.zeros(n, dtype=bool), image_id=_array(image_values, ok, np.int64),
                 category_id=_array(category_values, ok, np.int64), score=_array(score_values, ok, np.float64),
                 size_h=np.zeros(0, dtype=np.int64), size_w=np.zeros(0, dtype=np.int64), counts=[], boxes=np.zeros((0, 4)))
    if segm:
        segms = _values(dicts, "segmentation")
        ok &= _exactly(segms, dict)
        segms = _or_placeholder(segms, ok, _NO_FIELDS)
        sizes = _values(segms, "size")
        ok &= _exactly(sizes, list)
        sizes = _or_placeholder(sizes, ok, _NO_PAIR)
        ok &= np.fromiter(map(len, sizes), dtype=np.int64, count=n) == 2
        sizes = _or_placeholder(sizes, ok, _NO_PAIR)
        size_h, size_w = list(map(itemgetter(0), sizes)), list(map(itemgetter(1), sizes))
        ok &= _exactly(size_h, int) & _exactly(size_w, int)
        cols.size_h, cols.size_w = _array(size_h, ok, np.int64), _array(size_w, ok, np.int64)
        counts = _values(segms, "counts")
        ok &= _exactly(counts, str, bytes)
        cols.counts = _or_placeholder(counts, ok, None)
        return cols
    box_values = _values(dicts, "bbox")
    ok &= _exactly(box_values, list)
    box_values = _or_placeholder(box_values, ok, _NO_PAIR)
    ok &= np.fromiter(map(len, box_values), dtype=np.int64, count=n) == 4
    flat = list(chain.from_iterable(_or_placeholder(box_values, ok, (0.0, 0.0, 0.0, 0.0))))
    ok &= _exactly(flat, float, int).reshape(n, 4).all(axis=1)
    cols.plain = ok & _exactly(flat, float).reshape(n, 4).all(axis=1)
    cols.boxes = np.zeros((n, 4))
    for i in np.flatnonzero(ok).tolist() if not cols.plain.all() else ():  # a box with ints: as numpy converts it, or not at all
        try:
            cols.boxes[i] = box_values[i]
        except OverflowError:
            ok[i] = False
    if cols.plain.any():
        cols.boxes[cols.plain] = np.array([box_values[i] for i in np.flatnonzero(cols.plain).tolist()], dtype=np.float64).reshape(-1, 4)
    return cols


def _plain_columns(results: list[Any], *, truth: GroundTruth,
                   iou_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any], np.ndarray]:
    """The common case, checked over whole columns: (ok, plain, image_id, category_id, score, counts, boxes).

    A row is ok when its result is a dict with int ids that exist, a finite float score, and for segm a compressed
    RLE of its image's size whose string decodes to the image's pixel count, for bbox four finite numbers with
    w, h >= 0. Every other row takes `result_problem`'s checks (which accept all ok rows too) and its message.
    `plain`: ok, and for bbox four floats (a box with ints is valid, but its area is w * h in Python's ints).
    """
    n = len(results)
    segm = iou_type == "segm"
    cols = _read_columns(results, segm=segm)
    ok, image_id, category_id, score = cols.ok, cols.image_id, cols.category_id, cols.score
    ok &= np.isfinite(score)
    known_images = np.array(sorted(truth.images), dtype=np.int64)
    at = np.minimum(np.searchsorted(known_images, image_id), max(len(known_images) - 1, 0))
    ok &= known_images[at] == image_id if len(known_images) else np.zeros(n, dtype=bool)
    known_cats = np.array(sorted(set(truth.category_ids)), dtype=np.int64)
    at_cat = np.minimum(np.searchsorted(known_cats, category_id), max(len(known_cats) - 1, 0))
    ok &= known_cats[at_cat] == category_id if len(known_cats) else np.zeros(n, dtype=bool)
    if segm:
        if len(known_images):
            heights = np.array([truth.images[i].height for i in known_images.tolist()], dtype=np.int64)[at]
            widths = np.array([truth.images[i].width for i in known_images.tolist()], dtype=np.int64)[at]
        else:
            heights = widths = np.zeros(n, dtype=np.int64)
        ok &= (cols.size_h == heights) & (cols.size_w == widths)
        counts = _or_placeholder(cols.counts, ok, b"")
        # the kernel reads str as its UTF-8 bytes ("surrogatepass"); numpy's pass needs the same bytes (non-ASCII, a lone
        # surrogate included: outside the alphabet, corrupt; see rle_strings.compressed_counts)
        strings = counts if kernel.available() else [c.encode("utf-8", "surrogatepass") if type(c) is str else c for c in counts]
        ok &= rle_totals(strings) == heights * widths  # INVALID_RLE (-1) never equals a pixel count
        return ok, ok.copy(), image_id, category_id, score, _or_placeholder(counts, ok, None), np.zeros((0, 4))
    boxes = cols.boxes
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(boxes).all(axis=1) & (boxes[:, 2] >= 0) & (boxes[:, 3] >= 0)
    plain = cols.plain & ok
    boxes[~plain] = np.nan
    return ok, plain, image_id, category_id, score, [], boxes


def validate_result_columns(
    gt: Mapping[str, Any] | GroundTruth,
    results: Any,
    *,
    iou_type: str | None = None,
    drop_invalid: bool = False,
    path: str = RESULTS_PATH,
) -> tuple[ResultColumns, list[str]]:
    """Check every result against the ground truth; returns (kept results as columns, warnings).

    The common case is checked over whole columns (`_plain_columns`); only the rows that fail it take the checks
    of `result_problem`, one result at a time, which find what is wrong and say so. Raises EvaluationError listing
    counts and first examples of each problem, unless `drop_invalid`, in which case the bad results are left out
    and the same counts come back as a warning.
    """
    truth = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt)
    if not isinstance(results, list):
        raise EvaluationError(path, "", f"expected a list of results, got {type(results).__name__}")
    kind = iou_type or default_iou_type(results)
    if kind not in IOU_TYPES:
        raise EvaluationError(path, "iou_type", f"must be one of {IOU_TYPES}, got {kind!r}")
    ok, plain, image_id, category_id, score, counts, boxes = _plain_columns(results, truth=truth, iou_type=kind)
    slow = np.flatnonzero(~ok).tolist()
    bad: dict[str, list[str]] = defaultdict(list)
    if slow:
        slow_results = [results[i] for i in slow]
        totals = _counts_totals(slow_results, iou_type=kind)
        for j, i in enumerate(slow):
            result = slow_results[j]
            problem = result_problem(result, truth=truth, iou_type=kind, total=totals.get(j))
            if problem is None:  # valid, though not in the common form: its columns come from the result itself
                ok[i] = True
                image_id[i], category_id[i], score[i] = result["image_id"], result["category_id"], float(result["score"])
            else:
                bad[problem[0]].append(f"results[{i}]: {problem[1]}")
    rows = np.flatnonzero(ok)
    if kind == "segm":
        counts = [counts[i] for i in rows.tolist()]
        boxes = np.zeros((0, 4))
    else:
        boxes = boxes[rows]
    columns = ResultColumns(results=results, rows=rows, image_id=image_id[rows], category_id=category_id[rows],
                            score=score[rows], plain=plain[rows], counts=counts, boxes=boxes)
    warnings: list[str] = []
    keep, capped = _cap_columns(columns.image_id, columns.score, truth=truth, drop=drop_invalid, path=path)
    if keep is not None:
        columns = columns.take(keep)
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
    return columns, warnings


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
    case the bad results are left out and the same counts come back as a warning (see `validate_result_columns`).
    """
    columns, warnings = validate_result_columns(gt, results, iou_type=iou_type, drop_invalid=drop_invalid, path=path)
    return columns.dicts(), warnings


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
    image_id = np.array([r["image_id"] for r in kept], dtype=np.int64).reshape(len(kept))
    score = np.array([r["score"] for r in kept], dtype=np.float64).reshape(len(kept))
    keep, warning = _cap_columns(image_id, score, truth=truth, drop=drop, path=path)
    return (kept if keep is None else [r for r, k in zip(kept, keep.tolist()) if k]), warning


def _cap_columns(image_id: np.ndarray, score: np.ndarray, *, truth: GroundTruth, drop: bool,
                 path: str = RESULTS_PATH) -> tuple[np.ndarray | None, str | None]:
    """`cap_detections_per_image` over columns: (None, None) when no image is over the limit, else (rows kept, warning)."""
    limit = max_detections_per_image()
    ids, per_image = np.unique(image_id, return_counts=True)
    over_at = per_image > limit
    if not over_at.any():
        return None, None
    over, over_n = ids[over_at].tolist(), per_image[over_at].tolist()
    examples = "; ".join(f"image_id {i} ({truth.images[i].file_name}): {n}" for i, n in zip(over[:EXAMPLES_SHOWN], over_n))
    what = f"{len(over)} image(s) with more than {limit} detections (e.g. {examples})"
    if not drop:
        raise EvaluationError(path, "results", f"{what}: over the limit per image; COCOeval scores only the best 100 "
                              "per image and category: cap the model's output (e.g. torchvision's box_detections_per_img), "
                              f"raise the limit with {MAX_DETECTIONS_PER_IMAGE_ENV}, or use --drop-invalid to keep the "
                              f"best {limit} by score of each such image")
    # each image's rows by score, ties in file order (a stable sort, as Python's sorted on -score)
    order = np.lexsort((np.arange(len(image_id)), -score, image_id))
    sorted_ids = image_id[order]
    first = np.searchsorted(sorted_ids, sorted_ids, side="left")
    rank = np.arange(len(order)) - first
    keep = np.ones(len(image_id), dtype=bool)
    keep[order[(rank >= limit) & np.isin(sorted_ids, ids[over_at])]] = False
    n_dropped = int(len(keep) - np.count_nonzero(keep))
    return keep, (f"{path}: dropped the {n_dropped} lowest-scoring detections of {what}, over the limit per image "
                  f"({MAX_DETECTIONS_PER_IMAGE_ENV})")

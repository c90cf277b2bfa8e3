"""`instance_update`: per-image COCO match records for a set of images (see segpipe.evaluators.instance.stats).

What goes in is exactly what COCOeval would compare: GT segmentations through `COCO.annToRLE`, detection
masks made compressed RLE (polygons merged, as the peer fixtures need), detection area = mask area for segm
(each result's `bbox` is dropped, as detectron2 does) and w*h of the box for bbox.

Two paths compute the same records: with the compiled kernel (segpipe/evaluators/_kernel.c) `_kernel_stats`
gathers every string, box and flag of the update in flat lists and one kernel call computes IoUs and greedy
matches; without it (no compiler at install time, or SEGPIPE_NO_KERNEL=1) `_Collector` calls pycocotools'
`mask.iou` per image and matches in numpy (segpipe.evaluators.instance.matching).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.evaluators.instance.rle_strings import compressed_counts, rle_totals
from segpipe.evaluators.instance.coco_ground_truth import GT_PATH, GroundTruth, GtImage, parse_ground_truth
from segpipe.evaluators.instance.coco_results import ResultColumns, bbox_problem, segmentation_problem, validate_result_columns
from segpipe.evaluators import kernel
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.matching import AREA_HI, AREA_LO, THRESHOLDS, A, T, PairInput, match_pairs, out_of_range, unmatched
from segpipe.evaluators.instance.stats import MAX_DETS, InstanceStats, distinct

MAX_DET = MAX_DETS[-1]  # COCOeval keeps the best 100 detections per (image, category)
_AREA_CHUNK = 255
# One IoU call per image while its detection x GT matrix is at most this many times the cells COCOeval needs
# (or small in absolute terms); otherwise one call per (image, category), as COCOeval.computeIoU.
_WHOLE_IMAGE_IOU_RATIO = 4
_WHOLE_IMAGE_IOU_CELLS = 1 << 16


def to_rle(segm: Any, *, image: GtImage) -> dict[str, Any]:
    """COCO.annToRLE: polygons merged, uncompressed RLE compressed, compressed RLE as is."""
    rle: dict[str, Any]  # pycocotools is untyped
    if isinstance(segm, list):
        if not segm:  # pycocotools crashes on []: an empty polygon list is an empty mask
            rle = mask_utils.encode(np.zeros((image.height, image.width, 1), dtype=np.uint8, order="F"))[0]
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, image.height, image.width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, image.height, image.width)
    else:
        rle = segm
    return rle


def gt_counts_totals(truth: GroundTruth, image_ids: Sequence[int]) -> dict[int, int]:
    """rle_totals() of the compressed RLE strings of the GT annotations of `image_ids`, keyed by id(annotation).

    One batched pass instead of one call per annotation (a per-string call cost more than the evaluation).
    """
    strings: dict[int, bytes] = {}
    for image_id in image_ids:
        for cat in truth.image_categories.get(image_id, ()):
            for ann in truth.annotations[image_id, cat]:
                counts = compressed_counts(ann.get("segmentation"))
                if counts is not None:
                    strings[id(ann)] = counts
    return dict(zip(strings, rle_totals(list(strings.values())).tolist(), strict=True))


def _gt_geometry(ann: Mapping[str, Any], *, image: GtImage, iou_type: str, path: str, total: int | None = None) -> Any:
    key = "segmentation" if iou_type == "segm" else "bbox"
    if key not in ann:
        raise EvaluationError(path, f"annotation id {ann['id']}.{key}", f"missing ({iou_type} evaluation needs it)")
    if iou_type == "bbox":
        why = bbox_problem(ann["bbox"])
        if why:
            raise EvaluationError(path, f"annotation id {ann['id']}.bbox", why)
        return ann["bbox"]
    segm = ann["segmentation"]
    if not (isinstance(segm, list) and not segm):
        why = segmentation_problem(segm, height=image.height, width=image.width, total=total)
        if why:
            raise EvaluationError(path, f"annotation id {ann['id']}.segmentation", why)
    return to_rle(segm, image=image)


def _det_geometries(dets: Sequence[Mapping[str, Any]], *, image: GtImage, iou_type: str) -> tuple[list[Any], np.ndarray]:
    """Geometry COCOeval compares and the area loadRes assigns, for one image's detections."""
    geoms: list[Any] = []
    areas = np.zeros(len(dets))
    mask_rows: list[int] = []
    for i, r in enumerate(dets):
        if iou_type == "bbox" and "bbox" in r:
            bb = r["bbox"]
            geoms.append(list(bb))
            areas[i] = bb[2] * bb[3]
            continue
        rle = to_rle(r["segmentation"], image=image)
        # bbox from a mask-only result: loadRes takes the box from the mask and the area from the mask
        geoms.append(list(mask_utils.toBbox(rle)) if iou_type == "bbox" else rle)
        mask_rows.append(i)
        if iou_type == "bbox":
            areas[i] = float(mask_utils.area(rle))
    if iou_type == "segm" and mask_rows:
        # pycocotools' area() builds `np.array((n,), dtype=np.uint8)` before filling it, which NumPy 2 refuses for
        # n > 255 (https://github.com/ppwwyyxx/cocoapi/blob/master/PythonAPI/pycocotools/_mask.pyx, area()):
        # at most 255 masks per call.
        for start in range(0, len(mask_rows), _AREA_CHUNK):
            chunk = mask_rows[start : start + _AREA_CHUNK]
            areas[chunk] = mask_utils.area([geoms[i] for i in chunk])
    return geoms, areas


def _pair_ious(det_geoms: list[Any], gt_geoms: list[Any], crowd: list[int], *,
               blocks: list[tuple[int, int, int, int, int]]) -> list[np.ndarray | None]:
    """COCOeval's computeIoU of each (category) block of one image: [D, G] floats, None without dets or GTs.

    One `mask.iou` call for the whole image is faster when most of its detection x GT matrix lies inside
    the blocks (few categories); with many categories and many objects the cross-category part dominates
    (12,756 detections over 80 classes against 500 GTs: 100x the pairs COCOeval compares), so then each
    block gets its own call. Every block is a copy: a view would keep the whole image's matrix alive.
    """
    wanted = [(d0, d1, g0, g1) if d1 > d0 and g1 > g0 else None for _, d0, d1, g0, g1 in blocks]
    inside = sum((w[1] - w[0]) * (w[3] - w[2]) for w in wanted if w)
    if not inside:
        return [None] * len(blocks)
    if len(det_geoms) * len(gt_geoms) <= max(_WHOLE_IMAGE_IOU_RATIO * inside, _WHOLE_IMAGE_IOU_CELLS):
        ious = np.asarray(mask_utils.iou(det_geoms, gt_geoms, crowd))
        return [None if w is None else ious[w[0] : w[1], w[2] : w[3]].copy() for w in wanted]
    return [None if w is None else np.asarray(mask_utils.iou(det_geoms[w[0] : w[1]], gt_geoms[w[2] : w[3]], crowd[w[2] : w[3]]))
            for w in wanted]


def _repeat_cats(blocks: list[tuple[int, int, int, int, int]], start: int) -> list[int]:
    """Each block's category repeated over its detections (start=1) or its GTs (start=3)."""
    return [b[0] for b in blocks for _ in range(b[start], b[start + 1])]


@dataclass
class _Collector:
    """Flat rows of one update, filled image by image."""

    det_rows: list[tuple[int, int, float]] = field(default_factory=list)  # image, category, score
    det_rank: list[int] = field(default_factory=list)
    det_out: list[np.ndarray] = field(default_factory=list)  # bool [D, A] per image
    gt_rows: list[tuple[int, int]] = field(default_factory=list)
    gt_ignored: list[np.ndarray] = field(default_factory=list)  # bool [G, A] per image
    pairs: list[PairInput] = field(default_factory=list)
    pair_slots: list[tuple[int, int]] = field(default_factory=list)  # (first det row, n dets) per pair

    def add_image(
        self, *, truth: GroundTruth, image: GtImage, dets_by_cat: Mapping[int, list[Mapping[str, Any]]], iou_type: str,
        gt_totals: Mapping[int, int],
    ) -> None:
        dets: list[Mapping[str, Any]] = []
        gts: list[Mapping[str, Any]] = []
        blocks: list[tuple[int, int, int, int, int]] = []  # category, det start/end, gt start/end
        cats = sorted(set(truth.image_categories.get(image.image_id, ())).union(dets_by_cat))
        for cat in cats:
            cat_gts = truth.annotations.get((image.image_id, cat), ())
            # Python's sort is stable, like COCOeval's argsort(-score, kind="mergesort")
            cat_dets = sorted(dets_by_cat.get(cat, ()), key=lambda r: -r["score"])[:MAX_DET]
            blocks.append((cat, len(dets), len(dets) + len(cat_dets), len(gts), len(gts) + len(cat_gts)))
            dets.extend(cat_dets)
            gts.extend(cat_gts)
        det_geoms, det_areas = _det_geometries(dets, image=image, iou_type=iou_type)
        gt_geoms = [_gt_geometry(g, image=image, iou_type=iou_type, path=GT_PATH, total=gt_totals.get(id(g))) for g in gts]
        crowd_list = [int(bool(g.get("iscrowd", 0))) for g in gts]
        pair_ious = _pair_ious(det_geoms, gt_geoms, crowd_list, blocks=blocks)
        crowd = np.array(crowd_list, dtype=bool)
        id_ok = np.array([g["id"] != 0 for g in gts], dtype=bool)
        # COCOeval's gt['ignore'] is iscrowd; out of the area range is ignored too
        gt_ig = out_of_range(np.array([float(g["area"]) for g in gts])) | crowd[:, None]
        det_out = out_of_range(det_areas)
        first = len(self.det_rows)
        image_id = image.image_id
        self.det_rows.extend((image_id, cat, float(d["score"])) for d, cat in zip(dets, _repeat_cats(blocks, 1)))
        self.det_rank.extend(i - d0 for _, d0, d1, _, _ in blocks for i in range(d0, d1))
        self.gt_rows.extend((image_id, cat) for cat in _repeat_cats(blocks, 3))
        for (_cat, d0, d1, g0, g1), ious in zip(blocks, pair_ious, strict=True):
            if ious is not None:
                self.pairs.append(PairInput(
                    ious=ious, gt_ignored=gt_ig[g0:g1], gt_crowd=crowd[g0:g1],
                    gt_id_nonzero=id_ok[g0:g1], det_out_of_range=det_out[d0:d1],
                ))
                self.pair_slots.append((first + d0, d1 - d0))
        self.det_out.append(det_out)
        self.gt_ignored.append(gt_ig)

    def stats(self, *, truth: GroundTruth, iou_type: str, image_ids: list[int], warnings: tuple[str, ...]) -> InstanceStats:
        n = len(self.det_rows)
        det_out = np.concatenate(self.det_out) if self.det_out else np.zeros((0, A), dtype=bool)
        lone = unmatched(det_out)  # default for every detection: what a pair without GT gets
        matched, ignored, iou = lone.matched, lone.ignored, lone.iou
        for (start, count), res in zip(self.pair_slots, match_pairs(self.pairs)):
            matched[start : start + count] = res.matched
            ignored[start : start + count] = res.ignored
            iou[start : start + count] = res.iou
        rows = np.array(self.det_rows, dtype=np.float64).reshape(n, 3)
        gt_rows = np.array(self.gt_rows, dtype=np.int64).reshape(len(self.gt_rows), 2)
        return InstanceStats(
            iou_type=iou_type,
            category_ids=truth.category_ids,
            category_names=truth.category_names,
            image_ids=np.array(image_ids, dtype=np.int64),
            file_names=tuple(truth.images[i].file_name for i in image_ids),
            det_image=rows[:, 0].astype(np.int64),
            det_category=rows[:, 1].astype(np.int64),
            det_score=rows[:, 2].astype(np.float64),
            det_rank=np.array(self.det_rank, dtype=np.int64),
            det_matched=matched,
            det_ignored=ignored,
            det_iou=iou,
            gt_image=gt_rows[:, 0],
            gt_category=gt_rows[:, 1],
            gt_ignored=np.concatenate(self.gt_ignored) if self.gt_ignored else np.zeros((0, A), dtype=bool),
            warnings=warnings,
        )


def _counts_bytes(rle: Mapping[str, Any]) -> bytes:
    counts = rle["counts"]
    return counts.encode("utf-8", "surrogatepass") if isinstance(counts, str) else bytes(counts)  # see compressed_counts


def _string_counts(segm: Any, *, height: int, width: int) -> bytes | str | None:
    """The counts string (str or bytes, as the kernel takes it) of a compressed RLE of height x width, else None."""
    if type(segm) is dict:
        size, counts = segm.get("size"), segm.get("counts")
        if type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int \
                and size[0] == height and size[1] == width and type(counts) in (str, bytes):
            return counts
    return None


def _gt_problem(truth: GroundTruth, image_ids: Sequence[int]) -> None:
    """Raise the EvaluationError of the first bad GT segmentation of `image_ids`, in the order they were collected."""
    totals = gt_counts_totals(truth, image_ids)
    for image_id in image_ids:
        image = truth.images[image_id]
        for cat in truth.image_categories.get(image_id, ()):
            for g in truth.annotations[image_id, cat]:
                _gt_geometry(g, image=image, iou_type="segm", path=GT_PATH, total=totals.get(id(g)))


def _det_counts(r: Mapping[str, Any], image: GtImage) -> bytes | str:
    """A checked detection's counts string: as it is for compressed RLE (checked to be of the image's size by
    validate_results), else made one (polygons merged, uncompressed RLE compressed)."""
    segm = r["segmentation"]
    counts = segm.get("counts") if type(segm) is dict else None
    if isinstance(counts, (str, bytes)):
        return counts
    return _counts_bytes(to_rle(segm, image=image))


def _kernel_stats(truth: GroundTruth, dets: ResultColumns, *, wanted: list[int], iou_type: str,
                  warnings: tuple[str, ...]) -> InstanceStats:
    """The records of `wanted` images through the compiled kernel (segpipe/evaluators/_kernel.c).

    No per-(image, category) Python: detections of the wanted images are ordered by image, category and score
    in one numpy sort (stable, so score ties keep file order, as COCOeval's mergesort), the GTs are taken in the
    ground truth's (image, category) order, the block table comes from the sorted keys, and one kernel call
    computes every IoU and greedy match. The rows come out in the order `_Collector` gives them. Detections come
    as the validated columns: only rows not in the common form (polygons, uncompressed RLE, a mask-only bbox
    result) are read back from their result.
    """
    segm = iou_type == "segm"
    # GTs can be filed under an undeclared category (COCO.loadAnns with a duplicated id): their rows are kept, as
    # `_Collector` keeps them, so the key space holds every category of the index, in id order.
    all_cats = sorted(set(truth.category_ids).union(cat for _, cat in truth.annotations))
    cat_index = {cat: k for k, cat in enumerate(all_cats)}
    n_cats = max(1, len(cat_index))
    images = [truth.images[i] for i in wanted]
    heights = np.array([im.height for im in images], dtype=np.int64)
    widths = np.array([im.width for im in images], dtype=np.int64)
    wanted_ids = np.array(wanted, dtype=np.int64)
    category_ids = np.array(all_cats, dtype=np.int64)
    image_index = {image_id: i for i, image_id in enumerate(wanted)}

    at = np.searchsorted(wanted_ids, dets.image_id)
    inside = at < len(wanted_ids)
    inside[inside] = wanted_ids[at[inside]] == dets.image_id[inside]
    if not inside.all():
        dets = dets.take(inside)
    n_all = len(dets)
    det_img = np.searchsorted(wanted_ids, dets.image_id)
    det_cat = np.searchsorted(category_ids, dets.category_id)  # every kept result's category is declared
    score = dets.score  # COCOeval sorts these as float64
    block_key = det_img * n_cats + det_cat
    order = np.lexsort((-score, block_key))  # lexsort is stable: ties keep file order
    key = block_key[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n_all else np.zeros(0, dtype=np.int64)
    rank = np.arange(n_all) - np.repeat(first, np.diff(np.r_[first, n_all]))
    keep = rank < MAX_DET  # COCOeval keeps the best 100 of each (image, category)
    order, key, rank = order[keep], key[keep], rank[keep]
    n = len(order)
    det_rows = order.tolist()
    # rows not in the common form: converted one at a time, as the numpy path does
    others = [(j, dets.results[int(dets.rows[i])], images[int(det_img[i])])
              for j, i in enumerate(det_rows) if not dets.plain[i]] if not dets.plain.all() else []
    det_geoms: list[Any]
    det_area = np.zeros(0)
    if segm:
        det_geoms = list(map(dets.counts.__getitem__, det_rows))
        for j, r, image in others:
            det_geoms[j] = _det_counts(r, image)
    else:
        boxes = dets.boxes[order]
        det_area = boxes[:, 2] * boxes[:, 3]
        for j, r, image in others:
            if "bbox" in r:  # numbers of other types (ints): the box and w * h as Python computes them
                bb = r["bbox"]
                boxes[j] = bb
                det_area[j] = bb[2] * bb[3]
            else:  # bbox from a mask-only result: loadRes takes the box and the area from the mask
                rle = to_rle(r["segmentation"], image=image)
                boxes[j] = mask_utils.toBbox(rle)
                det_area[j] = float(mask_utils.area(rle))
        det_geoms = [boxes]

    gts: list[Mapping[str, Any]] = []
    gt_geoms: list[Any] = []
    gt_keys: list[int] = []
    gt_counts: list[int] = []
    for (image_id, cat), anns in truth.annotations.items():  # sorted by (image, category)
        i = image_index.get(image_id)
        if i is None:
            continue
        image = images[i]
        gt_keys.append(i * n_cats + cat_index[cat])
        gt_counts.append(len(anns))
        gts.extend(anns)
        for g in anns:
            # A compressed string of the image's size goes as it is: the kernel decodes and checks it (a bad one is
            # reported by `_gt_problem`); anything else is checked and converted here, as the numpy path does.
            counts: Any = _string_counts(g.get("segmentation"), height=image.height, width=image.width) if segm else None
            if counts is None:
                geom = _gt_geometry(g, image=image, iou_type=iou_type, path=GT_PATH)
                counts = _counts_bytes(geom) if segm else geom
            gt_geoms.append(counts)
    g_total = len(gts)
    gt_key = np.repeat(np.array(gt_keys, dtype=np.int64), np.array(gt_counts, dtype=np.int64))
    crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
    id_nonzero = np.array([g["id"] != 0 for g in gts], dtype=bool)
    # COCOeval's gt['ignore'] is iscrowd; out of the area range is ignored too
    gt_ignored = out_of_range(np.array([g["area"] for g in gts], dtype=np.float64).reshape(g_total)) | crowd[:, None]

    # One block per (image, category) with detections or GTs, in key order; det and GT rows are in that order too.
    keys = distinct(np.concatenate([key, gt_key]))
    d0, d1 = np.searchsorted(key, keys, side="left"), np.searchsorted(key, keys, side="right")
    g0, g1 = np.searchsorted(gt_key, keys, side="left"), np.searchsorted(gt_key, keys, side="right")
    block_img = keys // n_cats
    columns = (heights[block_img], widths[block_img], d0, d1, g0, g1) if segm else (d0, d1, g0, g1)
    blocks = np.ascontiguousarray(np.stack(columns, axis=1).astype(np.int64, copy=False)).reshape(len(keys), len(columns))

    matched = np.empty((n, A, T), dtype=bool)
    ignored = np.empty((n, A, T), dtype=bool)
    iou = np.empty(n, dtype=np.float64)
    flags = dict(blocks=blocks, gt_crowd=crowd, gt_id_nonzero=id_nonzero, gt_ignored=gt_ignored, area_lo=AREA_LO, area_hi=AREA_HI,
                 thresholds=THRESHOLDS, det_matched=matched, det_ignored=ignored, det_iou=iou)
    if segm:
        try:
            kernel.match_segm(det_strings=det_geoms, gt_strings=gt_geoms, **flags)
        except kernel.GtStringError:  # detections were checked by validate_result_columns already
            _gt_problem(truth, wanted)  # the first bad GT mask, named as the numpy path names it
            raise
    else:
        kernel.match_bbox(det_boxes=np.ascontiguousarray(det_geoms[0], dtype=np.float64).reshape(n, 4), det_area=det_area,
                          gt_boxes=np.array(gt_geoms, dtype=np.float64).reshape(g_total, 4), **flags)
    return InstanceStats(
        iou_type=iou_type,
        category_ids=truth.category_ids,
        category_names=truth.category_names,
        image_ids=wanted_ids,
        file_names=tuple(im.file_name for im in images),
        det_image=wanted_ids[key // n_cats],
        det_category=category_ids[key % n_cats] if len(category_ids) else np.zeros(n, dtype=np.int64),
        det_score=score[order],
        det_rank=rank,
        det_matched=matched,
        det_ignored=ignored,
        det_iou=iou,
        gt_image=wanted_ids[gt_key // n_cats],
        gt_category=category_ids[gt_key % n_cats] if len(category_ids) else np.zeros(g_total, dtype=np.int64),
        gt_ignored=gt_ignored,
        warnings=warnings,
    )


def instance_update(
    gt: Mapping[str, Any] | GroundTruth,
    results: list[Mapping[str, Any]],
    *,
    iou_type: str,
    image_ids: Sequence[int] | None = None,
    drop_invalid: bool = False,
    progress: Callable[[int], object] | None = None,
) -> InstanceStats:
    """Match records for `image_ids` (default: every GT image). Pure; inputs are not mutated.

    Every result is validated, also those of images outside the shard (see `validate_results`).
    `progress(1)` is called after each image (a tqdm bar's `update`).
    """
    truth = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt)
    dets, result_warnings = validate_result_columns(truth, results, iou_type=iou_type, drop_invalid=drop_invalid)
    wanted = sorted(truth.images) if image_ids is None else sorted({int(i) for i in image_ids})
    unknown = [i for i in wanted if i not in truth.images]
    if unknown:
        raise EvaluationError("image_ids", "", f"{len(unknown)} image id(s) not in the ground truth, e.g. {unknown[:5]}")
    warnings = truth.warnings + tuple(result_warnings)
    if kernel.available() and (iou_type != "segm" or all(kernel.takes_image(truth.images[i].height, truth.images[i].width) for i in wanted)):
        try:
            stats = _kernel_stats(truth, dets, wanted=wanted, iou_type=iou_type, warnings=warnings)
        except EvaluationError:
            if iou_type == "segm":  # a GT string left to the kernel may come first: report the first, as the numpy path
                _gt_problem(truth, wanted)
            raise
        if progress is not None:
            for _ in wanted:
                progress(1)
        return stats
    wanted_set = set(wanted)
    by_image: dict[int, dict[int, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in dets.dicts():
        if r["image_id"] in wanted_set:
            by_image[r["image_id"]][r["category_id"]].append(r)
    collector = _Collector()
    gt_totals = gt_counts_totals(truth, wanted) if iou_type == "segm" else {}
    for image_id in wanted:
        collector.add_image(truth=truth, image=truth.images[image_id], dets_by_cat=by_image.get(image_id, {}),
                            iou_type=iou_type, gt_totals=gt_totals)
        if progress is not None:
            progress(1)
    return collector.stats(truth=truth, iou_type=iou_type, image_ids=wanted, warnings=warnings)

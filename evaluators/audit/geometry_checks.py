"""Geometry and statistics checks per class, and the Oxford-IIIT Pet layout checks
(`pet_layout_checks`: head box inside the pet mask, empty trimap, image not in list.txt, breed vs species).

Outliers use the modified z-score of Iglewicz & Hoaglin, z = 0.6745 (x - median) / MAD, on log area and
log aspect ratio (sizes are multiplicative) and on the normalised box centre (positions are not).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.findings import AuditFinding, make_finding
from segpipe.evaluators.audit.format_checks import ImageInfo, PreparedAnnotation

Z_THRESHOLD = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score
MAD_TO_SIGMA = 0.6745
MEAN_AD_TO_SIGMA = 1.253314  # used when the MAD is 0 (more than half the values equal)
# Floors on the spread: pixel quantisation alone (a 24 vs 25 px box) must not make an outlier when a class's
# boxes are nearly all the same size or shape.
MIN_LOG_MAD = 0.05
MIN_POSITION_MAD = 0.01
MIN_INSTANCES_FOR_STATS = 8  # fewer values give no meaningful median/MAD
FEW_INSTANCES = 10  # a class with fewer annotations is flagged
IMBALANCE_RATIO = 10.0  # largest class / this class above this is flagged
NEAR_DUPLICATE_IOU = 0.9  # above this a same-class pair is a duplicate whatever the dataset's habits
# Between NEAR_DUPLICATE_MIN_IOU and NEAR_DUPLICATE_IOU a pair is a duplicate when the dataset's other overlapping
# same-class pairs rarely overlap as much: at most DUPLICATE_TAIL of them (crowded classes overlap by nature).
NEAR_DUPLICATE_MIN_IOU = 0.75
DUPLICATE_TAIL = 0.05
# An image without any annotation is a finding while at most EMPTY_SHARE of the other images are empty too
# (datasets with deliberate background images have many; COCO train2017 has about 1 %).
EMPTY_SHARE = 0.1
EMPTY_SCORE = 0.6
TINY_MASK_AREA = 16.0  # pixels: below a 4x4 square nobody draws a real object on purpose
MAX_PIECES = 5  # a mask in more 8-connected pieces than this is fragmented
OUTLIER_SCORE_CAP = 0.8
SCORE_TINY = 0.5
HEAD_INSIDE_MIN = 0.3  # border pixels are not pet under the default policy, so a true head box is rarely fully covered
SPECIES = ("cat", "dog")


def robust_z(values: np.ndarray, *, min_mad: float = 0.0) -> np.ndarray:
    """Modified z-scores; the MAD is floored at `min_mad` (zeros when the spread is 0 and there is no floor).

    >>> robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0])).round(2).tolist()
    [-1.35, -0.67, 0.0, 0.67, 65.43]
    """
    med = np.median(values)
    dev = values - med
    mad = np.median(np.abs(dev))
    if mad == 0:
        mad = MEAN_AD_TO_SIGMA * MAD_TO_SIGMA * np.mean(np.abs(dev))
    mad = max(mad, min_mad)
    if mad > 0:
        scores: np.ndarray = MAD_TO_SIGMA * dev / mad
        return scores
    return np.zeros_like(values)


def _outlier_score(z: float) -> float:
    # 0.4 at the threshold, rising towards the cap: statistical suspicion never outranks a certain error.
    z = abs(z)
    return OUTLIER_SCORE_CAP * z / (z + Z_THRESHOLD)


def _finding(*, check: str, message: str, ann: PreparedAnnotation, images: Mapping[int, ImageInfo], score: float | None = None) -> AuditFinding:
    im = images.get(ann.image_id)
    file_name = im.file_name if im else ""
    return make_finding(
        check=check, message=message, score=score, image_id=ann.image_id, file_name=file_name, annotation_id=ann.id, category=ann.category
    )


def _usable_for_statistics(a: PreparedAnnotation, images: Mapping[int, ImageInfo]) -> bool:
    im = images.get(a.image_id)
    return a.area > 0 and a.bbox[2] > 0 and a.bbox[3] > 0 and im is not None and im.width > 0 and im.height > 0


def class_statistics_checks(
    anns: Sequence[PreparedAnnotation], images: Mapping[int, ImageInfo], *, categories: Mapping[int, str]
) -> list[AuditFinding]:
    """Area / aspect / position outliers per class, classes with few instances, class imbalance."""
    findings: list[AuditFinding] = []
    by_cat: dict[int, list[PreparedAnnotation]] = defaultdict(list)
    for a in anns:
        by_cat[a.category_id].append(a)
    counts = {cid: len(by_cat.get(cid, ())) for cid in categories}
    largest = max(counts.values(), default=0)
    for cid in sorted(categories):
        name, n = categories[cid], counts[cid]
        if n < FEW_INSTANCES:
            findings.append(
                make_finding(check=F.CHECK_FEW_INSTANCES, message=f"class {name!r} has {n} annotation(s) (< {FEW_INSTANCES})", category=name)
            )
        if n > 0 and largest / n > IMBALANCE_RATIO:
            message = f"class {name!r} has {n} annotation(s), {largest / n:.1f}x fewer than the largest class ({largest})"
            findings.append(make_finding(check=F.CHECK_CLASS_IMBALANCE, message=message, category=name))
    for _cid, group in sorted(by_cat.items()):
        usable = [a for a in group if _usable_for_statistics(a, images)]
        if len(usable) < MIN_INSTANCES_FOR_STATS:
            continue
        box = np.array([a.bbox for a in usable], dtype=np.float64)
        size = np.array([(images[a.image_id].width, images[a.image_id].height) for a in usable], dtype=np.float64)
        # Area relative to the image: a photo twice as large shows the same pet with 4x the pixels, and
        # datasets mix resolutions (Oxford-IIIT Pet: from ~100 to ~2,500 px a side), so absolute pixels flag
        # every large photo's label. Position is relative for the same reason.
        rel_area = np.array([a.area for a in usable], dtype=np.float64) / (size[:, 0] * size[:, 1])
        z_area = robust_z(np.log(rel_area), min_mad=MIN_LOG_MAD)
        z_aspect = robust_z(np.log(box[:, 2] / box[:, 3]), min_mad=MIN_LOG_MAD)
        z_cx = robust_z((box[:, 0] + box[:, 2] / 2) / size[:, 0], min_mad=MIN_POSITION_MAD)
        z_cy = robust_z((box[:, 1] + box[:, 3] / 2) / size[:, 1], min_mad=MIN_POSITION_MAD)
        for i, a in enumerate(usable):
            z_pos = max(abs(z_cx[i]), abs(z_cy[i]))
            outliers = (
                (F.CHECK_AREA_OUTLIER, z_area[i], f"area {a.area:g} px ({rel_area[i]:.2%} of the image) is far "
                 f"{'larger' if z_area[i] > 0 else 'smaller'} than usual", "log of the area relative to the image"),
                (F.CHECK_ASPECT_OUTLIER, z_aspect[i], f"aspect ratio w/h {a.bbox[2] / a.bbox[3]:.3g} is unusual", "log scale"),
                (F.CHECK_POSITION_OUTLIER, z_pos, "box centre is in an unusual place", f"x {z_cx[i]:.1f}, y {z_cy[i]:.1f}"),
            )
            for check, z, what, detail in outliers:
                if abs(z) > Z_THRESHOLD:
                    message = f"{what} for {a.category!r} (robust z {abs(z):.1f}, {detail})"
                    findings.append(_finding(check=check, message=message, ann=a, images=images, score=_outlier_score(z)))
    return findings


def _iou_matrix(group: Sequence[PreparedAnnotation]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rles: list[Mapping[str, Any] | None] | np.ndarray
    if all(a.rle is not None for a in group):
        rles = [a.rle for a in group]
    else:
        rles = np.array([a.bbox for a in group], dtype=np.float64)
    return np.asarray(mask_utils.iou(rles, rles, [0] * len(group)), dtype=np.float64).reshape(len(group), len(group))


def near_duplicate_checks(anns: Sequence[PreparedAnnotation], images: Mapping[int, ImageInfo]) -> list[AuditFinding]:
    """Pairs of same-class annotations in one image that overlap more than the dataset's pairs usually do; the
    later id is reported.

    IoU > NEAR_DUPLICATE_IOU always; from NEAR_DUPLICATE_MIN_IOU on when p, the share of the dataset's other
    overlapping (IoU > 0) same-class pairs that overlap at least as much, is below DUPLICATE_TAIL; the score
    0.9 x IoU is then discounted by p / DUPLICATE_TAIL. A shifted copy (IoU 0.85) in a dataset whose objects
    barely touch is found; a crowd whose people overlap at 0.6 is not.
    """
    findings: list[AuditFinding] = []
    groups: dict[tuple[int, int], list[PreparedAnnotation]] = defaultdict(list)
    for a in anns:
        groups[(a.image_id, a.category_id)].append(a)
    candidates: list[tuple[PreparedAnnotation, PreparedAnnotation, float]] = []
    overlaps: list[float] = []
    for key in sorted(k for k, g in groups.items() if len(g) > 1):
        group = sorted(groups[key], key=lambda a: a.id)
        iou = _iou_matrix(group)
        upper = iou[np.triu_indices(len(group), k=1)]
        overlaps += upper[upper > 0].tolist()
        for j in range(1, len(group)):
            i = int(np.argmax(iou[:j, j]))
            if iou[i, j] > NEAR_DUPLICATE_MIN_IOU:
                candidates.append((group[i], group[j], float(iou[i, j])))
    values = np.sort(np.array(overlaps, dtype=np.float64))
    n_others = len(values) - 1
    for first, later, value in candidates:
        at_least = len(values) - int(np.searchsorted(values, value, side="left")) - 1
        p = at_least / n_others if n_others > 0 else 0.0
        if value > NEAR_DUPLICATE_IOU:
            score, why = 0.9 * value, ""
        elif p < DUPLICATE_TAIL:
            score, why = 0.9 * value * (1 - p / DUPLICATE_TAIL), f" ({p:.1%} of the dataset's other overlapping same-class pairs overlap as much)"
        else:
            continue
        message = f"overlaps annotation {first.id} of the same class at IoU {value:.3f}{why}"
        findings.append(_finding(check=F.CHECK_NEAR_DUPLICATE, message=message, ann=later, images=images, score=score))
    return findings


def empty_image_checks(annotated: set[int], images: Mapping[int, ImageInfo]) -> list[AuditFinding]:
    """Images without any annotation, when empty images are rare in this dataset (see EMPTY_SHARE).

    The score EMPTY_SCORE x (1 - p / EMPTY_SHARE), p = the share of the other images that are empty: one empty
    image among hundreds of annotated ones scores ~EMPTY_SCORE, a dataset with many background images none.
    """
    empty = sorted(i for i in images if i not in annotated)
    n_others = len(images) - 1
    if not empty or n_others <= 0:
        return []
    p = (len(empty) - 1) / n_others
    if p >= EMPTY_SHARE:
        return []
    score = EMPTY_SCORE * (1 - p / EMPTY_SHARE)
    message = f"no annotation on this image while {1 - p:.1%} of the other images have one"
    return [make_finding(check=F.CHECK_EMPTY_IMAGE, message=message, score=score, image_id=i, file_name=images[i].file_name) for i in empty]


def mask_shape_checks(anns: Sequence[PreparedAnnotation], images: Mapping[int, ImageInfo]) -> list[AuditFinding]:
    """Empty and tiny masks (or boxes), and masks in many disconnected pieces (8-connectivity)."""
    import cv2
    from pycocotools import mask as mask_utils

    findings: list[AuditFinding] = []
    by_image: dict[int, list[PreparedAnnotation]] = defaultdict(list)
    for a in anns:
        what = "mask" if a.rle is not None else "box"
        if a.area <= 0:
            findings.append(_finding(check=F.CHECK_EMPTY_MASK, message=f"{what} has no pixels", ann=a, images=images))
        elif a.area < TINY_MASK_AREA:
            message = f"{what} has only {a.area:g} px (< {TINY_MASK_AREA:g})"
            findings.append(
                _finding(check=F.CHECK_TINY_MASK, message=message, ann=a, images=images, score=SCORE_TINY * (1 - a.area / TINY_MASK_AREA) + 0.2)
            )
        if a.rle is not None and a.area > MAX_PIECES:
            by_image[a.image_id].append(a)
    for image_id in sorted(by_image):
        group = by_image[image_id]
        masks = mask_utils.decode([a.rle for a in group])
        boxes = mask_utils.toBbox([a.rle for a in group])
        for k, a in enumerate(group):
            x, y, w, h = (int(v) for v in boxes[k])
            pieces = cv2.connectedComponents(np.ascontiguousarray(masks[y : y + h, x : x + w, k]), connectivity=8)[0] - 1
            if pieces > MAX_PIECES:
                message = f"mask is made of {pieces} disconnected pieces (> {MAX_PIECES})"
                findings.append(
                    _finding(check=F.CHECK_FRAGMENTED_MASK, message=message, ann=a, images=images, score=0.2 + 0.5 * (1 - MAX_PIECES / pieces))
                )
    return findings


def head_inside_fraction(head: tuple[float, float, float, float], pet_mask: np.ndarray) -> float:
    """Fraction of the head box's pixels that the pet mask covers (0 for a box outside the image)."""
    x, y, w, h = head
    x0, y0 = max(0, int(math.floor(x))), max(0, int(math.floor(y)))
    x1, y1 = min(pet_mask.shape[1], int(math.ceil(x + w))), min(pet_mask.shape[0], int(math.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(np.count_nonzero(pet_mask[y0:y1, x0:x1])) / float(max(1.0, w * h))


@dataclass(frozen=True)
class PetLayout:
    """What the Oxford-IIIT Pet checks read besides instances.json (all keyed by image stem)."""

    heads: Mapping[str, tuple[tuple[str, tuple[float, float, float, float]], ...]] = field(default_factory=dict)
    list_species: Mapping[str, str] | None = None  # stem -> species in list.txt; None: no list.txt
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # stem -> split files naming it
    foreground: Mapping[str, int] = field(default_factory=dict)  # stem -> pet pixels in the semantic map


def species_of_breed(breed: str) -> str:
    """Oxford-IIIT Pet naming rule (list.txt header): cat breeds start with a capital letter.

    >>> species_of_breed("Abyssinian"), species_of_breed("american_bulldog")
    ('cat', 'dog')
    """
    return "cat" if breed[:1].isupper() else "dog"


def _category_species(name: str, supercategory: str) -> str | None:
    if name in SPECIES:
        return name
    if supercategory in SPECIES:
        return supercategory
    return None if name in ("", "pet") else species_of_breed(name)


def _species_evidence(
    group: Sequence[PreparedAnnotation], heads: Sequence[tuple[str, Any]], listed: str | None, supercategories: Mapping[str, str]
) -> dict[str, str]:
    """Source -> species, from the pet's category (breed name or supercategory), the head boxes and list.txt."""
    evidence: dict[str, str] = {}
    for a in group:
        sp = _category_species(a.category, supercategories.get(a.category, ""))
        if sp:
            evidence.setdefault(f"category {a.category!r}", sp)
    for species, _ in heads:
        if species in SPECIES:
            evidence.setdefault(f"head box ({species})", species)
    if listed is not None:
        evidence["list.txt"] = listed
    return evidence


def pet_layout_checks(
    anns: Sequence[PreparedAnnotation], images: Mapping[int, ImageInfo], *, layout: PetLayout, supercategories: Mapping[str, str]
) -> list[AuditFinding]:
    """The Oxford-IIIT Pet checks, one image at a time in id order."""
    from pycocotools import mask as mask_utils

    findings: list[AuditFinding] = []
    by_image: dict[int, list[PreparedAnnotation]] = defaultdict(list)
    for a in anns:
        by_image[a.image_id].append(a)
    for image_id in sorted(images):
        im = images[image_id]
        stem = PurePosixPath(im.file_name).stem
        group = by_image.get(image_id, [])
        where: dict[str, Any] = {"image_id": image_id, "file_name": im.file_name}
        pet_pixels = sum(a.area for a in group if a.rle is not None)
        if layout.foreground.get(stem, 1) == 0 or pet_pixels == 0:
            findings.append(
                make_finding(check=F.CHECK_EMPTY_TRIMAP, message="trimap has no pet pixels (semantic map or instance mask is empty)", **where)
            )
        if layout.list_species is not None and stem not in layout.list_species:
            message = f"image {stem!r} is not in annotations/list.txt (no class id or species)"
            findings.append(make_finding(check=F.CHECK_NOT_IN_LIST, message=message, **where))
        splits = layout.splits.get(stem, ())
        if len(splits) > 1:
            findings.append(
                make_finding(check=F.CHECK_CROSS_SPLIT, message=f"image {stem!r} is listed in {len(splits)} splits: {list(splits)}", **where)
            )
        heads = layout.heads.get(stem, ())
        if heads and pet_pixels > 0 and im.width > 0 and im.height > 0:
            union = np.asarray(mask_utils.decode(mask_utils.merge([a.rle for a in group if a.rle is not None], intersect=False)), dtype=bool)
            for species, box in heads:
                frac = head_inside_fraction(box, union)
                if frac < HEAD_INSIDE_MIN:
                    message = f"head box [{', '.join(f'{v:g}' for v in box)}] is only {frac:.0%} inside the pet mask (< {HEAD_INSIDE_MIN:.0%})"
                    score = 0.3 + 0.6 * (1 - frac / HEAD_INSIDE_MIN)
                    findings.append(make_finding(check=F.CHECK_HEAD_OUTSIDE_PET, message=message, score=score, category=species, **where))
        listed = layout.list_species.get(stem) if layout.list_species is not None else None
        evidence = _species_evidence(group, heads, listed, supercategories)
        if len(set(evidence.values())) > 1:
            message = "breed and species disagree: " + ", ".join(f"{src} says {sp}" for src, sp in sorted(evidence.items()))
            findings.append(make_finding(check=F.CHECK_SPECIES_MISMATCH, message=message, category=group[0].category if group else "", **where))
    return findings

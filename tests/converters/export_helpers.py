"""Round-trip helpers for the exporter tests: read an export back with the format's own converter, and compare
two COCO files with pycocotools as the independent reader (annToMask for every mask)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.converters.cvat import convert_cvat
from segpipe.converters.export import EXPORTERS
from segpipe.converters.labelme import convert_labelme
from segpipe.converters.voc import convert_voc
from segpipe.converters.voc_segmentation import convert_voc_segmentation
from segpipe.converters.yolo import convert_yolo


def read_back(fmt: str, exported: Path, out: Path) -> tuple[Path, str]:
    """Convert an export with the format's converter; (converted dir, prefix its file_names gain)."""
    if fmt == "yolo":
        convert_yolo(exported, out)
        return out, "images/"
    if fmt == "labelme":
        convert_labelme(exported, out, classes=exported / "classes.txt")
        return out, ""
    if fmt == "cvat":
        convert_cvat(exported, out)
        return out, ""
    if fmt == "voc":
        convert_voc(exported / "Annotations", out, images=exported / "JPEGImages", classes=exported / "classes.txt")
        return out, ""
    if fmt == "voc-seg":
        convert_voc_segmentation(exported, out, classes=exported / "segmentation_classes.txt")
        return out, ""
    raise ValueError(fmt)


def load(path: Path) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@dataclass
class Comparison:
    images: int = 0
    objects: int = 0
    box_max_error: float = 0.0
    exact_masks: int = 0
    mask_ious: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def min_iou(self) -> float:
        return min(self.mask_ious) if self.mask_ious else 1.0


def compare(original: Path, back: Path, *, prefix: str = "", boxes_only: bool = False, mask_boxes: bool = True) -> Comparison:
    """Image by image, object by object (annotation order), pycocotools reading both files. `mask_boxes=False`:
    the boxes of masked objects are not compared (a COCO file may box a polygon by its vertices, segpipe's
    converters box the rasterised pixels); their masks are."""
    a, b = load(original), load(back)
    result = Comparison()
    cats_a = [c["name"] for c in sorted(a.dataset["categories"], key=lambda c: c["id"])]
    cats_b = [c["name"] for c in sorted(b.dataset["categories"], key=lambda c: c["id"])]
    if cats_a != cats_b:
        result.problems.append(f"categories {cats_a} != {cats_b}")
    name_a = {c["id"]: c["name"] for c in a.dataset["categories"]}
    name_b = {c["id"]: c["name"] for c in b.dataset["categories"]}
    by_name_b = {im["file_name"]: im for im in b.dataset["images"]}
    for im in sorted(a.dataset["images"], key=lambda i: i["file_name"]):
        other = by_name_b.get(prefix + im["file_name"])
        if other is None:
            result.problems.append(f"{im['file_name']}: missing")
            continue
        result.images += 1
        if (im["width"], im["height"]) != (other["width"], other["height"]):
            result.problems.append(f"{im['file_name']}: size differs")
        anns_a = sorted(a.loadAnns(a.getAnnIds(imgIds=[im["id"]])), key=lambda x: x["id"])
        anns_b = sorted(b.loadAnns(b.getAnnIds(imgIds=[other["id"]])), key=lambda x: x["id"])
        if len(anns_a) != len(anns_b):
            result.problems.append(f"{im['file_name']}: {len(anns_a)} objects became {len(anns_b)}")
            continue
        for x, y in zip(anns_a, anns_b):
            result.objects += 1
            if name_a[x["category_id"]] != name_b[y["category_id"]]:
                result.problems.append(f"{im['file_name']} ann {x['id']}: category {name_a[x['category_id']]} -> {name_b[y['category_id']]}")
            if mask_boxes or boxes_only or "segmentation" not in x:
                result.box_max_error = max(result.box_max_error, float(np.abs(np.subtract(x["bbox"], y["bbox"])).max()))
            if boxes_only or "segmentation" not in x:
                continue
            ma, mb = a.annToMask(x).astype(bool), b.annToMask(y).astype(bool)
            union = np.count_nonzero(ma | mb)
            iou = np.count_nonzero(ma & mb) / union if union else 1.0
            result.mask_ious.append(float(iou))
            result.exact_masks += bool((ma == mb).all())
    return result


def export(fmt: str, dataset: Path, out: Path, **options: Any) -> Any:
    return EXPORTERS[fmt].write(dataset, out, **options)

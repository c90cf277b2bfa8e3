"""How `segpipe run` handles the annotation formats converted by one folder-level converter each (yolo,
labelme, cvat, voc-seg): one adapter per format says where its images are, which files annotate one image
(sharded by stem) and which are global (in every shard), and how to call the converter.

The older formats (oxford-pet, voc, trimap) keep their own branches in runner/shards.py and tasks/stages.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class FormatAdapter:
    name: str
    options: tuple[str, ...]  # converter options accepted from run.toml / the command line
    is_annotation: Callable[[str], bool]  # a path relative to the source root: does it annotate one image stem?
    image_subdir: Callable[[Path], str]  # where the images are under the source root ("" = the root itself)
    convert: Callable[..., Any]  # (root, out, images, classes, options) -> ConversionReport
    # One file annotates every image (CVAT's annotations.xml): editing it changes every shard anyway, so the
    # dataset is one shard and no shard reports the others' images as missing.
    single_shard: bool = False
    # Only images with an annotation file are part of the dataset (VOC's JPEGImages holds 17,125 images, of
    # which 2,913 are segmented): the others are neither converted nor inferred.
    annotated_only: bool = False


def _yolo_label(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name.endswith(".txt") and name != "classes.txt"


def _convert_yolo(root: Path, out: Path, *, images: Path | None, classes: Path | None, options: Mapping[str, Any]) -> Any:
    from segpipe.converters.yolo import convert_yolo

    return convert_yolo(root, out, classes=classes, **options)


def _convert_labelme(root: Path, out: Path, *, images: Path | None, classes: Path | None, options: Mapping[str, Any]) -> Any:
    from segpipe.converters.labelme import convert_labelme

    return convert_labelme(root, out, classes=classes, **options)


def _convert_cvat(root: Path, out: Path, *, images: Path | None, classes: Path | None, options: Mapping[str, Any]) -> Any:
    from segpipe.converters.cvat import convert_cvat

    return convert_cvat(root, out, images=images, **options)


def _convert_voc_seg(root: Path, out: Path, *, images: Path | None, classes: Path | None, options: Mapping[str, Any]) -> Any:
    from segpipe.converters.voc_segmentation import convert_voc_segmentation

    return convert_voc_segmentation(root, out, classes=classes, **options)


_VOC_SEG_DIRS = ("SegmentationClass", "SegmentationObject", "Annotations")


def _voc_seg_annotation(rel: str) -> bool:
    return PurePosixPath(rel).parts[0] in _VOC_SEG_DIRS and rel.lower().endswith((".png", ".xml"))


ADAPTERS: dict[str, FormatAdapter] = {
    "yolo": FormatAdapter("yolo", ("rectangle_segmentation", "strict"), _yolo_label, lambda root: "", _convert_yolo),
    "labelme": FormatAdapter("labelme", ("rectangle_segmentation", "strict"), lambda rel: rel.lower().endswith(".json"), lambda root: "", _convert_labelme),
    "cvat": FormatAdapter("cvat", ("rectangle_segmentation", "strict"), lambda rel: False,
                          lambda root: "images" if (root / "images").is_dir() else "", _convert_cvat, single_shard=True),
    "voc-seg": FormatAdapter("voc-seg", ("strict",), _voc_seg_annotation,
                             lambda root: "JPEGImages", _convert_voc_seg, annotated_only=True),
}

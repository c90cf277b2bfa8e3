"""What `segpipe run` knows of each dataset format, in one adapter per format: where its files are (the
folders a dataset is given as, where the images are, which files annotate one image and are sharded by
stem, the rest being global files every shard reads), which converter options it takes, and how to
convert a list of its files in memory (the converter module's `*_conversion` function).

A new format is one converter module and one entry in ADAPTERS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

from segpipe.converters.conversion_output import Conversion
from segpipe.errors import SegpipeError

# (root, images, classes, list file, files or None for the whole folders, converter options) -> Conversion
Converter = Callable[[Path, Path | None, Path | None, Path | None, Iterable[Path] | None, Mapping[str, Any]], Conversion]


@dataclass(frozen=True)
class FormatAdapter:
    name: str
    options: tuple[str, ...]  # converter options accepted from run.toml / the command line
    is_annotation: Callable[[str], bool]  # a path relative to the dataset root: does it annotate one image stem?
    image_subdir: Callable[[Path], str]  # where the images are under the dataset root ("" = the root itself)
    convert: Converter
    # One file annotates every image (CVAT's annotations.xml): editing it changes every shard anyway, so the
    # dataset is one shard and no shard reports the others' images as missing.
    single_shard: bool = False
    # Only images with an annotation file are part of the dataset (VOC's JPEGImages holds 17,125 images, of
    # which 2,913 are segmented): the others are neither converted nor inferred.
    annotated_only: bool = False
    # A fixed layout under one root (Oxford-IIIT Pet): no separate image folder, classes or list file.
    layout_root: bool = False
    needs_images: bool = False  # the annotations' folder holds no images (trimaps): --images is required


@dataclass(frozen=True)
class DatasetSpec:
    """What `segpipe run` was pointed at. `root` is the Oxford-IIIT Pet root or the annotation source."""

    format: str
    root: Path
    images: Path | None = None
    classes: Path | None = None
    list_file: Path | None = None

    def adapter(self) -> FormatAdapter:
        if self.format not in ADAPTERS:
            raise SegpipeError(self.root, "format", f"unknown dataset format {self.format!r} (choose from {', '.join(ADAPTERS)})")
        return ADAPTERS[self.format]

    def root_label(self) -> str:
        """The manifest label of `root`: a manifest path is `<label>/<path under that folder>`."""
        return "root" if self.adapter().layout_root else "src"

    def roots(self) -> dict[str, Path]:
        adapter = self.adapter()
        if adapter.layout_root:
            return {"root": self.root}
        if adapter.needs_images and self.images is None:
            raise SegpipeError(self.root, "images", f"the {self.format} format needs the image folder as well as the annotations")
        out = {"src": self.root}
        if self.images is not None and self.images.resolve() != self.root.resolve():
            out["images"] = self.images
        if self.classes is not None:
            out["classes"] = self.classes
        if self.list_file is not None:
            out["list"] = self.list_file
        return out

    def image_prefix(self) -> str:
        """Manifest prefix of the image root; image file names are relative to it."""
        if "images" in self.roots():
            return "images/"
        sub = self.adapter().image_subdir(self.root)
        return f"{self.root_label()}/{sub}/" if sub else f"{self.root_label()}/"

    def image_root(self) -> Path:
        if self.images is not None and not self.adapter().layout_root:
            return self.images
        sub = self.adapter().image_subdir(self.root)
        return self.root / sub if sub else self.root

    def is_annotation(self, path: str) -> bool:
        """Does a manifest path (`<label>/<rel>`) annotate one image stem?"""
        label = self.root_label() + "/"
        return path.startswith(label) and self.adapter().is_annotation(path[len(label):])

    def refuse_empty(self, n_images: int) -> None:
        """Raise before any task runs when the dataset holds no image of its format: the one rule of `segpipe
        convert` (nothing converted is a usage error naming the layout looked for and what was found)."""
        if n_images:
            return
        from segpipe.converters.layout_hints import FORMAT_LAYOUTS, describe_folder

        looked = FORMAT_LAYOUTS.get(self.format, f"a {self.format} dataset")
        raise SegpipeError(self.root, "dataset", f"nothing to convert (0 images): looked for {looked}; found {describe_folder(self.root)}")

    def convert(self, *, files: Iterable[Path] | None, options: Mapping[str, Any]) -> Conversion:
        """Convert the dataset (only `files` of it when given: one shard's own files and the global files) in
        memory; `options` outside the format's own are ignored."""
        adapter = self.adapter()
        kwargs = {k: v for k, v in options.items() if k in adapter.options and v is not None}
        return adapter.convert(self.root, self.images, self.classes, self.list_file, files, kwargs)


def _oxford_pet(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
                options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.oxford_pet import oxford_pet_conversion

    return oxford_pet_conversion(root, files=files, workers=1, **options)


def _voc(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
         options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.voc import voc_conversion

    return voc_conversion(root, files=files, images=images, classes=classes, workers=1, **options)


def _trimap(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
            options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.trimap import trimap_conversion

    if images is None:
        raise SegpipeError(root, "images", "the trimap format needs the image folder as well as the trimaps")
    return trimap_conversion(root, files=files, images=images, list_file=list_file, workers=1, **options)


def _yolo(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
          options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.yolo import yolo_conversion

    return yolo_conversion(root, files=files, classes=classes, **options)


def _labelme(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
             options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.labelme import labelme_conversion

    return labelme_conversion(root, files=files, classes=classes, **options)


def _cvat(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
          options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.cvat import cvat_conversion

    return cvat_conversion(root, files=files, images=images, **options)


def _voc_seg(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
             options: Mapping[str, Any]) -> Conversion:
    from segpipe.converters.voc_segmentation import voc_segmentation_conversion

    return voc_segmentation_conversion(root, files=files, classes=classes, **options)


def _pet_annotation(rel: str) -> bool:
    lower = rel.lower()
    return (rel.startswith("annotations/trimaps/") and lower.endswith(".png")) or (rel.startswith("annotations/xmls/") and lower.endswith(".xml"))


# Darknet exports' subset lists (CVAT "YOLO 1.1": train.txt beside obj.data): files every shard reads.
_DARKNET_LISTS = ("train.txt", "valid.txt", "test.txt")


def _yolo_label(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name.endswith(".txt") and name != "classes.txt" and rel not in _DARKNET_LISTS


_VOC_SEG_DIRS = ("SegmentationClass", "SegmentationObject", "Annotations")


def _voc_seg_annotation(rel: str) -> bool:
    return PurePosixPath(rel).parts[0] in _VOC_SEG_DIRS and rel.lower().endswith((".png", ".xml"))


def _no_subdir(root: Path) -> str:
    return ""


ADAPTERS: dict[str, FormatAdapter] = {
    "oxford-pet": FormatAdapter("oxford-pet", ("border", "categories", "split", "strict"), _pet_annotation, lambda root: "images", _oxford_pet,
                                layout_root=True),
    "voc": FormatAdapter("voc", ("one_based", "difficult", "size_from_xml", "rectangle_segmentation", "strict"),
                         lambda rel: rel.lower().endswith(".xml"), _no_subdir, _voc),
    "trimap": FormatAdapter("trimap", ("border", "categories", "strict"), lambda rel: rel.lower().endswith(".png"), _no_subdir, _trimap,
                            needs_images=True),
    "yolo": FormatAdapter("yolo", ("rectangle_segmentation", "box_masks", "strict"), _yolo_label, _no_subdir, _yolo),
    "labelme": FormatAdapter("labelme", ("rectangle_segmentation", "box_masks", "strict"), lambda rel: rel.lower().endswith(".json"), _no_subdir,
                             _labelme),
    "cvat": FormatAdapter("cvat", ("rectangle_segmentation", "box_masks", "strict"), lambda rel: False,
                          lambda root: "images" if (root / "images").is_dir() else "", _cvat, single_shard=True),
    "voc-seg": FormatAdapter("voc-seg", ("strict",), _voc_seg_annotation, lambda root: "JPEGImages", _voc_seg, annotated_only=True),
}
FORMATS: tuple[str, ...] = tuple(ADAPTERS)
# Converter options each format accepts (run.toml / CLI pass-through); anything else is a usage error.
CONVERT_OPTIONS: dict[str, tuple[str, ...]] = {name: adapter.options for name, adapter in ADAPTERS.items()}

"""Every dataset format segpipe converts, declared once: a typed options class and one `FormatSpec` in FORMATS.

From this table are derived the `segpipe convert FMT` commands (their options, defaults and help texts), the
`segpipe run --format` choices and the `[convert]` keys of run.toml, the runner's per-format adapter
(segpipe.plan.formats), `segpipe.convert(fmt, src, out, **options)`, and the layout described when nothing
was converted. A new format is one converter module (an in-memory `*_conversion` function and a `convert_*`
writer) plus one entry here.

Nothing heavy is imported here: the converter functions are named by module and attribute and imported when
called, so that the command line's help starts without numpy or OpenCV.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:
    from segpipe.converters.conversion_output import Conversion
    from segpipe.converters.export import Exporter
    from segpipe.converters.report import ConversionReport

PathKind = Literal["dir", "file", "any"]
# Options that name the dataset's other inputs: `segpipe run` takes them as top-level settings (images, classes,
# list_file), not as `[convert]` keys.
INPUT_OPTIONS: tuple[str, ...] = ("images", "classes", "list_file")


def option(default: Any, help: str, *, path: PathKind | None = None, choices: tuple[str, ...] | None = None,
           flag: bool = False, negatable: bool = False, cli: str | None = None, required: bool = False,
           show_default: bool = False, min_value: int | None = None, run: bool = True) -> Any:
    """A field of an options class, with what its command-line option needs: its help text, its type (`path`:
    an existing folder/file, `choices`, `flag`: an on/off switch, `negatable`: a --x/--no-x pair, `min_value`:
    an integer range), `cli`: the flag when it is not the field's name, `run`: False when `segpipe run` does
    not take it (a conversion of a shard cannot write shared files)."""
    meta = {"help": help, "path": path, "choices": choices, "flag": flag, "negatable": negatable, "cli": cli,
            "required": required, "show_default": show_default, "min_value": min_value, "run": run}
    if required:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


_STRICT = "Stop at the first error instead of reporting it and going on."
_WORKERS = "Processes used to decode and encode files [default: all cores]."
_BORDER = ("Trimap border pixels (value 3): ignored (255 in semantic maps, not part of the pet mask), "
           "counted as pet, or counted as background.")
_CATEGORIES = "Granularity of the instance categories: one per breed, cat/dog, or a single 'pet'."
_BOX_MASKS = ("When the dataset mixes boxes and masks, give each box-only annotation its rectangle as `segmentation` "
              "(attribute segmentation_from_box), so that torchvision's v2 wrapper and pycocotools annToMask see one mask "
              "per box. The summary and the report say so either way.")
_RECTANGLE = ("Also give box annotations a one-polygon `segmentation` (the box itself), for loaders that need a mask "
              "for every annotation (torchvision's Mask R-CNN training, pycocotools annToMask). Off by default: such "
              "masks are rectangles, not object shapes.")
BORDER_CHOICES = ("ignore", "foreground", "background")
CATEGORY_CHOICES = ("breed", "species", "pet")
DIFFICULT_CHOICES = ("count", "ignore")


@dataclass(frozen=True)
class VocOptions:
    images: Path | None = option(None, "Folder with the images, searched recursively by the XML's stem (default: beside each XML).", path="dir")
    classes: Path | None = option(
        None, "LabelImg classes.txt / predefined_classes.txt: one name per line, fixes category order and "
        "ids; labels not in it are error rows. Default: sorted label names.", path="file")
    one_based: bool = option(
        False, "Pascal VOC's 1-based pixel convention: bbox = [xmin-1, ymin-1, xmax-xmin+1, ymax-ymin+1]. "
        "Default: LabelImg's pixel-corner convention, bbox = [xmin, ymin, xmax-xmin, ymax-ymin].", flag=True)
    difficult: str = option(
        "count", "<difficult>1</difficult> boxes: counted as objects, or written with iscrowd=1 so that COCOeval "
        "ignores them (neither a hit nor a miss; detections on them are not false positives).",
        choices=DIFFICULT_CHOICES, show_default=True)
    size_from_xml: bool = option(
        False, "Convert an XML whose image is absent with the XML's <size> (a warning row each), file_name = the "
        "XML's path with <filename>'s extension: box-only datasets shipped without images. Off: such XMLs are error rows.", flag=True)
    rectangle_segmentation: bool = option(False, _RECTANGLE, flag=True)
    strict: bool = option(False, _STRICT, flag=True)
    workers: int | None = option(None, _WORKERS, min_value=1, run=False)


@dataclass(frozen=True)
class TrimapOptions:
    images: Path = option(None, "Folder with the images, matched to trimaps by stem.", path="dir", required=True)
    list_file: Path | None = option(None, "Oxford-IIIT Pet list.txt (Image CLASS-ID SPECIES BREED-ID): breed order and species.",
                                    path="file", cli="--list")
    border: str = option("ignore", _BORDER, choices=BORDER_CHOICES, show_default=True)
    categories: str = option("breed", _CATEGORIES, choices=CATEGORY_CHOICES, show_default=True)
    strict: bool = option(False, _STRICT, flag=True)
    workers: int | None = option(None, _WORKERS, min_value=1, run=False)


@dataclass(frozen=True)
class OxfordPetOptions:
    border: str = option("ignore", _BORDER, choices=BORDER_CHOICES, show_default=True)
    categories: str = option("breed", _CATEGORIES, choices=CATEGORY_CHOICES, show_default=True)
    split: str | None = option(None, "Keep only the images of annotations/<split>.txt [default: all images].", choices=("trainval", "test"))
    strict: bool = option(False, _STRICT, flag=True)
    workers: int | None = option(None, _WORKERS, min_value=1, run=False)


@dataclass(frozen=True)
class YoloOptions:
    classes: Path | None = option(
        None, "classes.txt (LabelImg) or data.yaml (Ultralytics `names`) [default: SRC/data.yaml, SRC/classes.txt "
        "or SRC/labels/classes.txt]. Required one way or the other: indices mean nothing without names.", path="file")
    rectangle_segmentation: bool = option(False, _RECTANGLE, flag=True)
    box_masks: bool = option(True, _BOX_MASKS, negatable=True, show_default=True)
    strict: bool = option(False, _STRICT, flag=True)


@dataclass(frozen=True)
class LabelmeOptions:
    classes: Path | None = option(None, "One name per line: fixes category order; other labels are error rows. Default: sorted labels.", path="file")
    # A shard's conversion cannot write OUT/images/: `segpipe run` reads the images from disk.
    embedded_images: bool = option(False, "Write each JSON's embedded imageData to OUT/images/ and use those images (off: images from disk).",
                                   flag=True, run=False)
    rectangle_segmentation: bool = option(False, _RECTANGLE, flag=True)
    box_masks: bool = option(True, _BOX_MASKS, negatable=True, show_default=True)
    strict: bool = option(False, _STRICT, flag=True)


@dataclass(frozen=True)
class CvatOptions:
    images: Path | None = option(
        None, "Image root the <image name=...> paths are relative to [default: images/ beside the XML, else its folder].", path="dir")
    rectangle_segmentation: bool = option(False, _RECTANGLE, flag=True)
    box_masks: bool = option(True, _BOX_MASKS, negatable=True, show_default=True)
    strict: bool = option(False, _STRICT, flag=True)


@dataclass(frozen=True)
class VocSegOptions:
    classes: Path | None = option(None, "Class names in index order, background first [default: the 21 Pascal VOC classes].", path="file")
    strict: bool = option(False, _STRICT, flag=True)


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


def _suffix(*suffixes: str) -> Callable[[str], bool]:
    return lambda rel: rel.lower().endswith(suffixes)


def _never(rel: str) -> bool:
    return False


def _no_subdir(root: Path) -> str:
    return ""


def _voc_problem(src: Path, options: Mapping[str, Any]) -> str | None:
    from segpipe.converters.layout_hints import voc_source_problem

    return voc_source_problem(src, images=options.get("images"))


def _pet_problem(src: Path, options: Mapping[str, Any]) -> str | None:
    from segpipe.converters.layout_hints import oxford_pet_root_problem

    return oxford_pet_root_problem(src)


def _find_yolo_classes(root: Path) -> Any:
    from segpipe.converters.yolo import find_class_file

    return find_class_file(root)


def _call(target: str, *args: Any, **kwargs: Any) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


@dataclass(frozen=True)
class FormatSpec:
    """One dataset format: its converter, options, layout and what `segpipe run` needs to shard it."""

    name: str
    summary: str  # the `segpipe convert FMT` command's help
    options: type  # a frozen dataclass: one field per converter option (name, type, default, help)
    conversion: str  # "module:function": (src, *, files=None, **options) -> Conversion, in memory
    writer: str  # "module:function": (src, out, **options) -> ConversionReport, writes OUT
    layout: str  # what the converter looks for, in words (the message of a conversion that converted nothing)
    is_annotation: Callable[[str], bool]  # a path relative to the dataset root: does it annotate one image stem?
    image_subdir: Callable[[Path], str] = _no_subdir  # where the images are under the dataset root ("" = the root)
    source_argument: str = "src"  # the command's argument (ROOT for a fixed layout)
    source_path: PathKind = "dir"  # SRC is a folder, or also a file (CVAT's XML)
    out_after: int = 0  # -o/--out comes after this many options in the help (where it always stood)
    # A folder that is not what the format expects: the reason and what to type instead, or None.
    source_problem: Callable[[Path, Mapping[str, Any]], str | None] | None = None
    # One file annotates every image (CVAT's annotations.xml): editing it changes every shard anyway, so the
    # dataset is one shard and no shard reports the others' images as missing.
    single_shard: bool = False
    # Only images with an annotation file are part of the dataset (VOC's JPEGImages holds 17,125 images, of
    # which 2,913 are segmented): the others are neither converted nor inferred.
    annotated_only: bool = False
    # A fixed layout under one root (Oxford-IIIT Pet): no separate image folder, classes or list file.
    layout_root: bool = False
    # Where the class names are found when no classes file is given (YOLO's data.yaml / classes.txt): raises an
    # AnnotationError when there are none. None: the classes option, when given, is a plain list of names.
    find_classes: Callable[[Path], Any] | None = None

    @property
    def fields(self) -> tuple[dataclasses.Field[Any], ...]:
        return dataclasses.fields(self.options)

    @property
    def option_names(self) -> tuple[str, ...]:
        """Every option `segpipe convert FMT` and `segpipe.convert(FMT, ...)` take (`-` of the flag written `_`)."""
        return tuple(f.name for f in self.fields)

    @property
    def run_options(self) -> tuple[str, ...]:
        """The `[convert]` keys of run.toml for this format (its inputs are top-level settings)."""
        return tuple(f.name for f in self.fields if f.metadata["run"] and f.name not in INPUT_OPTIONS)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.name in INPUT_OPTIONS)

    @property
    def needs_images(self) -> bool:
        """The annotations' folder holds no images (trimaps): the image folder is required."""
        return any(f.name == "images" and f.metadata["required"] for f in self.fields)

    @property
    def parallel(self) -> bool:
        """The converter takes `workers` (processes); a shard of `segpipe run` converts with one."""
        return "workers" in self.option_names

    @property
    def exporter(self) -> Exporter | None:
        """The `segpipe export` writer of this format, if it has one (segpipe.converters.export.EXPORTERS)."""
        from segpipe.converters.export import EXPORTERS

        return EXPORTERS.get(self.name)

    def checked_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """`options` with the defaults filled in, as the options class types them; an unknown or missing option
        is an OptionError (a SegpipeError) naming the allowed ones."""
        from segpipe.core.errors import OptionError

        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise OptionError(unknown[0], f"not an option of the {self.name} converter (allowed: {', '.join(self.option_names)})")
        missing = [f.name for f in self.fields if f.metadata["required"] and options.get(f.name) is None]
        if missing:
            raise OptionError(missing[0], f"required by the {self.name} converter (options: {', '.join(self.option_names)})")
        return dataclasses.asdict(self.options(**options))

    def convert(self, src: Path, *, files: Any = None, **options: Any) -> Conversion:
        """The in-memory conversion (only `files` of the dataset when they are listed)."""
        result: Conversion = _call(self.conversion, src, files=files, **options)
        return result

    def write(self, src: Path, out: Path, **options: Any) -> ConversionReport:
        """Convert `src` into the dataset dir `out` (instances.json, dataset.json, conversion_report.csv, ...)."""
        report: ConversionReport = _call(self.writer, src, out, **self.checked_options(options))
        return report


FORMATS: Mapping[str, FormatSpec] = {
    spec.name: spec for spec in (
        FormatSpec(
            "oxford-pet",
            "The whole Oxford-IIIT Pet layout (images/, annotations/{trimaps,xmls,list.txt,trainval.txt,test.txt})\n"
            "-> instances.json (pet masks), heads.json (head boxes, cat/dog), semantic/ maps.",
            OxfordPetOptions, "segpipe.converters.oxford_pet:oxford_pet_conversion", "segpipe.converters.oxford_pet:convert_oxford_pet",
            "an Oxford-IIIT Pet root: images/*.jpg and annotations/trimaps/*.png",
            _pet_annotation, lambda root: "images", source_argument="root", source_problem=_pet_problem, layout_root=True),
        FormatSpec(
            "voc", "LabelImg / Pascal VOC XML boxes: every *.xml under SRC (recursive) -> OUT/instances.json.",
            VocOptions, "segpipe.converters.voc:voc_conversion", "segpipe.converters.voc:convert_voc",
            "Pascal VOC / LabelImg .xml files (recursive), each with its image beside it or under --images",
            _suffix(".xml"), source_problem=_voc_problem),
        FormatSpec(
            "trimap", "Oxford-IIIT-Pet-style trimap PNGs (1 pet, 2 background, 3 border) -> instances + semantic maps.",
            TrimapOptions, "segpipe.converters.trimap:trimap_conversion", "segpipe.converters.trimap:convert_trimap",
            "trimap .png files, each with its image (same stem) under --images",
            _suffix(".png"), out_after=1),
        FormatSpec(
            "yolo",
            "YOLO txt labels (boxes `c cx cy w h` and Ultralytics polygons `c x y x y ...`, normalised) -> OUT/instances.json.\n"
            "Labels are found the Ultralytics way (images/ -> labels/) or beside each image.",
            YoloOptions, "segpipe.converters.yolo:yolo_conversion", "segpipe.converters.yolo:convert_yolo",
            "images with YOLO .txt labels (labels/ beside images/, the .txt beside its image, or darknet's obj_<subset>_data/)",
            _yolo_label, find_classes=_find_yolo_classes),
        FormatSpec(
            "labelme", "LabelMe JSON (rectangles, polygons, circles; points become report rows) -> OUT/instances.json.",
            LabelmeOptions, "segpipe.converters.labelme:labelme_conversion", "segpipe.converters.labelme:convert_labelme",
            "LabelMe .json files (recursive), each naming its image in imagePath or with the image beside it",
            _suffix(".json")),
        FormatSpec(
            "cvat", "CVAT for images 1.1 XML (SRC: the XML, or a folder with annotations.xml): boxes, polygons, masks -> OUT/instances.json.",
            CvatOptions, "segpipe.converters.cvat:cvat_conversion", "segpipe.converters.cvat:convert_cvat",
            "a CVAT for images 1.1 XML (annotations.xml) whose <image> names are found under images/ (or images/<subset>/)",
            _never, lambda root: "images" if (root / "images").is_dir() else "", source_path="any", single_shard=True),
        FormatSpec(
            "voc-seg",
            "Pascal VOC SegmentationClass (+ SegmentationObject, Annotations) PNGs under ROOT -> OUT/semantic/ label maps\n"
            "and OUT/instances.json (one annotation per object, XML boxes cross-checked).",
            VocSegOptions, "segpipe.converters.voc_segmentation:voc_segmentation_conversion",
            "segpipe.converters.voc_segmentation:convert_voc_segmentation",
            "VOC SegmentationClass/*.png with their JPEGImages/*.jpg",
            _voc_seg_annotation, lambda root: "JPEGImages", source_argument="root", annotated_only=True),
    )
}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)


def format_spec(name: str, *, where: Path | str = "") -> FormatSpec:
    """The registry entry of `name`; an unknown name is a SegpipeError listing the known ones."""
    if name not in FORMATS:
        from segpipe.core.errors import SegpipeError

        raise SegpipeError(where, "format", f"unknown dataset format {name!r} (choose from {', '.join(FORMATS)})")
    return FORMATS[name]

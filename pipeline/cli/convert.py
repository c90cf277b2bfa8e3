"""`segpipe convert voc|trimap|oxford-pet|yolo|labelme|cvat|voc-seg`: annotation folders in, a converted dataset directory out.

Every command writes OUT/conversion_report.csv and prints a one-line summary. Exit codes: 0 when the
report has no error row, 3 when some inputs were skipped as errors (the good ones are still written),
4 when --strict stopped at the first error; 2 is a usage error (click), and so is a conversion that
converted no image at all, whatever the format: the message says which layout was looked for and what
the folder holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from segpipe.converters.errors import AnnotationError
from segpipe.converters.report import EXIT_STRICT_ABORT, REPORT_FILE_NAME, ConversionReport, StrictModeError

BORDER_CHOICES = ("ignore", "foreground", "background")
CATEGORY_CHOICES = ("breed", "species", "pet")
DIFFICULT_CHOICES = ("count", "ignore")

_out_option = click.option(
    "-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Output dataset directory (instances.json, conversion_report.csv, ...). Created if missing.",
)
_strict_option = click.option("--strict", is_flag=True, help="Stop at the first error instead of reporting it and going on.")
_workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Processes used to decode and encode files [default: all cores].",
)
_border_option = click.option(
    "--border", type=click.Choice(BORDER_CHOICES), default="ignore", show_default=True,
    help="Trimap border pixels (value 3): ignored (255 in semantic maps, not part of the pet mask), "
    "counted as pet, or counted as background.",
)
_categories_option = click.option(
    "--categories", type=click.Choice(CATEGORY_CHOICES), default="breed", show_default=True,
    help="Granularity of the instance categories: one per breed, cat/dog, or a single 'pet'.",
)

_box_masks_option = click.option(
    "--box-masks/--no-box-masks", default=True, show_default=True,
    help="When the dataset mixes boxes and masks, give each box-only annotation its rectangle as `segmentation` "
    "(attribute segmentation_from_box), so that torchvision's v2 wrapper and pycocotools annToMask see one mask "
    "per box. The summary and the report say so either way.",
)

_rectangle_option = click.option(
    "--rectangle-segmentation", is_flag=True,
    help="Also give box annotations a one-polygon `segmentation` (the box itself), for loaders that need a mask "
    "for every annotation (torchvision's Mask R-CNN training, pycocotools annToMask). Off by default: such "
    "masks are rectangles, not object shapes.",
)


# Fields of the converters' errors that are command-line options.
OPTION_FIELDS: tuple[str, ...] = ("classes", "images", "list_file")


def _refuse_wrong_folder(problem: str | None) -> None:
    """A folder that is not what the format expects stops here (usage error, exit 2), before OUT is touched."""
    if problem is not None:
        raise click.UsageError(problem)


# glibc gives the top of its heap back to the kernel whenever enough of it is free, and a converter frees its
# per-image arrays (about a megabyte for a 500x375 trimap) at the end of every image, so each image page-faults
# them in again: most of the extra system time of `segpipe convert trimap` over a bare loop, whose arrays
# happen to stay alive from one iteration to the next. Padding the heap top (mallopt M_TOP_PAD,
# https://man7.org/linux/man-pages/man3/mallopt.3.html) keeps that memory mapped for the process's lifetime.
M_TOP_PAD = -2
HEAP_TOP_PAD_BYTES = 16 * 2**20


def pad_heap_top() -> bool:
    """Ask glibc to keep HEAP_TOP_PAD_BYTES mapped at its heap top; False where the C library has no mallopt."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to tune
        return False
    return bool(mallopt(M_TOP_PAD, HEAP_TOP_PAD_BYTES))


def _finish(out: Path, run: Callable[[], ConversionReport], *, format: str = "", src: Path | None = None) -> None:
    pad_heap_top()
    try:
        report = run()
    except StrictModeError as err:
        click.echo(f"error (--strict): {err}", err=True)
        raise SystemExit(EXIT_STRICT_ABORT) from err
    except AnnotationError as err:
        # Raised before any file is converted: the source, or an option's file or folder (--classes, --images), is unusable.
        if err.field in OPTION_FIELDS:  # the library names the field; the command line says it with its flag
            raise click.BadParameter(f"{err.path}: {err.reason}", param_hint=f"--{err.field.replace('_', '-')}") from err
        raise click.UsageError(str(err)) from err
    if src is not None and (report.written is None or report.written[0] == 0):
        from segpipe.converters.layout_hints import nothing_converted_message

        raise click.UsageError(nothing_converted_message(format, src, rows=len(report.findings), report=out / REPORT_FILE_NAME))
    counts = ""
    if report.written is not None:
        counts = f"{report.written[0]} images, {report.written[1]} annotations, {report.written[2]} categories"
    click.echo(report.summary_line(what=f"converted {counts} -> {out}") + f" ({out / REPORT_FILE_NAME})")
    from segpipe.converters.coco import MIXED_BOX_MASK_CODE

    for finding in report.findings:
        if finding.code == MIXED_BOX_MASK_CODE:
            click.echo(finding.message)
    raise SystemExit(report.exit_code())


@click.group()
def convert() -> None:
    """Convert an annotation folder to a COCO dataset directory.

    OUT receives instances.json (COCO, masks as compressed RLE, ids from 1 in sorted-path order),
    dataset.json (where the images live), semantic/ label maps for trimap formats, and
    conversion_report.csv (file, severity, code, message: one row per problem found).
    """


@convert.command("voc")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_out_option
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder with the images, searched recursively by the XML's stem (default: beside each XML).")
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="LabelImg classes.txt / predefined_classes.txt: one name per line, fixes category order and "
              "ids; labels not in it are error rows. Default: sorted label names.")
@click.option("--one-based", is_flag=True,
              help="Pascal VOC's 1-based pixel convention: bbox = [xmin-1, ymin-1, xmax-xmin+1, ymax-ymin+1]. "
              "Default: LabelImg's pixel-corner convention, bbox = [xmin, ymin, xmax-xmin, ymax-ymin].")
@click.option("--difficult", type=click.Choice(DIFFICULT_CHOICES), default="count", show_default=True,
              help="<difficult>1</difficult> boxes: counted as objects, or written with iscrowd=1 so that COCOeval "
              "ignores them (neither a hit nor a miss; detections on them are not false positives).")
@click.option("--size-from-xml", is_flag=True,
              help="Convert an XML whose image is absent with the XML's <size> (a warning row each), file_name = the "
              "XML's path with <filename>'s extension: box-only datasets shipped without images. Off: such XMLs are error rows.")
@_rectangle_option
@_strict_option
@_workers_option
def convert_voc_cmd(src: Path, out: Path, images: Path | None, classes: Path | None, one_based: bool, difficult: str,
                    size_from_xml: bool, rectangle_segmentation: bool, strict: bool, workers: int | None) -> None:
    """LabelImg / Pascal VOC XML boxes: every *.xml under SRC (recursive) -> OUT/instances.json."""
    from segpipe.converters.layout_hints import voc_source_problem
    from segpipe.converters.voc import convert_voc

    _refuse_wrong_folder(voc_source_problem(src, images=images))
    _finish(out, lambda: convert_voc(src, out, images=images, classes=classes, one_based=one_based, difficult=difficult,
                                     size_from_xml=size_from_xml, rectangle_segmentation=rectangle_segmentation,
                                     strict=strict, workers=workers), format="voc", src=src)


@convert.command("trimap")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with the images, matched to trimaps by stem.")
@_out_option
@click.option("--list", "list_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Oxford-IIIT Pet list.txt (Image CLASS-ID SPECIES BREED-ID): breed order and species.")
@_border_option
@_categories_option
@_strict_option
@_workers_option
def convert_trimap_cmd(src: Path, images: Path, out: Path, list_file: Path | None, border: str, categories: str,
                       strict: bool, workers: int | None) -> None:
    """Oxford-IIIT-Pet-style trimap PNGs (1 pet, 2 background, 3 border) -> instances + semantic maps."""
    from segpipe.converters.trimap import convert_trimap

    _finish(out, lambda: convert_trimap(src, out, images=images, list_file=list_file, border=border,
                                        categories=categories, strict=strict, workers=workers), format="trimap", src=src)


@convert.command("oxford-pet")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_out_option
@_border_option
@_categories_option
@click.option("--split", type=click.Choice(("trainval", "test")), default=None,
              help="Keep only the images of annotations/<split>.txt [default: all images].")
@_strict_option
@_workers_option
def convert_oxford_pet_cmd(root: Path, out: Path, border: str, categories: str, split: str | None, strict: bool,
                           workers: int | None) -> None:
    """The whole Oxford-IIIT Pet layout (images/, annotations/{trimaps,xmls,list.txt,trainval.txt,test.txt})
    -> instances.json (pet masks), heads.json (head boxes, cat/dog), semantic/ maps."""
    from segpipe.converters.layout_hints import oxford_pet_root_problem
    from segpipe.converters.oxford_pet import convert_oxford_pet

    _refuse_wrong_folder(oxford_pet_root_problem(root))
    _finish(out, lambda: convert_oxford_pet(root, out, border=border, categories=categories, split=split,
                                            strict=strict, workers=workers), format="oxford-pet", src=root)



@convert.command("yolo")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_out_option
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="classes.txt (LabelImg) or data.yaml (Ultralytics `names`) [default: SRC/data.yaml, SRC/classes.txt "
              "or SRC/labels/classes.txt]. Required one way or the other: indices mean nothing without names.")
@_rectangle_option
@_box_masks_option
@_strict_option
def convert_yolo_cmd(src: Path, out: Path, classes: Path | None, rectangle_segmentation: bool, box_masks: bool, strict: bool) -> None:
    """YOLO txt labels (boxes `c cx cy w h` and Ultralytics polygons `c x y x y ...`, normalised) -> OUT/instances.json.
    Labels are found the Ultralytics way (images/ -> labels/) or beside each image."""
    from segpipe.converters.yolo import convert_yolo

    _finish(out, lambda: convert_yolo(src, out, classes=classes, rectangle_segmentation=rectangle_segmentation, box_masks=box_masks, strict=strict),
            format="yolo", src=src)


@convert.command("labelme")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_out_option
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="One name per line: fixes category order; other labels are error rows. Default: sorted labels.")
@click.option("--embedded-images", is_flag=True,
              help="Write each JSON's embedded imageData to OUT/images/ and use those images (off: images from disk).")
@_rectangle_option
@_box_masks_option
@_strict_option
def convert_labelme_cmd(src: Path, out: Path, classes: Path | None, embedded_images: bool, rectangle_segmentation: bool, box_masks: bool,
                        strict: bool) -> None:
    """LabelMe JSON (rectangles, polygons, circles; points become report rows) -> OUT/instances.json."""
    from segpipe.converters.labelme import convert_labelme

    _finish(out, lambda: convert_labelme(src, out, classes=classes, embedded_images=embedded_images,
                                         rectangle_segmentation=rectangle_segmentation, box_masks=box_masks, strict=strict),
            format="labelme", src=src)


@convert.command("cvat")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@_out_option
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Image root the <image name=...> paths are relative to [default: images/ beside the XML, else its folder].")
@_rectangle_option
@_box_masks_option
@_strict_option
def convert_cvat_cmd(src: Path, out: Path, images: Path | None, rectangle_segmentation: bool, box_masks: bool, strict: bool) -> None:
    """CVAT for images 1.1 XML (SRC: the XML, or a folder with annotations.xml): boxes, polygons, masks -> OUT/instances.json."""
    from segpipe.converters.cvat import convert_cvat

    _finish(out, lambda: convert_cvat(src, out, images=images, rectangle_segmentation=rectangle_segmentation, box_masks=box_masks, strict=strict),
            format="cvat", src=src)


@convert.command("voc-seg")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_out_option
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Class names in index order, background first [default: the 21 Pascal VOC classes].")
@_strict_option
def convert_voc_seg_cmd(root: Path, out: Path, classes: Path | None, strict: bool) -> None:
    """Pascal VOC SegmentationClass (+ SegmentationObject, Annotations) PNGs under ROOT -> OUT/semantic/ label maps
    and OUT/instances.json (one annotation per object, XML boxes cross-checked)."""
    from segpipe.converters.voc_segmentation import convert_voc_segmentation

    _finish(out, lambda: convert_voc_segmentation(root, out, classes=classes, strict=strict), format="voc-seg", src=root)

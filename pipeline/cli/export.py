"""`segpipe export yolo|voc|labelme|cvat DATASET -o OUT`: a converted dataset (or a COCO json with its images)
written in the format people label in; `segpipe convert FORMAT OUT` reads it back.

Exit codes (as `segpipe convert`): 0 when OUT/export_report.csv has no error row, 3 when some objects or
images could not be written (the rest is written); 2 is a usage error.
"""

from __future__ import annotations

from pathlib import Path

import click

EXPORT_CHOICES: tuple[str, ...] = ("yolo", "voc", "labelme", "cvat")  # segpipe.converters.export.EXPORTERS, kept in step by a test


@click.command("export")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(EXPORT_CHOICES))
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the dataset in FORMAT into (images copied, export_report.csv). Created if missing.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Image root of a bare COCO json [default: found beside the json, as `segpipe audit` does; a dataset dir's dataset.json].")
@click.option("--yolo-task", type=click.Choice(("segment", "detect")), default="segment", show_default=True,
              help="yolo only: masks as polygons (segment) or every object as its box (detect).")
def export(fmt: str, dataset: Path, out: Path, images: Path | None, yolo_task: str) -> None:
    """Export DATASET (a converted dataset dir, or a COCO json with its images) to FORMAT: yolo (Ultralytics
    images/, labels/, data.yaml), voc (LabelImg XML + SegmentationClass/SegmentationObject PNGs), labelme
    (JSON beside each image) or cvat (CVAT for images 1.1 XML, masks as CVAT's run-lengths). What FORMAT
    cannot hold (crowd regions, holes in polygon outlines, overlapping masks in VOC PNGs) is a row of
    OUT/export_report.csv, never dropped silently."""
    from segpipe.core.errors import AnnotationError
    from segpipe.converters.export import EXPORT_REPORT_FILE, EXPORTERS
    from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS

    from segpipe.core.out_manifest import EXPORT, begin_rewrite, finish_rewrite

    exporter = EXPORTERS[fmt]
    options = {"task": yolo_task} if fmt == "yolo" else {}
    what = f"a {fmt} export"
    # A conversion's or an inference's folder is refused (exit 2) before anything is written; an earlier export
    # into OUT is removed first, so a yolo export followed by a labelme one leaves no labels/ for a reader to find.
    before = begin_rewrite(out, command=EXPORT, what=what)
    try:
        report = exporter.write(dataset, out, images=images, **options)
    except AnnotationError as err:
        raise click.UsageError(str(err)) from err
    finish_rewrite(out, command=EXPORT, what=what, before=before)
    c = report.counts()
    click.echo(f"exported {dataset} as {fmt} -> {out}; {c['error']} error(s), {c['warning']} warning(s), {c['info']} info row(s) "
               f"in {out / EXPORT_REPORT_FILE}; read it back with `segpipe convert {exporter.reader.format(out=out)}`")
    raise SystemExit(EXIT_SKIPPED_ERRORS if report.has_errors else EXIT_OK)

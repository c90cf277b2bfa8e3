"""`segpipe evaluate instances|semantic`: score predictions against a dataset into report tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import click

from segpipe.cli import LazyGroup, Subcommand

EVALUATE_PAGE = "report.html"  # what segpipe.reports.html writes; not imported here (it pulls in matplotlib)
NO_HTML_HELP = "Write the tables only, no report.html (build it later with `segpipe report REPORT`)."
ALLOW_MISMATCH_HELP = ("Score predictions whose recorded label space (the category/class names `segpipe infer` wrote) "
                       "differs from the ground truth's (a warning instead of a usage error).")
ALLOW_PARTIAL_HELP = ("Score the predictions of an unfinished (interrupted) `segpipe infer`; the images it has not "
                      "reached count as missed.")


class _LazyEvaluate(LazyGroup):
    subcommands = {
        "instances": Subcommand("segpipe.cli.evaluate_instances", "instances",
                                "Score COCO results: mask or box mAP with pycocotools' numbers, per class and per image."),
        "semantic": Subcommand("segpipe.cli.evaluate_semantic", "semantic",
                               "Score semantic label maps: mIoU, Dice, pixel accuracy, per class and per image."),
    }


def announce_report(out: Path, *, text: str, warnings: Sequence[str], html: bool = True, gallery: object = None) -> None:
    """The end of both evaluate commands: tables on stdout, warnings on stderr, then report.html unless `html`
    is False (a page left from an earlier run is removed then, so it never shows other numbers than the tables).

    `gallery` is a segpipe.reports.gallery.GallerySource to draw thumbnails from (default: the inputs in
    header.json, read again)."""
    click.echo(text)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if not html:
        (out / EVALUATE_PAGE).unlink(missing_ok=True)
        click.echo(f"report written to {out} (tables only: `segpipe report {out}` renders {EVALUATE_PAGE})", err=True)
        return
    from segpipe.reports.html import render_evaluate_report

    page = render_evaluate_report(out, progress=sys.stderr.isatty(), gallery=gallery)  # type: ignore[arg-type]
    click.echo(f"report written to {out} ({page.name})", err=True)


@click.group(cls=_LazyEvaluate)
def evaluate() -> None:
    """Score predictions: COCO mask/box mAP (pycocotools' numbers exactly) or semantic mIoU/Dice.

    REPORT receives summary.csv, per_class.csv, per_image.csv (+ .parquet twins) and report.html.
    """

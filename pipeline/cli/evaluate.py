"""`segpipe evaluate instances|semantic`: score predictions against a dataset into report tables."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Sequence

import click

_COMMANDS = {
    "instances": ("segpipe.cli.evaluate_instances", "instances"),
    "semantic": ("segpipe.cli.evaluate_semantic", "semantic"),
}


class _LazyEvaluate(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)


def announce_report(out: Path, *, text: str, warnings: Sequence[str]) -> None:
    """The end of both evaluate commands: tables on stdout, warnings on stderr, then report.html."""
    from segpipe.reports.html import render_evaluate_report

    click.echo(text)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    page = render_evaluate_report(out, progress=sys.stderr.isatty())
    click.echo(f"report written to {out} ({page.name})", err=True)


@click.group(cls=_LazyEvaluate)
def evaluate() -> None:
    """Score predictions: COCO mask/box mAP (pycocotools' numbers exactly) or semantic mIoU/Dice.

    REPORT receives summary.csv, per_class.csv, per_image.csv (+ .parquet twins) and report.html.
    """

"""`segpipe report DIR`: re-render a report page from the tables saved in DIR, recomputing nothing."""

from __future__ import annotations

from pathlib import Path

import click

from segpipe.core.errors import SegpipeError


def detect_report_kind(directory: Path, saved_kind: str | None) -> str:
    """'evaluate', 'leaderboard', 'audit' or 'compare': the kind saved in report_inputs.json, else by the
    files present (a `segpipe compare` folder by its header and tables)."""
    if saved_kind:
        return "evaluate" if saved_kind.startswith("evaluate") else saved_kind
    if (directory / "per_class_delta.csv").is_file() and (directory / "intervals.csv").is_file():
        return "compare"
    if (directory / "leaderboard.csv").is_file():
        return "leaderboard"
    if (directory / "findings.csv").is_file():
        return "audit"
    if (directory / "per_class.csv").is_file() or (directory / "summary.csv").is_file():
        return "evaluate"
    raise click.UsageError(f"{directory}: no leaderboard.csv, findings.csv, summary.csv/per_class.csv or "
                           "intervals.csv/per_class_delta.csv (a compare folder) to render")


@click.command("report")
@click.argument("report_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--n-worst", type=click.IntRange(min=0), default=None,
              help="Images in the worst-N gallery of an evaluate report (default: as saved, else 24).")
@click.option("--top", type=click.IntRange(min=0), default=None,
              help="Thumbnails of top findings on an audit page (default: as saved, else 24).")
@click.option("--no-gallery", is_flag=True, help="Leave out the image thumbnails (tables and plots only).")
def report(report_dir: Path, n_worst: int | None, top: int | None, no_gallery: bool) -> None:
    """Re-render the HTML page of REPORT_DIR (an evaluate report, a `run` output or an audit dir) from its
    saved tables and report_inputs.json; nothing is recomputed. A `segpipe compare` folder works too."""
    import sys

    from segpipe.reports.html import read_report_inputs, render_audit_report, render_evaluate_report, render_leaderboard

    saved_kind, gallery, options = read_report_inputs(report_dir)
    kind = detect_report_kind(report_dir, saved_kind)
    gallery = None if no_gallery else gallery
    if gallery is not None:
        missing = [str(p) for p in gallery.input_paths() if not p.exists()]
        if missing:
            click.echo(f"warning: gallery inputs missing, thumbnails may be blank: {', '.join(missing)}", err=True)
    progress = sys.stderr.isatty()
    try:
        if kind == "compare":
            page = _render_compare(report_dir, gallery=not no_gallery)
        elif kind == "leaderboard":
            page = render_leaderboard(report_dir)
        elif kind == "audit":
            page = render_audit_report(report_dir, gallery=gallery, top=top if top is not None else int(options.get("top", 24)),
                                       progress=progress)
        else:
            page = render_evaluate_report(report_dir, gallery=gallery, progress=progress,
                                          n_worst=n_worst if n_worst is not None else int(options.get("n_worst", 24)))
    except (SegpipeError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {page} ({page.stat().st_size / 1e6:.2f} MB, {kind} page)")


def _render_compare(directory: Path, *, gallery: bool) -> Path:
    """compare.html again from the folder's tables; the galleries are redrawn from the prediction folders and
    the dataset that header.json names, when they are still there and are prediction folders."""
    from segpipe.cli.compare import report_records_dir
    from segpipe.reports import data as rd
    from segpipe.reports.compare_page import render_compare

    header = rd.read_json(directory / "header.json")
    sides = {side: Path(str(header[side])) for side in ("A", "B") if header.get(side)}
    dataset = Path(str(header["dataset"])) if header.get("dataset") else None
    drawable = (gallery and dataset is not None and dataset.is_dir() and len(sides) == 2
                and all(p.is_dir() and report_records_dir(p) is None for p in sides.values()))
    if gallery and not drawable and dataset is not None:
        click.echo("warning: the compared prediction folders or the dataset are gone: the page has no gallery", err=True)
    from segpipe.reports.html import read_report_inputs

    n_gallery = int(read_report_inputs(directory)[2].get("n_gallery", 6))
    return render_compare(directory, dataset=dataset if drawable else None, predictions=sides, n_gallery=n_gallery)

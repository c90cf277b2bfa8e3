"""`segpipe report DIR`: re-render a report page from the tables saved in DIR, recomputing nothing."""

from __future__ import annotations

from pathlib import Path

import click

from segpipe.errors import SegpipeError


def detect_report_kind(directory: Path, saved_kind: str | None) -> str:
    """'evaluate', 'leaderboard' or 'audit': the kind saved in report_inputs.json, else by the tables present."""
    if saved_kind:
        return "evaluate" if saved_kind.startswith("evaluate") else saved_kind
    if (directory / "leaderboard.csv").is_file():
        return "leaderboard"
    if (directory / "findings.csv").is_file():
        return "audit"
    if (directory / "per_class.csv").is_file() or (directory / "summary.csv").is_file():
        return "evaluate"
    raise click.UsageError(f"{directory}: no leaderboard.csv, findings.csv or summary.csv/per_class.csv to render")


@click.command("report")
@click.argument("report_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--n-worst", type=click.IntRange(min=0), default=None,
              help="Images in the worst-N gallery of an evaluate report (default: as saved, else 24).")
@click.option("--top", type=click.IntRange(min=0), default=None,
              help="Thumbnails of top findings on an audit page (default: as saved, else 24).")
@click.option("--no-gallery", is_flag=True, help="Leave out the image thumbnails (tables and plots only).")
def report(report_dir: Path, n_worst: int | None, top: int | None, no_gallery: bool) -> None:
    """Re-render the HTML page of REPORT_DIR (an evaluate report, a `run` output or an audit dir) from its
    saved tables and report_inputs.json; nothing is recomputed."""
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
        if kind == "leaderboard":
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

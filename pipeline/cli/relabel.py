"""`segpipe relabel apply TASK --dataset DATASET -o FIXED` and `segpipe relabel accept TASK`: the end of the
relabel loop that `segpipe audit --relabel cvat|labelme` starts (segpipe.relabel)."""

from __future__ import annotations

from pathlib import Path

import click

EXIT_OK = 0
EXIT_NOT_APPLIED = 1


@click.group("relabel")
def relabel() -> None:
    """Read a relabel task's fixes back into the dataset.

    `segpipe audit DATASET --pred PRED -o AUDIT --relabel cvat` writes AUDIT/relabel/: the flagged images with
    their annotations, the findings attached and the model's suggestions as `suggested:<class>` shapes. Fix
    them in CVAT or LabelMe (accept a suggestion by dropping the `suggested:` prefix and deleting the shape it
    replaces), export the task in the same format into the task folder, then `segpipe relabel apply`.
    """


@relabel.command("apply")
@click.argument("task", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", required=True, type=click.Path(exists=True, path_type=Path),
              help="The dataset the task was written from (a converted dataset dir, or its COCO json).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The fixed dataset dir: DATASET's files as they were, instances.json with the task's images replaced, relabel_changes.csv.")
def apply(task: Path, dataset: Path, out: Path) -> None:
    """Replace the annotations of TASK's images in DATASET with the corrected ones; everything else stays byte-identical,
    shapes still labelled `suggested:` are dropped. Writes OUT/relabel_changes.csv (added, removed, relabelled, reshaped).
    Exit 1, writing nothing, when a task image cannot be read back or names a label that is not a category."""
    from segpipe.relabel import RelabelError, apply_relabel

    if out.resolve() == dataset.resolve():
        raise click.UsageError("-o must be a new folder, not DATASET itself")
    try:
        result = apply_relabel(task, dataset, out)
    except RelabelError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(EXIT_NOT_APPLIED) from err
    counts = result.changes["change"].value_counts()
    listed = ", ".join(f"{int(counts.get(c, 0))} {c}" for c in ("added", "removed", "relabelled", "reshaped", "suggestion_dropped"))
    click.echo(f"applied {result.images} image(s) of {task} -> {out}: {listed} ({out / 'relabel_changes.csv'})")
    if result.stale_semantic_maps:
        click.echo(f"warning: {out / 'semantic'}: the label maps of {result.stale_semantic_maps} changed image(s) are DATASET's, "
                   "not redrawn from the fixed annotations; `segpipe evaluate semantic` on them scores the old labels", err=True)
    raise SystemExit(EXIT_OK)


@relabel.command("accept")
@click.argument("task", type=click.Path(exists=True, file_okay=False, path_type=Path))
def accept(task: Path) -> None:
    """Accept every suggestion of TASK in place (what an annotator who agrees with the model everywhere does):
    `suggested:` shapes renamed, the shapes they replace and the shapes marked `delete` removed."""
    from segpipe.relabel import RelabelError, accept_all

    try:
        n = accept_all(task)
    except RelabelError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(EXIT_NOT_APPLIED) from err
    click.echo(f"accepted {n} suggestion(s) in {task}")

"""`segpipe sample -o DIR`: write the embedded Oxford-IIIT-Pet-style sample dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sample")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the sample into (images/, annotations/...). Created if missing.")
@click.option("--n-images", type=click.IntRange(min=1), default=24, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: the same seed writes the same bytes.")
def sample(out: Path, n_images: int, seed: int) -> None:
    """Generate a small, deterministic dataset in the Oxford-IIIT Pet layout (images, trimaps,
    head-box XMLs, list.txt, trainval.txt, test.txt). Convert it with `segpipe convert oxford-pet`."""
    from segpipe.demo.sample import generate_sample

    root = generate_sample(out, n_images=n_images, seed=seed)
    click.echo(f"wrote {n_images} images in the Oxford-IIIT Pet layout to {root}")

"""`segpipe sample -o DIR [--format F]`: write the embedded sample dataset, in the Oxford-IIIT Pet layout or in
any other format segpipe converts (one generator: every format describes the same pets)."""

from __future__ import annotations

from pathlib import Path

import click

# The layouts `segpipe.demo.sample.write_sample` writes (listed here: the help must not import numpy and cv2).
SAMPLE_FORMATS: tuple[str, ...] = ("oxford-pet", "voc", "yolo", "labelme", "cvat", "voc-seg")


@click.command("sample")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the sample into (images/, annotations/...). Created if missing.")
@click.option("--format", "format_", type=click.Choice(SAMPLE_FORMATS), default="oxford-pet", show_default=True,
              help="Layout to write: the Oxford-IIIT Pet layout (breeds, trimaps, head boxes), or the same pets as "
              "voc / yolo boxes or labelme / cvat / voc-seg masks, with the species (cat, dog) as the category.")
@click.option("--n-images", type=click.IntRange(min=1), default=24, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: the same seed writes the same bytes.")
def sample(out: Path, format_: str, n_images: int, seed: int) -> None:
    """Generate a small, deterministic dataset in the Oxford-IIIT Pet layout (images, trimaps, head-box XMLs,
    list.txt, trainval.txt, test.txt), or the same pets in another format (--format); convert it with the
    command printed."""
    from segpipe.demo.sample import write_sample

    command = write_sample(out, format=format_, n_images=n_images, seed=seed)
    click.echo(f"wrote {n_images} images in the {format_} layout to {out}; convert it with: {command}")

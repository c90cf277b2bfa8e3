"""`segpipe demo -o DIR` (`make demo`): the whole pipeline on the embedded sample with the shipped demo
checkpoints, on CPU. Run it twice: the second run comes from the cache."""

from __future__ import annotations

import time
from pathlib import Path

import click

DEMO_SAMPLE_IMAGES = 24


@click.command("demo")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"), show_default=True,
              help="Folder for the sample (DIR/sample), the cache (DIR/.cache) and the reports.")
@click.option("--html/--no-html", default=True, show_default=True, help="Write the HTML pages too.")
def demo(out: Path, html: bool) -> None:
    """Generate the sample, evaluate the shipped U-Net checkpoints on it and print the leaderboard."""
    from segpipe.cli.run import _echo_outcome, _echo_progress
    from segpipe.demo.checkpoints import SHIPPED_DIR
    from segpipe.runner.config import RunSettings
    from segpipe.runner.driver import run_pipeline
    from segpipe.plan.progress import RunProgress, luigi_log
    from segpipe.demo.sample import generate_sample

    sample = out / "sample"
    if not (sample / "annotations" / "list.txt").is_file():  # rewriting identical files would only cost re-hashing
        generate_sample(sample, n_images=DEMO_SAMPLE_IMAGES, seed=0)
        click.echo(f"wrote the sample dataset ({DEMO_SAMPLE_IMAGES} images) to {sample}")
    settings = RunSettings(
        dataset=sample, format="oxford-pet", model="unet", checkpoints=(str(SHIPPED_DIR / "*.pt"),), out=out,
        infer={"device": "cpu"}, html=html,
    )
    started = time.perf_counter()
    with luigi_log(verbose=False), RunProgress(echo=_echo_progress, bars=True):
        outcome = run_pipeline(settings)
    _echo_outcome(outcome, out=out)
    if (out / "leaderboard.html").is_file():
        click.echo(f"leaderboard page: {out / 'leaderboard.html'}")
    cached = " (everything came from the cache)" if not outcome.ran else " (run it again: it comes from the cache)"
    click.echo(f"demo finished in {time.perf_counter() - started:.1f} s{cached}")
    raise SystemExit(outcome.exit_code)

"""The `segpipe` command. Subcommands are imported lazily so that start-up stays cheap: torch and
torchvision are imported only by the commands that run inference, and `segpipe --help` /
`segpipe evaluate --help` import none of pandas, matplotlib or torch."""

from __future__ import annotations

import errno
import importlib
import importlib.util
from typing import Mapping, NamedTuple

import click


class Subcommand(NamedTuple):
    module: str
    attr: str
    # The start of the command's own help text, shown in the group's listing. click builds that listing by
    # importing every subcommand (Group.format_commands calls get_command for each), which would import
    # pandas/matplotlib for `--help`; tests/pipeline/test_cli_light.py checks these stay in step with the help.
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "convert": Subcommand("segpipe.cli.convert", "convert", "Convert an annotation folder to a COCO dataset directory."),
    "evaluate": Subcommand("segpipe.cli.evaluate", "evaluate",
                           "Score predictions: COCO mask/box mAP (pycocotools' numbers exactly) or semantic mIoU/Dice."),
    "infer": Subcommand("segpipe.cli.infer", "infer",
                        "Run a checkpoint over DATASET and write predictions that `segpipe evaluate` scores."),
    "run": Subcommand("segpipe.cli.run", "run",
                      "Run the whole pipeline, cached: a rerun only does what changed (inputs are fingerprinted by content)."),
    "audit": Subcommand("segpipe.cli.audit", "audit", "Audit label quality of DATASET: a converted dataset dir"),
    "report": Subcommand("segpipe.cli.report", "report",
                         "Re-render the HTML page of REPORT_DIR (an evaluate report, a `run` output or an audit dir)"),
    "sample": Subcommand("segpipe.cli.sample", "sample",
                         "Generate a small, deterministic dataset in the Oxford-IIIT Pet layout"),
    "demo": Subcommand("segpipe.cli.demo", "demo",
                       "Generate the sample, evaluate the shipped U-Net checkpoints on it and print the leaderboard."),
    "compare": Subcommand("segpipe.cli.compare", "compare",
                          "Compare two models' predictions on one dataset: deltas per class and per image, paired bootstrap"),
    "export": Subcommand("segpipe.cli.export", "export", "Export DATASET (a converted dataset dir, or a COCO json with its images) to FORMAT: yolo"),
    "relabel": Subcommand("segpipe.cli.relabel", "relabel", "Read a relabel task's fixes back into the dataset."),
}


def _shortened(text: str, limit: int) -> str:
    """`text` cut at a word boundary to fit `limit` characters, "..." marking the cut (as click's listing does)."""
    if len(text) <= limit:
        return text
    return text[: max(1, limit - 3)].rsplit(" ", 1)[0].rstrip(",:;") + "..."


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported only when that subcommand runs."""

    subcommands: Mapping[str, Subcommand] = SUBCOMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, sub in self.subcommands.items() if importlib.util.find_spec(sub.module) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        sub = self.subcommands.get(cmd_name)
        if sub is None or importlib.util.find_spec(sub.module) is None:
            return None
        command: click.Command = getattr(importlib.import_module(sub.module), sub.attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing of click's Group.format_commands, from the summaries instead of the imported commands."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        with formatter.section("Commands"):
            formatter.write_dl([(n, _shortened(self.subcommands[n].summary, limit)) for n in names])

    def invoke(self, ctx: click.Context) -> object:
        """A file-system failure while writing outputs (read-only OUT, full disk, a path through a file) is a
        message naming the path and what to do, exit 1, not a traceback; every output is written atomically,
        so a rerun after fixing it recovers."""
        from segpipe.core.out_manifest import OutputFolderError

        try:
            return super().invoke(ctx)
        except OutputFolderError as err:  # OUT holds another command's outputs: choose another folder
            raise click.UsageError(str(err)) from err
        except OSError as err:
            if isinstance(err, BrokenPipeError):  # click reports a closed stdout itself
                raise
            where = err.filename if err.filename is not None else "an output file"
            hint = {errno.ENOSPC: "free some space", errno.EROFS: "choose a writable -o/--cache-dir",
                    errno.EACCES: "choose a writable -o/--cache-dir or fix its permissions",
                    errno.EPERM: "choose a writable -o/--cache-dir or fix its permissions",
                    errno.EDQUOT: "free some space (disk quota)"}.get(err.errno or 0, "fix the path")
            raise click.ClickException(f"{where}: {err.strerror or err}; {hint}, then run the command again "
                                       "(finished outputs are kept, half-written ones never are)") from err


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="segpipe")
def main() -> None:
    """segpipe: convert segmentation annotations to COCO, run checkpoints over datasets, score them
    (pycocotools mask/box mAP, mIoU, Dice) and audit label quality, with every stage cached.

    Start with `segpipe sample -o sample` to get a small Oxford-IIIT-Pet-style dataset, then
    `segpipe convert oxford-pet sample -o converted`.
    """

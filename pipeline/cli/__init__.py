"""The `segpipe` command. Subcommands are imported lazily so that start-up stays cheap: torch and
torchvision are imported only by the commands that run inference (design.md, "Performance habits")."""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> (module, attribute). A module that is not there yet is simply not listed.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("segpipe.cli.convert", "convert"),
    "evaluate": ("segpipe.cli.evaluate", "evaluate"),
    "infer": ("segpipe.cli.infer", "infer"),
    "run": ("segpipe.cli.run", "run"),
    "audit": ("segpipe.cli.audit", "audit"),
    "report": ("segpipe.cli.report", "report"),
    "sample": ("segpipe.cli.sample", "sample"),
    "demo": ("segpipe.cli.demo", "demo"),
    "compare": ("segpipe.cli.compare", "compare"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _) in SUBCOMMANDS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        mod_name, attr = SUBCOMMANDS[cmd_name]
        if importlib.util.find_spec(mod_name) is None:
            return None
        return getattr(importlib.import_module(mod_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="segpipe")
def main() -> None:
    """segpipe: convert segmentation annotations to COCO, run checkpoints over datasets, score them
    (pycocotools mask/box mAP, mIoU, Dice) and audit label quality, with every stage cached.

    Start with `segpipe sample -o sample` to get a small Oxford-IIIT-Pet-style dataset, then
    `segpipe convert oxford-pet sample -o converted`.
    """

"""Commands that do nothing heavy stay light, and `evaluate --no-html` leaves the page for `segpipe report`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from segpipe.cli import SUBCOMMANDS, main
from segpipe.cli.evaluate import EVALUATE_PAGE, _LazyEvaluate, evaluate
from tests.evaluators.test_instance import make_dataset

HEAVY = ("pandas", "matplotlib", "torch", "torchvision", "jinja2")
_PROBE = """
import json, sys
from segpipe.cli import main
sys.argv = ["segpipe", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as done:
    assert done.code in (0, None), done.code
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["evaluate", "instances", "--help"]],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    """In a fresh interpreter: sys.modules after the help is printed holds none of the heavy libraries."""
    code = _PROBE.format(heavy=repr(HEAVY))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    assert "Usage: segpipe" in done.stdout
    assert json.loads(lines[-1]) == []


@pytest.mark.parametrize(("group", "subcommands"), [(main, SUBCOMMANDS), (evaluate, _LazyEvaluate.subcommands)],
                         ids=["segpipe", "evaluate"])
def test_listing_summaries_are_the_start_of_each_commands_help(group: click.Group, subcommands: dict) -> None:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        assert " ".join((command.help or "").split()).startswith(subcommands[name].summary), name


def test_page_name_and_header_name_match_the_report_modules() -> None:
    from segpipe.cli.evaluate_instances import HEADER_FILE_NAME
    from segpipe.reports.html import EVALUATE_PAGE as RENDERED
    from segpipe.reports.tables import REPORT_HEADER_FILE

    assert (EVALUATE_PAGE, HEADER_FILE_NAME) == (RENDERED, REPORT_HEADER_FILE)


def test_no_html_writes_tables_only_and_report_renders_the_page_later(tmp_path: Path) -> None:
    gt, results = make_dataset(seed=3, n_images=6)
    (tmp_path / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    out = tmp_path / "report"
    args = ["evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json"), "-o", str(out)]
    with_page = CliRunner().invoke(main, args, catch_exceptions=False)
    assert with_page.exit_code == 0, with_page.output
    page = (out / EVALUATE_PAGE).read_text(encoding="utf-8")
    assert "<img" in page  # the gallery drew from the JSON parsed by the evaluation
    summary = (out / "summary.csv").read_bytes()
    done = CliRunner().invoke(main, [*args, "--no-html"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert (out / "summary.csv").read_bytes() == summary
    assert not (out / EVALUATE_PAGE).exists()  # the earlier page is gone, not left beside newer tables
    assert "segpipe report" in done.stderr
    rendered = CliRunner().invoke(main, ["report", str(out)], catch_exceptions=False)
    assert rendered.exit_code == 0, rendered.output
    assert (out / EVALUATE_PAGE).read_text(encoding="utf-8").count("<img") == page.count("<img")


def test_scoring_instances_needs_no_pandas() -> None:
    """`evaluate instances` frees its parsed JSON before the tables import pandas: scoring must not import it."""
    code = """
import sys
from segpipe.evaluators.instance.evaluation import instance_update
from tests.evaluators.test_instance import make_dataset
gt, results = make_dataset(seed=3, n_images=6)
stats = instance_update(gt, results, iou_type="segm")
assert len(stats.det_image) > 0
print(sorted(m for m in ("pandas", "pyarrow", "matplotlib") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')) == []

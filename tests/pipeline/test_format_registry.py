"""Each dataset format is declared once (segpipe.converters.formats.FORMATS): the `segpipe convert FMT` commands,
`segpipe run --format` and its run.toml keys, the runner's adapters and `segpipe.convert()` all agree with it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import segpipe
from segpipe.cli import main
from segpipe.cli.convert import convert as convert_group
from segpipe.converters.formats import FORMAT_NAMES, FORMATS, INPUT_OPTIONS
from segpipe.core.errors import SegpipeError

REPO = Path(__file__).resolve().parents[2]


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name not in ("out", "help") and p.name is not None}


def test_the_convert_group_has_one_command_per_registered_format() -> None:
    assert sorted(convert_group.list_commands(click.Context(convert_group))) == sorted(FORMAT_NAMES)
    assert len(FORMAT_NAMES) == 7
    help_text = CliRunner().invoke(main, ["convert", "--help"]).output
    for name in FORMAT_NAMES:
        assert f"\n  {name} " in help_text, name


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_the_cli_options_are_the_registry_options(fmt: str) -> None:
    """Option names, types, defaults, help texts: each click option is its options-class field."""
    spec = FORMATS[fmt]
    command = convert_group.commands[fmt]
    options = _options(command)
    assert tuple(options) == spec.option_names
    for f in spec.fields:
        opt = options[f.name]
        assert isinstance(opt, click.Option)
        assert opt.help == f.metadata["help"]
        assert opt.required == f.metadata["required"]
        if not f.metadata["required"]:
            assert opt.get_default(click.Context(command)) == f.default, f.name
        assert opt.is_flag == (f.metadata["flag"] or f.metadata["negatable"]), f.name
        if f.metadata["choices"] is not None:
            assert isinstance(opt.type, click.Choice) and tuple(opt.type.choices) == f.metadata["choices"]
        if f.metadata["path"] is not None:
            assert isinstance(opt.type, click.Path) and opt.type.exists
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    assert [a.name for a in arguments] == [spec.source_argument]


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_both_converter_signatures_take_the_registry_options_with_its_defaults(fmt: str) -> None:
    """The writer (`convert_*`) and the in-memory conversion (`*_conversion`) repeat the options: here they are
    held to the options class, so that neither drifts (a default changed in one place only)."""
    import importlib

    spec = FORMATS[fmt]
    for target, names in ((spec.writer, spec.option_names), (spec.conversion, spec.run_options + spec.inputs)):
        module, function = target.split(":")
        parameters = inspect.signature(getattr(importlib.import_module(module), function)).parameters
        for f in spec.fields:
            if f.name not in names:
                continue
            assert f.name in parameters, f"{target} lacks {f.name}"
            if not f.metadata["required"]:
                assert parameters[f.name].default == f.default, f"{target}: {f.name}"
    assert dataclasses.is_dataclass(spec.options) and spec.options.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_run_formats_keys_and_adapters_come_from_the_registry() -> None:
    from segpipe.cli.run import RUN_FORMATS, run
    from segpipe.runner.config import RunConfigError, parse_run_settings
    from segpipe.plan.formats import ADAPTERS, CONVERT_OPTIONS

    assert RUN_FORMATS == FORMAT_NAMES == tuple(ADAPTERS)
    format_option = next(p for p in run.params if p.name == "format_")
    assert isinstance(format_option.type, click.Choice) and tuple(format_option.type.choices) == FORMAT_NAMES
    run_flags = {p.name for p in run.params}
    for name, spec in FORMATS.items():
        assert CONVERT_OPTIONS[name] == spec.run_options
        assert not set(spec.run_options) & set(INPUT_OPTIONS)
        adapter = ADAPTERS[name]
        assert (adapter.single_shard, adapter.annotated_only, adapter.layout_root, adapter.needs_images) == (
            spec.single_shard, spec.annotated_only, spec.layout_root, spec.needs_images)
        for key in spec.run_options:  # every [convert] key is accepted, and a command-line flag of run is one of them
            settings = parse_run_settings({"convert": {key: spec.options.__dataclass_fields__[key].default}}, source="t", overrides={
                "dataset": "d", "format": name, "model": "unet", "checkpoints": ["c"], "out": "o"})
            assert key in settings.convert or spec.options.__dataclass_fields__[key].default is None
        with pytest.raises(RunConfigError, match=f"not an option of the {name} converter"):
            parse_run_settings({"convert": {"no_such_option": 1}}, source="t", overrides={
                "dataset": "d", "format": name, "model": "unet", "checkpoints": ["c"], "out": "o"})
    all_run_options = {k for spec in FORMATS.values() for k in spec.run_options}
    assert {"border", "categories", "split", "one_based", "difficult", "size_from_xml", "rectangle_segmentation", "strict"} <= run_flags & all_run_options


def test_api_convert_refuses_unknown_options_and_formats_naming_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(SegpipeError, match="not an option of the voc converter.*allowed: images, classes, one_based"):
        segpipe.convert("voc", tmp_path, tmp_path / "out", one_bassed=True)
    with pytest.raises(ValueError):  # an option error is also a ValueError, as Python's own argument errors are
        segpipe.convert("yolo", tmp_path, tmp_path / "out", workers=2)  # the yolo command has no --workers
    with pytest.raises(SegpipeError, match="images: required by the trimap converter"):
        segpipe.convert("trimap", tmp_path, tmp_path / "out")
    with pytest.raises(SegpipeError, match=r"unknown dataset format 'coco' \(choose from oxford-pet, voc, trimap"):
        segpipe.convert("coco", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# A non-default option or two per format, so that the comparison below checks options get through the same way.
EXTRA_ARGS: dict[str, list[str]] = {
    "oxford-pet": ["--categories", "species", "--border", "foreground", "--split", "trainval", "--workers", "1"],
    "voc": ["--one-based", "--difficult", "ignore", "--rectangle-segmentation"],
    "trimap": ["--categories", "pet", "--workers", "1"],
    "yolo": ["--rectangle-segmentation", "--no-box-masks"],
    "labelme": ["--rectangle-segmentation", "--no-box-masks"],
    "cvat": ["--no-box-masks", "--strict"],
    "voc-seg": ["--strict"],
}


def _sample_command(fmt: str, root: Path) -> list[str]:
    """`segpipe sample --format F` writes the sample and prints its convert command; trimap uses the Oxford-IIIT
    Pet sample's trimaps and images."""
    sample_format = "oxford-pet" if fmt == "trimap" else fmt
    result = CliRunner().invoke(main, ["sample", "-o", str(root), "--format", sample_format, "--n-images", "4"])
    assert result.exit_code == 0, result.output
    if fmt == "trimap":
        return ["trimap", str(root / "annotations/trimaps"), "--images", str(root / "images"), "--list", str(root / "annotations/list.txt")]
    words = shlex.split(result.output.rsplit("convert it with: ", 1)[1])
    assert words[:2] == ["segpipe", "convert"] and words[-2:] == ["-o", "OUT"]
    return words[2:-2]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_the_api_and_the_cli_convert_the_sample_to_the_same_bytes(tmp_path: Path, fmt: str) -> None:
    args = _sample_command(fmt, tmp_path / "sample") + EXTRA_ARGS.get(fmt, [])
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    result = CliRunner().invoke(main, ["convert", *args, "-o", str(cli_out)])
    assert result.exit_code == 0, result.output
    # The API's keywords, read off the command line by the command's own parser.
    command = convert_group.commands[fmt]
    params = command.make_context(fmt, args[1:] + ["-o", str(api_out)]).params
    src = params.pop(FORMATS[fmt].source_argument)
    assert params.pop("out") == api_out
    report = segpipe.convert(fmt, src, api_out, **params)
    cli_tree, api_tree = _tree(cli_out), _tree(api_out)
    assert "instances.json" in cli_tree and "conversion_report.csv" in cli_tree
    assert sorted(cli_tree) == sorted(api_tree)
    for name in cli_tree:
        assert cli_tree[name] == api_tree[name], name
    assert list(report.columns) == ["file", "severity", "code", "message"]
    # And with only the non-default options given by name (the defaults of the API are the CLI's).
    given = {k: v for k, v in params.items() if v != FORMATS[fmt].options.__dataclass_fields__[k].default}
    segpipe.convert(fmt, src, tmp_path / "api2", **given)
    assert _tree(tmp_path / "api2") == cli_tree


def _format_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string constants naming a registered format, outside docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FORMATS and id(node) not in docstrings]


# Modules outside converters/ that name a format for a feature of that format alone (not a list of the formats
# every new format must join). Any other module naming a format fails the test below.
FORMAT_FEATURES: dict[str, str] = {
    "pipeline/relabel.py": "writing relabelled annotations back into CVAT XML / LabelMe JSON",
    "pipeline/cli/audit.py": "audit --relabel's choice: the formats relabel writes",
    "pipeline/cli/export.py": "export's choices, checked against EXPORTERS by test_export_rows",
    "pipeline/cli/sample.py": "the sample's layouts (segpipe.demo.sample writes each)",
    "pipeline/demo/sample.py": "one sample writer per layout",
    "pipeline/cli/demo.py": "the demo runs the Oxford-IIIT Pet sample",
    "pipeline/inference/class_tables.py": "'voc' there is a model class table (the 21 VOC classes), not the format",
    "pipeline/cli/infer.py": "'voc' there is a model class table, not the format",
    "pipeline/cli/run.py": "'voc' there is --class-table's choice, not the format",
    "evaluators/audit/dataset.py": "the trimap formats' border pixels",
}


def test_a_new_format_is_one_converter_module_and_one_registry_entry() -> None:
    """No module outside converters/ enumerates the formats: the CLI, `segpipe run`, the runner and the API read
    the registry, so a new format touches converters/<fmt>.py and one FORMATS entry, nothing else."""
    named: dict[str, list[tuple[int, str]]] = {}
    for package in ("pipeline", "evaluators"):
        for path in sorted((REPO / package).rglob("*.py")):
            found = _format_literals(path)
            if found:
                named[path.relative_to(REPO).as_posix()] = found
    unexpected = {path: found for path, found in named.items() if path not in FORMAT_FEATURES}
    assert not unexpected, f"format names outside the registry: {unexpected}"
    for path, found in named.items():
        # A feature of some formats, never the whole list: a list of every format belongs in the registry.
        assert {text for _, text in found} != set(FORMATS), f"{path} lists every format: derive it from segpipe.converters.formats"
    for path in ("pipeline/cli/convert.py", "pipeline/plan/formats.py", "pipeline/api.py", "pipeline/runner/config.py"):
        assert path not in named, path
    # In converters/, besides each converter's own module, only the registry and the exporters name formats.
    converters = {p.relative_to(REPO).as_posix() for p in (REPO / "converters").rglob("*.py") if _format_literals(p)}
    own = {f"converters/{m.split(':')[0].rsplit('.', 1)[1]}.py" for spec in FORMATS.values() for m in (spec.conversion, spec.writer)}
    assert converters - own - {"converters/formats.py"} <= {"converters/export.py", "converters/export_voc.py", "converters/export_labelme.py",
                                                            "converters/export_yolo.py", "converters/export_cvat.py"}


def test_each_format_declares_its_layout_and_its_exporter() -> None:
    from segpipe.converters.export import EXPORTERS
    from segpipe.converters.layout_hints import nothing_converted_message

    for name, spec in FORMATS.items():
        assert spec.layout and spec.layout in nothing_converted_message(name, REPO, rows=0, report=REPO / "r.csv")
        assert (spec.exporter is not None) == (name in EXPORTERS)
    assert set(EXPORTERS) <= set(FORMATS)


def test_the_format_guide_lists_every_registered_format_with_real_flags() -> None:
    """docs/formats.md shows one `segpipe convert FMT` line per format; each flag it shows is an option of that
    command (the guide is checked against the registry, not the other way round)."""
    guide = REPO / "docs" / "formats.md"
    if not guide.is_file():
        pytest.skip("no docs/formats.md in this checkout")
    lines = {line.split()[2]: line for line in guide.read_text(encoding="utf-8").splitlines()
             if line.startswith("segpipe convert ") and len(line.split()) > 2}
    assert set(lines) == set(FORMAT_NAMES)
    for fmt, line in lines.items():
        shown = {word.strip("[]").split("=")[0] for word in line.split("#")[0].split() if word.strip("[").startswith("--")}
        flags = {flag for p in convert_group.commands[fmt].params for flag in (*p.opts, *p.secondary_opts)}
        assert shown <= flags, (fmt, shown - flags)

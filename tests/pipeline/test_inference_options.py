"""Every inference option is declared once (segpipe.inference.options.InferenceOptions): `segpipe infer`'s options,
`segpipe run`'s flags and run.toml `[infer]` keys, the inference key of the cache and `segpipe.infer()` all agree
with it; and the model card is read once per process."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import segpipe
from segpipe.cache.fingerprints import options_key
from segpipe.cli import main
from segpipe.cli.infer import infer as infer_command
from segpipe.cli.run import INFER_PARAMS, run as run_command
from segpipe.inference.checkpoints import OPTIONS, InferenceError
from segpipe.inference.options import FIELDS, OPTION_NAMES, RUN_KEYS, InferenceOptions
from segpipe.runner.config import RunConfigError, parse_run_settings

# One value other than the default per option: as the command line spells it, and as Python gives it.
SAMPLES: dict[str, tuple[list[str], Any]] = {
    "num_classes": (["--num-classes", "3"], 3),
    "classes": (["--classes", "background,cat,dog"], ["background", "cat", "dog"]),
    "class_table": (["--class-table", "voc"], "voc"),
    "class_map": (["--class-map", "cat=pet,dog=pet"], "cat=pet,dog=pet"),
    "device": (["--device", "CPU"], "cpu"),
    "batch_size": (["--batch-size", "2"], 2),
    "precision": (["--precision", "bf16"], "bf16"),
    "score_threshold": (["--score-threshold", "0.3"], 0.3),
    "resize": (["--resize", "512"], "512"),
    "size_bucket": (["--size-bucket", "32"], 32),
    "compile": (["--compile"], True),
    "trust_checkpoint": (["--trust-checkpoint"], True),
    "workers": (["--workers", "0"], 0),
}
# How InferenceOptions keeps what it was given as text.
NORMALISED: dict[str, Any] = {"classes": ("background", "cat", "dog"), "class_map": {"cat": "pet", "dog": "pet"}, "resize": 512}
# Values the command line refuses (exit 2), and so must Python and run.toml.
BAD: dict[str, tuple[str, Any]] = {
    "num_classes": ("0", 0), "class_table": ("imagenet", "imagenet"), "device": ("gpu", "gpu"), "batch_size": ("0", 0),
    "precision": ("fp8", "fp8"), "score_threshold": ("1.5", 1.5), "resize": ("huge", "huge"), "size_bucket": ("2048", 2048),
    "workers": ("-1", -1),
}
REQUIRED = ["--model", "unet", "--checkpoint", __file__, "--dataset", str(Path(__file__).parent), "-o", "unused"]


def _infer_options() -> dict[str, click.Option]:
    return {str(p.name): p for p in infer_command.params
            if isinstance(p, click.Option) and p.name not in ("model_name", "checkpoint", "dataset", "out", "quiet", "help")}


def test_infer_cli_options_are_the_declaration() -> None:
    """Names, order, defaults, help texts, types and ranges of `segpipe infer`'s options: each is its field."""
    options = _infer_options()
    assert tuple(options) == OPTION_NAMES == tuple(SAMPLES)
    ctx = click.Context(infer_command)
    for f in FIELDS:
        opt, meta = options[f.name], f.metadata
        assert opt.help == meta["help"] and opt.get_default(ctx) == f.default, f.name
        assert opt.is_flag == meta["flag"] and bool(opt.show_default) == meta["show_default"], f.name
        assert opt.opts == [f"--{f.name.replace('_', '-')}"]
        if meta["choices"] is not None:
            assert isinstance(opt.type, click.Choice) and tuple(opt.type.choices) == meta["choices"]
        if meta["number"] is not None:
            assert isinstance(opt.type, (click.IntRange, click.FloatRange))
            assert (opt.type.min, opt.type.max) == (meta["min_value"], meta["max_value"]), f.name
    assert dataclasses.is_dataclass(InferenceOptions) and InferenceOptions.__dataclass_params__.frozen  # type: ignore[attr-defined]


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[InferenceOptions]:
    """What run_inference is called with, by the CLI and by the API (nothing runs)."""
    import segpipe.inference.engine as engine

    seen: list[InferenceOptions] = []

    def fake(**kwargs: Any) -> Any:
        seen.append(kwargs["options"])
        raise InferenceError(OPTIONS, "", "stop here")

    monkeypatch.setattr(engine, "run_inference", fake)
    return seen


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_api_and_the_cli_agree_on_every_inference_option(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _captured(monkeypatch)
    args, value = SAMPLES[name]
    result = CliRunner().invoke(main, ["infer", *REQUIRED[:-1], str(tmp_path / "cli"), *args])
    assert "stop here" in result.output, result.output
    with pytest.raises(InferenceError, match="stop here"):
        segpipe.infer(model="unet", checkpoint=__file__, dataset=tmp_path, out=tmp_path / "api", **{name: value})
    cli_options, api_options = seen
    assert cli_options == api_options != InferenceOptions()
    assert getattr(api_options, name) == NORMALISED.get(name, value)


@pytest.mark.parametrize("name", list(BAD))
def test_what_the_cli_refuses_the_api_and_run_toml_refuse(name: str, tmp_path: Path) -> None:
    text, value = BAD[name]
    flag = f"--{name.replace('_', '-')}"
    result = CliRunner().invoke(main, ["infer", *REQUIRED[:-1], str(tmp_path / "p"), flag, text])
    assert result.exit_code == 2, result.output
    with pytest.raises(InferenceError) as err:
        segpipe.infer(model="unet", checkpoint=__file__, dataset=tmp_path, out=tmp_path / "p", **{name: value})
    assert (err.value.path, err.value.field) == (OPTIONS, name)
    key = RUN_KEYS[OPTION_NAMES.index(name)]
    with pytest.raises(RunConfigError, match=f"run.toml: infer.{key}: "):
        parse_run_settings({"infer": {key: value}}, overrides=_RUN, source="run.toml")
    assert not (tmp_path / "p").exists()


def test_the_api_refuses_an_unknown_option_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="batch_sise: not an inference option .known: num_classes, classes, "):
        segpipe.infer(model="unet", checkpoint=__file__, dataset=tmp_path, out=tmp_path / "p", batch_sise=2)


_RUN = {"dataset": "d", "format": "oxford-pet", "model": "unet", "checkpoints": ["c"], "out": "o"}


def test_segpipe_run_takes_every_inference_option_as_a_flag_and_a_run_toml_key() -> None:
    run_flags = {p.name: p for p in run_command.params}
    assert tuple(INFER_PARAMS.values()) == RUN_KEYS
    assert RUN_KEYS == tuple("loader_workers" if n == "workers" else n for n in OPTION_NAMES)
    assert {"model_classes", "loader_workers"} <= set(INFER_PARAMS) <= set(run_flags)
    for (param, key), f in zip(INFER_PARAMS.items(), FIELDS):
        assert run_flags[param].get_default(click.Context(run_command)) is None  # not given: run.toml or the default
        args, value = SAMPLES[f.name]
        from_toml = parse_run_settings({"infer": {key: value}}, overrides=_RUN, source="run.toml").inference
        ctx = run_command.make_context("run", [f"--{param.replace('_', '-')}", *args[1:]])  # parsed, not run
        given = {k: ctx.params[p] for p, k in INFER_PARAMS.items() if ctx.params[p] is not None and ctx.params[p] is not False}
        from_cli = parse_run_settings({}, overrides={**_RUN, "infer": given}, source="command line").inference
        assert from_toml == from_cli == InferenceOptions.from_mapping({f.name: value}), f.name
    with pytest.raises(RunConfigError, match="infer.batch_sise: not an inference option .num_classes, classes, "):
        parse_run_settings({"infer": {"batch_sise": 2}}, overrides=_RUN, source="run.toml")


def test_the_inference_key_holds_the_options_that_differ_from_the_defaults() -> None:
    """The key of a run that gives options is what it was when the key was the given `[infer]` table minus
    loader_workers (the cached predictions of such runs stay valid); an option given at its default value
    no longer changes the key, and a speed option never does."""
    infer = {"device": "cpu", "batch_size": 2, "resize": "Native", "classes": "background,pet", "loader_workers": 0,
             "class_map": "cat=pet", "score_threshold": 0.25}
    settings = parse_run_settings({"infer": infer}, overrides=_RUN, source="run.toml")
    before = {"device": "cpu", "batch_size": 2, "resize": "native", "classes": ["background", "pet"], "class_map": {"cat": "pet"},
              "score_threshold": 0.25}
    assert options_key({"model": "unet", **settings.inference.key_items()}) == options_key({"model": "unet", **before})
    with_defaults = parse_run_settings({"infer": {**infer, "precision": "fp32", "compile": False}}, overrides=_RUN, source="run.toml")
    assert with_defaults.inference.key_items() == settings.inference.key_items()
    faster = parse_run_settings({"infer": {**infer, "loader_workers": 4}}, overrides=_RUN, source="run.toml")
    assert faster.inference.key_items() == settings.inference.key_items() and faster.inference.workers == 4
    assert dict(settings.infer)["classes"] == ("background", "pet")  # the names, not the text, go into the key


def test_the_model_card_is_read_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole `segpipe run` (one worker: the driver and every task in this process) parses each checkpoint's
    card once, though each checkpoint has two inference tasks (groups) that each open a session."""
    import segpipe.inference.checkpoints as checkpoints
    from segpipe.runner.driver import run_pipeline
    from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, settings_for

    dataset = make_dataset(tmp_path / "pets", n_images=8)
    for seed in (0, 1):
        make_checkpoint(tmp_path / "ckpts" / f"m{seed}.pt", seed=seed)
    parsed: list[Path] = []
    real = checkpoints.parse_model_card

    def counting(data: Any, *, path: Path) -> Any:
        parsed.append(path)
        return real(data, path=path)

    monkeypatch.setattr(checkpoints, "parse_model_card", counting)
    opened: list[Any] = []
    import segpipe.tasks.evaluate as evaluate

    real_open = evaluate.open_session
    monkeypatch.setattr(evaluate, "open_session", lambda **kw: opened.append(kw["card"]) or real_open(**kw))
    outcome = run_pipeline(settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=1))
    assert outcome.exit_code == 0, outcome.failed
    assert sorted(p.name for p in parsed) == ["m0.json", "m1.json"]
    assert len(opened) >= 4 and all(card is not None and card.unet_depth == 1 for card in opened)


@pytest.mark.parametrize("command", ["infer", "run"])
def test_help_built_from_the_declaration_imports_no_torch(command: str) -> None:
    """The options are derived from InferenceOptions without torch: `--help` stays instant."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\nfrom segpipe.cli import main\nsys.argv = ['segpipe', %r, '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in ('torch', 'torchvision', 'pandas', 'numpy') if m in sys.modules)))") % command
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--batch-size" in done.stdout and json.loads(done.stdout.strip().splitlines()[-1]) == []

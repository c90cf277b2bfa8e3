"""`segpipe run` progress: a line per finished task with a count and an ETA, from Luigi's events whatever the
task classes; quiet with -q, JSONL with --log-jsonl; one line (no traceback) for a broken checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from segpipe.cli import main
from segpipe.runner.driver import EXIT_TASKS_FAILED
from segpipe.plan.progress import RunProgress, format_line, image_progress, luigi_log
from tests.pipeline.pipeline_fixtures import cli_args, make_checkpoint, make_dataset, run_cli_subprocess, settings_for


class _Leaf(luigi.Task):
    """Plain Luigi tasks, unrelated to segpipe's: the reporter must only need Luigi's events."""

    root = luigi.Parameter()
    n = luigi.IntParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(str(self.root)) / f"leaf{self.n}.txt"))

    def run(self) -> None:
        Path(self.output().path).write_text("x")


class _Top(luigi.Task):
    root = luigi.Parameter()
    fail = luigi.BoolParameter(default=False)

    def requires(self) -> list[_Leaf]:
        return [_Leaf(root=self.root, n=i) for i in range(3)]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(str(self.root)) / "top.txt"))

    def run(self) -> None:
        if self.fail:
            raise RuntimeError("boom\nsecond line")
        Path(self.output().path).write_text("x")


def _build(root: Path, *, workers: int, lines: list[str], jsonl: Path, fail: bool = False) -> None:
    with luigi_log(verbose=False), RunProgress(echo=lines.append, jsonl=jsonl, workers=workers):
        luigi.build([_Top(root=str(root), fail=fail)], local_scheduler=True, workers=workers, log_level="WARNING")


@pytest.mark.parametrize("workers", [1, 2])
def test_one_line_per_task_with_count_total_and_eta(tmp_path: Path, workers: int) -> None:
    lines: list[str] = []
    log = tmp_path / "log.jsonl"
    _build(tmp_path, workers=workers, lines=lines, jsonl=log)
    assert len(lines) == 4, lines  # events of forked workers reach the driver's process too
    assert all("ran" in ln for ln in lines)
    assert [ln.split("]")[0] for ln in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]  # total known before any ran
    assert "ETA" in lines[1] and lines[-1].endswith("all scheduled tasks done")
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["ran"] * 4
    assert sorted(r["stage"] for r in records) == ["_Leaf", "_Leaf", "_Leaf", "_Top"]
    assert all(r["seconds"] >= 0 for r in records) and records[-1]["done"] == records[-1]["total"] == 4

    again: list[str] = []
    _build(tmp_path, workers=workers, lines=again, jsonl=log)
    assert again == ["[4/4] cached 4 task(s): _Leaf x3, _Top  | all scheduled tasks done"]


def test_a_failure_is_one_line_and_what_never_ran_is_counted(tmp_path: Path) -> None:
    lines: list[str] = []
    _build(tmp_path, workers=1, lines=lines, jsonl=tmp_path / "log.jsonl", fail=True)
    failed = [ln for ln in lines if " failed " in ln]
    assert len(failed) == 1 and "RuntimeError: boom" in failed[0] and "second line" not in failed[0]


class _Looping(luigi.Task):
    """A task with a per-image loop that reports through `image_progress`, as inference shards do."""

    root = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(str(self.root)) / "loop.txt"))

    def run(self) -> None:
        update = image_progress()
        for done in range(1, 8):
            update(done, 7)
        Path(self.output().path).write_text("x")


def test_a_long_loop_shows_its_progress_in_the_scheduler(tmp_path: Path) -> None:
    task = _Looping(root=str(tmp_path))
    with RunProgress(echo=None, workers=1):
        result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    scheduler = result.worker._scheduler
    assert scheduler.get_task_status_message(task.task_id)["statusMessage"] == "7/7 images"
    assert scheduler.get_task_progress_percentage(task.task_id)["progressPercentage"] == 100


def test_format_line_names_stage_checkpoint_shard_and_duration() -> None:
    line = format_line({"event": "ran", "stage": "infer", "checkpoint": "e03", "shard": 2, "seconds": 125.0,
                        "done": 3, "total": 14, "eta_seconds": 130.0})
    assert line == "[ 3/14] ran    infer checkpoint=e03 shard=2  2m05s  | 11 left, ETA 2m10s"


def test_run_prints_progress_and_one_line_for_a_broken_checkpoint(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=6)
    make_checkpoint(tmp_path / "ckpts" / "good.pt", seed=0)
    (tmp_path / "ckpts" / "bad.pt").write_text('{"not": "a checkpoint"}')
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=3)
    log = tmp_path / "progress.jsonl"
    proc = run_cli_subprocess([*cli_args(settings), "--log-jsonl", str(log)])
    assert proc.returncode == EXIT_TASKS_FAILED, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "INFO" not in proc.stderr
    broken = [ln for ln in proc.stderr.splitlines() if "bad.pt" in ln]
    # the progress line and the run's summary line; both say broken, neither suggests unsafe loading
    assert len(broken) == 2, proc.stderr
    assert all("broken checkpoint" in ln and "JSON file" in ln and "pass --trust-checkpoint" not in ln for ln in broken)
    assert any("infer+evaluate checkpoint=good group=1" in ln and " ran " in ln for ln in proc.stderr.splitlines())
    assert "task(s) not run" in proc.stderr
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert {r["event"] for r in records} == {"ran", "failed", "not_run"}
    assert sum(r["event"] == "failed" for r in records) == 2  # both inference tasks (groups) of the bad checkpoint, in the log
    board = pd.read_csv(settings.out / "leaderboard.csv", keep_default_na=False).set_index("checkpoint")
    assert board.loc["bad", "status"] == "failed" and "broken checkpoint" in board.loc["bad", "error"]

    quiet = run_cli_subprocess([*cli_args(settings), "-q"])
    assert "] " not in quiet.stderr and "checkpoint bad FAILED" in quiet.stderr
    verbose = run_cli_subprocess([*cli_args(settings), "-v"])
    assert "Traceback" in verbose.stderr


def _converted(tmp_path: Path, n_images: int = 6) -> tuple[Path, Path]:
    make_dataset(tmp_path / "pets", n_images=n_images)
    # In this process: the dataset is the setup here, the convert command's own process is tested elsewhere.
    result = _invoke(["convert", "oxford-pet", str(tmp_path / "pets"), "-o", str(tmp_path / "converted")])
    assert result.exit_code == 0, result.output
    return tmp_path / "converted", make_checkpoint(tmp_path / "ckpts" / "good.pt", seed=0)


def _invoke(args: list[str]) -> Result:
    """`segpipe ARGS` in this process (CliRunner: stdout and stderr apart, neither a terminal)."""
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _infer_args(converted: Path, checkpoint: Path, out: Path) -> list[str]:
    return ["infer", "--model", "unet", "--checkpoint", str(checkpoint), "--dataset", str(converted), "-o", str(out),
            "--device", "cpu", "--batch-size", "2", "--workers", "0"]


def test_infer_prints_plain_progress_lines_in_a_pipe_and_nothing_with_q(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converted, checkpoint = _converted(tmp_path)
    monkeypatch.setenv("SEGPIPE_PROGRESS_INTERVAL", "0")  # every batch, so that a 6-image run shows the lines in between
    proc = run_cli_subprocess(_infer_args(converted, checkpoint, tmp_path / "preds"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("infer good.pt: ")]
    assert lines[0] == "infer good.pt: 0/6 images"  # printed once the model is loaded, before the first batch
    assert [ln.split(": ")[1].split(" ")[0] for ln in lines] == ["0/6", "2/6", "4/6", "6/6"]
    assert all(" images/s, ETA " in ln for ln in lines[1:-1]) and lines[-1].endswith(" images/s, done")
    assert "\r" not in proc.stderr  # no bar off a terminal
    assert f"predictions: {tmp_path / 'preds' / 'semantic'}/" in proc.stdout and "segpipe evaluate semantic --gt" in proc.stdout

    # The cadence and -q in this process (the real process's pipe is proven above): the same code, no second torch import.
    monkeypatch.setenv("SEGPIPE_PROGRESS_INTERVAL", "3600")  # the default cadence: the first and the last line only
    proc = _invoke(_infer_args(converted, checkpoint, tmp_path / "preds2"))
    assert [ln.split(": ")[1].split(" ")[0] for ln in proc.stderr.splitlines() if ln.startswith("infer good.pt: ")] == ["0/6", "6/6"]
    quiet = _invoke([*_infer_args(converted, checkpoint, tmp_path / "preds3"), "-q"])
    assert quiet.exit_code == 0 and "images/s" not in quiet.stderr and "6/6 images" in quiet.stdout


def test_infer_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    converted, checkpoint = _converted(tmp_path)
    master, slave = pty.openpty()
    code = f"from segpipe.cli import main\nmain.main(args={_infer_args(converted, checkpoint, tmp_path / 'preds')!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout, _ = proc.communicate(timeout=120)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen[-2000:]
    assert "\r" in screen and "infer good.pt:" in screen  # a tqdm bar redrawn in place
    assert "6/6" in screen and "img/s" in screen and "<" in screen  # done/total, the rate, elapsed<remaining
    assert "infer good.pt: 0/6 images" not in screen  # the plain lines are for pipes
    assert b"6/6 images -> " in stdout


def test_run_surfaces_the_inference_tasks_per_image_progress_and_names_the_pages(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=6)
    make_checkpoint(tmp_path / "ckpts" / "good.pt", seed=0)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=3, html=True)
    monkeypatch.setenv("SEGPIPE_PROGRESS_INTERVAL", "0")
    proc = run_cli_subprocess(cli_args(settings))
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_image = [ln for ln in proc.stderr.splitlines() if ln.startswith("  infer+evaluate checkpoint=good group=")]
    assert per_image, proc.stderr
    assert any(ln.endswith(" images/s, done") for ln in per_image)
    assert any(" images/s, ETA " in ln for ln in per_image) or all("done" in ln or ln.endswith(" images") for ln in per_image)
    assert f"leaderboard page: {settings.out / 'leaderboard.html'}" in proc.stdout
    assert (settings.out / "leaderboard.html").is_file()

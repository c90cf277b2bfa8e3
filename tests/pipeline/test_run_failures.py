"""A failing checkpoint does not stop the others; a killed run resumes without redoing finished work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from segpipe.cache.targets import MARKER_NAME
from segpipe.runner.driver import EXIT_TASKS_FAILED, run_pipeline
from tests.pipeline.pipeline_fixtures import (
    REPO_ROOT, cli_args, families, make_checkpoint, make_dataset, report_files, run_cli_subprocess, settings_for,
)


def test_corrupt_checkpoint_fails_alone_and_the_exit_code_says_so(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=6)
    make_checkpoint(tmp_path / "ckpts" / "good.pt", seed=0)
    bad = make_checkpoint(tmp_path / "ckpts" / "bad.pt", seed=1)
    bad.write_bytes(b"this is not a torch checkpoint")
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=3)
    proc = run_cli_subprocess(cli_args(settings))
    assert proc.returncode == EXIT_TASKS_FAILED, proc.stdout + proc.stderr[-3000:]
    assert "checkpoint bad FAILED" in proc.stderr
    board = pd.read_csv(settings.out / "leaderboard.csv", keep_default_na=False)
    assert list(board["checkpoint"]) == ["good", "bad"]  # failed checkpoints last
    rows = board.set_index("checkpoint")
    assert rows.loc["good", "status"] == "ok" and rows.loc["bad", "status"] == "failed"
    assert "bad.pt" in rows.loc["bad", "error"] and rows.loc["bad", "mIoU"] == ""
    assert (settings.out / "checkpoints" / "good" / "semantic" / "summary.csv").is_file()
    assert not (settings.out / "checkpoints" / "bad").exists()
    log = json.loads((settings.out / "run_log.json").read_text())
    # Its own tasks (the scheduling groups of its shards), nothing else.
    assert log["failed"] and set(families(list(log["failed"]))) == {"EvalGroup"}
    assert all(t.startswith("EvalGroup_bad_") for t in log["failed"])
    # The rerun does not redo the good checkpoint; it retries the bad one and still says so.
    again = run_pipeline(settings)
    assert again.exit_code == EXIT_TASKS_FAILED
    assert families(again.ran) == []
    assert set(again.failed_checkpoints) == {"bad"}


def _infer_markers(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"infer/**/{MARKER_NAME}"))


def test_kill_9_mid_inference_then_rerun_gives_identical_reports(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=8)
    for seed in (0, 1):
        make_checkpoint(tmp_path / "ckpts" / f"m{seed}.pt", seed=seed)
    killed = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", out=tmp_path / "killed", shard_size=2)
    code = f"from segpipe.cli import main\nmain.main(args={cli_args(killed)!r})\n"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    cache = killed.out / ".cache"
    deadline = time.monotonic() + 240
    while not _infer_markers(cache) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and any worker it forked
    proc.wait()
    n_done = len(_infer_markers(cache))
    # 8 images, 2 per shard: 4 hash shards (none empty for these names) x 2 checkpoints.
    assert 1 <= n_done < 8, f"the kill should land mid-inference ({n_done} of 8 inference shards done)"
    assert not (killed.out / "leaderboard.csv").exists()

    resumed = run_pipeline(killed)
    assert resumed.exit_code == 0, resumed.failed
    assert families(resumed.ran).count("InferShard") == 8 - n_done  # finished shards are not redone
    clean = run_pipeline(settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", out=tmp_path / "clean", shard_size=2))
    assert clean.exit_code == 0
    killed_files, clean_files = report_files(killed.out), report_files(tmp_path / "clean")
    assert "leaderboard.csv" in clean_files and "checkpoints/m0/semantic/per_image.parquet" in clean_files
    assert killed_files == clean_files

"""Two workers, one real luigid, one shared cache: how users scale out."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from segpipe.cache.targets import read_executions
from segpipe.runner.driver import run_pipeline
from tests.pipeline.pipeline_fixtures import REPO_ROOT, cli_args, families, make_checkpoint, make_dataset, report_files, settings_for

LUIGID = Path(sys.executable).with_name("luigid")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, *, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"luigid exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"luigid did not listen on 127.0.0.1:{port}")


@pytest.fixture()
def luigid(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not LUIGID.is_file() and shutil.which("luigid") is None:
        pytest.skip("luigid is not installed beside this Python")
    state = tmp_path / "luigid"
    state.mkdir()
    # luigid with its defaults, as the README starts it: it remembers a finished task for `remove_delay`
    # (600 s) and ignores a worker's claim that it is pending again for `stable_done_cooldown_secs` (10 s)
    # (https://luigi.readthedocs.io/en/stable/configuration.html#scheduler). An empty config file keeps a
    # user's own luigi.cfg out of the test.
    config = state / "luigi.cfg"
    config.write_text("", encoding="utf-8")
    port = _free_port()
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    proc = subprocess.Popen(
        [str(LUIGID if LUIGID.is_file() else shutil.which("luigid")), "--address", "127.0.0.1", "--port", str(port),
         "--state-path", str(state / "state.pickle"), "--logdir", str(state)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_two_workers_on_luigid_share_one_cache_and_run_each_task_once(tmp_path: Path, luigid: str) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=8)
    for seed in (0, 1):
        make_checkpoint(tmp_path / "ckpts" / f"m{seed}.pt", seed=seed)
    shared = tmp_path / "shared-cache"
    workers = [
        settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", out=tmp_path / f"out{i}", shard_size=2,
                     cache_dir=shared, scheduler_url=luigid)
        for i in (1, 2)
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", f"from segpipe.cli import main\nmain.main(args={cli_args(s)!r})\n"],
                         cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in workers
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err[-3000:]

    runs = Counter(e["task_id"] for e in read_executions(shared))
    assert runs and max(runs.values()) == 1, [t for t, n in runs.items() if n > 1]
    logs = [json.loads((s.out / "run_log.json").read_text()) for s in workers]
    ran = [t for log in logs for t in log["ran"]]
    assert sorted(ran) == sorted(set(ran)) == sorted(runs)  # every task ran in exactly one of the two workers
    assert all(log["ran"] for log in logs) or any(log["run_by_other_workers"] for log in logs)

    single = run_pipeline(settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", out=tmp_path / "single", shard_size=2))
    assert single.exit_code == 0
    assert len(single.ran) == len(runs)
    expected = report_files(tmp_path / "single")
    assert "leaderboard.csv" in expected
    for s in workers:
        assert report_files(s.out) == expected


def test_a_rerun_right_after_a_run_recomputes_what_was_deleted(tmp_path: Path, luigid: str) -> None:
    """luigid still holds the first run's tasks as DONE; their outputs are gone: the rerun computes them."""
    dataset = make_dataset(tmp_path / "pets", n_images=4)
    make_checkpoint(tmp_path / "ckpts" / "m0.pt", seed=0)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=2, scheduler_url=luigid)
    first = run_pipeline(settings)
    assert first.exit_code == 0 and first.ran
    expected = report_files(settings.out)
    shutil.rmtree(settings.out / ".cache")
    again = run_pipeline(settings)  # at once: within luigid's cooldown and remove_delay
    assert again.exit_code == 0, (again.failed, again.statuses)
    assert sorted(families(again.ran)) == sorted(families(first.ran))
    assert report_files(settings.out) == expected

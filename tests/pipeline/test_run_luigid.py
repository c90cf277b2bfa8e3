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
from tests.pipeline.pipeline_fixtures import REPO_ROOT, cli_args, make_checkpoint, make_dataset, report_files, settings_for

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
    config = state / "luigi.cfg"
    # stable_done_cooldown_secs=0: the scheduler re-accepts a done task at once, so a double run would show.
    config.write_text("[scheduler]\nstable_done_cooldown_secs = 0\nrecord_task_history = false\n", encoding="utf-8")
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

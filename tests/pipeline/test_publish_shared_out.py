"""Two runs publishing into one OUT: each run's temporary files are its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from segpipe.core.atomic_write import temporary_sibling
from segpipe.runner.publish import STALE_TEMPORARY_S, mirror_tree
from tests.pipeline.pipeline_fixtures import REPO_ROOT, cli_args, make_checkpoint, make_dataset, settings_for


def test_mirror_tree_leaves_another_writers_fresh_temporaries(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "semantic").mkdir(parents=True)
    (src / "semantic" / "summary.csv").write_text("a\n", encoding="utf-8")
    (dst / "semantic").mkdir(parents=True)
    (dst / "semantic" / "old.csv").write_text("stale\n", encoding="utf-8")
    live = temporary_sibling(dst / "semantic" / "summary.parquet")  # another run, between its write and rename
    live.write_bytes(b"half")
    dead = temporary_sibling(dst / "semantic" / "per_class.parquet")  # a run killed long ago
    dead.write_bytes(b"half")
    old = time.time() - STALE_TEMPORARY_S - 60
    os.utime(dead, (old, old))
    mirror_tree(src, dst)
    assert sorted(p.name for p in (dst / "semantic").iterdir()) == sorted([live.name, "summary.csv"])


def test_two_runs_into_one_out_both_exit_0(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=6)
    for seed in (0, 1):
        make_checkpoint(tmp_path / "ckpts" / f"m{seed}.pt", seed=seed)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", shard_size=2)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = f"from segpipe.cli import main\nmain.main(args={cli_args(settings)!r})\n"
    for _ in range(2):  # the cache is warm on the second round: both runs then mostly publish, at once
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, out + err[-3000:]
    board = pd.read_csv(settings.out / "leaderboard.csv")
    assert sorted(board["checkpoint"]) == ["m0", "m1"] and set(board["status"]) == {"ok"}
    assert not [p for p in settings.out.rglob(".*.tmp-*") if ".cache" not in p.parts]

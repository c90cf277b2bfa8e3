"""`segpipe run` meets the files `segpipe convert` refuses with a row: FIFOs, devices, dangling or looping
symlinks in the dataset are skipped with a located line, never opened (a FIFO would block the scan forever,
/dev/zero would be hashed forever), and the rest of the dataset is scored as without them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from segpipe.cache.fingerprints import NOT_REGULAR_REASON, NotRegularFileError, StatCache, file_sha256, scan_dataset
from tests.pipeline.pipeline_fixtures import cli_args, make_checkpoint, make_dataset, run_cli_subprocess, settings_for

SPECIAL = {
    "images/fifo.jpg": NOT_REGULAR_REASON,
    "annotations/trimaps/zero.png": NOT_REGULAR_REASON,
    "images/gone.jpg": "broken symbolic link (its target does not exist); skipped",
    "annotations/xmls/loop.xml": "symbolic link loop; skipped",
}


def _add_special_files(dataset: Path) -> None:
    os.mkfifo(dataset / "images" / "fifo.jpg")
    (dataset / "annotations" / "trimaps" / "zero.png").symlink_to("/dev/zero")
    (dataset / "images" / "gone.jpg").symlink_to(dataset / "images" / "no_such_file.jpg")
    (dataset / "annotations" / "xmls").mkdir(exist_ok=True)
    (dataset / "annotations" / "xmls" / "loop.xml").symlink_to("loop.xml")


def test_the_scan_skips_special_files_without_opening_them(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=4)
    plain = scan_dataset({"root": dataset}, stat_cache=StatCache(None)).manifest
    _add_special_files(dataset)
    scan = scan_dataset({"root": dataset}, stat_cache=StatCache(None))
    assert scan.manifest == plain
    assert dict(scan.skipped) == {os.path.join(dataset, rel): reason for rel, reason in SPECIAL.items()}
    try:
        file_sha256(dataset / "images" / "fifo.jpg")
    except NotRegularFileError as err:
        assert NOT_REGULAR_REASON in str(err)
    else:
        raise AssertionError("a FIFO was hashed")


def test_run_skips_special_files_with_a_line_and_scores_the_rest(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=4)
    make_checkpoint(tmp_path / "ckpts" / "m.pt", seed=0)
    clean = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", out=tmp_path / "clean", cache_dir=tmp_path / "c1")
    first = run_cli_subprocess(cli_args(clean), timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    _add_special_files(dataset)
    hostile = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", out=tmp_path / "hostile", cache_dir=tmp_path / "c2")
    proc = run_cli_subprocess(cli_args(hostile), timeout=300)  # a hang is a timeout, not a pass
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel, reason in SPECIAL.items():
        assert f"skipped: {os.path.join(dataset, rel)}: {reason}" in proc.stderr
    assert "Errno" not in proc.stderr
    board = pd.read_csv(hostile.out / "leaderboard.csv").drop(columns=["inputs_date"], errors="ignore")
    assert board.equals(pd.read_csv(clean.out / "leaderboard.csv").drop(columns=["inputs_date"], errors="ignore"))

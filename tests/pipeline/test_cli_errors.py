"""Usage errors exit 2; an unwritable OUT or a full disk is a message naming the path (exit 1), not a
traceback, and a rerun once it is fixed recovers."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.demo.sample import generate_sample


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("sample") / "pets", n_images=4)


def test_run_usage_errors_exit_2(sample_root: Path, tmp_path: Path) -> None:
    args = ["run", "--dataset", str(sample_root), "--format", "oxford-pet", "--model", "unet", "-o", str(tmp_path / "out"),
            "--no-audit", "--checkpoints", str(tmp_path / "none" / "*.pt")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "no checkpoint file matches" in result.output and "Traceback" not in result.output
    args[2] = str(tmp_path / "missing")
    (tmp_path / "c.pt").write_bytes(b"x")
    args[-1] = str(tmp_path / "c.pt")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "missing" in result.output


def test_out_below_a_file_is_a_message(sample_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["convert", "oxford-pet", str(sample_root), "-o", str(blocker / "out")])
    assert result.exit_code == 1, result.output
    assert f"Error: {blocker / 'out'}" in result.output and "then run the command again" in result.output
    assert not isinstance(result.exception, OSError) or isinstance(result.exception, SystemExit)


def test_full_disk_is_a_message_and_a_rerun_recovers(sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = tmp_path / "clean"
    assert CliRunner().invoke(main, ["convert", "oxford-pet", str(sample_root), "-o", str(clean)]).exit_code == 0
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync_until_full(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:  # a few files fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", "oxford-pet", str(sample_root), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "No space left on device; free some space, then run the command again" in result.output
    assert not [p for p in out.rglob(".*tmp-*")]  # no half-written file left behind
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert CliRunner().invoke(main, ["convert", "oxford-pet", str(sample_root), "-o", str(out)]).exit_code == 0
    for path in sorted(clean.rglob("*")):
        if path.is_file() and path.name != "dataset.json":
            assert (out / path.relative_to(clean)).read_bytes() == path.read_bytes(), path.name

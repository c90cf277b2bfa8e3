"""Same inputs, same bytes: two clean `segpipe run`s (OUT deleted in between) write identical HTML pages."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from segpipe.runner.driver import run_pipeline
from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, settings_for


def _pages(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.html")) if ".cache" not in p.parts}


def test_two_clean_runs_write_identical_html(tmp_path: Path) -> None:
    make_dataset(tmp_path / "pets", n_images=4)
    make_checkpoint(tmp_path / "ckpts" / "m0.pt", seed=0)
    settings = settings_for(tmp_path, dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts", html=True)
    assert run_pipeline(settings).exit_code == 0
    first = _pages(settings.out)
    assert "checkpoints/m0/semantic/report.html" in first
    shutil.rmtree(settings.out)
    time.sleep(1.1)  # the page shows times to the second: a cache file's time would now differ
    assert run_pipeline(settings).exit_code == 0
    second = _pages(settings.out)
    assert second.keys() == first.keys()
    for name in first:
        assert second[name] == first[name], name
    newest = max(p.stat().st_mtime for p in (tmp_path / "pets").rglob("*") if p.is_file())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(newest, (tmp_path / "ckpts" / "m0.pt").stat().st_mtime,
                                                                  (tmp_path / "ckpts" / "m0.json").stat().st_mtime)))
    assert f"<th>inputs modified</th><td>{stamp}</td>".encode() in first["checkpoints/m0/semantic/report.html"]

"""File names that are not valid UTF-8 (lone surrogates in Python) are refused at conversion with a row, and
no later command crashes on them.

OpenCV's `imread` converts the path to a C string and segfaults on a lone surrogate, and pandas/pyarrow refuse
such strings: each command runs in a subprocess here, so a crash shows as a signal, not as a dead runner.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.pipeline.pipeline_fixtures import REPO_ROOT, cli_args, make_checkpoint, make_dataset, settings_for

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
ODD = os.fsdecode(b"Bengal_\xff\xfe1")  # undecodable bytes arrive as lone surrogates


def segpipe(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom segpipe.cli import main\nmain.main(args=sys.argv[1:], prog_name='segpipe')\n"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, env=env,
                          errors="backslashreplace")


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_dataset(tmp_path_factory.mktemp("odd") / "pets", n_images=6)
    image = sorted((root / "images").glob("*.jpg"))[0]
    trimap = root / "annotations" / "trimaps" / f"{image.stem}.png"
    try:
        image.rename(image.with_name(f"{ODD}.jpg"))
        trimap.rename(trimap.with_name(f"{ODD}.png"))
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    return root


def test_convert_refuses_them_and_later_commands_never_crash(pets: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    done = segpipe("convert", "oxford-pet", str(pets), "-o", str(out))
    assert done.returncode == 3, done.stderr
    rows = pd.read_csv(out / "conversion_report.csv")
    odd = rows[rows["code"] == "non_utf8_name"]
    assert sorted(Path(f).name for f in odd["file"]) == ["Bengal_\\udcff\\udcfe1.jpg", "Bengal_\\udcff\\udcfe1.png"]
    coco = json.loads((out / "instances.json").read_text(encoding="utf-8"))
    assert len(coco["images"]) == 5

    done = segpipe("evaluate", "semantic", "--gt", str(out / "semantic"), "--pred", str(out / "semantic"), "-o", str(tmp_path / "sem"))
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 0.9}
               for a in coco["annotations"]]
    (tmp_path / "res.json").write_text(json.dumps(results), encoding="utf-8")
    done = segpipe("evaluate", "instances", "--gt", str(out / "instances.json"), "--pred", str(tmp_path / "res.json"), "-o", str(tmp_path / "inst"))
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    done = segpipe("audit", str(out), "-o", str(tmp_path / "audit"))
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])

    # A label-map folder of the user's own with such a name: a located error, not a segfault.
    shutil.copy(out / "semantic" / sorted(p.name for p in (out / "semantic").glob("*.png"))[0], out / "semantic" / f"{ODD}.png")
    done = segpipe("evaluate", "semantic", "--gt", str(out / "semantic"), "--pred", str(out / "semantic"), "-o", str(tmp_path / "sem2"))
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "name: file name is not valid UTF-8; refused" in done.stderr


def test_run_refuses_them_and_evaluates_the_rest(pets: Path, tmp_path: Path) -> None:
    shutil.copytree(pets, tmp_path / "pets")
    make_checkpoint(tmp_path / "ckpts" / "m0.pt", seed=0)
    settings = settings_for(tmp_path, dataset=tmp_path / "pets", ckpts=tmp_path / "ckpts")
    done = segpipe(*cli_args(settings))
    assert done.returncode == 3, (done.returncode, done.stderr[-3000:])  # 3: conversion errors, reports written
    board = pd.read_csv(settings.out / "leaderboard.csv")
    assert board.loc[0, "status"] == "ok"
    rows = pd.read_csv(settings.out / "conversion_report.csv")
    assert sorted(Path(f).name for f in rows.loc[rows["code"] == "non_utf8_name", "file"]) == [
        "Bengal_\\udcff\\udcfe1.jpg", "Bengal_\\udcff\\udcfe1.png"]

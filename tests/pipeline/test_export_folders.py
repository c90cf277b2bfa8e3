"""`segpipe export` and the folders it writes into: another command's folder is refused before anything is
written, and a second export into the same folder leaves nothing of the first for a reader to pick up."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import segpipe
from segpipe.cli import main


def converted(tmp_path: Path) -> Path:
    segpipe.sample(tmp_path / "sample", n_images=4)
    segpipe.convert("oxford-pet", tmp_path / "sample", tmp_path / "converted", categories="pet")
    return tmp_path / "converted"


def test_export_refuses_a_conversion_folder_and_writes_nothing(tmp_path: Path) -> None:
    dataset = converted(tmp_path)
    before = sorted(p.name for p in dataset.iterdir())
    result = CliRunner().invoke(main, ["export", "yolo", str(dataset), "-o", str(dataset)])
    assert result.exit_code == 2, result.output
    assert "holds the outputs of" in result.output and "conversion" in result.output
    assert sorted(p.name for p in dataset.iterdir()) == before


def test_a_second_export_replaces_the_first_and_keeps_the_users_files(tmp_path: Path) -> None:
    dataset = converted(tmp_path)
    out = tmp_path / "for_tools"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    runner = CliRunner()
    assert runner.invoke(main, ["export", "yolo", str(dataset), "-o", str(out)]).exit_code == 0
    assert (out / "labels").is_dir() and (out / "data.yaml").is_file()
    assert runner.invoke(main, ["export", "cvat", str(dataset), "-o", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [".segpipe.json", "annotations.xml", "export_report.csv", "images", "notes.txt"]
    manifest = json.loads((out / ".segpipe.json").read_text())
    assert manifest["command"] == "export" and manifest["complete"] is True and "notes.txt" not in manifest["owns"]
    # and a conversion refuses the export's folder as its OUT
    result = runner.invoke(main, ["convert", "cvat", str(out), "-o", str(out)])
    assert result.exit_code == 2 and "holds the outputs of a cvat export" in result.output, result.output

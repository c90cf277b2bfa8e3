"""A wrong folder is one clear usage error (exit 2) naming what was expected and what was found, before
anything is written, instead of an empty dataset with the reason only in the conversion report."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.demo.sample import generate_sample


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("pets") / "pets", n_images=4, seed=0)


def _convert(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["convert", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("sub", ["images", "annotations"])
def test_oxford_pet_pointed_inside_the_root_names_the_root(pets: Path, tmp_path: Path, sub: str) -> None:
    code, out = _convert("oxford-pet", str(pets / sub), "-o", str(tmp_path / "out"))
    assert code == 2, out
    assert "expected an Oxford-IIIT Pet root" in out and "found" in out and "pass that folder instead" in out
    assert str(pets) in out.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_oxford_pet_pointed_at_a_voc_folder_suggests_voc(pets: Path, tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text("<annotation/>")
    code, out = _convert("oxford-pet", str(voc), "-o", str(tmp_path / "out"))
    assert code == 2 and "1 .xml" in out and "segpipe convert voc" in out, out


def test_voc_pointed_at_a_pet_root_says_so_and_the_suggested_command_works(pets: Path, tmp_path: Path) -> None:
    code, out = _convert("voc", str(pets), "-o", str(tmp_path / "out"))
    assert code == 2 and "Oxford-IIIT Pet root" in out and "trimap" in out, out
    assert not (tmp_path / "out").exists()
    text = " ".join(out.split())
    suggested = text.split("for the head boxes alone `segpipe convert ")[1].split("`")[0].split()
    code, out = _convert(*suggested, "-o", str(tmp_path / "heads"))
    assert code == 0 and "converted 4 images, 4 annotations" in out, out


def test_run_checks_the_folder_too(pets: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--dataset", str(pets / "images"), "--format", "oxford-pet", "--model", "unet",
                                       "--checkpoints", str(tmp_path / "*.pt"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "pass that folder instead" in result.output, result.output

"""Converting again into an existing OUT: no earlier run's output survives to be mistaken for this run's.

Stale semantic maps are pruned, a --strict abort leaves the report of *this* run and no converted output,
and a head XML with an unusable object does not leave its image marked as annotated.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.converters.oxford_pet import convert_oxford_pet
from segpipe.converters.report import EXIT_STRICT_ABORT, StrictModeError
from segpipe.converters.trimap import convert_trimap
from segpipe.converters.voc import convert_voc
from segpipe.evaluators.semantic.evaluation import label_maps_by_stem
from segpipe.cli import main
from segpipe.demo.sample import generate_sample

BAD_TRIMAP_VALUE = 7


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("sample") / "pets", n_images=24, seed=0)


@pytest.fixture()
def pets(sample: Path, tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    shutil.copytree(sample, root)
    return root


def corrupt_trimap(path: Path) -> None:
    trimap = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    trimap[0, 0] = BAD_TRIMAP_VALUE
    assert cv2.imwrite(str(path), trimap)


def first_trimap(root: Path) -> Path:
    return min((root / "annotations" / "trimaps").glob("*.png"))


def instance_stems(out: Path) -> list[str]:
    return sorted(Path(im["file_name"]).stem for im in json.loads((out / "instances.json").read_text())["images"])


def report_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "conversion_report.csv").read_text(encoding="utf-8"))))


def test_oxford_pet_reconversion_prunes_stale_semantic_maps(pets: Path, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    runner = CliRunner()
    assert runner.invoke(main, ["convert", "oxford-pet", str(pets), "-o", str(out)]).exit_code == 0
    assert len(label_maps_by_stem(out / "semantic")) == 24
    bad = first_trimap(pets)
    corrupt_trimap(bad)
    again = runner.invoke(main, ["convert", "oxford-pet", str(pets), "-o", str(out)])
    assert again.exit_code == 3, again.output
    kept = instance_stems(out)
    assert len(kept) == 23 and bad.stem not in kept
    # The maps `evaluate semantic` scores are exactly this run's kept images.
    assert sorted(label_maps_by_stem(out / "semantic")) == kept
    assert (out / "semantic" / "classes.txt").read_text().split() == ["background", "pet"]


def test_trimap_reconversion_prunes_stale_semantic_maps(pets: Path, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    trimaps, images = pets / "annotations" / "trimaps", pets / "images"
    convert_trimap(trimaps, out, images=images, workers=1)
    (out / "semantic" / ".pug_1.png.tmp-killed.png").write_bytes(b"left by a killed writer")
    corrupt_trimap(first_trimap(pets))
    convert_trimap(trimaps, out, images=images, workers=1)
    assert len(instance_stems(out)) == 23
    assert sorted(p.stem for p in (out / "semantic").glob("*.png")) == instance_stems(out)
    assert (out / "semantic" / "classes.txt").is_file()


def assert_strict_abort_left_no_output(out: Path, *, bad: Path) -> None:
    errors = [r for r in report_rows(out) if r["severity"] == "error"]
    assert [Path(r["file"]).name for r in errors] == [bad.name]  # this run's report, stopped at its first error
    assert not (out / "instances.json").exists() and not (out / "heads.json").exists()
    assert not list(out.glob("semantic/*.png"))


def test_strict_oxford_pet_abort_removes_the_previous_outputs(pets: Path, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    assert CliRunner().invoke(main, ["convert", "oxford-pet", str(pets), "-o", str(out)]).exit_code == 0
    assert (out / "heads.json").is_file() and not any(r["severity"] == "error" for r in report_rows(out))
    bad = first_trimap(pets)
    corrupt_trimap(bad)
    result = CliRunner().invoke(main, ["convert", "oxford-pet", str(pets), "-o", str(out), "--strict"])
    assert result.exit_code == EXIT_STRICT_ABORT, result.output
    assert_strict_abort_left_no_output(out, bad=bad)


def test_strict_oxford_pet_abort_on_a_head_xml(pets: Path, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    convert_oxford_pet(pets, out, workers=1)
    bad = max((pets / "annotations" / "xmls").glob("*.xml"))
    bad.write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(StrictModeError):
        convert_oxford_pet(pets, out, strict=True, workers=1)
    # instances.json was already written by this run when the head XML failed: removed all the same.
    assert_strict_abort_left_no_output(out, bad=bad)


def test_strict_trimap_abort_removes_the_previous_outputs(pets: Path, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    trimaps, images = pets / "annotations" / "trimaps", pets / "images"
    convert_trimap(trimaps, out, images=images, workers=1)
    (out / "heads.json").write_text("{}")  # e.g. left by an oxford-pet conversion into the same OUT
    bad = max(trimaps.glob("*.png"))  # the last one: this run has written other maps first
    corrupt_trimap(bad)
    with pytest.raises(StrictModeError):
        convert_trimap(trimaps, out, images=images, strict=True, workers=1)
    assert_strict_abort_left_no_output(out, bad=bad)


def test_strict_voc_abort_removes_the_previous_outputs(tmp_path: Path) -> None:
    src, out = tmp_path / "voc", tmp_path / "c1"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((10, 10), np.uint8))
    box = "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
    (src / "a.xml").write_text(f"<annotation>{box}</annotation>")
    convert_voc(src, out, workers=1)
    assert (out / "instances.json").is_file()
    (src / "a.xml").write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(StrictModeError):
        convert_voc(src, out, strict=True, workers=1)
    assert_strict_abort_left_no_output(out, bad=src / "a.xml")


def test_head_xml_with_an_unusable_object_is_not_annotated(pets: Path, tmp_path: Path) -> None:
    xml = min((pets / "annotations" / "xmls").glob("*.xml"))
    text = xml.read_text()
    # One good head box plus an object without a <bndbox>: partial labels would make false positives.
    xml.write_text(text.replace("</annotation>", "<object><name>cat</name></object></annotation>"))
    out = tmp_path / "out"
    report = convert_oxford_pet(pets, out, workers=1)
    assert any(f.severity == "error" and Path(f.file) == xml for f in report.findings)
    heads = json.loads((out / "heads.json").read_text())
    image = next(im for im in heads["images"] if Path(im["file_name"]).stem == xml.stem)
    assert image["heads_annotated"] is False
    assert not [a for a in heads["annotations"] if a["image_id"] == image["id"]]
    others = [im for im in heads["images"] if im["id"] != image["id"]]
    assert all(im["heads_annotated"] for im in others) and len(heads["annotations"]) == len(others)

"""`segpipe convert ...` through the real console entry: exit codes, summary line, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS, EXIT_STRICT_ABORT
from segpipe.cli import main
from segpipe.demo.sample import generate_sample


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("sample") / "pets")


def test_oxford_pet_converts_the_sample_cleanly(sample_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", "oxford-pet", str(sample_root), "-o", str(out)])
    assert result.exit_code == EXIT_OK, result.output
    assert "0 error(s)" in result.output
    coco = json.loads((out / "instances.json").read_text())
    assert len(coco["images"]) == 24 and len(coco["annotations"]) == 24
    assert [im["id"] for im in coco["images"]] == list(range(1, 25))
    assert (out / "heads.json").is_file() and (out / "semantic" / "classes.txt").read_text().split() == ["background", "pet"]


def test_summary_line_counts_what_instances_json_holds(sample_root: Path, tmp_path: Path) -> None:
    """The counts come from the conversion in memory (the file is not parsed again); they must agree with it."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", "oxford-pet", str(sample_root), "-o", str(out), "--categories", "species"])
    coco = json.loads((out / "instances.json").read_text())
    counts = f"{len(coco['images'])} images, {len(coco['annotations'])} annotations, {len(coco['categories'])} categories"
    assert f"converted {counts} -> {out}" in result.output
    xmls = tmp_path / "xmls"
    xmls.mkdir()
    for p in sorted((sample_root / "annotations" / "xmls").glob("*.xml"))[:5]:
        (xmls / p.name).write_bytes(p.read_bytes())
    voc = CliRunner().invoke(main, ["convert", "voc", str(xmls), "--images", str(sample_root / "images"), "-o", str(tmp_path / "voc")])
    coco = json.loads((tmp_path / "voc" / "instances.json").read_text())
    assert len(coco["images"]) == 5
    assert f"converted 5 images, {len(coco['annotations'])} annotations, {len(coco['categories'])} categories" in voc.output


def test_bad_trimap_gives_exit_3_and_strict_gives_exit_4(sample_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "trimaps"
    src.mkdir()
    for p in sorted((sample_root / "annotations" / "trimaps").glob("*.png"))[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / sorted(src.iterdir())[0].name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    runner = CliRunner()
    args = ["convert", "trimap", str(src), "--images", str(sample_root / "images")]
    result = runner.invoke(main, [*args, "-o", str(tmp_path / "o1")])
    assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
    coco = json.loads((tmp_path / "o1" / "instances.json").read_text())
    assert len(coco["images"]) == 2  # the good inputs are still written
    report = (tmp_path / "o1" / "conversion_report.csv").read_text()
    assert ",error," in report
    strict = runner.invoke(main, [*args, "-o", str(tmp_path / "o2"), "--strict"])
    assert strict.exit_code == EXIT_STRICT_ABORT, strict.output


def test_usage_error_is_clicks(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["convert", "voc", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2


def test_convert_does_not_import_torch(sample_root: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom segpipe.cli import main\n"
        "try:\n    main(['convert', 'oxford-pet', sys.argv[1], '-o', sys.argv[2]])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code, str(sample_root), str(tmp_path / "o")], check=True)


def test_box_only_voc_conversion_does_not_import_numpy(sample_root: Path, tmp_path: Path) -> None:
    """numpy's import is a tenth of a second of start-up that box-only formats never need."""
    code = (
        "import sys\nfrom segpipe.cli import main\n"
        "try:\n    main(['convert', 'voc', sys.argv[1], '--images', sys.argv[2], '-o', sys.argv[3]])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'cv2', 'torch', 'pandas'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code, str(sample_root / "annotations" / "xmls"), str(sample_root / "images"),
                    str(tmp_path / "o")], check=True)


def test_unusable_classes_file_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "xmls"
    src.mkdir()
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ncat\n")
    result = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(tmp_path / "o"), "--classes", str(classes)])
    assert result.exit_code == 2, result.output
    assert "classes.txt" in result.output


def test_convert_pads_glibcs_heap_top_where_there_is_glibc() -> None:
    """mallopt(M_TOP_PAD) is glibc's; elsewhere the call is skipped and conversion runs as it is."""
    import platform

    from segpipe.cli.convert import pad_heap_top

    assert pad_heap_top() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")

"""convert X -> export X -> convert X on the embedded sample: the same images, categories, boxes and masks,
read back by the format's own converter and compared with pycocotools as the independent reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from segpipe.converters.oxford_pet import convert_oxford_pet
from segpipe.demo.sample import generate_sample
from tests.converters.export_helpers import compare, export, read_back


@pytest.fixture(scope="module")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    generate_sample(root / "sample", n_images=12, seed=3)
    convert_oxford_pet(root / "sample", root / "converted")
    return root / "converted"


# (format, reader, file_name prefix, masks exact?) -- the mask formats store the sample's masks as: CVAT
# run-lengths, VOC palette PNGs (exact); YOLO and LabelMe pixel-edge polygons (exact for masks without holes).
CASES = [("cvat", "cvat"), ("voc", "voc-seg"), ("labelme", "labelme"), ("yolo", "yolo")]


@pytest.mark.parametrize(("fmt", "reader"), CASES)
def test_sample_round_trip_keeps_images_categories_boxes_and_masks(sample_dataset: Path, tmp_path: Path, fmt: str, reader: str) -> None:
    report = export(fmt, sample_dataset, tmp_path / "export")
    assert [f for f in report.findings if f.severity != "info"] == []
    back, prefix = read_back(reader, tmp_path / "export", tmp_path / "back")
    result = compare(sample_dataset / "instances.json", back / "instances.json", prefix=prefix)
    assert result.problems == []
    assert result.images == 12 and result.objects == 12
    assert result.box_max_error <= 1e-6
    # The sample's pet masks have no holes: the pixel-edge outline rasterises back to the same pixels.
    assert result.exact_masks == result.objects, result.mask_ious


def test_voc_boxes_round_trip_through_labelimg_xml(sample_dataset: Path, tmp_path: Path) -> None:
    export("voc", sample_dataset, tmp_path / "export")
    back, _ = read_back("voc", tmp_path / "export", tmp_path / "back")
    result = compare(sample_dataset / "instances.json", back / "instances.json", boxes_only=True)
    assert result.problems == [] and result.objects == 12
    assert result.box_max_error <= 1e-6


@pytest.mark.parametrize("fmt", ["cvat", "labelme", "yolo", "voc"])
def test_head_boxes_round_trip(sample_dataset: Path, tmp_path: Path, fmt: str) -> None:
    """heads.json: box-only annotations (cat/dog head boxes) from a bare COCO file, images given."""
    import json

    image_root = Path(json.loads((sample_dataset / "dataset.json").read_text())["image_root"])
    report = export(fmt, sample_dataset / "heads.json", tmp_path / "export", images=image_root)
    assert [f for f in report.findings if f.code != "attribute_not_exported"] == []
    back, prefix = read_back(fmt, tmp_path / "export", tmp_path / "back")
    result = compare(sample_dataset / "heads.json", back / "instances.json", prefix=prefix)
    assert result.problems == [] and result.objects == 12
    assert result.box_max_error <= 1e-6


def test_yolo_detect_writes_boxes_for_masks(sample_dataset: Path, tmp_path: Path) -> None:
    export("yolo", sample_dataset, tmp_path / "export", task="detect")
    back, prefix = read_back("yolo", tmp_path / "export", tmp_path / "back")
    result = compare(sample_dataset / "instances.json", back / "instances.json", prefix=prefix, boxes_only=True)
    assert result.problems == [] and result.box_max_error <= 1e-6


@pytest.mark.parametrize("fmt", ["cvat", "voc", "labelme", "yolo"])
def test_export_is_byte_identical_on_rerun(sample_dataset: Path, tmp_path: Path, fmt: str) -> None:
    export(fmt, sample_dataset, tmp_path / "a")
    export(fmt, sample_dataset, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


@pytest.mark.parametrize(("source", "target", "reader"), [
    ("cvat", "labelme", "labelme"), ("labelme", "yolo", "yolo"), ("yolo", "voc", "voc-seg"), ("voc", "cvat", "cvat"),
])
def test_across_formats_every_object_is_kept(sample_dataset: Path, tmp_path: Path, source: str, target: str, reader: str) -> None:
    """convert A -> export B -> convert B: A is itself the sample exported to A and read back."""
    export(source, sample_dataset, tmp_path / "a")
    a, _ = read_back({"voc": "voc-seg"}.get(source, source), tmp_path / "a", tmp_path / "a_back")
    export(target, a, tmp_path / "b")
    b, prefix = read_back(reader, tmp_path / "b", tmp_path / "b_back")
    result = compare(a / "instances.json", b / "instances.json", prefix=prefix)
    assert result.problems == [] and result.objects == 12
    assert result.exact_masks == 12

"""COCO `file_name`s are untrusted: a name never climbs out of the image root (absolute, `..`); symlinks placed
inside the root by the dataset's owner are followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segpipe.core.dataset_layout import DatasetDir, resolve_image_path, write_dataset_meta


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    images = tmp_path / "data" / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(b"a")
    (images / "sub" / "b.png").write_bytes(b"b")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "private.png").write_bytes(b"secret")
    return images


@pytest.mark.parametrize("name", ["a.png", "sub/b.png", "./a.png", "missing.png", "a..b.png"])
def test_names_inside_the_root(root: Path, name: str) -> None:
    assert resolve_image_path(root, name) == root / name


@pytest.mark.parametrize(
    "name",
    ["../../secret/private.png", "sub/../../../secret/private.png", "sub/../a.png", "..", "", "..\\..\\secret\\private.png", "C:\\secret.png"],
)
def test_relative_names_that_leave_the_root(root: Path, name: str) -> None:
    assert resolve_image_path(root, name) is None


def test_absolute_names_even_inside_the_root(root: Path) -> None:
    assert resolve_image_path(root, str(root.parent.parent / "secret" / "private.png")) is None
    assert resolve_image_path(root, str(root / "a.png")) is None  # file_name is relative by the layout's contract


def test_symlinked_files_and_folders_are_images_like_any_other(root: Path) -> None:
    # A symlink farm: the links' targets live elsewhere, the names stay inside the root.
    os.symlink(root.parent.parent / "secret", root / "store")
    os.symlink(root.parent.parent / "secret" / "private.png", root / "link.png")
    os.symlink(root / "a.png", root / "alias.png")
    assert resolve_image_path(root, "store/private.png") == root / "store" / "private.png"
    assert resolve_image_path(root, "link.png") == root / "link.png"
    assert resolve_image_path(root, "alias.png") == root / "alias.png"
    # ... but a name still never climbs out, through a link or not
    assert resolve_image_path(root, "store/../../secret/private.png") is None


def test_a_symlinked_root_still_holds_its_images(root: Path, tmp_path: Path) -> None:
    os.symlink(root, tmp_path / "linked_root")
    assert resolve_image_path(tmp_path / "linked_root", "sub/b.png") == tmp_path / "linked_root" / "sub" / "b.png"


def test_nul_byte_is_refused(root: Path) -> None:
    assert resolve_image_path(root, "a.png\x00.txt") is None


def test_dataset_dir_image_path(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_dataset_meta(out, format="coco", image_root=root, options={})
    ds = DatasetDir(out)
    assert ds.image_path("sub/b.png") == root.resolve() / "sub" / "b.png"
    assert ds.image_path("../../secret/private.png") is None
    assert ds.image_path(str(tmp_path / "secret" / "private.png")) is None


def test_one_classes_reader_for_every_command(tmp_path: Path) -> None:
    """`# comment` lines and blank lines are skipped alike by evaluate semantic, infer and run; a classes
    file's line may hold a comma; a 150-name comma list is a list, not a file name (NAME_MAX is 255 bytes)."""
    from segpipe.cli.evaluate_semantic import read_class_names
    from segpipe.core.dataset_layout import class_names_option, read_class_names_file
    from segpipe.inference.data import parse_class_names as infer_classes
    from segpipe.tasks.convert import label_space  # what `segpipe run` records of a converted dataset dir

    (tmp_path / "semantic").mkdir()
    classes = tmp_path / "semantic" / "classes.txt"
    classes.write_text("# Oxford-IIIT Pet trimaps\nbackground\n\npet, cat or dog\n", encoding="utf-8")
    (tmp_path / "instances.json").write_text('{"images": [], "annotations": [], "categories": []}')
    expected = ["background", "pet, cat or dog"]
    assert read_class_names_file(classes) == expected
    assert read_class_names(None, gt_dir=tmp_path / "semantic") == expected
    assert list(infer_classes(str(classes))) == expected
    assert label_space(tmp_path, categories=[])["semantic_classes"] == expected
    many = [f"class_{i:03d}" for i in range(150)]
    assert class_names_option(",".join(many)) == many
    assert list(infer_classes(", ".join(many))) == many
    assert read_class_names(",".join(many), gt_dir=tmp_path) == many

"""Audit inputs that must become findings, never reads outside the dataset or crashes: image `file_name`s
leading outside the image root, split files that are not UTF-8."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from segpipe.core.dataset_layout import write_dataset_meta
from segpipe.evaluators.audit import dataset as audit_module
from segpipe.evaluators.audit import findings as F
from segpipe.evaluators.audit.dataset import audit_dataset, audit_path
from segpipe.cli import main
from tests.evaluators.test_audit_format import clean_coco, write_png


def _outside_layout(tmp_path: Path) -> tuple[dict, Path]:
    """images/ with a.png, b.png; secret/private.png beside it, reachable as `../secret/private.png`."""
    images = tmp_path / "images"
    images.mkdir()
    coco = clean_coco(images)
    (tmp_path / "secret").mkdir()
    write_png(tmp_path / "secret" / "private.png", seed=7)  # readable and of the recorded size
    return coco, images


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_file_name_outside_the_root_is_an_error_finding_and_never_read(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    coco, images = _outside_layout(tmp_path)
    secret = tmp_path / "secret" / "private.png"
    name = {"dotdot": "../secret/private.png", "absolute": str(secret)}[kind]
    coco["images"][1]["file_name"] = name
    opened: list[Path] = []
    real_size = audit_module.read_image_size
    monkeypatch.setattr(audit_module, "read_image_size", lambda path: opened.append(Path(path)) or real_size(path))
    f = audit_dataset(coco, image_root=images).findings
    hit = f[f["check"] == F.CHECK_IMAGE_OUTSIDE_ROOT]
    assert list(hit["image_id"]) == [2] and list(hit["severity"]) == ["error"] and list(hit["file_name"]) == [name]
    assert not f[f["image_id"] == 2]["check"].isin([F.CHECK_IMAGE_MISSING, F.CHECK_IMAGE_UNREADABLE, F.CHECK_DUPLICATE_IMAGE]).any()
    assert [p.name for p in opened] == ["a.png"]  # the outside file was neither sized nor hashed


def test_a_symlink_farm_is_audited_like_plain_files(tmp_path: Path) -> None:
    coco, images = _outside_layout(tmp_path)
    os.symlink(tmp_path / "secret", images / "store")  # the link's target lives elsewhere; the name stays inside
    coco["images"][1]["file_name"] = "store/private.png"
    f = audit_dataset(coco, image_root=images).findings
    assert not f[f["image_id"] == 2]["check"].isin([F.CHECK_IMAGE_OUTSIDE_ROOT, F.CHECK_IMAGE_MISSING, F.CHECK_IMAGE_UNREADABLE]).any()


def test_clean_names_give_no_outside_finding(tmp_path: Path) -> None:
    coco, images = _outside_layout(tmp_path)
    f = audit_dataset(coco, image_root=images).findings
    assert F.CHECK_IMAGE_OUTSIDE_ROOT not in set(f["check"])


def _pet_dataset(tmp_path: Path, *, trainval: bytes) -> Path:
    """A converted oxford-pet dataset dir whose images live in ROOT/images, split files in ROOT/annotations."""
    images = tmp_path / "pets" / "images"
    images.mkdir(parents=True)
    coco = clean_coco(images)
    (tmp_path / "pets" / "annotations").mkdir()
    (tmp_path / "pets" / "annotations" / "trainval.txt").write_bytes(trainval)
    (tmp_path / "pets" / "annotations" / "test.txt").write_bytes(b"b 1 1 1\n")
    ds = tmp_path / "converted"
    ds.mkdir()
    (ds / "instances.json").write_text(json.dumps(coco))
    write_dataset_meta(ds, format="oxford-pet", image_root=images, options={})
    return ds


def test_split_file_not_utf8_is_a_finding(tmp_path: Path) -> None:
    ds = _pet_dataset(tmp_path, trainval=b"a 1 1 1\n\xff\xfe\xfa broken 1 1 1\n")
    f = audit_path(ds).findings
    hit = f[f["check"] == F.CHECK_SPLIT_FILE_UNREADABLE]
    assert len(hit) == 1 and hit.iloc[0]["file_name"].endswith("trainval.txt") and "trainval.txt" in hit.iloc[0]["message"]
    assert hit.iloc[0]["severity"] == "error"


def test_readable_split_files_give_no_finding_and_still_feed_the_split_check(tmp_path: Path) -> None:
    ds = _pet_dataset(tmp_path, trainval=b"a 1 1 1\nb 1 1 1\n")  # b in both splits
    f = audit_path(ds).findings
    assert F.CHECK_SPLIT_FILE_UNREADABLE not in set(f["check"])
    assert set(f[f["check"] == F.CHECK_CROSS_SPLIT]["file_name"]) == {"b.png"}


def test_cli_audit_with_a_non_utf8_split_file_exits_0(tmp_path: Path) -> None:
    ds = _pet_dataset(tmp_path, trainval=b"\xff\xfe\xfa\n")
    result = CliRunner().invoke(main, ["audit", str(ds), "-o", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    findings = pd.read_csv(tmp_path / "audit" / "findings.csv")
    assert F.CHECK_SPLIT_FILE_UNREADABLE in set(findings["check"])
    assert (tmp_path / "audit" / "audit.html").is_file()

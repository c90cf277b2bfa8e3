"""The HTML gallery draws the broken annotations an audit finds (bad polygons, RLE strings, boxes, image
records) and never follows a `file_name` out of the image root: a placeholder or a label, never a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segpipe.core.dataset_layout import write_dataset_meta
from segpipe.reports import gallery as report_gallery
from segpipe.cli import main
from segpipe.reports.gallery import GallerySource, instance_thumbnail
from segpipe.reports.overlay import BadGeometry, annotation_mask, draw_instances, placeholder
from tests.evaluators.test_audit_format import H, W, clean_coco, mask_ann, rle_of, write_png

BROKEN_SEGMENTATIONS: dict[str, Any] = {
    "short polygon": [[1, 2]],  # pycocotools: bare Exception "input type is not supported"
    "empty polygon": [[]],
    "text polygon": [["a", "b", "c", "d", "e", "f"]],
    "nan polygon": [[0, 0, math.nan, 5, 5, 5]],  # pycocotools would rasterise for ~30 s
    "far polygon": [[0, 0, 1e12, 5, 5, 5]],
    "bad rle string": {"size": [H, W], "counts": "\x7f\x7f not rle"},
    "rle without size": {"counts": "PPYo0"},
    "rle huge size": {"size": [10**9, 10**9], "counts": "PPYo0"},
    "rle counts number": {"size": [H, W], "counts": 5},
    # Valid RLE of 4x the pixels under a smaller size: pycocotools would decode past the mask buffer.
    "rle string overruns": {"size": [H, W], "counts": rle_of(np.ones((4 * H, W), dtype=bool))["counts"]},
    "rle list overruns": {"size": [H, W], "counts": [0, 4 * H * W]},
    "text segmentation": "abc",
}


@pytest.mark.parametrize("name", sorted(BROKEN_SEGMENTATIONS))
def test_annotation_mask_raises_bad_geometry(name: str) -> None:
    with pytest.raises(BadGeometry):
        annotation_mask({"segmentation": BROKEN_SEGMENTATIONS[name]}, height=H, width=W)


def test_annotation_mask_still_decodes_good_ones() -> None:
    good = mask_ann(1, 1, 1, 2, 3, 12, 10)
    assert annotation_mask(good, height=H, width=W).sum() == 70
    polygon = annotation_mask({"segmentation": [[2, 3, 12, 3, 12, 10, 2, 10]]}, height=H, width=W)
    assert polygon.shape == (H, W) and 60 <= polygon.sum() <= 90


@pytest.mark.parametrize("bbox", ["abc", [0, 0, None, 2], [0, 0, math.inf, 2], [1, 2, 3], [1e300, 0, 1, 1], {"x": 1}])
def test_draw_instances_skips_a_bad_box(bbox: Any) -> None:
    base = placeholder(width=W, height=H, text="x")
    out = draw_instances(base, [{"id": 1, "mask": None, "bbox": bbox, "colour": (255, 0, 0), "label": "cat"}], scale=1.0)
    assert out.shape == base.shape


def _broken_dataset(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    coco = clean_coco(images)
    for k in range(3, 6):
        write_png(images / f"{'cde'[k - 3]}.png", seed=k)
    coco["images"] += [
        {"id": 3, "width": W, "height": H},  # no file_name
        {"id": 4, "file_name": "d.png", "width": W},  # no height
        {"id": 5, "file_name": "../secret/private.png", "width": W, "height": H},  # outside the root
    ]
    (tmp_path / "secret").mkdir()
    write_png(tmp_path / "secret" / "private.png", seed=9)
    anns: list[dict[str, Any]] = []
    # Not the far polygon: the audit's own format check (evaluators/audit/format_checks.py) rasterises it for ~25 s.
    segs = [seg for name, seg in sorted(BROKEN_SEGMENTATIONS.items()) if name != "far polygon"]
    for k, seg in enumerate(segs, start=10):
        anns.append({**mask_ann(k, 1 + k % 2, 1, 2, 2, 12, 10), "segmentation": seg})
    for k, bbox in enumerate(["abc", [0, 0, None, 2]], start=40):
        ann = mask_ann(k, 2, 2, 5, 5, 15, 20)
        ann.pop("segmentation")
        anns.append({**ann, "bbox": bbox})
    anns += [mask_ann(50, 3, 1, 2, 2, 12, 10), mask_ann(51, 4, 1, 2, 2, 12, 10), mask_ann(52, 5, 1, 0, 0, 1, 1)]
    coco["annotations"] += anns
    ds = tmp_path / "converted"
    ds.mkdir()
    (ds / "instances.json").write_text(json.dumps(coco))
    write_dataset_meta(ds, format="coco", image_root=images, options={})
    return ds


def test_audit_cli_writes_the_gallery_for_broken_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _broken_dataset(tmp_path)
    read: list[Path | None] = []
    real = report_gallery.read_thumbnail
    monkeypatch.setattr(report_gallery, "read_thumbnail", lambda path: read.append(path) or real(path))
    result = CliRunner().invoke(main, ["audit", str(ds), "-o", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 5
    shown = set(pd.read_csv(tmp_path / "audit" / "findings.csv").head(24)["image_id"].dropna().astype(int))
    assert {1, 2, 3, 4, 5} <= shown  # every broken image and annotation was drawn
    assert not any(p is not None and "secret" in str(p) for p in read)  # the outside image was never opened


def test_outside_file_name_gets_a_placeholder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _broken_dataset(tmp_path)
    source = GallerySource.from_dirs(dataset=ds)
    read: list[Path | None] = []
    monkeypatch.setattr(report_gallery, "read_thumbnail", lambda path: read.append(path) or None)
    instance_thumbnail(source, image_id=5, colours={})
    assert read == [None]
    assert source.image_path("a.png") == source.image_root / "a.png"
    assert source.image_path("../secret/private.png") is None

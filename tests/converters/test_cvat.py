"""CVAT for images 1.1 XML -> COCO: boxes, polygons and CVAT-RLE masks against independent references
through pycocotools' reader; attributes and `occluded` kept; bad input and path traversal as rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.converters.cvat import convert_cvat
from segpipe.converters.report import EXIT_SKIPPED_ERRORS
from tests.converters.format_helpers import codes, coco_masks, convert_under_seeds, rect, rows, write_image

W, H = 32, 24


def cvat_rle(crop: np.ndarray) -> str:
    """CVAT's run-lengths of a crop, written independently of the converter: row-major, background first."""
    flat = crop.reshape(-1).astype(int).tolist()
    runs, current, n = [], 0, 0
    for v in flat:
        if v == current:
            n += 1
        else:
            runs.append(n)
            current, n = v, 1
    runs.append(n)
    return ", ".join(map(str, runs))


CROP = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=bool)


def xml_text(images: str, labels: tuple[str, ...] = ("car", "person")) -> str:
    label_xml = "".join(f"<label><name>{n}</name><attributes/></label>" for n in labels)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><name>t</name>'
            f"<labels>{label_xml}</labels></task></meta>{images}</annotations>\n")


def dataset(root: Path) -> Path:
    write_image(root / "images/frame_0.jpg", width=W, height=H)
    write_image(root / "images/sub/frame_1.png", width=W, height=H, fmt="PNG")
    images = (
        f'<image id="0" name="frame_0.jpg" width="{W}" height="{H}">'
        '<box label="person" occluded="1" source="manual" xtl="2.5" ytl="3" xbr="10" ybr="20" z_order="0">'
        '<attribute name="pose">standing</attribute></box>'
        '<polygon label="car" occluded="0" source="manual" points="12,2;28,2;28,10;20,10;20,14;12,14" z_order="1"/>'
        '<tag label="daytime" source="manual"/>'
        '</image>'
        f'<image id="1" name="sub/frame_1.png" width="{W}" height="{H}">'
        f'<mask label="car" source="manual" occluded="0" rle="{cvat_rle(CROP)}" left="5" top="7" width="4" height="3" z_order="0"/>'
        '<points label="person" occluded="0" source="manual" points="1,1" z_order="0"/>'
        '</image>'
    )
    (root / "annotations.xml").write_text(xml_text(images), encoding="utf-8")
    return root


def test_shapes_round_trip_through_pycocotools(tmp_path: Path) -> None:
    report = convert_cvat(dataset(tmp_path / "src"), tmp_path / "out", box_masks=False)  # boxes kept as boxes: see test_mixed_outputs
    assert not report.has_errors, report.findings
    assert ("warning", "mixed_box_mask") in codes(tmp_path / "out")
    coco, masks = coco_masks(tmp_path / "out")
    assert [c["name"] for c in coco.dataset["categories"]] == ["car", "person"], "declared order, not sorted"
    box, poly, mask = coco.dataset["annotations"]
    assert box["bbox"] == [2.5, 3.0, 7.5, 17.0] and box["attributes"] == {"occluded": True, "pose": "standing"}
    assert poly["attributes"] == {"occluded": False, "z_order": "1"}
    assert np.array_equal(masks["frame_0.jpg"][1][1], rect(W, H, 12, 2, 28, 10) | rect(W, H, 12, 10, 20, 14))
    ref = np.zeros((H, W), dtype=bool)
    ref[7:10, 5:9] = CROP
    assert np.array_equal(masks["sub/frame_1.png"][0][1], ref) and mask["area"] == float(CROP.sum())
    assert coco.dataset["images"][0]["tags"] == ["daytime"]
    assert ("info", "no_area_shape") in codes(tmp_path / "out")


def test_bad_shapes_and_traversal_are_rows(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write_image(root / "images/ok.jpg", width=W, height=H)
    write_image(root / "images/bad.jpg", width=W, height=H)
    write_image(tmp_path / "secret.jpg", width=W, height=H)
    images = (
        f'<image id="0" name="ok.jpg" width="{W}" height="{H}"><box label="car" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5"/></image>'
        f'<image id="1" name="../../secret.jpg" width="{W}" height="{H}"><box label="car" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5"/></image>'
        f'<image id="2" name="bad.jpg" width="{W}" height="{H}">'
        '<box label="car" occluded="0" xtl="9" ytl="1" xbr="5" ybr="5"/>'
        '<box label="car" occluded="0" xtl="a" ytl="1" xbr="5" ybr="5"/>'
        '<polygon label="car" occluded="0" points="1,1;2"/>'
        '<mask label="car" occluded="0" rle="1, 2" left="0" top="0" width="4" height="3"/>'
        '<mask label="car" occluded="0" rle="12" left="30" top="0" width="4" height="3"/>'
        '<box label="truck" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5"/>'
        '</image>'
        f'<image id="3" name="missing.jpg" width="{W}" height="{H}"/>'
        f'<image id="4" name="ok.jpg" width="{W}" height="{H}"/>'
    )
    (root / "annotations.xml").write_text(xml_text(images, labels=("car",)), encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "cvat", str(root), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
    got = sorted(r["code"] for r in rows(tmp_path / "out") if r["severity"] == "error")
    assert got == sorted(["image_path_outside", "invalid_box", "invalid_box", "invalid_polygon", "invalid_mask", "invalid_mask",
                          "unknown_label", "missing_image", "duplicate_annotation"])
    assert [im["file_name"] for im in json.loads((tmp_path / "out/instances.json").read_text())["images"]] == ["ok.jpg"]


def test_unparseable_xml_is_a_row_and_dtds_are_refused(tmp_path: Path) -> None:
    for name, data in [("trunc", b"<annotations><image name='a'"), ("dtd", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotations/>'),
                       ("other", b"<annotation/>")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "annotations.xml").write_bytes(data)
        result = CliRunner().invoke(main, ["convert", "cvat", str(tmp_path / name), "-o", str(tmp_path / f"out-{name}")])
        assert result.exit_code == 2 and "nothing converted (0 images)" in result.output, result.output  # nothing converted: a usage error
        assert [r["severity"] for r in rows(tmp_path / f"out-{name}")] == ["error"]


def test_same_bytes_across_hash_seeds(tmp_path: Path) -> None:
    src = dataset(tmp_path / "src")
    first, second = convert_under_seeds(["cvat", str(src)], outs=[tmp_path / "o1", tmp_path / "o2"])
    assert first == second and first

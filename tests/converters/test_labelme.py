"""LabelMe JSON -> COCO: rectangles, polygons, circles and groups against numpy references through
pycocotools' reader; points as rows; imagePath never followed out of the root; embedded images only on request."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.converters.labelme import convert_labelme
from segpipe.converters.report import EXIT_OK, EXIT_SKIPPED_ERRORS
from tests.converters.format_helpers import codes, coco_masks, convert_under_seeds, rect, rows, write_image

W, H = 30, 20


def shape(label: str, shape_type: str, points: list[list[float]], group_id: int | None = None, **extra: object) -> dict[str, object]:
    return {"label": label, "shape_type": shape_type, "points": points, "group_id": group_id, "flags": {}, **extra}


def write_json(path: Path, shapes: list[dict[str, object]], *, image_path: str | None, image_data: str | None = None,
               size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": image_data,
           "imageWidth": size[0], "imageHeight": size[1]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def dataset(root: Path) -> Path:
    write_image(root / "a.jpg", width=W, height=H)
    write_json(root / "a.json", [
        shape("dog", "rectangle", [[12, 15], [2, 3]], flags={"sitting": True}),
        shape("cat", "polygon", [[5, 5], [15, 5], [15, 10], [10, 10], [10, 15], [5, 15]]),
        shape("cat", "polygon", [[20, 0], [25, 0], [25, 5], [20, 5]], group_id=7),
        shape("cat", "polygon", [[20, 10], [25, 10], [25, 15], [20, 15]], group_id=7),
        shape("ball", "circle", [[15.0, 10.0], [18.0, 10.0]]),
        shape("nose", "point", [[3, 4]]),
        shape("edge", "line", [[0, 0], [3, 3]]),
    ], image_path="a.jpg")
    write_image(root / "sub/pics/b.png", width=W, height=H, fmt="PNG")
    write_json(root / "sub/json/b.json", [shape("dog", "polygon", [[0, 0], [4, 0], [4, 4], [0, 4]])], image_path="../pics/b.png")
    return root


def test_shapes_round_trip_through_pycocotools(tmp_path: Path) -> None:
    report = convert_labelme(dataset(tmp_path / "src"), tmp_path / "out", box_masks=False)  # boxes kept as boxes: see test_mixed_outputs
    assert not report.has_errors, report.findings
    assert ("warning", "mixed_box_mask") in codes(tmp_path / "out")
    coco, masks = coco_masks(tmp_path / "out")
    assert [c["name"] for c in coco.dataset["categories"]] == ["ball", "cat", "dog"]
    assert sorted(masks) == ["a.jpg", "sub/pics/b.png"]
    anns = coco.dataset["annotations"]
    assert anns[0]["bbox"] == [2.0, 3.0, 10.0, 12.0] and "segmentation" not in anns[0] and anns[0]["attributes"] == {"flags": {"sitting": True}}
    got = masks["a.jpg"]
    assert [c for c, _ in got] == ["dog", "cat", "cat", "ball"]
    assert np.array_equal(got[1][1], rect(W, H, 5, 5, 15, 10) | rect(W, H, 5, 10, 10, 15))
    assert np.array_equal(got[2][1], rect(W, H, 20, 0, 25, 5) | rect(W, H, 20, 10, 25, 15)), "group_id 7 is one object"
    ys, xs = np.mgrid[0:H, 0:W]
    assert np.array_equal(got[3][1], (xs + 0.5 - 15) ** 2 + (ys + 0.5 - 10) ** 2 <= 9)
    assert np.array_equal(masks["sub/pics/b.png"][0][1], rect(W, H, 0, 0, 4, 4))
    assert {("info", "point_shape"), ("warning", "line_shape")} <= set(codes(tmp_path / "out"))


def test_image_path_is_never_followed_out_of_the_root(tmp_path: Path) -> None:
    outside = write_image(tmp_path / "secret.jpg", width=W, height=H)
    src = tmp_path / "src"
    write_json(src / "evil.json", [shape("dog", "polygon", [[0, 0], [4, 0], [4, 4]])], image_path="../secret.jpg")
    write_json(src / "abs.json", [shape("dog", "polygon", [[0, 0], [4, 0], [4, 4]])], image_path=str(outside))
    write_image(src / "abs.jpg", width=W, height=H)
    (src / "link").symlink_to(tmp_path, target_is_directory=True)  # a folder link out of the root
    write_json(src / "x.json", [shape("dog", "polygon", [[0, 0], [4, 0], [4, 4]])], image_path="link/secret.jpg")
    result = CliRunner().invoke(main, ["convert", "labelme", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
    files = [im["file_name"] for im in json.loads((tmp_path / "out/instances.json").read_text())["images"]]
    assert files == ["abs.jpg"], "the absolute imagePath falls back to the image named like the JSON, inside the root"
    by = {(Path(r["file"]).name, r["code"]) for r in rows(tmp_path / "out")}
    assert {("evil.json", "image_path_outside"), ("evil.json", "missing_image"), ("abs.json", "image_path_outside"),
            ("x.json", "image_path_outside"), ("x.json", "missing_image")} <= by
    assert "secret" not in (tmp_path / "out/instances.json").read_text()


def test_embedded_images_only_when_asked(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (W, H), (1, 2, 3)).save(buf, format="PNG")
    src = tmp_path / "src"
    write_json(src / "e.json", [shape("dog", "rectangle", [[1, 1], [5, 5]])], image_path="gone.png", image_data=base64.b64encode(buf.getvalue()).decode())
    plain = CliRunner().invoke(main, ["convert", "labelme", str(src), "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 2 and "nothing converted (0 images)" in plain.output and not (tmp_path / "plain/images").exists()
    assert any("--embedded-images" in r["message"] for r in rows(tmp_path / "plain"))
    asked = CliRunner().invoke(main, ["convert", "labelme", str(src), "-o", str(tmp_path / "asked"), "--embedded-images"])
    assert asked.exit_code == EXIT_OK, asked.output
    assert (tmp_path / "asked/images/e.png").read_bytes() == buf.getvalue()
    meta = json.loads((tmp_path / "asked/dataset.json").read_text())
    assert Path(meta["image_root"]) == (tmp_path / "asked/images").resolve()


def test_bad_files_are_rows(tmp_path: Path) -> None:
    src = dataset(tmp_path / "src")
    (src / "trunc.json").write_text('{"shapes": [{"label": "dog"', encoding="utf-8")
    (src / "list.json").write_text("[1, 2]", encoding="utf-8")
    write_image(src / "w.jpg", width=W, height=H)
    write_json(src / "w.json", [shape("dog", "polygon", "oops"), shape(7, "polygon", [[0, 0], [1, 0], [1, 1]])], image_path="w.jpg")  # type: ignore[arg-type]
    write_image(src / "z.jpg", width=W, height=H)
    write_json(src / "z.json", [shape("dog", "polygon", [[0, 0], [1, 1]]), shape("dog", "rectangle", [[50, 50], [60, 60]])], image_path="z.jpg", size=(99, 9))
    result = CliRunner().invoke(main, ["convert", "labelme", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_SKIPPED_ERRORS, result.output
    by = {(Path(r["file"]).name, r["severity"], r["code"]) for r in rows(tmp_path / "out")}
    assert {("trunc.json", "error", "invalid_json"), ("list.json", "error", "invalid_json"), ("w.json", "error", "invalid_shape"),
            ("z.json", "error", "invalid_shape"), ("z.json", "error", "empty_box"), ("z.json", "warning", "size_mismatch")} <= by
    files = [im["file_name"] for im in json.loads((tmp_path / "out/instances.json").read_text())["images"]]
    assert files == ["a.jpg", "sub/pics/b.png"]


def test_same_bytes_across_hash_seeds(tmp_path: Path) -> None:
    src = dataset(tmp_path / "src")
    first, second = convert_under_seeds(["labelme", str(src)], outs=[tmp_path / "o1", tmp_path / "o2"])
    assert first == second and first


def test_shapes_become_runs_equal_to_the_or_of_their_full_image_masks() -> None:
    """Polygons and rectangles go to runs without a full-image mask; the records must be those of the plain
    method: each group's masks ORed at full size, then area, tight box and pycocotools' encoding (also for
    groups mixing circles, pasted-free polygons and rectangles, and the __ignore__ union)."""
    from pycocotools import mask as mask_utils

    from segpipe.converters.coco import mask_annotation
    from segpipe.converters.labelme import IGNORE_LABEL, LabelmeDocument, LabelmeShape, _shape_mask, labelme_shapes_to_annotations

    rng = np.random.default_rng(7)
    h, w = 61, 83
    for trial in range(40):
        shapes = []
        for i in range(int(rng.integers(1, 7))):
            kind = ["polygon", "rectangle", "circle", "oriented_rectangle"][int(rng.integers(0, 4))]
            n = {"polygon": int(rng.integers(3, 9)), "rectangle": 2, "circle": 2, "oriented_rectangle": 4}[kind]
            pts = tuple((float(rng.uniform(-20, w + 20)), float(rng.uniform(-20, h + 20))) for _ in range(n))
            label = [IGNORE_LABEL, "cat", "dog"][int(rng.integers(0, 3))]
            group = int(rng.integers(0, 2)) if rng.random() < 0.5 else None
            shapes.append(LabelmeShape(index=i, label=label, shape_type=kind, points=pts, group_id=group))
        doc = LabelmeDocument(shapes=tuple(shapes), image_path=None, image_data=None, size=(w, h))
        records, _, _ = labelme_shapes_to_annotations(doc, width=w, height=h, path="x.json")
        groups: dict[object, list[LabelmeShape]] = {}
        for s in shapes:
            groups.setdefault((s.label, s.index) if s.group_id is None else (s.label, ("group", s.group_id)), []).append(s)
        expected, ignore = [], np.zeros((h, w), dtype=bool)
        for members in groups.values():
            first = members[0]
            if len(members) == 1 and first.shape_type == "rectangle" and first.label != IGNORE_LABEL:
                continue  # a lone rectangle is a box record, not a mask
            mask = np.zeros((h, w), dtype=bool)
            for s in members:
                mask |= _shape_mask(s, width=w, height=h)
            if first.label == IGNORE_LABEL:
                ignore |= mask
            elif mask.any():
                expected.append(mask_annotation(category=first.label, mask=mask))
        if ignore.any():
            expected.append(mask_annotation(category=IGNORE_LABEL, mask=ignore))
        got = [(r.category, r.bbox, r.area, dict(r.segmentation)) for r in records if isinstance(r.segmentation, dict)]
        want = [(r.category, r.bbox, r.area, dict(r.segmentation)) for r in expected]
        assert got == want, trial
        for _, _, area, seg in got:
            assert mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode()}) == area


def test_polygons_on_a_huge_image_never_build_a_full_image_mask(monkeypatch: object) -> None:
    """300 polygons on a 13000 x 13000 image: each goes from its corners to runs (a full-image mask per shape
    would be 169 MB to OR, copy and encode, minutes for the whole file)."""
    import pytest

    from segpipe.converters import labelme
    from segpipe.converters.labelme import LabelmeDocument, LabelmeShape, labelme_shapes_to_annotations

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a full-image mask was built for a polygon")

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(labelme, "_shape_mask", refuse)
    rng = np.random.default_rng(1)
    shapes = []
    for i in range(300):
        cx, cy, r = float(rng.integers(500, 12500)), float(rng.integers(500, 12500)), float(rng.integers(50, 400))
        pts = tuple((cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 6.28, 30))
        shapes.append(LabelmeShape(index=i, label="cat", shape_type="polygon", points=pts))
    doc = LabelmeDocument(shapes=tuple(shapes), image_path=None, image_data=None, size=(13000, 13000))
    records, findings, _ = labelme_shapes_to_annotations(doc, width=13000, height=13000, path="big.json")
    assert len(records) == 300 and not findings
    assert all(200 < r.area < 3.2 * 400 ** 2 for r in records)

"""Hostile inputs across commands: far-off geometry, disguised or empty image files, JSON/YAML bombs.
Each case is a located row or a one-line error, never a crash; memory is measured as a fresh interpreter's
peak RSS (VmHWM from /proc/self/status), never a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SEGPIPE = [sys.executable, "-c", "import sys; from segpipe.cli import main; sys.exit(main())"]
W, H = 64, 48
FAR = [[0, 0], [1e9, 0], [1e9, 1e9]]  # overflowed pycocotools' C int: a segfault before the guard


def _segpipe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEGPIPE, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _triangle_reference() -> np.ndarray:
    """The far triangle's pixels: the same shape cut at 200 px (inside pycocotools' safe range), drawn by
    pycocotools directly."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[0, 0, 200, 0, 200, 200]], H, W))).astype(bool)


def _masks(out: Path) -> list[np.ndarray]:
    from pycocotools.coco import COCO

    coco = COCO(str(out / "instances.json"))
    return [coco.annToMask(a).astype(bool) for a in coco.dataset["annotations"]]


def _labelme(root: Path, shapes: list[dict[str, object]], *, size: tuple[int, int] = (W, H)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "a.png"), np.zeros((size[1], size[0], 3), np.uint8))
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": "a.png", "imageData": None,
           "imageWidth": size[0], "imageHeight": size[1]}
    (root / "a.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


def _shape(kind: str, points: list[list[float]], group_id: int | None = None) -> dict[str, object]:
    return {"label": "dog", "shape_type": kind, "points": points, "group_id": group_id, "flags": {}}


def test_a_far_labelme_polygon_is_clipped_not_a_segfault(tmp_path: Path) -> None:
    src = _labelme(tmp_path / "src", [_shape("polygon", FAR)])
    done = _segpipe("convert", "labelme", str(src), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, (done.returncode, done.stderr)
    [mask] = _masks(tmp_path / "out")
    np.testing.assert_array_equal(mask, _triangle_reference())


def test_grouped_rectangles_at_1e12_are_clipped(tmp_path: Path) -> None:
    src = _labelme(tmp_path / "src", [_shape("rectangle", [[10, 10], [1e12, 1e12]], group_id=1),
                                      _shape("rectangle", [[-1e12, -1e12], [5, 5]], group_id=1)])
    done = _segpipe("convert", "labelme", str(src), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, (done.returncode, done.stderr)
    [mask] = _masks(tmp_path / "out")
    expected = np.zeros((H, W), bool)
    expected[10:, 10:] = True
    expected[:5, :5] = True
    np.testing.assert_array_equal(mask, expected)


def test_a_far_cvat_polygon_is_clipped_not_a_segfault(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    cv2.imwrite(str(src / "images" / "a.png"), np.zeros((H, W, 3), np.uint8))
    (src / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><name>t</name><labels>'
        '<label><name>car</name><attributes/></label></labels></task></meta>'
        f'<image id="0" name="a.png" width="{W}" height="{H}">'
        '<polygon label="car" occluded="0" points="0,0;1e9,0;1e9,1e9" z_order="0"/></image></annotations>\n', encoding="utf-8")
    done = _segpipe("convert", "cvat", str(src), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, (done.returncode, done.stderr)
    [mask] = _masks(tmp_path / "out")
    np.testing.assert_array_equal(mask, _triangle_reference())


def test_audit_of_a_far_coco_polygon_is_a_row(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((H, W, 3), np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "categories": [{"id": 1, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, W, H], "area": 1896.0, "iscrowd": 0,
                             "segmentation": [[0, 0, 1e9, 0, 1e9, 1e9]]}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco), encoding="utf-8")
    done = _segpipe("audit", str(tmp_path / "coco.json"), "-o", str(tmp_path / "audit"))
    assert done.returncode in (0, 1), (done.returncode, done.stderr)  # findings, never a signal
    findings = (tmp_path / "audit" / "findings.csv").read_text(encoding="utf-8")
    assert "segmentation_outside" in findings and "annotations[0]: segmentation[0] reaches (0,0)-(1e+09,1e+09) outside 64x48" in findings
    assert "area_mismatch" not in findings  # the clipped mask has the reference's 1896 pixels


def test_clipping_moves_at_most_a_few_boundary_pixels() -> None:
    """Polygons within pycocotools' safe range, clipped anyway, against pycocotools on the unclipped polygon."""
    from pycocotools import mask as mask_utils

    from segpipe.core.polygon_bounds import clip_to_image

    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(1, 3 * max(h, w), n)
        cx, cy = rng.uniform(-w, 2 * w), rng.uniform(-h, 2 * h)
        poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel().tolist()
        reference = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w))).astype(bool)
        clipped = clip_to_image(poly, height=h, width=w)
        got = (mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([clipped], h, w))).astype(bool)
               if len(clipped) >= 6 else np.zeros_like(reference))
        worst = max(worst, float((got != reference).sum()) / (h + w))
    assert worst <= 1.0  # never more than one image border's worth of boundary pixels


def test_disc_mask_matches_pixel_centres_and_its_memory_is_the_image() -> None:
    from segpipe.converters.shapes import disc_mask

    rng = np.random.default_rng(1)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        cx, cy, r = rng.uniform(-20, 60), rng.uniform(-20, 60), rng.uniform(0, 30)
        ys, xs = np.mgrid[0:h, 0:w]
        np.testing.assert_array_equal(disc_mask(cx=cx, cy=cy, radius=r, width=w, height=h),
                                      (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r)
    code = ("from segpipe.converters.shapes import disc_mask\n"
            "m = disc_mask(cx=6500.0, cy=6500.0, radius=6000.0, width=13000, height=13000)\n"
            "print(int(m.sum()), [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    pixels, rss_kb = map(int, done.stdout.split())
    assert abs(pixels - np.pi * 6000**2) < 4 * 2 * np.pi * 6000
    assert rss_kb < 600 * 1024, rss_kb  # the 169 MB mask plus a row of distances; int64 meshgrids took 5.3 GB


def test_report_overlay_refuses_far_polygons_without_crashing() -> None:
    from segpipe.reports.overlay import BadGeometry, annotation_mask

    with pytest.raises(BadGeometry):
        annotation_mask({"segmentation": [[0, 0, 1e9, 0, 1e9, 1e9]]}, height=H, width=W)


def _semantic_dirs(root: Path) -> tuple[Path, Path]:
    gt, pred = root / "gt", root / "pred"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    for i in range(3):
        m = np.zeros((20, 30), np.uint8)
        m[5:10, 5:10] = 1
        cv2.imwrite(str(gt / f"x{i}.png"), m)
        cv2.imwrite(str(pred / f"x{i}.png"), m)
    return gt, pred


def test_a_tiff_named_png_meets_the_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pixel limit comes from the real header: a TIFF named .png used to be decoded whatever its size."""
    from PIL import Image

    from segpipe.core.errors import AnnotationError
    from segpipe.core.images import MAX_IMAGE_PIXELS_ENV, decode_image_file
    from segpipe.core.errors import EvaluationError
    from segpipe.core.label_maps import read_label_map

    gt, pred = _semantic_dirs(tmp_path)
    Image.new("L", (2000, 1000)).save(pred / "x1.png", format="TIFF", compression="tiff_deflate")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1000000")
    with pytest.raises(EvaluationError, match=r"x1\.png: size: 2000x1000 = 2000000 pixels is over the limit of 1000000"):
        read_label_map(pred / "x1.png")
    with pytest.raises(AnnotationError, match="2000x1000 = 2000000 pixels is over the limit") as info:
        decode_image_file(pred / "x1.png")
    assert info.value.code == "image_too_large"
    done = subprocess.run([*SEGPIPE, "evaluate", "semantic", "--gt", str(gt), "--pred", str(pred), "--classes", "bg,fg",
                           "-o", str(tmp_path / "o"), "--no-html"], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**__import__("os").environ, MAX_IMAGE_PIXELS_ENV: "1000000"})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{pred / 'x1.png'}: size: 2000x1000 = 2000000 pixels is over the limit of 1000000" in done.stderr


def test_an_empty_prediction_png_is_a_located_error(tmp_path: Path) -> None:
    gt, pred = _semantic_dirs(tmp_path)
    (pred / "x2.png").write_bytes(b"")
    (pred / "x1.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # cut inside the header
    done = _segpipe("evaluate", "semantic", "--gt", str(gt), "--pred", str(pred), "--classes", "bg,fg", "-o", str(tmp_path / "o"), "--no-html")
    assert done.returncode == 1 and "Traceback" not in done.stderr and "cv2.error" not in done.stderr, done.stderr
    assert f"Error: {pred / 'x1.png'}: png: truncated PNG (no IHDR header) (and 1 more bad files: x2.png)" in done.stderr

    from segpipe.core.errors import EvaluationError
    from segpipe.core.label_maps import read_label_map

    with pytest.raises(EvaluationError, match=r"x2\.png: png: empty file \(0 bytes\), not an image"):
        read_label_map(pred / "x2.png")


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("which", ["gt", "pred"])
def test_a_100000_deep_json_is_a_located_error_in_evaluate(tmp_path: Path, which: str) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "categories": [{"id": 1, "name": "dog"}],
            "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(coco) if which == "pred" else DEEP, encoding="utf-8")
    (tmp_path / "pred.json").write_text(DEEP if which == "pred" else "[]", encoding="utf-8")
    done = _segpipe("evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                    "-o", str(tmp_path / "o"), "--iou-type", "bbox")
    what = "ground truth" if which == "gt" else "results"
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{tmp_path / (which + '.json')}: cannot read {what} JSON: nested too deeply" in done.stderr


def test_a_100000_deep_json_is_a_located_error_in_audit_convert_and_model_cards(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text(DEEP, encoding="utf-8")
    done = _segpipe("audit", str(tmp_path / "deep.json"), "-o", str(tmp_path / "audit"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{tmp_path / 'deep.json'}: cannot read COCO JSON: nested too deeply" in done.stderr

    from segpipe.converters.coco import read_coco
    from segpipe.converters.labelme import convert_labelme
    from segpipe.inference.checkpoints import InferenceError, read_model_card

    with pytest.raises(ValueError, match="nested too deeply"):
        read_coco(tmp_path / "deep.json")
    src = _labelme(tmp_path / "lm", [_shape("polygon", [[1, 1], [5, 1], [5, 5]])])
    (src / "b.json").write_text('{"shapes": ' + DEEP + "}", encoding="utf-8")
    report = convert_labelme(src, tmp_path / "out")
    assert [(Path(f.file).name, f.code, f.message) for f in report.findings if f.severity == "error"] == [
        ("b.json", "invalid_json", "not valid JSON: nested too deeply (more than about 1000 levels of arrays/objects)")]
    (tmp_path / "m.pt").write_bytes(b"")
    for card, text in (("m.json", DEEP), ("m.toml", "a = " + DEEP)):
        for old in tmp_path.glob("m.json"), tmp_path.glob("m.toml"):
            for path in old:
                path.unlink()
        (tmp_path / card).write_text(text, encoding="utf-8")
        with pytest.raises(InferenceError, match="unreadable model card: .*nested too deeply"):
            read_model_card(tmp_path / "m.pt")


def test_a_yaml_alias_bomb_is_a_row_in_bounded_memory(tmp_path: Path) -> None:
    """354 bytes of nested aliases: 9**9 strings once expanded (the class name used to be the expansion)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text("\n".join([*lines, "names: [*i]"]) + "\n", encoding="utf-8")
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n", encoding="utf-8")
    code = ("import sys\nfrom pathlib import Path\nfrom segpipe.converters.yolo import convert_yolo\n"
            "r = convert_yolo(Path(sys.argv[1]), Path(sys.argv[1]) / 'out')\n"
            "print([(f.code, f.message.splitlines()[0]) for f in r.findings if f.severity == 'error'])\n"
            "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, rss_kb = done.stdout.strip().splitlines()
    assert rows == "[('invalid_yaml', 'not valid YAML: aliases (*name) are not allowed here')]"
    assert int(rss_kb) < 400 * 1024


def test_data_yaml_class_names_must_be_text() -> None:
    from segpipe.converters.yolo import parse_data_yaml

    names, findings = parse_data_yaml("names: [[a, b], dog]", path="d.yaml")
    assert names is None and [f.message for f in findings] == ["names[0]: a class name must be text, got list"]
    assert parse_data_yaml("names: [cat, 7]", path="d.yaml")[0] == ["cat", "7"]


def test_a_negative_gt_image_size_is_a_located_error(tmp_path: Path) -> None:
    """It used to be scored (bbox: exit 0 with AP 0) or end in a traceback."""
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": -64, "height": 48}], "categories": [{"id": 1, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco), encoding="utf-8")
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [0, 0, 5, 5]}]),
                                        encoding="utf-8")
    done = _segpipe("evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                    "-o", str(tmp_path / "o"), "--iou-type", "bbox")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{tmp_path / 'gt.json'}: images[0].width/height: must be positive, got -64x48" in done.stderr

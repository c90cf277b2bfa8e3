"""`segpipe audit`: inputs (COCO file or converted dataset dir), outputs, printed summary, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from segpipe.core.dataset_layout import write_dataset_meta
from segpipe.evaluators.audit import findings as F
from segpipe.cli import main
from tests.evaluators.test_audit_format import clean_coco
from tests.evaluators.test_audit_model import pred
from tests.evaluators.test_audit_geometry import rect


def _coco_file_with_images_folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    coco = clean_coco(images)
    coco["annotations"][0]["id"] = 0
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", *args])
    return result.exit_code, result.output


def test_coco_file_with_images_beside_it(tmp_path: Path) -> None:
    code, out = run(str(_coco_file_with_images_folder(tmp_path)), "-o", str(tmp_path / "audit"))
    assert code == 0, out  # findings never fail the command
    findings = pd.read_csv(tmp_path / "audit" / "findings.csv")
    assert list(findings.columns) == list(F.FINDING_COLUMNS)
    assert F.CHECK_ANNOTATION_ID_ZERO in set(findings["check"])
    assert F.CHECK_IMAGE_MISSING not in set(findings["check"])  # images/ beside the json was found
    summary = pd.read_csv(tmp_path / "audit" / "summary.csv")
    assert summary["count"].sum() == len(findings)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "audit" / "summary.parquet"), summary)
    assert len(pd.read_parquet(tmp_path / "audit" / "findings.parquet")) == len(findings)
    assert "annotation_id_zero" in out and "finding(s)" in out


def test_same_input_same_bytes(tmp_path: Path) -> None:
    path = _coco_file_with_images_folder(tmp_path)
    run(str(path), "-o", str(tmp_path / "a"))
    run(str(path), "-o", str(tmp_path / "b"))
    for name in ("findings.csv", "summary.csv", "findings.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_converted_dataset_dir_with_report_and_predictions(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    coco = clean_coco(images)
    ds = tmp_path / "converted"
    ds.mkdir()
    (ds / "instances.json").write_text(json.dumps(coco))
    write_dataset_meta(ds, format="voc", image_root=images, options={})
    (ds / "conversion_report.csv").write_text("file,severity,code,message\nxmls/a.xml,warning,size_mismatch,<size> differs\n")
    preds_dir = tmp_path / "pred"
    preds_dir.mkdir()
    m = rect(0, 0, 40, 30)[:30, :40]
    (preds_dir / "results.json").write_text(json.dumps([{**pred(2, m, 0.95), "image_id": 2}]))
    code, out = run(str(ds), "--pred", str(preds_dir), "-o", str(tmp_path / "audit"), "--top", "3")
    assert code == 0, out
    findings = pd.read_csv(tmp_path / "audit" / "findings.csv")
    assert "conversion:size_mismatch" in set(findings["check"])
    assert F.CHECK_POSSIBLY_WRONG_CLASS in set(findings["check"]) or F.CHECK_POSSIBLY_SLOPPY in set(findings["check"])
    assert "top 3 by score" in out


def test_unreadable_inputs_exit_1_and_usage_exit_2(tmp_path: Path) -> None:
    path = _coco_file_with_images_folder(tmp_path)
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    code, out = run(str(path), "--pred", str(bad), "-o", str(tmp_path / "audit"))
    assert code == 1 and "results.json" in out
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    assert run(str(broken), "-o", str(tmp_path / "audit"))[0] == 1
    assert run(str(path))[0] == 2  # -o is required


def test_help_says_findings_do_not_fail() -> None:
    code, out = run("--help")
    assert code == 0
    assert "Exit code: 0 whenever the audit ran" in out

"""Mismatched inputs are said, not scored silently: results on a subset of the GT images, --classes in
another order than the GT's classes.txt, an empty results.json given to the audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from segpipe.cli import main
from tests.evaluators.test_audit_format import clean_coco
from tests.evaluators.test_instance import make_dataset
from tests.pipeline.test_evaluate_semantic_cli import GT, PRED, write_png


def test_results_on_a_subset_of_the_gt_images_are_warned_with_a_count(tmp_path: Path) -> None:
    gt, results = make_dataset(seed=3, n_images=8)
    kept_images = sorted({r["image_id"] for r in results})[:2]
    subset = [r for r in results if r["image_id"] in kept_images]
    with_objects = {a["image_id"] for a in gt["annotations"]}
    expected = len(with_objects - set(kept_images))  # independent count: GT images with objects and no result
    assert expected > 0
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(subset))
    result = CliRunner().invoke(main, ["evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred",
                                       str(tmp_path / "res.json"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert f"warning: {expected} of {len(with_objects)} ground-truth images with objects got no result at all" in result.output
    header = json.loads((tmp_path / "r" / "header.json").read_text())
    assert any("got no result at all" in w for w in header["warnings"])


def test_full_results_give_no_subset_warning(tmp_path: Path) -> None:
    gt, results = make_dataset(seed=3, n_images=8)
    covered = {r["image_id"] for r in results}
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in covered]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    result = CliRunner().invoke(main, ["evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred",
                                       str(tmp_path / "res.json"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0 and "no result at all" not in result.output, result.output


def test_semantic_classes_in_another_order_than_classes_txt_is_a_usage_error(tmp_path: Path) -> None:
    write_png(tmp_path / "gt" / "a.png", np.minimum(GT, 1) * (GT != 255) + 255 * (GT == 255))
    write_png(tmp_path / "pred" / "a.png", np.minimum(PRED, 1))
    (tmp_path / "gt" / "classes.txt").write_text("background\npet\n")
    args = ["evaluate", "semantic", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "-o", str(tmp_path / "r")]
    swapped = CliRunner().invoke(main, [*args, "--classes", "pet,background"])
    assert swapped.exit_code == 2, swapped.output
    assert "classes.txt" in swapped.output and "another order" in swapped.output and "swapped" in swapped.output
    assert not (tmp_path / "r").exists()
    same = CliRunner().invoke(main, [*args, "--classes", "background,pet"])
    assert same.exit_code == 0 and "warning: --classes" not in same.output, same.output
    renamed = CliRunner().invoke(main, [*args, "--classes", "bg,animal"])
    assert renamed.exit_code == 0 and "warning: --classes bg,animal differs from" in renamed.output


def test_audit_with_an_empty_results_json_says_no_model_check_ran(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "instances.json").write_text(json.dumps(clean_coco(images)))
    (tmp_path / "results.json").write_text("[]")
    result = CliRunner().invoke(main, ["audit", str(tmp_path / "instances.json"), "--pred", str(tmp_path / "results.json"),
                                       "-o", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    assert "no model-assisted check ran" in result.output and "results.json" in result.output
    findings = (tmp_path / "audit" / "findings.csv").read_text()
    assert "no_predictions" in findings

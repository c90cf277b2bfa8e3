"""`segpipe compare A B` end to end on a generated dataset: semantic label-map folders and instance results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segpipe.cli import main
from segpipe.demo.sample import generate_sample
from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    generate_sample(root / "sample", n_images=6, seed=0)
    result = CliRunner().invoke(main, ["convert", "oxford-pet", str(root / "sample"), "-o", str(root / "converted")])
    assert result.exit_code == 0, result.output
    return root / "converted"


def _semantic_predictions(converted: Path, out: Path, *, erode: int) -> Path:
    """The GT label maps with the pet eroded by `erode` pixels (0: the GT itself) and ignore pixels as background."""
    (out / "semantic").mkdir(parents=True)
    for path in sorted((converted / "semantic").glob("*.png")):
        gt = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        pet = (gt == 1).astype(np.uint8)
        if erode:
            pet = cv2.erode(pet, np.ones((3, 3), np.uint8), iterations=erode)
        cv2.imwrite(str(out / "semantic" / path.name), pet)
    return out


def test_compare_semantic(converted: Path, tmp_path: Path) -> None:
    a = _semantic_predictions(converted, tmp_path / "a", erode=6)
    b = _semantic_predictions(converted, tmp_path / "b", erode=0)
    out = tmp_path / "cmp"
    args = ["compare", str(a), str(b), "--dataset", str(converted), "-o", str(out), "--replicates", "200", "--boundary-iou"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "significant at 95%: B is better" in result.output
    intervals = pd.read_csv(out / "intervals.csv").set_index("metric")
    names = (converted / "semantic" / "classes.txt").read_text().split()
    for side, folder in (("A", a), ("B", b)):
        report = evaluate_semantic_dirs(converted / "semantic", folder / "semantic", class_names=names)
        assert intervals.loc["mIoU", side] == pytest.approx(report.metric("mIoU"), abs=1e-12)
        assert intervals.loc["mDice", side] == pytest.approx(report.metric("mDice"), abs=1e-12)
        # the per-image per-class table agrees with an independent numpy IoU of one image
        table = pd.read_csv(out / side / "per_image_class_iou.csv")
        first = table.iloc[0]
        gt = cv2.imread(str(converted / "semantic" / first["file"]), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(str(folder / "semantic" / first["file"]), cv2.IMREAD_UNCHANGED)
        c = names.index(first["class"])
        keep = gt != 255
        inter = np.count_nonzero((gt == c) & (pred == c) & keep)
        union = np.count_nonzero(((gt == c) | (pred == c)) & keep)
        assert first["IoU"] == pytest.approx(inter / union, abs=1e-12)
    boundary = pd.read_csv(out / "B" / "boundary_iou.csv").set_index("class")
    assert (boundary.loc[names, "boundary_IoU"] == 1.0).all()  # B is the ground truth itself
    assert (pd.read_csv(out / "A" / "boundary_iou.csv").set_index("class").loc[names, "boundary_IoU"] < 1).all()
    deltas = pd.read_csv(out / "per_image_delta.csv")
    assert (deltas["IoU_delta"] > 0).all() and deltas["IoU_delta"].is_monotonic_increasing
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "Improved most" in page and "data:image/jpeg;base64" in page
    first_bytes = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    shutil.rmtree(out)
    assert CliRunner().invoke(main, args).exit_code == 0
    assert first_bytes == {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}  # deterministic


def _instance_predictions(converted: Path, out: Path, *, drop_every: int, wrong_class: bool) -> Path:
    gt = json.loads((converted / "instances.json").read_text())
    results = []
    n_cats = len(gt["categories"])
    for k, ann in enumerate(gt["annotations"]):
        if drop_every and k % drop_every == 0:
            continue
        cat = ann["category_id"]
        if wrong_class and k % 3 == 1 and n_cats > 1:
            cat = gt["categories"][(cat % n_cats)]["id"]
        results.append({"image_id": ann["image_id"], "category_id": cat, "score": round(0.9 - 0.01 * k, 3),
                        "segmentation": ann["segmentation"]})
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(results))
    return out


def test_compare_instances(converted: Path, tmp_path: Path) -> None:
    a = _instance_predictions(converted, tmp_path / "a", drop_every=2, wrong_class=True)
    b = _instance_predictions(converted, tmp_path / "b", drop_every=0, wrong_class=False)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--dataset", str(converted), "-o", str(out), "--replicates", "100"])
    assert result.exit_code == 0, result.output
    intervals = pd.read_csv(out / "intervals.csv").set_index("metric")
    assert intervals.loc["AP", "B"] == pytest.approx(1.0) and intervals.loc["AP", "A"] < 1
    tide = pd.read_csv(out / "A" / "tide.csv").set_index("error")
    assert tide.loc["Cls", "count"] > 0 and tide.loc["Miss", "count"] > 0
    assert (pd.read_csv(out / "B" / "tide.csv")["count"] == 0).all()
    confusion = pd.read_csv(out / "B" / "confusion.csv")
    matrix = confusion.iloc[:, 1:].to_numpy()
    assert (matrix - np.diag(np.diag(matrix)) == 0).all()  # B is the ground truth: diagonal only
    assert set(pd.read_csv(out / "B" / "f1_optimal.csv")["F1"].dropna()) <= {1.0}
    assert (out / "compare.html").is_file()


def test_compare_refuses_mixed_kinds(converted: Path, tmp_path: Path) -> None:
    a = _semantic_predictions(converted, tmp_path / "a", erode=0)
    b = _instance_predictions(converted, tmp_path / "b", drop_every=0, wrong_class=False)
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--dataset", str(converted), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "nothing to compare" in result.output


def test_compare_names_the_bad_file(converted: Path, tmp_path: Path) -> None:
    a = _semantic_predictions(converted, tmp_path / "a", erode=0)
    b = _semantic_predictions(converted, tmp_path / "b", erode=0)
    victim = sorted((b / "semantic").glob("*.png"))[1]
    cv2.imwrite(str(victim), np.zeros((7, 9), dtype=np.uint8))
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--dataset", str(converted), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and victim.name in result.output and "size" in result.output
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--dataset" in result.output

"""Dense results (thousands of detections per image): pycocotools' numbers, bounded memory, the per-image limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segpipe.evaluators.instance import update as update_module
from segpipe.evaluators.instance.coco_results import MAX_DETECTIONS_PER_IMAGE_DEFAULT, MAX_DETECTIONS_PER_IMAGE_ENV, validate_results
from segpipe.core.errors import EvaluationError
from segpipe.evaluators.instance.evaluation import evaluate_instances
from segpipe.evaluators.kernel import NO_KERNEL_ENV
from tests.evaluators.test_instance import reference_eval

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")

H, W = 120, 160


def dense(*, n_images: int, per_image: int, n_classes: int, gt_per_image: int, masks: bool, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Rectangles as GT and as detections (jittered copies and noise), scores rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []

    def box() -> list[float]:
        x, y = rng.integers(0, W - 8), rng.integers(0, H - 8)
        return [float(x), float(y), float(rng.integers(4, W - x)), float(rng.integers(4, H - y))]

    def rle(b: list[float]) -> dict[str, Any]:
        m = np.zeros((H, W), dtype=np.uint8, order="F")
        x, y, w, h = (int(v) for v in b)
        m[y : y + h, x : x + w] = 1
        return {"size": [H, W], "counts": mask_utils.encode(m)["counts"].decode("ascii")}

    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"dense_{image_id}.png", "height": H, "width": W})
        truth = [(int(rng.integers(1, n_classes + 1)), box()) for _ in range(gt_per_image)]
        for cat, b in truth:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0, "area": b[2] * b[3],
                         "bbox": b, **({"segmentation": rle(b)} if masks else {})})
        for _ in range(per_image):
            if rng.random() < 0.3:
                cat, b = truth[int(rng.integers(len(truth)))]
                b = [max(0.0, v + float(rng.integers(-3, 4))) for v in b[:2]] + b[2:]
            else:
                cat, b = int(rng.integers(1, n_classes + 1)), box()
            det = {"image_id": image_id, "category_id": cat, "score": round(float(rng.random()), 3), "bbox": b}
            results.append(det | ({"segmentation": rle(b)} if masks else {}))
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_classes + 1)]}, results


def _assert_same_as_pycocotools(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> None:
    ours = evaluate_instances(gt, results, iou_type=iou_type)
    ref = reference_eval(gt, results, iou_type)
    assert np.array_equal(ours.precision, ref.eval["precision"])
    assert np.array_equal(ours.recall, ref.eval["recall"])
    assert ours.stats == [float(v) for v in ref.stats]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_thousands_of_detections_per_image_equal_pycocotools(iou_type: str) -> None:
    # 20 classes x 60 GT x 2,500 detections: over 100 per (image, category), over 255 masks per image (pycocotools'
    # area() limit per call) and a whole-image IoU matrix mostly cross-category (the per-category path).
    gt, results = dense(n_images=2, per_image=2500, n_classes=20, gt_per_image=60, masks=iou_type == "segm")
    for image_id in (1, 2):  # really past the one-call threshold
        dets = {c: min(100, sum(1 for r in results if (r["image_id"], r["category_id"]) == (image_id, c))) for c in range(1, 21)}
        gts = {c: sum(1 for a in gt["annotations"] if (a["image_id"], a["category_id"]) == (image_id, c)) for c in range(1, 21)}
        inside = sum(dets[c] * gts[c] for c in dets)
        assert max(dets.values()) == 100 and sum(dets.values()) > 255
        assert sum(dets.values()) * 60 > max(update_module._WHOLE_IMAGE_IOU_RATIO * inside, update_module._WHOLE_IMAGE_IOU_CELLS)
    _assert_same_as_pycocotools(gt, results, iou_type)


def test_per_category_and_whole_image_iou_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    gt, results = dense(n_images=2, per_image=600, n_classes=8, gt_per_image=30, masks=True, seed=1)
    per_category = evaluate_instances(gt, results, iou_type="segm")
    monkeypatch.setattr(update_module, "_WHOLE_IMAGE_IOU_CELLS", 1 << 40)
    whole = evaluate_instances(gt, results, iou_type="segm")
    assert np.array_equal(per_category.precision, whole.precision) and np.array_equal(per_category.recall, whole.recall)


# A child reports its own high-water mark (VmHWM belongs to the process image after exec: the parent's
# memory does not count, unlike ru_maxrss; https://man7.org/linux/man-pages/man5/proc_pid_status.5.html).
_PEAK = ("import atexit, sys\n"
         "atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))))\n")
_SEGPIPE = _PEAK + "from segpipe.cli import main\nsys.argv[0] = 'segpipe'\nmain()\n"
_PYCOCOTOOLS = _PEAK + """import contextlib, io, json
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    ev = COCOeval(gt, gt.loadRes(json.load(open(sys.argv[2]))), 'bbox')
    ev.evaluate(); ev.accumulate(); ev.summarize()
"""


def _peak_mb(code: str, *args: str, env: dict[str, str]) -> float:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(row for row in proc.stderr.splitlines() if row.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def crowded_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 images x 9,000 boxes over 80 classes against 1,500 GT each, written once for both evaluation paths."""
    folder = tmp_path_factory.mktemp("crowded")
    gt, results = dense(n_images=4, per_image=9000, n_classes=80, gt_per_image=1500, masks=False)
    (folder / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    (folder / "res.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def pycocotools_peak_mb(crowded_files: Path) -> float:
    """pycocotools' peak on those files, measured once (it does not depend on segpipe's evaluation path)."""
    return _peak_mb(_PYCOCOTOOLS, str(crowded_files / "gt.json"), str(crowded_files / "res.json"), env=dict(os.environ))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_dense_detections_and_crowded_scenes_keep_memory_near_pycocotools(
        tmp_path: Path, both_evaluation_paths: str, crowded_files: Path, pycocotools_peak_mb: float) -> None:
    """4 images x 9,000 boxes over 80 classes against 1,500 GT each: a whole-image IoU matrix per image would be
    ~100 MB (400 MB kept for the four); COCOeval compares only each category's best 100 with its GTs."""
    env = dict(os.environ)
    if both_evaluation_paths == "numpy":  # the subprocess reads the switch from its environment
        env[NO_KERNEL_ENV] = "1"
    ours = _peak_mb(_SEGPIPE, "evaluate", "instances", "--gt", str(crowded_files / "gt.json"), "--pred", str(crowded_files / "res.json"),
                    "-o", str(tmp_path / "report"), "--no-html", env=env)
    theirs = pycocotools_peak_mb
    # segpipe's imports (pandas, pyarrow for the tables) cost ~110 MB more than pycocotools' before any data
    print(f"peak RSS: segpipe {ours:.0f} MB, pycocotools {theirs:.0f} MB")
    assert ours < theirs + 150, (ours, theirs)


# ---------------------------------------------------------------- the limit on detections per image
@pytest.fixture()
def over_limit(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Limit 150: image 1 has 400 boxes (over it), image 2 has 120 (under it)."""
    monkeypatch.setenv(MAX_DETECTIONS_PER_IMAGE_ENV, "150")
    gt, results = dense(n_images=2, per_image=400, n_classes=3, gt_per_image=10, masks=False, seed=2)
    return gt, [r for r in results if r["image_id"] == 1] + [r for r in results if r["image_id"] == 2][:120]


def test_default_limit_is_far_above_real_models() -> None:
    assert MAX_DETECTIONS_PER_IMAGE_DEFAULT == 10_000
    from segpipe.evaluators.instance.update import MAX_DET
    assert MAX_DETECTIONS_PER_IMAGE_DEFAULT >= 10 * MAX_DET


def test_over_the_limit_is_an_error_naming_the_image(over_limit: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = over_limit
    with pytest.raises(EvaluationError) as err:
        validate_results(gt, results, iou_type="bbox")
    text = str(err.value)
    assert text.startswith("results: results: 1 image(s) with more than 150 detections")
    assert "image_id 1 (dense_1.png): 400" in text and "image_id 2" not in text
    assert MAX_DETECTIONS_PER_IMAGE_ENV in text and "--drop-invalid" in text


def test_drop_invalid_keeps_the_best_of_each_image_and_counts_the_rest(over_limit: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = over_limit
    kept, warnings = validate_results(gt, results, iou_type="bbox", drop_invalid=True)
    image1 = [r for r in results if r["image_id"] == 1]
    # the 150 best by score, ties in file order (a stable sort, as COCOeval's)
    expected = sorted(range(len(image1)), key=lambda i: -image1[i]["score"])[:150]
    assert [r for r in kept if r["image_id"] == 1] == [image1[i] for i in sorted(expected)]
    assert [r for r in kept if r["image_id"] == 2] == [r for r in results if r["image_id"] == 2]
    assert warnings == [(f"results: dropped the 250 lowest-scoring detections of 1 image(s) with more than 150 detections "
                         f"(e.g. image_id 1 (dense_1.png): 400), over the limit per image ({MAX_DETECTIONS_PER_IMAGE_ENV})")]
    # what is scored is exactly the kept list, with pycocotools' numbers
    report = evaluate_instances(gt, results, iou_type="bbox", drop_invalid=True)
    _assert_same_as_pycocotools(gt, kept, "bbox")
    assert warnings[0] in report.warnings


def test_invalid_results_do_not_count_towards_the_limit(over_limit: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    gt, results = over_limit
    image1 = [r for r in results if r["image_id"] == 1]
    broken = [r | {"score": float("nan")} for r in image1[150:]] + image1[:150]
    kept, warnings = validate_results(gt, broken, iou_type="bbox", drop_invalid=True)
    assert len(kept) == 150 and len(warnings) == 1 and "250 of 400 results are invalid" in warnings[0]


def test_a_bad_limit_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    gt, results = dense(n_images=1, per_image=5, n_classes=1, gt_per_image=1, masks=False)
    monkeypatch.setenv(MAX_DETECTIONS_PER_IMAGE_ENV, "lots")
    with pytest.raises(EvaluationError, match=f"environment: {MAX_DETECTIONS_PER_IMAGE_ENV}: expected a positive integer, got 'lots'"):
        validate_results(gt, results, iou_type="bbox")


def test_cli_names_the_results_file_and_drops_with_the_flag(over_limit: tuple[dict[str, Any], list[dict[str, Any]]], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segpipe.cli import main

    gt, results = over_limit
    (tmp_path / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    pred = tmp_path / "res.json"
    pred.write_text(json.dumps(results), encoding="utf-8")
    args = ["evaluate", "instances", "--gt", str(tmp_path / "gt.json"), "--pred", str(pred), "--no-html"]
    refused = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")])
    assert refused.exit_code == 1 and f"{pred}: results: 1 image(s) with more than 150" in refused.output, refused.output
    assert not (tmp_path / "a").exists()
    dropped = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b"), "--drop-invalid"])
    assert dropped.exit_code == 0, dropped.output
    header = json.loads((tmp_path / "b" / "header.json").read_text(encoding="utf-8"))
    assert f"{pred}: dropped the 250 lowest-scoring detections of 1 image(s)" in "\n".join(header["warnings"])


def test_readme_states_the_limit() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = readme.split("# Reliability", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if MAX_DETECTIONS_PER_IMAGE_ENV in line)
    assert f"| {MAX_DETECTIONS_PER_IMAGE_DEFAULT:,} |" in row and "--drop-invalid" in row

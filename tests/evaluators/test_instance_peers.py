"""Peer fixtures (../shared/peers/README.md): their published figures, and live pycocotools on the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segpipe.evaluators.instance.evaluation import SUMMARY_METRICS, InstanceStats, evaluate_instances, instance_compute, instance_update
from tests.evaluators.test_instance import TOL, reference_eval, rle_of

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")

# Figures quoted in ../shared/peers/README.md (pycocotools `stats`, AP ... ARl)
VAL2014_FIGURES = {
    "segm": [0.3195452758576433, 0.5622883972521636, 0.29892653412086784, 0.3873740315997838, 0.31018272403369485,
             0.3269339071005138, 0.2682297225711534, 0.41544868114906375, 0.4168394992198818, 0.4694498622754236,
             0.37675922666197265, 0.3814715099715099],
    "bbox": [0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443, 0.5193996948036719,
             0.5013978986347466, 0.38681277964578054, 0.5936795762842003, 0.595352982877607, 0.6398109626113442,
             0.5664205978994309, 0.5642905982905982],
}
SHAPES_FIGURES = [0.6947194719471946, 0.6947194719471946, 0.6947194719471946, -1, 0.7367986798679867, 0.0,
                  0.6666666666666666, 0.75, 0.75, -1, 0.7916666666666666, 0.0]
SHAPES_APM_WITH_BOX_AREA = 0.7920792079207921


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def val2014(peers: Path) -> dict[str, Any]:
    return _load(peers / "faster_coco_eval" / "instances_val2014_100.json")


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_val2014_fake_results(peers: Path, val2014: dict[str, Any], iou_type: str) -> None:
    results = _load(peers / "cocoapi" / f"instances_val2014_fake{iou_type}100_results.json")
    assert sum(1 for a in val2014["annotations"] if a["iscrowd"] and isinstance(a["segmentation"]["counts"], list)) == 9
    report = evaluate_instances(val2014, results, iou_type=iou_type)
    assert np.max(np.abs(np.array(report.stats) - VAL2014_FIGURES[iou_type])) <= TOL
    ref = reference_eval(val2014, results, iou_type)
    assert np.max(np.abs(np.array(report.stats) - ref.stats)) <= TOL
    assert np.array_equal(report.precision, ref.eval["precision"])
    assert np.array_equal(report.recall, ref.eval["recall"])
    assert any("iscrowd=1" in w for w in report.warnings)
    # categories of the 80 that have no GT in these 100 images report -1 beside their counts
    no_gt = report.per_class[report.per_class["n_gt"] == 0]
    assert len(no_gt) > 0 and (no_gt["AP"] == -1).all()


def test_val2014_shards(peers: Path, val2014: dict[str, Any]) -> None:
    results = _load(peers / "cocoapi" / "instances_val2014_fakesegm100_results.json")
    ids = sorted(im["id"] for im in val2014["images"])
    parts = [instance_update(val2014, results, iou_type="segm", image_ids=ids[i::4]) for i in range(4)]
    report = instance_compute(InstanceStats.merge_all(parts))
    assert np.max(np.abs(np.array(report.stats) - VAL2014_FIGURES["segm"])) <= TOL


def _shapes_results(peers: Path, *, keep_bbox: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """dt_dataset's polygons merged to compressed RLE (pycocotools' loadRes only takes RLE for segm)."""
    folder = peers / "faster_coco_eval"
    gt, dts = _load(folder / "gt_dataset.json"), _load(folder / "dt_dataset.json")
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    results = []
    for d in dts:
        h, w = sizes[d["image_id"]]
        rle = mask_utils.merge(mask_utils.frPyObjects(d["segmentation"], h, w))
        r = {"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}}
        if keep_bbox:
            r["bbox"] = d["bbox"]
        results.append(r)
    return gt, results


def test_shapes_polygons_with_shuffled_file_names(peers: Path) -> None:
    gt, results = _shapes_results(peers, keep_bbox=True)
    assert gt["images"][0]["file_name"] == "img_3.jpg" and gt["images"][0]["id"] == 1
    report = evaluate_instances(gt, results, iou_type="segm")  # bbox dropped: area = mask area
    assert np.max(np.abs(np.array(report.stats) - SHAPES_FIGURES)) <= TOL
    assert np.max(np.abs(np.array(report.stats) - reference_eval(gt, results, "segm").stats)) <= TOL
    assert report.per_image.set_index("image_id").loc[1, "file_name"] == "img_3.jpg"
    # the raw polygons work too: we merge them to RLE as above
    raw = _load(peers / "faster_coco_eval" / "dt_dataset.json")
    assert np.array_equal(np.array(evaluate_instances(gt, raw, iou_type="segm").stats), np.array(report.stats))


def test_shapes_box_area_is_the_documented_alternative(peers: Path) -> None:
    """What pycocotools gives when detections keep their bbox (area from the box): not our convention."""
    gt, with_box = _shapes_results(peers, keep_bbox=True)
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import copy
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(with_box)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert abs(ev.stats[SUMMARY_METRICS.index("APm")] - SHAPES_APM_WITH_BOX_AREA) <= TOL
    ours = evaluate_instances(gt, with_box, iou_type="segm")
    assert abs(ours.stats[SUMMARY_METRICS.index("APm")] - SHAPES_FIGURES[4]) <= TOL
    assert "mask area" in ours.area_note


def test_datumaro_coco_instances(peers: Path) -> None:
    """Category ids 1, 2, 4; a crowd with uncompressed RLE; an annotation with `segmentation: []`."""
    folder = peers / "datumaro" / "coco_dataset" / "coco_instances" / "annotations"
    val = _load(folder / "instances_val.json")
    boxes = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.5 + 0.1 * i, "bbox": a["bbox"]}
             for i, a in enumerate(val["annotations"])]
    report = evaluate_instances(val, boxes, iou_type="bbox")
    assert np.max(np.abs(np.array(report.stats) - reference_eval(val, boxes, "bbox").stats)) <= TOL
    assert list(report.per_class["category_id"]) == [1, 2, 4]
    assert report.per_class.set_index("category").loc["c", "AP"] == -1
    assert report.per_class.set_index("category").loc["b", "AP"] == -1  # its only annotation is a crowd
    train = _load(folder / "instances_train.json")
    with pytest.raises(IndexError):  # pycocotools cannot turn `segmentation: []` into a mask
        reference_eval(train, [{"image_id": 5, "category_id": 2, "score": 0.9, "segmentation": rle_of(np.ones((5, 10), dtype=bool))}], "segm")
    empty = evaluate_instances(train, [], iou_type="segm")
    assert any("empty segmentation" in w for w in empty.warnings)
    assert empty.stats[0] == 0.0

"""`segpipe convert voc --difficult count|ignore`, scored live by pycocotools' COCOeval (bbox).

`ignore` writes difficult boxes with iscrowd 1: COCOeval's ignore region, neither a hit nor a miss, and a
detection on it is not a false positive. `count` (the default) keeps them as ordinary objects.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.converters.coco import AnnotationRecord, CategoryRecord, ImageRecord, assemble_coco
from segpipe.converters.voc import convert_voc, ignore_difficult_boxes
from segpipe.cli import main

NORMAL_BOX = (10, 10, 60, 50)  # xmin, ymin, xmax, ymax
DIFFICULT_BOX = (70, 20, 110, 70)


def write_voc(src: Path) -> None:
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((80, 120), np.uint8))
    objects = "".join(
        f"<object><name>cat</name><difficult>{int(hard)}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for hard, (x0, y0, x1, y1) in ((False, NORMAL_BOX), (True, DIFFICULT_BOX))
    )
    (src / "a.xml").write_text(f"<annotation><filename>a.png</filename>{objects}</annotation>")


def convert(tmp_path: Path, *extra: str) -> dict[str, Any]:
    src, out = tmp_path / "voc", tmp_path / f"out{'_'.join(extra)}"
    if not src.exists():
        write_voc(src)
    result = CliRunner().invoke(main, ["convert", "voc", str(src), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "instances.json").read_text())


def detection(box: tuple[int, int, int, int], *, score: float) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    return {"image_id": 1, "category_id": 1, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": score}


def coco_eval(gt: dict[str, Any], detections: list[dict[str, Any]]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def image_eval(ev: COCOeval) -> dict[str, Any]:
    """The (image 1, category 1, area 'all') entry of evalImgs."""
    return next(e for e in ev.evalImgs if e is not None and e["aRng"] == ev.params.areaRng[0])


def test_default_counts_difficult_boxes(tmp_path: Path) -> None:
    gt = convert(tmp_path)
    assert gt == convert(tmp_path, "--difficult", "count")
    assert [(a["iscrowd"], a["attributes"]["difficult"]) for a in gt["annotations"]] == [(0, False), (0, True)]
    ev = coco_eval(gt, [detection(NORMAL_BOX, score=0.9), detection(DIFFICULT_BOX, score=0.8)])
    assert ev.stats[0] == pytest.approx(1.0)
    found = image_eval(ev)
    assert not np.any(found["gtIgnore"]) and not np.any(found["dtIgnore"])  # both boxes and both detections count
    assert np.all(found["dtMatches"][0] > 0)
    # Missing the difficult box is a miss: recall 0.5 at every threshold.
    missed = coco_eval(gt, [detection(NORMAL_BOX, score=0.9)])
    assert missed.stats[0] < 0.6 and missed.stats[8] == pytest.approx(0.5)


def test_ignore_makes_difficult_boxes_coco_ignore_regions(tmp_path: Path) -> None:
    gt = convert(tmp_path, "--difficult", "ignore")
    assert [(a["iscrowd"], a["attributes"]["difficult"]) for a in gt["annotations"]] == [(0, False), (1, True)]
    ev = coco_eval(gt, [detection(NORMAL_BOX, score=0.9), detection(DIFFICULT_BOX, score=0.8)])
    assert ev.stats[0] == pytest.approx(1.0)
    found = image_eval(ev)
    assert list(np.asarray(found["gtIgnore"], dtype=bool)) == [False, True]
    # The detection on the difficult box is ignored at every IoU threshold: not a false positive.
    difficult_dt = found["dtIds"][1]  # detections are sorted by score: the difficult one scored lower
    assert ev.cocoDt.anns[difficult_dt]["bbox"][0] == DIFFICULT_BOX[0]
    assert np.all(found["dtIgnore"][:, 1]) and not np.any(found["dtIgnore"][:, 0])
    # Missing it costs nothing.
    missed = coco_eval(gt, [detection(NORMAL_BOX, score=0.9)])
    assert missed.stats[0] == pytest.approx(1.0) and missed.stats[8] == pytest.approx(1.0)


def test_ignore_difficult_boxes_is_pure_and_default_bytes_unchanged(tmp_path: Path) -> None:
    hard = AnnotationRecord(category="cat", bbox=(0.0, 0.0, 2.0, 2.0), area=4.0, attributes={"difficult": True})
    easy = AnnotationRecord(category="cat", bbox=(0.0, 0.0, 2.0, 2.0), area=4.0, attributes={"difficult": False})
    marked = ignore_difficult_boxes([hard, easy])
    assert [r.iscrowd for r in marked] == [1, 0] and hard.iscrowd == 0 and marked[1] is easy
    coco = assemble_coco(images=[ImageRecord(file_name="a.png", width=4, height=4, annotations=(easy,))],
                         categories=[CategoryRecord(name="cat")])
    assert coco["annotations"][0]["iscrowd"] == 0
    with pytest.raises(ValueError, match="difficult"):
        convert_voc(tmp_path, tmp_path / "o", difficult="skip")

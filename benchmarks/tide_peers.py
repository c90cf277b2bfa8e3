"""The TIDE table beside tidecv and hotcoco (both live, when installed) on cocoapi's published example (100 val2014
images, 734 fake detections) and on the same with injected errors (tests/evaluators/test_error_analysis.py):
segpipe's default ("tidecv") and its "coco-matches" variant, dAP50 as a fraction (count of errors).

    python benchmarks/tide_peers.py [--peers ../shared/peers]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segpipe.evaluators.instance.overlaps import image_overlaps  # noqa: E402
from segpipe.evaluators.analysis.tide import ERROR_TYPES, tide_tables  # noqa: E402
from tests.evaluators.test_error_analysis import _injected  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "peers")
    args = parser.parse_args()
    import hotcoco
    import tidecv

    gt_path = args.peers / "faster_coco_eval" / "instances_val2014_100.json"
    gt = json.loads(gt_path.read_text())
    cats = [c["id"] for c in gt["categories"]]
    tmp = Path(tempfile.mkdtemp())
    for iou_type in ("bbox", "segm"):
        for injected in (False, True):
            res_path = args.peers / "cocoapi" / f"instances_val2014_fake{iou_type}100_results.json"
            results = json.loads(res_path.read_text())
            if injected:
                results = _injected(gt, results, iou_type)
                res_path = tmp / f"injected_{iou_type}.json"
                res_path.write_text(json.dumps(results))
            overlaps = image_overlaps(gt, results, iou_type=iou_type)
            ours = {v: tide_tables(overlaps, category_ids=cats, variant=v)[0].set_index("error") for v in ("tidecv", "coco-matches")}
            tide = tidecv.TIDE()
            mode = tidecv.TIDE.BOX if iou_type == "bbox" else tidecv.TIDE.MASK
            tide.evaluate(tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(res_path)), mode=mode, name="run")
            run = tide.runs["run"]
            ref = {k.short_name: v / 100 for k, v in run.fix_main_errors().items()}
            ref_count = {k.short_name: v for k, v in run.count_errors().items()}
            coco = hotcoco.COCO(str(gt_path))
            ev = hotcoco.COCOeval(coco, coco.loadRes(str(res_path)), iou_type)
            ev.evaluate()
            hot = ev.tide_errors()
            print(f"{iou_type}, {'injected errors' if injected else 'published example'} ({len(results)} detections): AP50 "
                  f"segpipe {ours['tidecv']['AP50'].iloc[0]:.5f} / coco-matches {ours['coco-matches']['AP50'].iloc[0]:.5f}, "
                  f"tidecv {run.ap / 100:.5f}, hotcoco {hot['ap_base']:.5f}")
            print(f"  {'':5}{'segpipe':>16}{'tidecv 1.0.1':>16}{'coco-matches':>16}{'hotcoco 1.3':>16}")
            for e in ERROR_TYPES:
                a, b = ours["tidecv"].loc[e], ours["coco-matches"].loc[e]
                cells = [(a["dAP50"], a["count"]), (ref[e], ref_count[e]), (b["dAP50"], b["count"]), (hot["delta_ap"][e], hot["counts"][e])]
                print(f"  {e:5}" + "".join(f"{v:>10.5f} ({int(n):3d})" for v, n in cells))


if __name__ == "__main__":
    main()

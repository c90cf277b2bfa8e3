"""The round-trip table of `segpipe export`: convert X -> export Y -> convert Y on the embedded sample and on
the third-party corpus (../shared/peers, rows left out when absent), compared with pycocotools by the same
helper the tests use (tests/converters/export_helpers.py).

    python benchmarks/export_roundtrip.py

Columns: images and objects read back, the largest box difference in pixels, masks identical pixel for pixel,
the smallest mask IoU. Boxes of polygon sources are not compared (the COCO file boxes the vertices, the
converters box the rasterised pixels); their masks are.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segpipe.converters.oxford_pet import convert_oxford_pet  # noqa: E402
from segpipe.converters.voc import convert_voc  # noqa: E402
from segpipe.converters.voc_segmentation import convert_voc_segmentation  # noqa: E402
from segpipe.demo.sample import generate_sample  # noqa: E402
from tests.converters.export_helpers import compare, export, read_back  # noqa: E402

PEERS = ROOT.parent / "shared" / "peers"
PAIRS = (("cvat", "cvat"), ("voc", "voc-seg"), ("voc", "voc"), ("labelme", "labelme"), ("yolo", "yolo"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="export_roundtrip_") as tmp:
        table(Path(tmp))


def table(work: Path) -> None:
    generate_sample(work / "raw", n_images=24, seed=0)
    convert_oxford_pet(work / "raw", work / "sample")
    # name: (dataset to export, COCO to compare with, compare boxes of masks, --images, has masks)
    sources = {"sample: 24 pet masks": (work / "sample", work / "sample" / "instances.json", True, None, True),
               "sample heads.json: 24 boxes": (work / "sample" / "heads.json", work / "sample" / "heads.json", True, work / "raw" / "images", False)}
    if PEERS.is_dir():
        convert_voc(PEERS / "labelimg", work / "labelimg")
        convert_voc_segmentation(PEERS / "datumaro" / "voc_dataset" / "voc_dataset1", work / "dmvoc")
        sources["LabelImg peer: 51 boxes"] = (work / "labelimg", work / "labelimg" / "instances.json", True, None, False)
        sources["Datumaro VOC: 1 mask (RGB PNGs)"] = (work / "dmvoc", work / "dmvoc" / "instances.json", True, None, True)
        gt = PEERS / "faster_coco_eval" / "gt_dataset.json"
        sources["faster_coco_eval: 9 polygon objects"] = (gt, gt, False, None, True)
    print("| source | export -> convert | images | objects | max box diff (px) | masks identical | min mask IoU |")
    print("|---|---|---|---|---|---|---|")
    for name, (src, ref, mask_boxes, images, has_masks) in sources.items():
        for k, (fmt, reader) in enumerate(PAIRS):
            if reader == "voc-seg" and not has_masks:
                continue
            out = work / f"{abs(hash(name))}_{k}"
            export(fmt, src, out / "export", images=images)
            back, prefix = read_back(reader, out / "export", out / "back")
            boxes_only = reader == "voc"
            r = compare(ref, back / "instances.json", prefix=prefix, mask_boxes=mask_boxes, boxes_only=boxes_only)
            box = f"{r.box_max_error:.1e}" if mask_boxes or boxes_only else "n/a"
            masks = f"{r.exact_masks}/{len(r.mask_ious)}" if r.mask_ious else "-"
            iou = f"{r.min_iou:.4f}" if r.mask_ious else "-"
            problems = f" PROBLEMS: {r.problems[:3]}" if r.problems else ""
            print(f"| {name} | {fmt} -> {reader} | {r.images} | {r.objects} | {box} | {masks} | {iou} |{problems}")


if __name__ == "__main__":
    main()

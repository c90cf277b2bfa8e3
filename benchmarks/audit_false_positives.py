"""False-positive rate of the audit's statistical checks on labels known to be right (printed by audit_recall.py).

Every label of the embedded sample is correct by construction (the generator draws the trimap and the head
box it writes), so any statistical finding on it is a false positive. Measured on:

1. the embedded sample as generated (6 sizes, 160-240 px a side);
2. the same layout converted after each image (with its trimap and head box) is rescaled: 90% kept, 10% by
   0.5x, 4x or 8x, as real Oxford-IIIT Pet photos run from ~100 to ~2,500 px a side: the case where an
   absolute-pixel area statistic flags every large photo's correct label;
3. the LabelImg peer fixture (two real photos, 51 hand-drawn boxes), when ../shared/peers is present.

For each, the rate is (annotations with a statistical finding) / annotations, beside what the former
absolute-area rule (robust z of log pixel area per class, same threshold) would flag on the same data.

    python benchmarks/audit_false_positives.py [--quick] [--images 240]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.converters.oxford_pet import convert_oxford_pet  # noqa: E402
from segpipe.converters.voc import convert_voc  # noqa: E402
from segpipe.demo.sample import generate_sample  # noqa: E402
from segpipe.evaluators.audit import findings as F  # noqa: E402
from segpipe.evaluators.audit.dataset import audit_path  # noqa: E402
from segpipe.evaluators.audit.geometry_checks import MIN_INSTANCES_FOR_STATS, MIN_LOG_MAD, Z_THRESHOLD, robust_z  # noqa: E402

STATISTICAL_CHECKS: tuple[str, ...] = (
    F.CHECK_AREA_OUTLIER, F.CHECK_ASPECT_OUTLIER, F.CHECK_POSITION_OUTLIER, F.CHECK_NEAR_DUPLICATE,
    F.CHECK_TINY_MASK, F.CHECK_FRAGMENTED_MASK,
)
# Most photos near one size, a few much larger or smaller (real Oxford-IIIT Pet: mostly ~500 px a side, some
# ~2,500 px): an absolute area statistic then marks the few large photos' labels as outliers.
SCALES: tuple[float, ...] = (0.5, 1.0, 4.0, 8.0)
SCALE_WEIGHTS: tuple[float, ...] = (0.03, 0.9, 0.04, 0.03)


def rescale_layout(root: Path, *, seed: int) -> None:
    """Resize every image, trimap and head box of an Oxford-IIIT Pet layout in place by a random factor."""
    rng = np.random.default_rng(seed)
    for image in sorted((root / "images").glob("*.jpg")):
        f = float(rng.choice(SCALES, p=SCALE_WEIGHTS))
        img = cv2.imread(str(image))
        h, w = img.shape[:2]
        size = (max(1, round(w * f)), max(1, round(h * f)))
        cv2.imwrite(str(image), cv2.resize(img, size, interpolation=cv2.INTER_LINEAR))
        trimap = root / "annotations" / "trimaps" / f"{image.stem}.png"
        cv2.imwrite(str(trimap), cv2.resize(cv2.imread(str(trimap), cv2.IMREAD_UNCHANGED), size, interpolation=cv2.INTER_NEAREST))
        xml = root / "annotations" / "xmls" / f"{image.stem}.xml"
        if xml.is_file():
            text = xml.read_text(encoding="utf-8")
            text = re.sub(r"<(width|xmin|xmax)>(\d+)</\1>", lambda m, size=size, w=w: f"<{m[1]}>{round(int(m[2]) * size[0] / w)}</{m[1]}>", text)
            text = re.sub(r"<(height|ymin|ymax)>(\d+)</\1>", lambda m, size=size, h=h: f"<{m[1]}>{round(int(m[2]) * size[1] / h)}</{m[1]}>", text)
            xml.write_text(text, encoding="utf-8")


def absolute_area_flags(coco: dict[str, Any]) -> int:
    """Annotations the former rule flags: robust z of log(pixel area) per class beyond the same threshold."""
    by_cat: dict[int, list[float]] = defaultdict(list)
    for a in coco["annotations"]:
        if a.get("area", 0) > 0:
            by_cat[a["category_id"]].append(float(a["area"]))
    flagged = 0
    for areas in by_cat.values():
        if len(areas) >= MIN_INSTANCES_FOR_STATS:
            flagged += int((np.abs(robust_z(np.log(np.array(areas)), min_mad=MIN_LOG_MAD)) > Z_THRESHOLD).sum())
    return flagged


def false_positives(dataset: Path) -> dict[str, Any]:
    import json

    coco = json.loads((dataset / "instances.json").read_text(encoding="utf-8"))
    findings = audit_path(dataset).findings
    stats = findings[findings["check"].isin(STATISTICAL_CHECKS)]
    flagged = stats["annotation_id"].dropna().astype(int).nunique()
    n = len(coco["annotations"])
    return {"n": n, "flagged": flagged, "rate": flagged / max(1, n), "by_check": dict(Counter(stats["check"])),
            "absolute_area": absolute_area_flags(coco)}


def _line(name: str, r: dict[str, Any]) -> str:
    checks = ", ".join(f"{k} {v}" for k, v in sorted(r["by_check"].items())) or "none"
    return (f"  {name:<44} false-positive rate {r['rate']:.3f} ({r['flagged']}/{r['n']} annotations; {checks}); "
            f"the absolute-area rule would flag {r['absolute_area']}")


def measure(*, n_images: int, seed: int = 0, peers: Path | None = None) -> list[str]:
    """The report lines (the caller prints them)."""
    lines = ["false positives of the statistical checks on correct labels:"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        sample = generate_sample(base / "sample", n_images=n_images, seed=seed)
        convert_oxford_pet(sample, base / "converted")
        lines.append(_line(f"embedded sample ({n_images} images)", false_positives(base / "converted")))
        mixed = generate_sample(base / "mixed", n_images=n_images, seed=seed)
        rescale_layout(mixed, seed=seed)
        convert_oxford_pet(mixed, base / "mixed_converted")
        lines.append(_line("sample at mixed resolutions (10% at 0.5x-8x)", false_positives(base / "mixed_converted")))
        labelimg = (peers or Path()) / "labelimg"
        if peers is not None and labelimg.is_dir():
            convert_voc(labelimg, base / "labelimg")
            lines.append(_line("LabelImg peer (real photos, 51 boxes)", false_positives(base / "labelimg")))
        else:
            lines.append("  LabelImg peer: ../shared/peers not found (set SEGPIPE_PEERS)")
    return lines


def default_peers() -> Path:
    return Path(os.environ.get("SEGPIPE_PEERS", Path(__file__).resolve().parents[2] / "shared" / "peers"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="120 images instead of 240")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_images = args.images or (120 if args.quick else 240)
    print("\n".join(measure(n_images=n_images, seed=args.seed, peers=default_peers())))


if __name__ == "__main__":
    main()

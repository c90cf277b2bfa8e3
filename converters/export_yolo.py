"""COCO -> YOLO (`segpipe export yolo`), the inverse of `segpipe convert yolo`.

    OUT/images/<file_name>          the images, copied
    OUT/labels/<file_name>.txt      one line per object: `c cx cy w h` (a box) or `c x0 y0 x1 y1 ...` (a mask's outline)
    OUT/data.yaml                   `train`, `val`, `nc`, `names` (Ultralytics, https://docs.ultralytics.com/datasets/segment/)

Coordinates are normalised by the image size and printed by `repr`, so boxes read back to 1e-6 px (the
reader's rounding). Masks become their pixel-edge outline; an object in several parts becomes one polygon
joined by zero-width bridges, as Ultralytics' own COCO converter does. `task="detect"` writes every object as
its box. Holes and crowd regions cannot be written: report rows (holes with the outline's measured IoU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from segpipe.core.atomic_write import atomic_write_text
from segpipe.core.errors import OptionError
from segpipe.converters.export import (
    ExportImage, copy_image, exportable, finish, fmt, load_source, report_unheld_attributes, stem_path, unique_stems,
)
from segpipe.converters.export_geometry import bridged, mask_iou, mask_outlines, polygons_mask
from segpipe.converters.report import ConversionReport

YOLO_TASKS: tuple[str, ...] = ("segment", "detect")
# An outline that rasterises to less than this IoU with its mask gets a warning row (holes, mostly); above, an info row.
OUTLINE_WARN_IOU = 0.99


def _normalised(values: list[float], *, width: int, height: int) -> list[str]:
    return [fmt(min(max(v / (width if i % 2 == 0 else height), 0.0), 1.0)) for i, v in enumerate(values)]


def yolo_lines(image: ExportImage, *, names: dict[str, int], task: str, report: ConversionReport) -> str:
    lines = []
    for o in exportable(image, report=report, fmt_name="YOLO"):
        c = names[o.category]
        if task == "detect" or o.mask is None:
            x, y, w, h = o.bbox
            if w <= 0 or h <= 0:
                report.add(file=image.file_name, severity="error", code="empty_box",
                    message=f"annotation {o.annotation_id}: box [{x:g}, {y:g}, {w:g}, {h:g}] has no area; not written")
                continue
            coords = [(x + w / 2) / image.width, (y + h / 2) / image.height, w / image.width, h / image.height]
            lines.append(" ".join([str(c), *(fmt(v) for v in coords)]))
            continue
        if o.polygons is not None and len(o.polygons) == 1:
            flat = list(o.polygons[0])  # the source's own polygon, exactly
        else:
            outlines = [list(p) for p in o.polygons] if o.polygons is not None else mask_outlines(o.mask)[0]
            if not outlines:
                report.add(file=image.file_name, severity="error", code="empty_mask", message=f"annotation {o.annotation_id}: empty mask; not written")
                continue
            flat = bridged(outlines)
            if o.polygons is None:
                iou = mask_iou(polygons_mask([flat], width=image.width, height=image.height), o.mask)
                if iou < 1.0:
                    report.add(file=image.file_name, severity="warning" if iou < OUTLINE_WARN_IOU else "info", code="outline_approximation",
                        message=f"annotation {o.annotation_id} ({o.category}): a YOLO polygon cannot hold its holes; "
                                f"the outline's IoU with the mask is {iou:.4f}")
        lines.append(" ".join([str(c), *_normalised(flat, width=image.width, height=image.height)]))
    return "".join(f"{line}\n" for line in lines)


def data_yaml(names: tuple[str, ...]) -> str:
    import json

    # JSON strings are valid YAML scalars: names with ':' or quotes stay intact.
    body = "".join(f"  {i}: {json.dumps(n, ensure_ascii=False)}\n" for i, n in enumerate(names))
    # No `path:` key: Ultralytics then resolves `train`/`val` against the yaml's own folder; a relative `path: .`
    # would be resolved against the working directory or its datasets_dir instead (`check_det_dataset` in
    # https://github.com/ultralytics/ultralytics/blob/main/ultralytics/data/utils.py).
    return f"train: images\nval: images\nnc: {len(names)}\nnames:\n{body}"


def export_yolo(dataset: str | os.PathLike[str], out: str | os.PathLike[str], *, task: str = "segment", images: Path | None = None,
                **_: Any) -> ConversionReport:
    """DATASET (converted dir or COCO json) -> OUT in the Ultralytics layout; returns the export report."""
    if task not in YOLO_TASKS:
        raise OptionError("task", f"must be one of {YOLO_TASKS}, got {task!r}")
    out = Path(out)
    report = ConversionReport()
    source = load_source(dataset, report=report, images=images)
    names = {n: i for i, n in enumerate(source.categories)}
    report_unheld_attributes(source, held=frozenset(), fmt_name="YOLO", report=report)
    for image in unique_stems([im for im in source.images if im.path is not None], report=report, key=lambda f: stem_path(f, ".txt")):
        copy_image(image, out / "images" / image.file_name)
        atomic_write_text(out / "labels" / stem_path(image.file_name, ".txt"), yolo_lines(image, names=names, task=task, report=report))
    atomic_write_text(out / "data.yaml", data_yaml(source.categories))
    return finish(out, report)

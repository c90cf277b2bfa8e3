"""COCO -> LabelMe (`segpipe export labelme`), the inverse of `segpipe convert labelme`.

    OUT/<file_name>                 the images, copied
    OUT/<file_name stem>.json       LabelMe JSON (https://github.com/wkentaro/labelme), `imagePath` the image beside it
    OUT/classes.txt                 the categories in order (`segpipe convert labelme --classes`)

Boxes are `rectangle`s; masks are `polygon`s (their pixel-edge outlines; source polygons as they are). Every
shape of an object carries the COCO annotation id as its `group_id`: LabelMe (and the converter) join the
shapes of one label and group into one object, so a mask in several parts stays one object, and the id lets
an edited file be matched back to the dataset. Holes and crowd regions: report rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from segpipe.core.atomic_write import atomic_write_text
from segpipe.converters.export import (
    EXPORTERS, ExportImage, ExportObject, copy_image, exportable, finish, load_source, report_unheld_attributes, stem_path, unique_stems,
)
from segpipe.converters.export_geometry import mask_iou, mask_outlines, polygons_mask
from segpipe.converters.report import ConversionReport

LABELME_VERSION = "5.2.1"
OUTLINE_WARN_IOU = 0.99


def object_shapes(o: ExportObject, *, image: ExportImage, report: ConversionReport | None, label: str | None = None,
                  description: str = "", flags: Mapping[str, bool] | None = None, group_id: int | None = None) -> list[dict[str, Any]]:
    """The LabelMe shapes of one object (several for a mask in several parts, one group)."""
    base = {"label": label or o.category, "group_id": o.annotation_id if group_id is None else group_id, "description": description,
            "flags": dict(flags or {})}
    if o.mask is None:
        x, y, w, h = o.bbox
        return [{**base, "shape_type": "rectangle", "points": [[x, y], [x + w, y + h]]}]
    if o.polygons is not None:
        polys: Sequence[Sequence[float]] = o.polygons
    else:
        polys, holes = mask_outlines(o.mask)
        if holes and report is not None:
            iou = mask_iou(polygons_mask(polys, width=image.width, height=image.height), o.mask)
            report.add(file=image.file_name, severity="warning" if iou < OUTLINE_WARN_IOU else "info", code="outline_approximation",
                message=f"annotation {o.annotation_id} ({o.category}): {holes} hole(s) filled (LabelMe polygons cannot hold them); IoU {iou:.4f}")
    return [{**base, "shape_type": "polygon", "points": [[float(p[i]), float(p[i + 1])] for i in range(0, len(p), 2)]} for p in polys]


def _flags(value: Any) -> dict[str, bool]:
    return {str(k): v for k, v in value.items() if isinstance(v, bool)} if isinstance(value, dict) else {}


def labelme_document(image: ExportImage, shapes: list[dict[str, Any]], *, image_path: str) -> str:
    doc: dict[str, Any] = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
           "imageHeight": image.height, "imageWidth": image.width}
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def export_labelme(dataset: str | os.PathLike[str], out: str | os.PathLike[str], *, images: Path | None = None, **_: Any) -> ConversionReport:
    """DATASET (converted dir or COCO json) -> OUT as LabelMe JSONs beside the images; returns the export report."""
    out = Path(out)
    report = ConversionReport()
    source = load_source(dataset, report=report, images=images)
    report_unheld_attributes(source, held=EXPORTERS["labelme"].held_attributes, fmt_name="LabelMe", report=report)
    for image in unique_stems([im for im in source.images if im.path is not None], report=report, key=lambda f: stem_path(f, ".json")):
        copy_image(image, out / image.file_name)
        shapes = [s for o in exportable(image, report=report, fmt_name="LabelMe")
                  for s in object_shapes(o, image=image, report=report, description=str(o.attributes.get("description", "")),
                                         flags=_flags(o.attributes.get("flags")))]
        atomic_write_text(out / stem_path(image.file_name, ".json"), labelme_document(image, shapes, image_path=PurePosixPath(image.file_name).name))
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in source.categories))
    return finish(out, report)

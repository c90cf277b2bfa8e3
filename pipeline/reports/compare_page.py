"""compare.html: the face of a `segpipe compare` folder (the CSV/Parquet tables beside it are the source of truth).

Reads only the folder's tables and header.json, plus the dataset and prediction folders for the galleries
of the images that regressed and improved most (ground truth and A | ground truth and B, side by side).
Equal inputs give byte-identical pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from segpipe.layout import REPORT_HEADER_FILE
from segpipe.reports import data as rd
from segpipe.reports.gallery import GallerySource, instance_thumbnail, semantic_thumbnail
from segpipe.reports.html import _render
from segpipe.reports.overlay import class_colours

COMPARE_PAGE = "compare.html"
PER_IMAGE_ROWS = 50
SECTIONS = {  # per model: (table, title)
    "instance": (("tide", "TIDE error types (dAP50: AP50 gained by fixing only that type)"),
                 ("confusion", "Cross-class confusion matrix (rows: ground truth, columns: detected)"),
                 ("f1_optimal", "F1-optimal score threshold per class (actual detections)")),
    "semantic": (("worst_per_class", "Worst images per class (per-image IoU)"), ("boundary_iou", "Boundary IoU")),
}


def render_compare(out: Path, *, dataset: Path | None, predictions: Mapping[str, Path], n_gallery: int = 6) -> Path:
    out = Path(out)
    header = rd.read_json(out / REPORT_HEADER_FILE)
    kind = "semantic" if header.get("evaluation") == "semantic" else "instance"
    deltas = rd.read_table(out, "per_image_delta")
    rank = "IoU" if kind == "semantic" else "f1"
    key = "file" if kind == "semantic" else "file_name"
    galleries: list[tuple[str, list[dict[str, Any]]]] = []
    if dataset is not None and deltas is not None and n_gallery > 0:
        sources = {side: GallerySource.from_dirs(dataset=dataset, predictions=p) for side, p in predictions.items()}
        d = deltas[f"{rank}_delta"]
        regressed = deltas[d < 0].head(n_gallery)
        improved = deltas[d > 0].sort_values(f"{rank}_delta", ascending=False, kind="mergesort").head(n_gallery)
        for title, rows in (("Regressed most (B worse than A)", regressed), ("Improved most (B better than A)", improved)):
            galleries.append((title, _gallery(rows, sources=sources, kind=kind, key=key, rank=rank)))
    sections = []
    for side in ("A", "B"):
        for name, title in SECTIONS[kind]:
            table = rd.read_table(out / side, name)
            if table is not None:
                sections.append((f"{side}: {title}", rd.table_model(table, max_rows=PER_IMAGE_ROWS, digits=4)))
    context = {
        "title": "Comparison: A vs B", "header": rd.header_rows(header),
        "nav": [("verdict", "verdict"), ("per-class", "per class"), ("per-image", "per image"), ("gallery", "gallery"), ("analysis", "error analysis")],
        "verdict": header.get("verdict", []), "intervals": rd.table_model(rd.read_table(out, "intervals"), digits=4),
        "per_class": rd.table_model(rd.read_table(out, "per_class_delta"), digits=4),
        "per_image": rd.table_model(deltas, max_rows=PER_IMAGE_ROWS, digits=4), "galleries": galleries, "sections": sections,
        "rank": rank,
    }
    return _render("compare.html.j2", out / COMPARE_PAGE, **context)


def _gallery(rows: pd.DataFrame, *, sources: Mapping[str, GallerySource], kind: str, key: str, rank: str) -> list[dict[str, Any]]:
    items = []
    first = next(iter(sources.values()))
    if kind == "instance":
        names = [first.category_names[k] for k in sorted(first.category_names)]
        colours = class_colours(names)
        ids = {str(im.get("file_name")): int(im["id"]) for im in first.images_by_id.values()}
    else:
        classes = first.gt_semantic_dir / "classes.txt" if first.gt_semantic_dir else None
        names = [n.strip() for n in classes.read_text(encoding="utf-8").splitlines() if n.strip()] if classes and classes.is_file() else []
        colours = class_colours(names, background=names[0] if names else None)
    for row in rows.to_dict("records"):
        name = str(row[key])
        for side, source in sources.items():
            if kind == "instance":
                thumb = instance_thumbnail(source, image_id=ids.get(name, -1), colours=colours)
            else:
                thumb = semantic_thumbnail(source, file=name, colours=[colours[n] for n in names])
            caption = f"{name}, model {side}: {rank} {row[f'{rank}_{side}']:.3f} (change {row[f'{rank}_delta']:+.3f})"
            items.append({"uri": thumb.uri, "width": thumb.width, "height": thumb.height, "alt": caption, "caption": caption, "severity": ""})
    return items

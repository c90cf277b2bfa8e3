"""compare.html: the face of a `segpipe compare` folder (the CSV/Parquet tables beside it are the source of truth).

Reads only the folder's tables and header.json, plus the dataset and prediction folders for the galleries
of the images that regressed and improved most (ground truth | A | B, one picture per image).
Equal inputs give byte-identical pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from segpipe.core.layout import REPORT_HEADER_FILE
from segpipe.reports import data as rd
from segpipe.reports import plots
from segpipe.reports.gallery import GallerySource, compare_thumbnail
from segpipe.reports.html import _render, warnings_banner, write_report_inputs
from segpipe.reports.overlay import class_colours

COMPARE_PAGE = "compare.html"
PER_IMAGE_ROWS = 50
SECTIONS = {  # per model: (table, title)
    "instance": (("tide", "TIDE error types (dAP50: AP50 gained by fixing only that type)"),
                 ("confusion", "Cross-class confusion matrix (rows: ground truth, columns: detected)"),
                 ("f1_optimal", "F1-optimal score threshold per class (actual detections)")),
    "semantic": (("worst_per_class", "Worst images per class (per-image IoU)"), ("boundary_iou", "Boundary IoU")),
}


def side_names(header: Mapping[str, Any]) -> dict[str, str]:
    """What A and B are, by the folders' names ('preds-e01'; a `segpipe run` checkpoint folder by its checkpoint)."""
    names = {}
    for side in ("A", "B"):
        path = Path(str(header.get(side) or side))
        names[side] = path.name or side
    if names["A"] == names["B"]:  # two folders of one name: say which parent each is in
        names = {side: f"{Path(str(header.get(side))).parent.name}/{names[side]}" for side in ("A", "B")}
    return names


def render_compare(out: Path, *, dataset: Path | None, predictions: Mapping[str, Path], n_gallery: int = 6) -> Path:
    out = Path(out)
    header = rd.read_json(out / REPORT_HEADER_FILE)
    kind = "semantic" if header.get("evaluation") == "semantic" else "instance"
    names = side_names(header)
    deltas = rd.read_table(out, "per_image_delta")
    rank = "IoU" if kind == "semantic" else "f1"
    key = "file" if kind == "semantic" else "file_name"
    galleries: list[tuple[str, list[dict[str, Any]]]] = []
    if dataset is not None and deltas is not None and n_gallery > 0:
        sources = {side: GallerySource.from_dirs(dataset=dataset, predictions=p) for side, p in predictions.items()}
        d = deltas[f"{rank}_delta"]
        regressed = deltas[d < 0].head(n_gallery)
        improved = deltas[d > 0].sort_values(f"{rank}_delta", ascending=False, kind="mergesort").head(n_gallery)
        for title, rows in ((f"Regressed most (B = {names['B']} worse than A = {names['A']})", regressed),
                            (f"Improved most (B = {names['B']} better than A = {names['A']})", improved)):
            galleries.append((title, _gallery(rows, sources=sources, kind=kind, key=key, rank=rank, names=names)))
    sections = []
    for side in ("A", "B"):
        for name, title in SECTIONS[kind]:
            table = rd.read_table(out / side, name)
            if table is not None:
                sections.append((f"{side} ({names[side]}): {title}", rd.table_model(table, max_rows=PER_IMAGE_ROWS, digits=4)))
    per_class = rd.read_table(out, "per_class_delta")
    chart = None
    if per_class is not None and not per_class.empty:
        label = "class" if "class" in per_class.columns else "category" if "category" in per_class.columns else str(per_class.columns[0])
        metrics = ("IoU", "Dice") if kind == "semantic" else ("AP", "AP50")
        chart = plots.plot_per_class_delta(per_class, label=label, metrics=metrics, a=names["A"], b=names["B"])
    context = {
        "title": f"Comparison: A = {names['A']} vs B = {names['B']}",
        "header": rd.header_rows({k: v for k, v in header.items() if k not in ("warnings", "verdict")}),
        "nav": [("verdict", "verdict"), ("per-class", "per class"), ("per-image", "per image"), ("gallery", "gallery"), ("analysis", "error analysis")],
        "banner": warnings_banner(header), "names": names,
        "verdict": header.get("verdict", []), "intervals": rd.table_model(rd.read_table(out, "intervals"), digits=4),
        "per_class": rd.table_model(per_class, digits=4), "per_class_chart": chart,
        "per_image": rd.table_model(deltas, max_rows=PER_IMAGE_ROWS, digits=4), "galleries": galleries, "sections": sections,
        "rank": rank,
    }
    write_report_inputs(out, kind="compare", gallery=None, options={"n_gallery": n_gallery})  # what `segpipe report` redraws
    return _render("compare.html.j2", out / COMPARE_PAGE, **context)


def _gallery(rows: pd.DataFrame, *, sources: Mapping[str, GallerySource], kind: str, key: str, rank: str,
             names: Mapping[str, str]) -> list[dict[str, Any]]:
    items = []
    first = next(iter(sources.values()))
    titles = {side: f"{side}: {names[side]}" for side in sources}
    if kind == "instance":
        labels = [first.category_names[k] for k in sorted(first.category_names)]
        colours = class_colours(labels)
        ids = {str(im.get("file_name")): int(im["id"]) for im in first.images_by_id.values()}
        palette: list[Any] = []
    else:
        classes = first.gt_semantic_dir / "classes.txt" if first.gt_semantic_dir else None
        labels = [n.strip() for n in classes.read_text(encoding="utf-8").splitlines() if n.strip()] if classes and classes.is_file() else []
        colours = class_colours(labels, background=labels[0] if labels else None)
        palette = [colours[n] for n in labels]
    for row in rows.to_dict("records"):
        name = str(row[key])
        if kind == "instance":
            thumb = compare_thumbnail(sources, titles=titles, colours=colours, image_id=ids.get(name, -1))
        else:
            thumb = compare_thumbnail(sources, titles=titles, colours=colours, class_colours=palette, file=name)
        caption = (f"{name}: {rank} A {row[f'{rank}_A']:.3f}, B {row[f'{rank}_B']:.3f} (change {row[f'{rank}_delta']:+.3f}); "
                   f"left to right: ground truth, A = {names['A']}, B = {names['B']}")
        items.append({"uri": thumb.uri, "width": thumb.width, "height": thumb.height, "alt": caption, "caption": caption, "severity": ""})
    return items

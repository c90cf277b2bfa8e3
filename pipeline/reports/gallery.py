"""Gallery thumbnails: ground truth and prediction drawn over the image (cv2.addWeighted), side by side.

A `GallerySource` says where images, ground truth and predictions live; its absolute paths are saved beside
the report (`report_inputs.json`) so `segpipe report REPORT_DIR` can redraw the gallery without recomputing.
Thumbnails are small JPEG data URIs so a 24-image gallery costs well under a megabyte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from segpipe.core.layout import INSTANCES_FILE, RESULTS_FILE, SEMANTIC_DIR
from segpipe.reports.overlay import (
    GT_OUTLINE,
    RGB,
    BadGeometry,
    Thumbnail,
    annotation_mask,
    draw_instances,
    draw_label_map,
    encode_thumbnail,
    fit_thumbnail,
    placeholder,
    side_by_side,
)


@dataclass(frozen=True)
class GallerySource:
    """Where the gallery's pixels come from. Instance runs: `gt_coco` (+ `results`); semantic runs:
    `gt_semantic_dir` + `pred_semantic_dir` (+ `gt_coco` to find each label map's image)."""

    image_root: Path | None = None
    gt_coco: Path | None = None
    results: Path | None = None
    gt_semantic_dir: Path | None = None
    pred_semantic_dir: Path | None = None
    score_threshold: float = 0.5

    @classmethod
    def from_dirs(cls, *, dataset: Path, predictions: Path | None = None, score_threshold: float = 0.5) -> "GallerySource":
        """From a converted dataset dir (segpipe.core.dataset_layout) and an inference output dir."""
        from segpipe.core.dataset_layout import DatasetDir

        ds = DatasetDir(Path(dataset))
        pred = Path(predictions) if predictions is not None else None
        return cls(
            image_root=ds.image_root,
            gt_coco=ds.instances if ds.instances.is_file() else None,
            results=pred / RESULTS_FILE if pred is not None and (pred / RESULTS_FILE).is_file() else None,
            gt_semantic_dir=ds.semantic if ds.semantic.is_dir() else None,
            pred_semantic_dir=pred / SEMANTIC_DIR if pred is not None and (pred / SEMANTIC_DIR).is_dir() else None,
            score_threshold=score_threshold,
        )

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "GallerySource | None":
        """From the `gt` / `pred` paths an evaluate command records in header.json (None when absent or gone).

        Instances: gt = a COCO file, pred = a results file. Semantic: gt / pred = label-map folders; images
        are found through the converted dataset dir above the GT folder (dataset.json, instances.json)."""
        gt, pred = header.get("gt"), header.get("pred")
        if not isinstance(gt, str) or not Path(gt).exists():
            return None
        gt_path, pred_path = Path(gt), Path(pred) if isinstance(pred, str) and Path(pred).exists() else None
        if gt_path.is_file():
            return cls(image_root=_image_root(gt_path.parent), gt_coco=gt_path, results=pred_path)
        # segpipe.core.dataset_layout puts label maps in DATASET/semantic/ beside DATASET/instances.json.
        dataset = next((d for d in (gt_path, gt_path.parent) if (d / INSTANCES_FILE).is_file()), gt_path)
        coco = dataset / INSTANCES_FILE
        return cls(image_root=_image_root(dataset) if coco.is_file() else None, gt_coco=coco if coco.is_file() else None,
                   gt_semantic_dir=gt_path, pred_semantic_dir=pred_path if pred_path is not None and pred_path.is_dir() else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(Path(v).resolve()) if isinstance(v, Path) else v
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GallerySource":
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            kw[f.name] = float(data[f.name]) if f.name == "score_threshold" else Path(data[f.name])
        return cls(**kw)

    def input_paths(self) -> list[Path]:
        return [p for p in (self.gt_coco, self.results, self.gt_semantic_dir, self.pred_semantic_dir) if p is not None]

    @cached_property
    def coco(self) -> dict[str, Any]:
        if self.gt_coco is None or not self.gt_coco.is_file():
            return {"images": [], "annotations": [], "categories": []}
        coco: dict[str, Any] = json.loads(self.gt_coco.read_text(encoding="utf-8"))
        return coco

    @cached_property
    def detections(self) -> list[dict[str, Any]]:
        if self.results is None or not self.results.is_file():
            return []
        detections: list[dict[str, Any]] = json.loads(self.results.read_text(encoding="utf-8"))
        return detections

    @cached_property
    def category_names(self) -> dict[int, str]:
        cats = [c for c in self.coco.get("categories", []) if isinstance(c, dict)]
        return {key: str(c.get("name", key)) for c in cats if (key := _int_or_none(c.get("id"))) is not None}

    @cached_property
    def images_by_id(self) -> dict[int, dict[str, Any]]:
        images = [im for im in self.coco.get("images", []) if isinstance(im, dict)]
        return {key: im for im in images if (key := _int_or_none(im.get("id"))) is not None}

    @cached_property
    def image_by_stem(self) -> dict[str, dict[str, Any]]:
        images = [(key, im) for key, im in self.images_by_id.items() if isinstance(im.get("file_name"), str)]
        return {Path(im["file_name"]).stem: im for _, im in sorted(images, key=lambda t: -t[0])}

    @cached_property
    def annotations_by_image(self) -> dict[int, list[dict[str, Any]]]:
        return _group_by_image(self.coco.get("annotations", []))

    @cached_property
    def detections_by_image(self) -> dict[int, list[dict[str, Any]]]:
        return _group_by_image(self.detections)

    def image_path(self, file_name: str) -> Path | None:
        """The image file of a COCO `file_name`; None without a root or when the name leads outside it."""
        from segpipe.core.dataset_layout import resolve_image_path

        root = self.image_root or (self.gt_coco.parent if self.gt_coco is not None else None)
        return None if root is None else resolve_image_path(root, file_name)


def _image_root(dataset: Path) -> Path:
    from segpipe.core.dataset_layout import DatasetDir

    try:
        return DatasetDir(dataset).image_root
    except (OSError, ValueError, KeyError):  # a damaged dataset.json: images beside the COCO file
        return dataset


def _group_by_image(items: Sequence[Mapping[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        key = _int_or_none(item.get("image_id")) if isinstance(item, Mapping) else None
        if key is not None:  # an item on no image (reported by the audit) has no thumbnail to be drawn on
            out.setdefault(key, []).append(dict(item))
    return out


def _int_or_none(value: Any) -> int | None:
    """A COCO id as int (JSON 3 or 3.0), None for anything else (bools, text, NaN, missing)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, float) and value.is_integer() else None



# --- disk edges -------------------------------------------------------------------------------------------


def read_thumbnail(path: Path | None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(BGR thumbnail, (full width, full height)) or None when unreadable. PIL reads GIF/PNG named .jpg and
    applies EXIF orientation, as segpipe.core.images does for sizes."""
    from PIL import Image, ImageOps

    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception:  # any undecodable file becomes a placeholder, never a crashed report
        return None
    return fit_thumbnail(rgb[..., ::-1].copy()), (rgb.shape[1], rgb.shape[0])


def read_label_map(path: Path | None) -> np.ndarray | None:
    """Class indices as every command reads them (palette and 1-bit PNGs included); None when unusable."""
    from segpipe.core.label_maps import read_label_map_or_none

    return read_label_map_or_none(path)


# --- thumbnails from a source ------------------------------------------------------------------------------


def _image_size(image: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(width, height) of a COCO image record, or None when either is missing or not a positive integer
    (the audit shows exactly such broken records)."""
    if image is None:
        return None
    try:
        w, h = int(image.get("width")), int(image.get("height"))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def _base_panel(source: GallerySource, image: Mapping[str, Any] | None, *, fallback_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(thumbnail, scale from full-size pixel coordinates to thumbnail pixels)."""
    file_name = image.get("file_name") if image is not None else None
    path = source.image_path(file_name) if isinstance(file_name, str) else None
    read = read_thumbnail(path)
    size = _image_size(image)
    if read is not None:
        thumb, (w, _) = read
        # Annotation coordinates live in the COCO image's frame, which is what the thumbnail shows.
        return thumb, thumb.shape[1] / (size[0] if size is not None else w)
    w, h = size or fallback_size
    # None: no record, no root, no usable file_name, or one leading outside the image root (never read).
    thumb = placeholder(width=w, height=h, text="image unreadable" if path is not None else "no image")
    return thumb, thumb.shape[1] / max(w, 16)


# Prediction labels drawn per thumbnail: the highest-scoring ones (dozens of stacked "cat 0.05" labels hid the
# image); every detection above the threshold is still outlined.
LABELLED_DETECTIONS = 5


def _instance_items(anns: Sequence[Mapping[str, Any]], *, source: GallerySource, colours: Mapping[str, RGB],
                    height: int, width: int, scores: bool, labelled: int | None = None) -> list[dict[str, Any]]:
    items = []
    for k, ann in enumerate(anns):
        category = ann.get("category_id")
        key = _int_or_none(category)
        name = source.category_names.get(key, str(category)) if key is not None else str(category)
        label = f"{name} {_score(ann):.2f}" if scores and "score" in ann else name
        try:
            mask = annotation_mask(ann, height=height, width=width)
        except BadGeometry:  # the broken annotations are what an audit gallery shows: label them, draw no shape
            mask, label = None, f"{label}: bad geometry"
        full = label
        if labelled is not None and k >= labelled and "bad geometry" not in label:
            label = ""
        item = {"id": ann.get("id"), "mask": mask, "bbox": ann.get("bbox"), "colour": colours.get(name, (128, 128, 128)), "label": label,
                "full_label": full}
        if not scores:  # ground truth: white outline on a black halo, never a class colour (see overlay.GT_OUTLINE)
            item.update(outline=GT_OUTLINE, halo=True)
        items.append(item)
    return items


# The id a flagged detection gets while its panel is drawn (results carry no ids; COCO ids are positive).
FLAGGED_DETECTION_ID = -1


def instance_thumbnail(source: GallerySource, *, image_id: int, colours: Mapping[str, RGB],
                       highlight: int | None = None, highlight_box: Sequence[float] | None = None,
                       max_detections: int = 30) -> Thumbnail:
    """GT | prediction panels for one COCO image as a JPEG data URI; `highlight` outlines one annotation,
    `highlight_box` the detection with that bbox (the audit's flagged prediction)."""
    image = source.images_by_id.get(int(image_id))
    base, scale = _base_panel(source, image, fallback_size=(320, 240))
    w, h = _image_size(image) or (320, 240)
    gt = _instance_items(source.annotations_by_image.get(int(image_id), []), source=source, colours=colours,
                         height=h, width=w, scores=False)
    panels = [draw_instances(base, gt, scale=scale, highlight=highlight)]
    titles = ["ground truth"]
    if source.results is not None:
        dets = [d for d in source.detections_by_image.get(int(image_id), []) if _score(d) >= source.score_threshold]
        dets = sorted(dets, key=lambda d: -_score(d))[:max_detections]
        pred = _instance_items(dets, source=source, colours=colours, height=h, width=w, scores=True, labelled=LABELLED_DETECTIONS)
        flagged = None
        if highlight_box is not None:
            for item in pred:
                box = item.get("bbox")
                if isinstance(box, (list, tuple)) and len(box) == 4 and np.allclose(np.asarray(box, dtype=float), highlight_box, atol=0.051):
                    item["id"], flagged = FLAGGED_DETECTION_ID, FLAGGED_DETECTION_ID
                    item["label"] = item["full_label"]  # the finding's own detection is always labelled
                    break
        panels.append(draw_instances(base, pred, scale=scale, highlight=flagged))
        titles.append(f"prediction, score >= {source.score_threshold:g}")
    return encode_thumbnail(side_by_side(panels, titles=titles))


def semantic_thumbnail(source: GallerySource, *, file: str, colours: Sequence[RGB]) -> Thumbnail:
    """GT | prediction label maps over the image for one semantic per-image row (`file` names the PNG)."""
    stem = Path(file).stem
    gt = read_label_map(source.gt_semantic_dir / f"{stem}.png" if source.gt_semantic_dir else None)
    pred = read_label_map(source.pred_semantic_dir / f"{stem}.png" if source.pred_semantic_dir else None)
    shape = next((m.shape for m in (gt, pred) if m is not None), (240, 320))
    base, _ = _base_panel(source, source.image_by_stem.get(stem), fallback_size=(shape[1], shape[0]))
    panels, titles = [], []
    for labels, title in ((gt, "ground truth"), (pred, "prediction")):
        if labels is None:
            panels.append(placeholder(width=base.shape[1], height=base.shape[0], text=f"no {title}"))
        else:
            panels.append(draw_label_map(base, labels, colours=colours))
        titles.append(title)
    return encode_thumbnail(side_by_side(panels, titles=titles))


def _score(detection: Mapping[str, Any]) -> float:
    """A drawable detection's score; invalid ones (left in a results file, dropped by the evaluator) never draw."""
    score = detection.get("score", 1.0)
    try:
        value = float(score)
    except (TypeError, ValueError):
        return float("-inf")
    return value if value == value else float("-inf")


def compare_thumbnail(sources: Mapping[str, GallerySource], *, titles: Mapping[str, str], colours: Mapping[str, RGB],
                      class_colours: Sequence[RGB] = (), image_id: int | None = None, file: str | None = None) -> Thumbnail:
    """One picture per image for a comparison: ground truth | side A | side B (`sources` by side, sharing the
    dataset), so an image never appears twice. Instance images by `image_id`, semantic ones by `file`."""
    first = next(iter(sources.values()))
    if file is not None:
        stem = Path(file).stem
        gt = read_label_map(first.gt_semantic_dir / f"{stem}.png" if first.gt_semantic_dir else None)
        preds = {side: read_label_map(src.pred_semantic_dir / f"{stem}.png" if src.pred_semantic_dir else None) for side, src in sources.items()}
        shape = next((m.shape for m in (gt, *preds.values()) if m is not None), (240, 320))
        base, _ = _base_panel(first, first.image_by_stem.get(stem), fallback_size=(shape[1], shape[0]))
        panels = []
        for labels, title in ((gt, "ground truth"), *((preds[side], titles[side]) for side in sources)):
            panels.append(placeholder(width=base.shape[1], height=base.shape[0], text=f"no {title}") if labels is None
                          else draw_label_map(base, labels, colours=class_colours))
        return encode_thumbnail(side_by_side(panels, titles=["ground truth", *(titles[s] for s in sources)]))
    image = first.images_by_id.get(int(image_id if image_id is not None else -1))
    base, scale = _base_panel(first, image, fallback_size=(320, 240))
    w, h = _image_size(image) or (320, 240)
    gt_items = _instance_items(first.annotations_by_image.get(int(image_id or -1), []), source=first, colours=colours,
                               height=h, width=w, scores=False)
    panels = [draw_instances(base, gt_items, scale=scale)]
    for src in sources.values():
        dets = sorted((d for d in src.detections_by_image.get(int(image_id or -1), []) if _score(d) >= src.score_threshold),
                      key=lambda d: -_score(d))[:30]
        items = _instance_items(dets, source=src, colours=colours, height=h, width=w, scores=True, labelled=LABELLED_DETECTIONS)
        panels.append(draw_instances(base, items, scale=scale))
    return encode_thumbnail(side_by_side(panels, titles=["ground truth", *(titles[s] for s in sources)]))

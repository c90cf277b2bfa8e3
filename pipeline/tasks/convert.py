"""Conversion as Luigi tasks: one task per shard of image stems, then one merge (issue 5).

Editing one annotation file changes one shard's key, so only that shard converts again; the merge
re-assembles the COCO file from every shard's output (cheap), with ids re-assigned by the project's
conventions (segpipe.converters.coco): images by sorted file name, annotations in image order, categories in an
order consistent with every shard (declared order when shards agree, else sorted names).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from segpipe.converters.coco import dumps_coco
from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.dataset_layout import DATASET_META_FILE, HEADS_FILE, INSTANCES_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR
from segpipe.converters.report import REPORT_FILE_NAME, Finding, format_report_csv
from segpipe.tasks import stages
from segpipe.cache.targets import CachedTask, link_or_copy
from segpipe.cache.fingerprints import ManifestEntry
from segpipe.cache.input_check import fingerprinted_files, inputs_unchanged
from segpipe.runner.shards import DatasetSpec, Shard, materialize_shard_source, read_plan

SHARD_DATASET = "dataset"
SHARD_VIEW = "view"


def spec_to_json(spec: DatasetSpec) -> dict[str, Any]:
    return {
        "format": spec.format, "root": str(spec.root), "images": None if spec.images is None else str(spec.images),
        "classes": None if spec.classes is None else str(spec.classes),
        "list_file": None if spec.list_file is None else str(spec.list_file),
    }


def spec_from_json(data: Mapping[str, Any]) -> DatasetSpec:
    def opt(name: str) -> Path | None:
        return None if data.get(name) is None else Path(data[name])

    return DatasetSpec(format=data["format"], root=Path(data["root"]), images=opt("images"), classes=opt("classes"), list_file=opt("list_file"))


def entries_from_json(rows: Sequence[Sequence[Any]]) -> tuple[ManifestEntry, ...]:
    return tuple(ManifestEntry(path=str(p), size=int(s), sha256=str(h)) for p, s, h in rows)


class ConvertShard(CachedTask):
    """Convert the annotations of one shard of stems (plus the global files) into a dataset dir."""

    kind = "convert/shards"

    def subdir(self) -> str:
        return f"{int(self.data['shard']):05d}-{self.key}"

    def compute(self) -> None:
        data = self.data
        plan = read_plan(data["plan"])
        spec = spec_from_json(plan["spec"])
        item = plan["shards"][int(data["shard"])]
        shard = Shard(index=int(item["index"]), stems=tuple(item["stems"]), entries=entries_from_json(item["entries"]), images=())
        directory = self.fresh_directory()
        inputs = fingerprinted_files(spec.roots(), [*item["entries"], *plan["globals"]])
        with inputs_unchanged(inputs, cache=Path(str(self.cache))):
            view = materialize_shard_source(
                spec=spec, shard=shard, globals_=entries_from_json(plan["globals"]), dest=directory / SHARD_VIEW
            )
            stages.convert_dataset(spec=view, out=directory / SHARD_DATASET, options=data["options"])
        self.finish(view={str(directory / SHARD_VIEW / label): str(root) for label, root in spec.roots().items()})


class ConvertMerge(CachedTask):
    """Merge every shard's dataset dir into one converted dataset dir (instances.json, semantic/, ...)."""

    kind = "convert/merged"

    def requires(self) -> list[ConvertShard]:
        return [ConvertShard(key=k, cache=self.cache, payload=p) for k, p in self.data["shards"]]

    def compute(self) -> None:
        spec = spec_from_json(read_plan(self.data["plan"])["spec"])
        out = self.fresh_directory()
        shard_dirs = [t.output().directory for t in self.requires()]
        views = [t.output().read_marker().get("view", {}) for t in self.requires()]
        datasets = [d / SHARD_DATASET for d in shard_dirs]
        coco_parts = [json.loads((d / INSTANCES_FILE).read_bytes()) for d in datasets if (d / INSTANCES_FILE).is_file()]
        atomic_write_bytes(out / INSTANCES_FILE, dumps_coco(merge_coco(coco_parts)))
        heads = [json.loads((d / HEADS_FILE).read_bytes()) for d in datasets if (d / HEADS_FILE).is_file()]
        if heads:
            atomic_write_bytes(out / HEADS_FILE, dumps_coco(merge_coco(heads)))
        _merge_semantic(datasets=datasets, out=out / SEMANTIC_DIR)
        _merge_reports(datasets=datasets, views=views, out=out / REPORT_FILE_NAME)
        meta: dict[str, Any] = {}
        if datasets and (datasets[0] / DATASET_META_FILE).is_file():
            meta = json.loads(_unview((datasets[0] / DATASET_META_FILE).read_text(encoding="utf-8"), view=views[0], as_json=True))
        meta = {**meta, "format": spec.format, "image_root": str(spec.image_root().resolve())}
        atomic_write_text(out / DATASET_META_FILE, json.dumps(meta, sort_keys=True, indent=2) + "\n")
        self.finish(shards=len(shard_dirs))


def merge_category_order(parts: Sequence[Sequence[str]]) -> list[str]:
    """One category order consistent with every part's order; ties (never seen together) by name.

    >>> merge_category_order([["dog", "cat"], ["cat", "bird"]])
    ['dog', 'cat', 'bird']
    >>> merge_category_order([["b"], ["a"]])
    ['a', 'b']
    """
    names = sorted({n for part in parts for n in part})
    before: dict[str, set[str]] = {n: set() for n in names}
    for part in parts:
        for i, name in enumerate(part):
            before[name].update(part[:i])
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        ready = [n for n in names if n not in placed and before[n] <= placed]
        # A cycle (two shards disagree on the order) cannot come from one declared order; fall back to names.
        pick = ready[0] if ready else next(n for n in names if n not in placed)
        order.append(pick)
        placed.add(pick)
    return order


def merge_coco(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge COCO dicts of disjoint image sets, re-assigning every id by the project's conventions. Pure."""
    if not parts:
        return {"images": [], "annotations": [], "categories": []}
    cat_orders = [[str(c["name"]) for c in sorted(p.get("categories", []), key=lambda c: int(c["id"]))] for p in parts]
    order = merge_category_order(cat_orders)
    new_cat = {name: i + 1 for i, name in enumerate(order)}
    cat_records: dict[str, dict[str, Any]] = {}
    for part in parts:
        for c in part.get("categories", []):
            cat_records.setdefault(str(c["name"]), {k: v for k, v in c.items() if k != "id"})
    images: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
    for part in parts:
        cat_name = {int(c["id"]): str(c["name"]) for c in part.get("categories", [])}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in sorted(part.get("annotations", []), key=lambda a: int(a["id"])):
            by_image.setdefault(int(ann["image_id"]), []).append({**ann, "category_id": new_cat[cat_name[int(ann["category_id"])]]})
        for im in part.get("images", []):
            images.append((str(im["file_name"]), im, by_image.get(int(im["id"]), [])))
    images.sort(key=lambda t: t[0])
    out_images: list[dict[str, Any]] = []
    out_anns: list[dict[str, Any]] = []
    for image_id, (_, im, anns) in enumerate(images, start=1):
        out_images.append({**im, "id": image_id})
        for ann in anns:
            out_anns.append({**ann, "id": len(out_anns) + 1, "image_id": image_id})
    merged = {k: v for k, v in parts[0].items() if k not in ("images", "annotations", "categories")}
    merged.update(
        images=out_images, annotations=out_anns,
        categories=[{**cat_records[name], "id": new_cat[name]} for name in order],
    )
    return merged


def _merge_semantic(*, datasets: Sequence[Path], out: Path) -> None:
    classes: str | None = None
    for d in datasets:
        sem = d / SEMANTIC_DIR
        if not sem.is_dir():
            continue
        for png in sorted(sem.glob("*.png")):
            link_or_copy(png, out / png.name)
        cls = sem / SEMANTIC_CLASSES_FILE
        if cls.is_file():
            text = cls.read_text(encoding="utf-8")
            if classes is not None and text != classes:
                raise ValueError(f"{cls}: semantic classes differ between shards")
            classes = text
    if classes is not None:
        atomic_write_text(out / SEMANTIC_CLASSES_FILE, classes)


def _unview(text: str, *, view: Mapping[str, str], as_json: bool = False) -> str:
    """Shard-view paths (CACHE/.../view/<label>) back to the dataset's real paths, longest prefix first."""
    for prefix, real in sorted(view.items(), key=lambda kv: -len(kv[0])):
        if as_json:
            prefix, real = json.dumps(prefix)[1:-1], json.dumps(real)[1:-1]
        text = text.replace(prefix, real)
    return text


def _merge_reports(*, datasets: Sequence[Path], views: Sequence[Mapping[str, str]], out: Path) -> None:
    """Concatenate shard conversion reports, showing real dataset paths instead of the shard views."""
    findings: list[Finding] = []
    for d, view in zip(datasets, views):
        path = d / REPORT_FILE_NAME
        if not path.is_file():
            continue
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
            file, message = _unview(row["file"], view=view), _unview(row["message"], view=view)
            findings.append(Finding(file=file, severity=row["severity"], code=row["code"], message=message))  # type: ignore[arg-type]
    # A global file's finding (list.txt, classes file) is reported by every shard: keep it once.
    atomic_write_text(out, format_report_csv(sorted(set(findings))))

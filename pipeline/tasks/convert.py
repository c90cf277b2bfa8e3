"""Conversion as Luigi tasks: groups of shards (each shard cached by its content), then one merge.

Editing one annotation file changes one shard's key, so only that shard converts again; the merge
re-assembles the COCO file from every shard's output (cheap), with ids re-assigned by the project's
conventions (segpipe.converters.coco): images by sorted file name, annotations in image order, categories in an
order consistent with every shard (declared order when shards agree, else sorted names).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from segpipe.converters.coco import dumps_coco
from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.core.dataset_layout import (
    DATASET_META_FILE, HEADS_FILE, INSTANCES_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR, read_class_names_file,
)
from segpipe.core.layout import CONVERSION_REPORT_FILE as REPORT_FILE_NAME
from segpipe.converters.report import Finding, format_report_csv
import luigi

from segpipe.cache.targets import CachedTask, link_or_copy, new_task
from segpipe.cache.fingerprints import KEY_LENGTH, ManifestEntry, combine_keys, manifest_key, options_key
from segpipe.cache.input_check import fingerprinted_files, inputs_unchanged
from segpipe.converters.conversion_output import write_conversion_dir
from segpipe.core.errors import SegpipeError
from segpipe.plan.shards import DatasetSpec, StoredPlan, StoredShard, read_plan
from segpipe.tasks.units import Unit, UnitLog, ensure_unit, unit_directory, units_exist, units_present

CONVERT_UNITS = "convert/shards"

SHARD_DATASET = "dataset"


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


GT_DIR = "gt"
GT_INDEX_FILE = "gt_index.json"


def convert_unit_keys(plan: StoredPlan, *, version: str, options: Mapping[str, Any]) -> list[str]:
    """Content key of each shard's conversion (by shard position): its files, the global files, the
    format and options, the package version. Pure; the driver and the tasks both use it."""
    base = [version, options_key({"format": plan.spec["format"], **dict(options)}), manifest_key(entries_from_json(plan.globals))]
    # "files": shards converted from their file lists (earlier shards were converted in symlinked folder views).
    return [combine_keys("convert-shard/files", *base, shard.key) for shard in plan.shards]


def group_digest(kind: str, keys: Sequence[str]) -> str:
    return combine_keys(kind, *keys)


class GroupTask(CachedTask):
    """A scheduling unit over several content-addressed shard units (segpipe.tasks.units).

    Its marker lists the unit folders it vouches for, and `complete()` checks that they are all still
    there: deleting a shard folder from the cache makes the group run again and recompute just that shard.
    """

    log_as = "group"
    group = luigi.IntParameter()
    digest = luigi.Parameter()

    def subdir(self) -> str:
        return f"g{int(self.group):03d}-{self.digest}"

    def complete(self) -> bool:
        target = self.output()
        if not target.exists():
            return False
        try:
            units = target.read_marker().get("units", [])
        except (OSError, ValueError):
            return False
        return all(units_exist(Path(str(self.cache)), units))

    def present(self) -> bool:
        """The group's marker and every shard's marker are there (one stat each, no file verified)."""
        try:
            units = self.output().read_marker().get("units", [])
        except (OSError, ValueError):
            return False
        return all(units_present(Path(str(self.cache)), units))


class ConvertGroup(GroupTask):
    """Convert the annotations of a group of shards, each shard into its own content-addressed folder."""

    kind = "convert/groups"
    plan = luigi.Parameter(significant=False)
    options = luigi.DictParameter[dict[str, Any]](significant=False, default={})
    version = luigi.Parameter(significant=False)

    def compute(self) -> None:
        cache = Path(str(self.cache))
        plan = read_plan(str(cache), str(self.plan))
        spec = spec_from_json(plan.spec)
        keys = convert_unit_keys(plan, version=str(self.version), options=dict(self.options))
        done = UnitLog()
        for position in plan.groups[int(self.group)]:
            item = plan.shards[position]

            def convert(directory: Path, item: StoredShard = item) -> None:
                # The shard's own files and the global ones, at their real paths; they must be what its key
                # fingerprinted (segpipe.cache.input_check).
                inputs = fingerprinted_files(spec.roots(), [*item.entries, *plan.globals])
                with inputs_unchanged(inputs, cache=cache):
                    conversion = spec.convert(files=[path for path, _, _ in inputs], options=dict(self.options))
                write_conversion_dir(directory / SHARD_DATASET, conversion)

            done.add(ensure_unit(cache, Unit("ConvertShard", CONVERT_UNITS, keys[position], f"s{item.index:05d}"), convert))
        self.fresh_directory()
        self.finish(**done.marker())


class ConvertMerge(CachedTask):
    """Merge every shard's dataset dir into one converted dataset dir (instances.json, semantic/, ...),
    plus each shard's own ground truth (gt/<digest>.json, categories numbered as in the merged file) and
    gt_index.json, the digest of each shard's ground truth: what evaluation shards are keyed on."""

    kind = "convert/merged"
    digest = luigi.Parameter()
    groups = luigi.ListParameter(significant=False)  # the ConvertGroup digests, by group
    plan = luigi.Parameter(significant=False)
    options = luigi.DictParameter[dict[str, Any]](significant=False, default={})
    version = luigi.Parameter(significant=False)

    def subdir(self) -> str:
        return str(self.digest)

    def requires(self) -> list[ConvertGroup]:
        return [new_task(ConvertGroup, cache=self.cache, group=i, digest=d, plan=self.plan, options=self.options, version=self.version)
                for i, d in enumerate(self.groups)]

    def compute(self) -> None:
        cache = Path(str(self.cache))
        plan = read_plan(str(cache), str(self.plan))
        spec = spec_from_json(plan.spec)
        keys = convert_unit_keys(plan, version=str(self.version), options=dict(self.options))
        shard_dirs = [unit_directory(cache, CONVERT_UNITS, k) for k in keys]
        out = self.fresh_directory()
        datasets = [d / SHARD_DATASET for d in shard_dirs]
        coco_parts = [json.loads((d / INSTANCES_FILE).read_bytes()) if (d / INSTANCES_FILE).is_file() else None for d in datasets]
        merged = merge_coco([p for p in coco_parts if p is not None])
        atomic_write_bytes(out / INSTANCES_FILE, dumps_coco(merged))
        heads = [json.loads((d / HEADS_FILE).read_bytes()) for d in datasets if (d / HEADS_FILE).is_file()]
        if heads:
            atomic_write_bytes(out / HEADS_FILE, dumps_coco(merge_coco(heads)))
        _merge_semantic(datasets=datasets, out=out / SEMANTIC_DIR)
        _merge_reports(datasets=datasets, out=out / REPORT_FILE_NAME)
        meta: dict[str, Any] = {}
        if datasets and (datasets[0] / DATASET_META_FILE).is_file():
            meta = json.loads((datasets[0] / DATASET_META_FILE).read_text(encoding="utf-8"))
        meta = {**meta, "format": spec.format, "image_root": str(spec.image_root().resolve())}
        atomic_write_text(out / DATASET_META_FILE, json.dumps(meta, sort_keys=True, indent=2) + "\n")
        from segpipe.core.out_manifest import merge_manifests

        merge_manifests(datasets, out)  # what wrote it, as `segpipe convert` records it
        index = [_write_shard_gt(part=part, categories=merged["categories"], stems=plan.shards[i].stems, merged=out)
                 for i, part in enumerate(coco_parts)]
        gt_index = {"shards": index, "labels": label_space(out, categories=merged["categories"])}
        atomic_write_text(out / GT_INDEX_FILE, json.dumps(gt_index, sort_keys=True) + "\n")
        self.finish(shards=len(shard_dirs))


def label_space(merged: Path, *, categories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Category names (in id order) and semantic classes of a converted dataset dir."""
    categories = [{"name": c["name"], "supercategory": c.get("supercategory", "")} for c in sorted(categories, key=lambda c: int(c["id"]))]
    classes_file = merged / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE
    semantic = read_class_names_file(classes_file) if classes_file.is_file() else None
    return {"categories": categories, "semantic_classes": semantic}


def shard_ground_truth(part: Mapping[str, Any] | None, *, categories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One shard's COCO with the merged file's categories (ids by name); image and annotation ids stay the
    shard's own (by sorted file name), so the shard's bytes do not depend on any other shard. Pure."""
    if part is None:
        return {"images": [], "annotations": [], "categories": [dict(c) for c in categories]}
    new_id = {str(c["name"]): int(c["id"]) for c in categories}
    old_name = {int(c["id"]): str(c["name"]) for c in part.get("categories", [])}
    anns = [{**a, "category_id": new_id[old_name[int(a["category_id"])]]} for a in part.get("annotations", [])]
    return {**part, "annotations": anns, "categories": [dict(c) for c in categories]}


def _write_shard_gt(*, part: Mapping[str, Any] | None, categories: Sequence[Mapping[str, Any]], stems: Sequence[str], merged: Path) -> str:
    """Write gt/<digest>.json for one shard; the digest also covers its semantic maps and the class list."""
    data = dumps_coco(shard_ground_truth(part, categories=categories))
    digest = hashlib.sha256(data)
    classes = merged / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE
    digest.update(classes.read_bytes() if classes.is_file() else b"")
    for stem in sorted(stems):
        png = merged / SEMANTIC_DIR / f"{stem}.png"
        if png.is_file():
            digest.update(f"\0{stem}\0".encode("utf-8", "surrogateescape") + png.read_bytes())
    key = digest.hexdigest()[:KEY_LENGTH]
    atomic_write_bytes(merged / GT_DIR / f"{key}.json", data)
    return key


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
                raise SegpipeError(cls, "", "semantic classes differ between shards")
            classes = text
    if classes is not None:
        atomic_write_text(out / SEMANTIC_CLASSES_FILE, classes)


def _merge_reports(*, datasets: Sequence[Path], out: Path) -> None:
    """Concatenate the shards' conversion reports (their rows name the dataset's own files)."""
    findings: list[Finding] = []
    for d in datasets:
        path = d / REPORT_FILE_NAME
        if not path.is_file():
            continue
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
            findings.append(Finding(file=row["file"], severity=row["severity"], code=row["code"], message=row["message"]))  # type: ignore[arg-type]
    # A global file's finding (list.txt, classes file) is reported by every shard: keep it once.
    atomic_write_text(out, format_report_csv(sorted(set(findings))))

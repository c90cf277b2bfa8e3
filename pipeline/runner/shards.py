"""Where a dataset's files live per format, and how they are cut into shards (issue 5).

A dataset is a set of labelled roots (the Oxford-IIIT Pet root; or a VOC/trimap source folder, an image
folder, a classes or list file). Each file is one of:

- an *image* (under the image root): inference depends on these, and on nothing else of the dataset;
- an *annotation* of one image stem (an XML, a trimap);
- a *global* file (list.txt, split lists, a classes file): every conversion shard depends on it.

Shards are runs of consecutive stems in sorted order, `shard_size` stems each: one Luigi task per shard,
never per image (Luigi's scheduler is quadratic in pending tasks, design.md "Performance habits").
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segpipe.converters.images import is_image_name, is_utf8_name
from segpipe.cache.fingerprints import ManifestEntry, manifest_key
from segpipe.runner.formats import ADAPTERS

FORMATS: tuple[str, ...] = ("oxford-pet", "voc", "trimap", *ADAPTERS)
DEFAULT_SHARD_SIZE = 256
# Oxford-IIIT Pet split files: a shard gets only its own lines (header lines kept), so `--split` does not
# report every other shard's images as missing. list.txt stays whole: it declares the categories (all
# listed breeds, in CLASS-ID order), which must be the same in every shard.
PET_LIST_FILES: tuple[str, ...] = ("trainval.txt", "test.txt")


@dataclass(frozen=True)
class DatasetSpec:
    """What `segpipe run` was pointed at. `root` is the Oxford-IIIT Pet root or the VOC/trimap source."""

    format: str
    root: Path
    images: Path | None = None
    classes: Path | None = None
    list_file: Path | None = None

    def roots(self) -> dict[str, Path]:
        if self.format == "oxford-pet":
            return {"root": self.root}
        if self.format not in FORMATS:
            raise ValueError(f"--format: unknown dataset format {self.format!r} (choose from {', '.join(FORMATS)})")
        if self.format == "trimap" and self.images is None:
            raise ValueError("--images: the trimap format needs the image folder")
        out = {"src": self.root}
        if self.images is not None and self.images.resolve() != self.root.resolve():
            out["images"] = self.images
        if self.classes is not None:
            out["classes"] = self.classes
        if self.list_file is not None:
            out["list"] = self.list_file
        return out

    def image_prefix(self) -> str:
        """Manifest prefix of the image root; image file names are relative to it."""
        if self.format == "oxford-pet":
            return "root/images/"
        if "images" in self.roots():
            return "images/"
        sub = ADAPTERS[self.format].image_subdir(self.root) if self.format in ADAPTERS else ""
        return f"src/{sub}/" if sub else "src/"

    def image_root(self) -> Path:
        if self.format == "oxford-pet":
            return self.root / "images"
        if self.images is not None:
            return self.images
        sub = ADAPTERS[self.format].image_subdir(self.root) if self.format in ADAPTERS else ""
        return self.root / sub if sub else self.root


def classify(entry: ManifestEntry, *, spec: DatasetSpec) -> tuple[str, str]:
    """(role, stem) of a manifest entry; role is "image", "annotation" or "global" (stem "" for global)."""
    path = entry.path
    if not is_utf8_name(path):  # never an image to infer on; the converter refuses it with a row
        return "global", ""
    name = PurePosixPath(path).name
    stem = PurePosixPath(path).stem
    if path.startswith(spec.image_prefix()) and is_image_name(name):
        return "image", stem
    if spec.format == "oxford-pet":
        if path.startswith("root/annotations/trimaps/") and name.lower().endswith(".png"):
            return "annotation", stem
        if path.startswith("root/annotations/xmls/") and name.lower().endswith(".xml"):
            return "annotation", stem
        return "global", ""
    if spec.format in ADAPTERS:
        rel = path[len("src/"):]
        return ("annotation", stem) if path.startswith("src/") and ADAPTERS[spec.format].is_annotation(rel) else ("global", "")
    if path.startswith("src/"):
        wanted = ".xml" if spec.format == "voc" else ".png"
        if name.lower().endswith(wanted):
            return "annotation", stem
    return "global", ""


@dataclass(frozen=True)
class Shard:
    index: int
    stems: tuple[str, ...]
    entries: tuple[ManifestEntry, ...]  # images and annotations of these stems
    images: tuple[ManifestEntry, ...]

    def image_names(self, *, spec: DatasetSpec) -> tuple[str, ...]:
        """Image file names relative to the image root (the COCO `file_name`s), sorted."""
        prefix = spec.image_prefix()
        return tuple(sorted(e.path[len(prefix):] for e in self.images))


@dataclass(frozen=True)
class ShardPlan:
    spec: DatasetSpec
    shards: tuple[Shard, ...]
    globals: tuple[ManifestEntry, ...]
    images: tuple[ManifestEntry, ...]

    def images_key(self) -> str:
        return manifest_key(self.images)

    def image_names(self) -> tuple[str, ...]:
        prefix = self.spec.image_prefix()
        return tuple(sorted(e.path[len(prefix):] for e in self.images))


def plan_shards(manifest: tuple[ManifestEntry, ...], *, spec: DatasetSpec, shard_size: int) -> ShardPlan:
    """Cut the manifest into shards of `shard_size` stems (sorted), plus the global files."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    by_stem: dict[str, list[ManifestEntry]] = {}
    globals_: list[ManifestEntry] = []
    for entry in manifest:
        role, stem = classify(entry, spec=spec)
        if role == "global":
            globals_.append(entry)
        else:
            by_stem.setdefault(stem, []).append(entry)
    stems = sorted(by_stem)
    if spec.format in ADAPTERS and ADAPTERS[spec.format].annotated_only:
        stems = [s for s in stems if any(classify(e, spec=spec)[0] == "annotation" for e in by_stem[s])]
    if spec.format in ADAPTERS and ADAPTERS[spec.format].single_shard:
        shard_size = max(1, len(stems))
    shards: list[Shard] = []
    for i in range(0, len(stems), shard_size):
        chunk = tuple(stems[i : i + shard_size])
        entries = tuple(sorted(e for s in chunk for e in by_stem[s]))
        images = tuple(e for e in entries if classify(e, spec=spec)[0] == "image")
        shards.append(Shard(index=len(shards), stems=chunk, entries=entries, images=images))
    all_images = tuple(e for s in shards for e in s.images)
    return ShardPlan(spec=spec, shards=tuple(shards), globals=tuple(globals_), images=tuple(sorted(all_images)))


def _filter_pet_list(text: str, *, stems: frozenset[str]) -> str:
    """Keep header/blank lines and the lines of this shard's images (first token = image stem)."""
    kept = [
        line for line in text.splitlines(keepends=True)
        if not line.strip() or line.lstrip().startswith("#") or line.split()[0] in stems
    ]
    return "".join(kept)


def materialize_shard_source(*, spec: DatasetSpec, shard: Shard, globals_: tuple[ManifestEntry, ...], dest: Path) -> DatasetSpec:
    """A view of the dataset holding only this shard's files (symlinks), as a DatasetSpec under `dest`.

    The converters then run unchanged on a shard; the files keep their relative paths, so COCO
    `file_name`s are the same as for the whole dataset.
    """
    roots = spec.roots()
    stems = frozenset(shard.stems)
    for entry in (*shard.entries, *globals_):
        label, _, rel = entry.path.partition("/")
        source = roots[label] / rel if rel else roots[label]
        target = dest / label / rel if rel else dest / label / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if spec.format == "oxford-pet" and rel.startswith("annotations/") and PurePosixPath(rel).name in PET_LIST_FILES:
            target.write_text(_filter_pet_list(source.read_text(encoding="utf-8"), stems=stems), encoding="utf-8")
        else:
            os.symlink(source.resolve(), target)
    if spec.format == "oxford-pet":
        (dest / "root" / "images").mkdir(parents=True, exist_ok=True)
        return DatasetSpec(format=spec.format, root=dest / "root")
    (dest / "src").mkdir(parents=True, exist_ok=True)
    if "images" in roots:
        (dest / "images").mkdir(parents=True, exist_ok=True)
    return DatasetSpec(
        format=spec.format,
        root=dest / "src",
        images=(dest / "images") if "images" in roots else None,
        classes=(dest / "classes" / roots["classes"].name) if "classes" in roots else None,
        list_file=(dest / "list" / roots["list"].name) if "list" in roots else None,
    )


PLANS_DIR = "plans"


def plan_to_json(plan: ShardPlan, *, spec_json: dict[str, object]) -> dict[str, object]:
    """Everything the tasks read about the dataset's files, as JSON (stored once per plan, by content)."""
    return {
        "spec": spec_json,
        "globals": [[e.path, e.size, e.sha256] for e in plan.globals],
        "image_names": list(plan.image_names()),
        "shards": [
            {"index": s.index, "stems": list(s.stems), "entries": [[e.path, e.size, e.sha256] for e in s.entries],
             "image_names": list(s.image_names(spec=plan.spec))}
            for s in plan.shards
        ],
    }


def write_plan(plan_json: dict[str, object], *, cache: Path, key: str) -> Path:
    """CACHE/plans/<key>.json, written once (its name is the hash of its content).

    Tasks carry this path instead of the file lists themselves: a payload of every downstream task that
    embedded the dataset's file list would grow with images x checkpoints x shards (and travel to luigid).
    """
    import json

    from segpipe.converters.atomic_write import atomic_write_text

    path = cache / PLANS_DIR / f"{key}.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps(plan_json, sort_keys=True, separators=(",", ":")) + "\n")
    return path


@functools.lru_cache(maxsize=8)
def read_plan(path: str) -> dict[str, object]:
    """The plan a task belongs to (read in run(), never in requires()/complete(); cached per process)."""
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))

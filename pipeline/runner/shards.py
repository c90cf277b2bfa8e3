"""Where a dataset's files live per format, and how they are cut into shards.

A dataset is a set of labelled roots (the Oxford-IIIT Pet root; or a VOC/trimap source folder, an image
folder, a classes or list file). Each file is one of:

- an *image* (under the image root): inference depends on these, and on nothing else of the dataset;
- an *annotation* of one image stem (an XML, a trimap);
- a *global* file (list.txt, split lists, a classes file): every conversion shard depends on it.

A stem goes to the shard given by a hash of the stem (`shard_of`), among a power-of-two number of
shards chosen from the dataset size (about `shard_size` stems each). Cutting by position in the sorted
list would shift every boundary when one image is added or removed, rerunning every shard; by hash, an
added, removed or edited image changes only its own shard (until the dataset doubles or halves in size).
Shards are gathered into at most `MAX_GROUPS` groups (shard index modulo the group count): a group is
the unit Luigi schedules, because Luigi's scheduler cost grows faster than linearly with the number of
pending tasks (https://github.com/spotify/luigi/issues/1492), while a shard is the unit of caching.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from segpipe.converters.images import is_image_name, is_utf8_name
from segpipe.cache.fingerprints import KEY_LENGTH, ManifestEntry, manifest_key, manifest_order, sorted_rows_key
from segpipe.runner.formats import ADAPTERS

FORMATS: tuple[str, ...] = ("oxford-pet", "voc", "trimap", *ADAPTERS)
DEFAULT_SHARD_SIZE = 256
# Upper bound on scheduling groups per checkpoint: Luigi tasks per run stay a few hundred at most however
# many images there are (a power of two, so that groups are unions of whole hash shards).
MAX_GROUPS = 32
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


def classify(entry: ManifestEntry, *, spec: DatasetSpec, image_prefix: str | None = None) -> tuple[str, str]:
    """(role, stem) of a manifest entry; role is "image", "annotation" or "global" (stem "" for global).
    `image_prefix` is `spec.image_prefix()`, computed once by callers that classify a whole manifest."""
    path = entry.path
    if not is_utf8_name(path):  # never an image to infer on; the converter refuses it with a row
        return "global", ""
    # String operations, not PurePosixPath: this runs for every file of the dataset on every run.
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    stem = name[:dot] if 0 < dot < len(name) - 1 else name  # as PurePosixPath.stem
    if path.startswith(spec.image_prefix() if image_prefix is None else image_prefix) and is_image_name(name):
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

    def key(self) -> str:
        """Content key of the shard's files (images and annotations)."""
        return manifest_key(self.entries)

    def images_key(self) -> str:
        """Content key of the shard's images alone: what inference depends on."""
        return manifest_key(self.images)


@dataclass(frozen=True)
class ShardPlan:
    spec: DatasetSpec
    shards: tuple[Shard, ...]
    globals: tuple[ManifestEntry, ...]
    images: tuple[ManifestEntry, ...]
    n_groups: int = 1

    def images_key(self) -> str:
        return manifest_key(self.images)

    def image_names(self) -> tuple[str, ...]:
        prefix = self.spec.image_prefix()
        return tuple(sorted(e.path[len(prefix):] for e in self.images))

    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Shard positions (in `shards`) of each scheduling group; groups without shards are left out."""
        found: dict[int, list[int]] = {}
        for position, shard in enumerate(self.shards):
            found.setdefault(shard.index % self.n_groups, []).append(position)
        return tuple(tuple(found[g]) for g in sorted(found))


def shard_of(stem: str, *, n_shards: int) -> int:
    """The shard of a stem: a hash of its name (sha256, so independent of PYTHONHASHSEED) modulo n_shards.

    >>> shard_of("Abyssinian_1", n_shards=1)
    0
    >>> shard_of("Abyssinian_1", n_shards=8) == shard_of("Abyssinian_1", n_shards=8)
    True
    """
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def shard_count(n_stems: int, *, shard_size: int) -> int:
    """The power of two nearest above n_stems / shard_size: it changes only when the dataset doubles or
    halves, so adding or removing a few images never moves the others between shards.

    >>> [shard_count(n, shard_size=256) for n in (0, 256, 257, 2000, 100_000)]
    [1, 1, 2, 8, 512]
    """
    needed = max(1, -(-n_stems // shard_size))
    return 1 << (needed - 1).bit_length()


def plan_shards(manifest: tuple[ManifestEntry, ...], *, spec: DatasetSpec, shard_size: int, max_groups: int = MAX_GROUPS) -> ShardPlan:
    """Cut the manifest into hash shards of about `shard_size` stems, plus the global files.

    Empty shards are left out; a shard keeps its hash index, so shard positions may skip numbers.
    """
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    by_stem: dict[str, list[ManifestEntry]] = {}
    globals_: list[ManifestEntry] = []
    image_paths: set[str] = set()
    annotated: set[str] = set()
    prefix = spec.image_prefix()  # once, not per file: this loop runs over every file of the dataset
    for entry in manifest:
        role, stem = classify(entry, spec=spec, image_prefix=prefix)
        if role == "global":
            globals_.append(entry)
        else:
            by_stem.setdefault(stem, []).append(entry)
            if role == "image":
                image_paths.add(entry.path)
            else:
                annotated.add(stem)
    stems = sorted(by_stem)
    adapter = ADAPTERS.get(spec.format)
    if adapter is not None and adapter.annotated_only:
        stems = [s for s in stems if s in annotated]
    # One file annotating every image (CVAT) makes one shard: editing it changes every image's annotation.
    n_shards = 1 if adapter is not None and adapter.single_shard else shard_count(len(stems), shard_size=shard_size)
    buckets: dict[int, list[str]] = {}
    for stem in stems:
        buckets.setdefault(shard_of(stem, n_shards=n_shards), []).append(stem)
    shards: list[Shard] = []
    for index in sorted(buckets):
        chunk = tuple(buckets[index])
        entries = tuple(sorted((e for s in chunk for e in by_stem[s]), key=manifest_order))
        images = tuple(e for e in entries if e.path in image_paths)
        shards.append(Shard(index=index, stems=chunk, entries=entries, images=images))
    all_images = tuple(sorted((e for s in shards for e in s.images), key=manifest_order))
    return ShardPlan(spec=spec, shards=tuple(shards), globals=tuple(globals_), images=all_images,
                     n_groups=min(n_shards, max_groups))


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
    """What the tasks read about the dataset's files (stored once per plan, by content; never read in
    requires() or complete(), only in run()). Shards are listed by position; `groups` gives each
    scheduling group's shard positions."""
    shards = []
    for s in plan.shards:  # entries and images are in manifest order: their rows are hashed as they are
        rows = [[e.path, e.size, e.sha256] for e in s.entries]
        shards.append({"index": s.index, "stems": list(s.stems), "entries": rows, "image_names": list(s.image_names(spec=plan.spec)),
                       "key": sorted_rows_key(rows), "images_key": sorted_rows_key([[e.path, e.size, e.sha256] for e in s.images])})
    return {
        "spec": spec_json,
        "globals": [[e.path, e.size, e.sha256] for e in plan.globals],
        "image_names": list(plan.image_names()),
        "images_key": sorted_rows_key([[e.path, e.size, e.sha256] for e in plan.images]),
        "groups": [list(g) for g in plan.groups()],
        "shards": shards,
    }


def plan_key(plan_json: dict[str, object]) -> str:
    """The plan's content key (its file name under CACHE/plans/)."""
    return _text_key(_plan_text(plan_json))


def _plan_text(plan_json: dict[str, object]) -> str:
    return json.dumps(plan_json, sort_keys=True, separators=(",", ":"))


def _text_key(text: str) -> str:
    # The digest of the file's own bytes: serialised once (tens of MB at 100,000 images), never escaped again.
    return hashlib.sha256(b"plan\n" + text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def write_plan(plan_json: dict[str, object], *, cache: Path) -> str:
    """CACHE/plans/<key>.json, written when missing (its name is the hash of its content); returns the key.
    The plan is also kept in memory for `read_plan` in this process (and in the workers it forks)."""
    from segpipe.converters.atomic_write import atomic_write_text

    text = _plan_text(plan_json)
    key = _text_key(text)
    path = plan_path(cache, key)
    data = (text + "\n").encode("utf-8")
    # The name is the content's digest, so a damaged plan (truncated, edited) is simply written again.
    try:
        intact = path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        intact = False
    if not intact:
        atomic_write_text(path, text + "\n")
    _remember_plan(str(cache), key, plan_json)
    return key


def plan_path(cache: Path, key: str) -> Path:
    return Path(cache) / PLANS_DIR / f"{key}.json"


_PLANS: dict[tuple[str, str], dict[str, Any]] = {}
_PLANS_KEPT = 8


def _remember_plan(cache: str, key: str, plan: dict[str, Any]) -> None:
    _PLANS.pop((cache, key), None)
    _PLANS[(cache, key)] = plan
    while len(_PLANS) > _PLANS_KEPT:
        del _PLANS[next(iter(_PLANS))]


def read_plan(cache: str, key: str) -> dict[str, Any]:
    """The plan a task belongs to (read in run(), never in requires()/complete(); kept per process). Treat it
    as read-only: it is shared by every task of the process."""
    found = _PLANS.get((cache, key))
    if found is not None:
        return found
    path = plan_path(Path(cache), key)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shard plan of this run is gone (the cache was cleared while it ran): run again")
    plan = dict(json.loads(path.read_text(encoding="utf-8")))
    _remember_plan(cache, key, plan)
    return plan

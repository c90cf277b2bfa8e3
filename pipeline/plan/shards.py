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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segpipe.core.images import is_image_name, is_utf8_name
from segpipe.cache.fingerprints import KEY_LENGTH, ManifestEntry, manifest_key, manifest_order, sorted_rows_key
from segpipe.core.errors import SegpipeError
from segpipe.plan.formats import ADAPTERS, FORMATS as FORMATS, DatasetSpec as DatasetSpec  # re-exported: the plan's readers import them here

DEFAULT_SHARD_SIZE = 256
# Upper bound on scheduling groups per checkpoint: Luigi tasks per run stay a few hundred at most however
# many images there are (a power of two, so that groups are unions of whole hash shards).
MAX_GROUPS = 32


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
    return ("annotation", stem) if spec.is_annotation(path) else ("global", "")


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
        raise SegpipeError("run settings", "shard_size", f"must be >= 1, got {shard_size}")
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


PLANS_DIR = "plans"


@dataclass(frozen=True)
class StoredShard:
    """One shard as a task reads it from the stored plan (see `plan_to_json`)."""

    index: int
    stems: tuple[str, ...]
    entries: tuple[tuple[str, int, str], ...]  # manifest rows (label/path, size, sha256) of its images and annotations
    image_names: tuple[str, ...]  # relative to the image root, sorted
    key: str  # content key of its files
    images_key: str  # content key of its images


@dataclass(frozen=True)
class StoredPlan:
    """The stored plan, typed: what every task of a run reads about the dataset's files (`read_plan`)."""

    spec: Mapping[str, Any]  # the DatasetSpec as JSON (segpipe.tasks.convert.spec_from_json)
    globals: tuple[tuple[str, int, str], ...]  # manifest rows every shard reads
    image_names: tuple[str, ...]
    images_key: str
    groups: tuple[tuple[int, ...], ...]  # each scheduling group's shard positions
    shards: tuple[StoredShard, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredPlan:
        def rows(values: Any) -> tuple[tuple[str, int, str], ...]:
            return tuple((str(path), int(size), str(sha)) for path, size, sha in values)

        return cls(
            spec=dict(data["spec"]), globals=rows(data["globals"]), image_names=tuple(str(n) for n in data["image_names"]),
            images_key=str(data["images_key"]), groups=tuple(tuple(int(p) for p in g) for g in data["groups"]),
            shards=tuple(StoredShard(index=int(s["index"]), stems=tuple(str(t) for t in s["stems"]), entries=rows(s["entries"]),
                                     image_names=tuple(str(n) for n in s["image_names"]), key=str(s["key"]),
                                     images_key=str(s["images_key"])) for s in data["shards"]),
        )


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
    from segpipe.core.atomic_write import atomic_write_text

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
    _remember_plan(str(cache), key, StoredPlan.from_json(plan_json))
    return key


def plan_path(cache: Path, key: str) -> Path:
    return Path(cache) / PLANS_DIR / f"{key}.json"


_PLANS: dict[tuple[str, str], StoredPlan] = {}
_PLANS_KEPT = 8


def _remember_plan(cache: str, key: str, plan: StoredPlan) -> None:
    _PLANS.pop((cache, key), None)
    _PLANS[(cache, key)] = plan
    while len(_PLANS) > _PLANS_KEPT:
        del _PLANS[next(iter(_PLANS))]


def read_plan(cache: str, key: str) -> StoredPlan:
    """The plan a task belongs to (read in run(), never in requires()/complete(); kept per process). Treat it
    as read-only: it is shared by every task of the process."""
    found = _PLANS.get((cache, key))
    if found is not None:
        return found
    path = plan_path(Path(cache), key)
    if not path.is_file():
        raise SegpipeError(path, "", "the shard plan of this run is gone (the cache was cleared while it ran): run again")
    plan = StoredPlan.from_json(json.loads(path.read_text(encoding="utf-8")))
    _remember_plan(cache, key, plan)
    return plan

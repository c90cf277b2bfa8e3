"""Content fingerprints for the cached pipeline.

Luigi's `complete()` only asks whether outputs exist, so a changed input would never rerun. Instead the
driver fingerprints every input once, up front, and the fingerprints become significant task parameters
(hence part of `task_id` and of the output paths):

- a dataset by a manifest of (relative path, size, content hash); a stat cache keyed by
  (path, size, mtime_ns) and persisted under the cache dir avoids re-hashing unchanged files;
- a checkpoint by the sha256 of its bytes;
- options by the sha256 of their canonical JSON;
- the package version (a new release may compute different numbers);
- every downstream key by hashing its upstream keys (`combine_keys`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from segpipe.converters.atomic_write import atomic_write_text
from segpipe.converters.images import is_hidden_name
from segpipe.errors import SegpipeError

HASH_CHUNK = 1 << 20
KEY_LENGTH = 16  # hex digits kept in keys and directory names: 64 bits, collisions are not a concern here
STAT_CACHE_FILE = "stat_cache.json"
STAT_CACHE_VERSION = 1


@dataclass(frozen=True, order=True)
class ManifestEntry:
    path: str  # POSIX path relative to the fingerprinted root, prefixed by the root's label
    size: int
    sha256: str


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text, whatever the dict order.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def options_key(options: Mapping[str, Any]) -> str:
    """Key of an options mapping: sha256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(dict(options)).encode("ascii")).hexdigest()[:KEY_LENGTH]


def combine_keys(kind: str, *parts: str) -> str:
    """A downstream key: the hash of a kind label and its upstream keys, in the order given.

    >>> combine_keys("x", "a", "b") != combine_keys("x", "b", "a")
    True
    """
    text = canonical_json([kind, *parts])
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:KEY_LENGTH]


def manifest_key(entries: Iterable[ManifestEntry]) -> str:
    """Key of a set of manifest entries (sorted first, so listing order never matters)."""
    rows = [[e.path, e.size, e.sha256] for e in sorted(entries)]
    return hashlib.sha256(canonical_json(rows).encode("ascii")).hexdigest()[:KEY_LENGTH]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segpipe")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


class StatCache:
    """Content hashes remembered by (absolute path, size, mtime_ns), persisted as JSON in the cache dir.

    A file whose size and mtime_ns are unchanged is not read again; any write updates mtime_ns, so a
    content change is always seen (except on file systems with coarse timestamps *and* a same-size
    rewrite within one tick, which `--rehash` covers).
    """

    def __init__(self, path: Path | None, *, rehash: bool = False) -> None:
        self.path = path
        self.rehash = rehash
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        if path is not None and path.is_file() and not rehash:
            self._entries = _read_stat_entries(path)

    def sha256(self, path: Path, *, stat: os.stat_result) -> str:
        key = str(path)
        cached = self._entries.get(key)
        if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            self.hits += 1
            return str(cached[2])
        self.misses += 1
        digest = file_sha256(path)
        self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        payload = {"version": STAT_CACHE_VERSION, "entries": dict(sorted(self._entries.items()))}
        atomic_write_text(self.path, json.dumps(payload, separators=(",", ":")) + "\n")
        self._dirty = False


def _read_stat_entries(path: Path) -> dict[str, list[Any]]:
    """The well-formed entries of a stat cache file; a damaged file or entry only costs re-hashing (and is logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logging.getLogger("segpipe.cache").warning("%s: unreadable stat cache (%s); rebuilding it", path, err)
        return {}
    if not isinstance(data, dict) or data.get("version") != STAT_CACHE_VERSION or not isinstance(data.get("entries"), dict):
        logging.getLogger("segpipe.cache").warning("%s: not a version-%d stat cache; rebuilding it", path, STAT_CACHE_VERSION)
        return {}
    return {
        str(k): v for k, v in data["entries"].items()
        if isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and not isinstance(x, bool) for x in v[:2])
        and isinstance(v[2], str) and len(v[2]) == 64
    }


def _walk_files(root: Path, *, exclude: Sequence[Path]) -> list[Path]:
    """Regular files under `root`, sorted, skipping hidden names and excluded trees (the cache, OUT)."""
    excluded = [p.resolve() for p in exclude]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Prune in place (os.walk honours it) so excluded trees are never descended into.
        dirnames[:] = sorted(
            d for d in dirnames if not is_hidden_name(d) and (here / d).resolve() not in excluded
        )
        found.extend(here / f for f in filenames if not is_hidden_name(f))
    return sorted(found)


def latest_mtime(roots: Iterable[Path], *, exclude: Sequence[Path] = ()) -> float | None:
    """The latest modification time of the files under `roots` (a root may be a file), or None.

    Reports show it as the inputs' date: it belongs to the user's files, so two clean runs over the same
    inputs render the same bytes (the cache's own files get new times on every clean run)."""
    times: list[float] = []
    for given in roots:
        root = Path(given)
        files = [root] if root.is_file() else _walk_files(root, exclude=exclude) if root.is_dir() else []
        times.extend(p.stat().st_mtime for p in files)
    return max(times) if times else None


def build_manifest(
    roots: Mapping[str, Path], *, stat_cache: StatCache, exclude: Sequence[Path] = ()
) -> tuple[ManifestEntry, ...]:
    """Manifest of every file under each labelled root: (label/relative path, size, sha256), sorted.

    A root may also be a single file (a classes file, a list file): its entry is just the label.
    """
    entries: list[ManifestEntry] = []
    for label, given in sorted(roots.items()):
        root = Path(given).resolve()  # once per root: the stat cache is keyed by absolute paths
        if root.is_file():
            files = [(label, root)]
        elif root.is_dir():
            files = [(f"{label}/{p.relative_to(root).as_posix()}", p) for p in _walk_files(root, exclude=exclude)]
        else:
            raise SegpipeError(given, label, "this dataset input does not exist")
        for rel, path in files:
            st = path.stat()
            entries.append(ManifestEntry(path=rel, size=st.st_size, sha256=stat_cache.sha256(path, stat=st)))
    return tuple(sorted(entries))


def checkpoint_fingerprint(path: Path, *, card: Path | None, stat_cache: StatCache) -> str:
    """sha256 of the checkpoint's bytes; with a model card beside it, the hash of both digests
    (the card can change the classes or the architecture, hence the predictions)."""
    digest = stat_cache.sha256(path.resolve(), stat=path.stat())
    if card is None:
        return digest
    card_digest = stat_cache.sha256(card.resolve(), stat=card.stat())
    return hashlib.sha256(f"{digest}:{card_digest}".encode("ascii")).hexdigest()

"""Content fingerprints for the cached pipeline.

Luigi's `complete()` only asks whether outputs exist, so a changed input would never rerun. Instead the
driver fingerprints every input once, up front, and the fingerprints become significant task parameters
(hence part of `task_id` and of the output paths):

- a dataset by a manifest of (relative path, size, content hash); a stat cache keyed by
  (path, size, mtime_ns, ctime_ns, inode) and persisted under the cache dir avoids re-hashing unchanged
  files (the file listing and the stats are one directory scan, which also gives the inputs' latest mtime);
- a checkpoint by the sha256 of its bytes;
- options by the sha256 of their canonical JSON;
- the package version (a new release may compute different numbers);
- every downstream key by hashing its upstream keys (`combine_keys`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from segpipe.core.atomic_write import atomic_write_text
from segpipe.core.images import is_hidden_name
from segpipe.core.errors import SegpipeError

HASH_CHUNK = 1 << 20
KEY_LENGTH = 16  # hex digits kept in keys and directory names: 64 bits, collisions are not a concern here
STAT_CACHE_FILE = "stat_cache.json"
STAT_CACHE_VERSION = 2  # 2: entries [size, mtime_ns, ctime_ns, inode, sha256]
# The reasons `segpipe convert` gives for the same files (segpipe.core.images.read_input_bytes).
NOT_REGULAR_REASON = "not a regular file (a device, FIFO or socket); only regular files are read"


@dataclass(frozen=True, order=True)
class ManifestEntry:
    path: str  # POSIX path relative to the fingerprinted root, prefixed by the root's label
    size: int
    sha256: str


class NotRegularFileError(SegpipeError, OSError):
    """A FIFO, device or socket where a regular file was expected: never read (it may block or never end)."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a regular file's bytes, read in chunks. Raises NotRegularFileError for anything
    else, checked on the open file (O_NONBLOCK: opening a FIFO must not wait for a writer)."""
    digest = hashlib.sha256()
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as fh:
        if not stat_module.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise NotRegularFileError(path, "", NOT_REGULAR_REASON)
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
    # Lists compare like the dataclass's field tuples, in C: the same order as sorted(entries), ~10x faster.
    return sorted_rows_key(sorted([e.path, e.size, e.sha256] for e in entries))


def sorted_rows_key(rows: Sequence[Sequence[object]]) -> str:
    """`manifest_key` of rows [path, size, sha256] already in manifest order (the shard plan has them so)."""
    return hashlib.sha256(canonical_json(rows).encode("ascii")).hexdigest()[:KEY_LENGTH]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segpipe")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def stat_signature(stat: os.stat_result) -> list[int]:
    """What says a file is unchanged without reading it: size, mtime_ns, ctime_ns and inode, as git's index
    does (https://git-scm.com/docs/git-config#Documentation/git-config.txt-coretrustctime). Any write moves
    mtime *and* ctime; restoring the old mtime (`touch -r`, `rsync --times`) moves ctime; a file replaced
    by a renamed copy has another inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class StatCache:
    """Content hashes remembered by absolute path and `stat_signature`, persisted as JSON in the cache dir.

    A file whose size, mtime_ns, ctime_ns and inode are unchanged is not read again; a content change
    always changes ctime on a local file system (a process cannot set ctime), so it is seen. File systems
    that do not keep ctime (some network mounts) fall back to size and mtime: a same-size edit that also
    keeps the mtime is then missed, like make; `--rehash` reads every file again.
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

    def sha256(self, path: str | os.PathLike[str], *, stat: os.stat_result) -> str:
        key = os.fspath(path)
        cached = self._entries.get(key)
        signature = stat_signature(stat)
        if cached is not None and cached[:4] == signature:
            self.hits += 1
            return str(cached[4])
        self.misses += 1
        digest = file_sha256(path)
        self._entries[key] = [*signature, digest]
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
        if isinstance(v, list) and len(v) == 5 and all(type(x) is int for x in v[:4]) and isinstance(v[4], str) and len(v[4]) == 64
    }


def scan_files(root: Path, *, exclude: Sequence[Path],
               skipped: list[tuple[str, str]] | None = None) -> list[tuple[str, str, os.stat_result]]:
    """(relative POSIX path, path, stat) of the regular files under `root`, skipping hidden names, symlinked
    folders and excluded trees (the cache, OUT); unsorted. One `os.scandir` per folder and one stat per file:
    `os.walk` + `pathlib` cost ~10x more at 200,000 files.

    What `segpipe convert` refuses with a row is left out here, never opened, and listed in `skipped` as
    (relative path, reason): FIFOs (reading one waits forever for a writer), devices (`/dev/zero` never
    ends), sockets, dangling symlinks and symlink loops."""
    excluded = {os.path.realpath(p) for p in exclude}
    found: list[tuple[str, str, os.stat_result]] = []
    stack = [(os.fspath(root), "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as listing:
                items = list(listing)
        except OSError:  # an unreadable folder is left out, as os.walk does
            continue
        for item in items:
            if is_hidden_name(item.name):
                continue
            try:
                is_dir = item.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not item.is_symlink() and os.path.realpath(item.path) not in excluded:
                    stack.append((item.path, f"{rel}{item.name}/"))
                continue
            try:
                st = item.stat()  # follows a symlink to its target
            except OSError as err:
                if skipped is not None:
                    skipped.append((rel + item.name, _unreachable_reason(err)))
                continue
            if not stat_module.S_ISREG(st.st_mode):
                if skipped is not None:
                    skipped.append((rel + item.name, NOT_REGULAR_REASON))
                continue
            found.append((rel + item.name, item.path, st))
    return found


def _unreachable_reason(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symbolic link loop; skipped"
    if err.errno == errno.ENOENT:
        return "broken symbolic link (its target does not exist); skipped"
    return f"cannot be read: {err.strerror or err}; skipped"


@dataclass(frozen=True)
class DatasetScan:
    manifest: tuple[ManifestEntry, ...]
    latest_mtime: float | None  # of the files listed: reports show it as the inputs' date
    skipped: tuple[tuple[str, str], ...] = ()  # (path as given, reason): special files never read


def scan_dataset(roots: Mapping[str, Path], *, stat_cache: StatCache, exclude: Sequence[Path] = ()) -> DatasetScan:
    """Manifest of every file under each labelled root: (label/relative path, size, sha256), sorted, and the
    files' latest modification time. A root may also be a single file (a classes file, a list file): its
    entry is just the label.

    The latest mtime belongs to the user's files, so two clean runs over the same inputs render the same
    bytes (the cache's own files get new times on every clean run)."""
    entries: list[ManifestEntry] = []
    skipped: list[tuple[str, str]] = []
    latest: float | None = None
    for label, given in sorted(roots.items()):
        root = Path(given).resolve()  # once per root: the stat cache is keyed by absolute paths
        if root.is_file():
            files = [(label, os.fspath(root), root.stat())]
        elif root.is_dir():
            found: list[tuple[str, str]] = []
            files = [(f"{label}/{rel}", path, st) for rel, path, st in scan_files(root, exclude=exclude, skipped=found)]
            skipped += [(os.path.join(given, rel), reason) for rel, reason in found]
        elif root.exists():
            raise SegpipeError(given, label, NOT_REGULAR_REASON)
        else:
            raise SegpipeError(given, label, "this dataset input does not exist")
        for rel, path, st in files:
            entries.append(ManifestEntry(path=rel, size=st.st_size, sha256=stat_cache.sha256(path, stat=st)))
            latest = st.st_mtime if latest is None else max(latest, st.st_mtime)
    return DatasetScan(manifest=tuple(sorted(entries, key=manifest_order)), latest_mtime=latest, skipped=tuple(sorted(skipped)))


def manifest_order(entry: ManifestEntry) -> tuple[str, int, str]:
    """Sort key giving the dataclass order: tuples compare in C, ~10x faster than the generated __lt__
    (which matters when sorting every file of a 100,000-image dataset)."""
    return (entry.path, entry.size, entry.sha256)


def build_manifest(
    roots: Mapping[str, Path], *, stat_cache: StatCache, exclude: Sequence[Path] = ()
) -> tuple[ManifestEntry, ...]:
    """The manifest of `scan_dataset`."""
    return scan_dataset(roots, stat_cache=stat_cache, exclude=exclude).manifest


def checkpoint_fingerprint(path: Path, *, card: Path | None, stat_cache: StatCache) -> str:
    """sha256 of the checkpoint's bytes; with a model card beside it, the hash of both digests
    (the card can change the classes or the architecture, hence the predictions)."""
    digest = stat_cache.sha256(path.resolve(), stat=path.stat())
    if card is None:
        return digest
    card_digest = stat_cache.sha256(card.resolve(), stat=card.stat())
    return hashlib.sha256(f"{digest}:{card_digest}".encode("ascii")).hexdigest()

"""A task publishes only what it computed from the inputs its key describes.

The driver fingerprints the inputs once, before any task runs; a file edited after that (and perhaps
restored later) would otherwise leave a cache entry whose key names content the task never read, served
to every later run. So a task that reads dataset files or a checkpoint checks, around its work:

- before: each file's content still has the fingerprint of the plan (through the stat cache, so an
  untouched file is not read again);
- after: no file was written meanwhile (size, mtime, ctime and inode unchanged; `ctime` also moves when
  someone restores an old mtime with `touch -r`, see https://man7.org/linux/man-pages/man7/inode.7.html).

Either failure refuses the task (no completion marker): the next run fingerprints again and recomputes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from segpipe.cache.fingerprints import STAT_CACHE_FILE, StatCache, stat_signature
from segpipe.core.errors import SegpipeError

Expected = tuple[Path, "int | None", str]  # (path, size or None when not recorded, sha256) as fingerprinted by the driver


class InputChangedError(SegpipeError, RuntimeError):
    """An input file differs from its fingerprint, or changed while a task read it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(path, "", reason)


def fingerprinted_files(roots: Mapping[str, Path], rows: Sequence[Sequence[object]]) -> list[Expected]:
    """Manifest rows `[label/rel, size, sha256]` as real paths under the dataset roots."""
    files: list[Expected] = []
    for path, size, sha in rows:
        label, _, rel = str(path).partition("/")
        files.append((Path(roots[label]) / rel if rel else Path(roots[label]), int(str(size)), str(sha)))
    return files


# The stat cache as this process last loaded it, with the file's signature then: at 100,000 images the file
# holds 200,000 entries (~1 s to parse), and every shard of every group checks its inputs against it.
_SHARED: dict[str, tuple[list[int] | None, StatCache]] = {}


def _signature(path: Path) -> list[int] | None:
    try:
        return stat_signature(path.stat())
    except OSError:
        return None


def shared_stat_cache(path: Path) -> StatCache:
    """The stat cache at `path`, parsed once per process (again only when the file changed)."""
    found = _SHARED.get(str(path))
    signature = _signature(path)
    if found is not None and found[0] == signature:
        return found[1]
    loaded = StatCache(path)
    _SHARED[str(path)] = (signature, loaded)
    return loaded


def share_stat_cache(stat_cache: StatCache) -> None:
    """Hand the driver's stat cache, just saved, to the input checks of this process and of the worker
    processes it forks (they inherit it instead of parsing the file again)."""
    if stat_cache.path is not None:
        _SHARED[str(stat_cache.path)] = (_signature(stat_cache.path), stat_cache)


def _snapshot(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@contextmanager
def inputs_unchanged(files: Sequence[Expected], *, cache: Path) -> Iterator[None]:
    """Run the block only if `files` match their fingerprints; raise if any changed while it ran."""
    stat_cache = shared_stat_cache(cache / "fingerprints" / STAT_CACHE_FILE)  # read only: the driver owns its updates
    before: dict[Path, tuple[int, int, int, int]] = {}
    for path, size, sha in files:
        resolved = path.resolve()
        try:
            before[path] = _snapshot(resolved)
            st = resolved.stat()
            same = (size is None or st.st_size == size) and stat_cache.sha256(resolved, stat=st) == sha
        except OSError as err:
            raise InputChangedError(path, f"unreadable since this run fingerprinted it ({err}); run again") from err
        if not same:
            raise InputChangedError(path, "changed since this run fingerprinted it; run again to use the new content")
    yield
    for path in before:
        try:
            now = _snapshot(path.resolve())
        except OSError:
            now = None
        if now != before[path]:
            raise InputChangedError(
                path, "modified while this task read it, so its result was not kept; run again (a file must not change during a run)")


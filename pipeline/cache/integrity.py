"""What a cache entry holds, recorded in its completion marker and checked before the entry is trusted.

A marker alone only says "a run once finished here": files deleted, truncated or replaced afterwards would
be served as if intact. So the marker lists every file of the entry with its size and sha256. A reader
checks names and sizes of every file (one `stat` each) and the digests of small files (they are the
JSON/CSV that carry the numbers); a mismatch makes the entry count as not done, so it is recomputed, and
the reason is logged.

A digest is not recomputed for a file that provably was not written since the marker: its mtime, ctime
and inode are those recorded, and the recorded ctime is older than the marker's own ctime. Every write,
and every `touch`/`utime`, sets ctime to the current time, which no process can set back; requiring a
strictly older ctime rules out a write in the same clock tick as the recording (git's "racily clean"
problem, https://git-scm.com/docs/racy-git). At 100,000 images a converted dataset holds 100,000 label
maps: without this, every rerun would read them all.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Mapping

LOG = logging.getLogger("segpipe.cache")
# Files up to this size have their digest verified each time an entry is checked; larger ones by size only.
CHEAP_DIGEST_BYTES = 64 * 1024
_verified: dict[tuple[Any, ...], str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> sha256 computed this process


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entry_inventory(directory: Path, *, skip: str) -> dict[str, list[Any]]:
    """{relative POSIX path: [size, sha256]} of every regular file under `directory` except `skip`."""
    found: dict[str, list[Any]] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(directory).as_posix()
            if rel == skip or path.is_symlink() or not path.is_file():
                continue
            st = path.stat()
            found[rel] = [st.st_size, _sha256(path), *_unchanged_signature(st)]
    return found


def _unchanged_signature(st: os.stat_result) -> list[int]:
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def inventory_mismatch(directory: Path, recorded: Mapping[str, Any], *, marker_ctime_ns: int | None = None) -> str | None:
    """Why the files under `directory` no longer match `recorded` (the first problem found), or None.
    `marker_ctime_ns`: the completion marker's ctime, below which an unchanged signature spares the digest."""
    base = os.fspath(directory)
    for rel in sorted(recorded):
        item = recorded[rel]
        try:
            size, digest = int(item[0]), str(item[1])
            st = os.stat(os.path.join(base, rel))  # strings, not pathlib: an entry may list 100,000 files
        except FileNotFoundError:
            return f"{directory / rel}: missing (the completion marker lists it)"
        except (OSError, TypeError, ValueError, IndexError, KeyError) as err:
            return f"{directory / rel}: unreadable entry record or file ({err})"
        if st.st_size != size:
            return f"{directory / rel}: {st.st_size} bytes, the completion marker recorded {size}"
        if size <= CHEAP_DIGEST_BYTES:
            if marker_ctime_ns is not None and len(item) == 5 and list(item[2:]) == _unchanged_signature(st) and st.st_ctime_ns < marker_ctime_ns:
                continue  # not written since it was recorded, in an earlier clock tick than the marker
            path = directory / rel
            memo = (str(path), st.st_size, *_unchanged_signature(st))
            actual = _verified.get(memo)
            if actual is None:
                actual = _sha256(path)
                _verified[memo] = actual
            if actual != digest:
                return f"{path}: content differs from the sha256 the completion marker recorded"
    return None


def report_damage(directory: Path, reason: str) -> None:
    LOG.warning("cache entry %s is damaged and will be recomputed: %s", directory, reason)

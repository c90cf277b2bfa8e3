"""Compressed COCO RLE strings checked before anything decodes them: pixel totals in one vectorised pass.

numpy only (no pandas): the evaluators import this before any table exists, so `segpipe evaluate` can score
and free its parsed JSON before pandas is loaded.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_MAX_RUN_CHARS = 7  # 35 bits: pycocotools keeps runs in uint32
INVALID_RLE = -1
_CHUNK_CHARS = 1 << 16  # characters per vectorised pass of rle_totals


def _segmented_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each new value of `segment` (which must be non-decreasing)."""
    if values.size == 0:
        return values
    total = np.cumsum(values)
    first = np.flatnonzero(np.concatenate(([True], segment[1:] != segment[:-1])))
    offset = total[first] - values[first]
    sums: np.ndarray = total - np.repeat(offset, np.diff(np.concatenate((first, [values.size]))))
    return sums


def rle_totals(counts: Sequence[bytes]) -> np.ndarray:
    """Pixel total (sum of runs) of each compressed COCO RLE string, INVALID_RLE (-1) where it is corrupt.

    pycocotools checks none of this: a corrupt string or a negative run decodes past the end of the mask
    buffer, so every RLE is checked here, all strings in one vectorised pass of pycocotools' rleFrString,
    before anything decodes it.

    >>> rle_totals([b"51", b"5\x7f", b""]).tolist()  # encode() of a 3x2 mask whose last pixel is set; garbage; empty
    [6, -1, 0]
    """
    n = len(counts)
    lens = np.fromiter((len(c) for c in counts), dtype=np.int64, count=n)
    out = np.zeros(n, dtype=np.int64)
    # Whole strings in chunks of about _CHUNK_CHARS characters: the pass below holds ~10 int64 arrays per
    # character, which for every result string of a large dataset at once is gigabytes and slower (cache misses).
    ends = np.cumsum(lens)
    start = 0
    while start < n:
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] - lens[start] + _CHUNK_CHARS, side="right")))
        out[start:stop] = _rle_totals_chunk(counts[start:stop], lens[start:stop])
        start = stop
    return out


def _rle_totals_chunk(counts: Sequence[bytes], lens: np.ndarray) -> np.ndarray:
    n = len(counts)
    out = np.zeros(n, dtype=np.int64)
    if lens.sum() == 0:
        return out
    # Per character only what must be: alphabet check, 5-bit payload and the continuation bit; the rest is
    # per token (about half as many) or per string.
    v = np.frombuffer(b"".join(counts), dtype=np.uint8).astype(np.int16) - 48
    bounds = np.concatenate(([0], np.cumsum(lens)))  # string i is characters bounds[i]:bounds[i + 1]
    bad_chars = np.concatenate(([0], np.cumsum((v < 0) | (v > 63), dtype=np.int64)))
    bad = bad_chars[bounds[1:]] > bad_chars[bounds[:-1]]
    is_end = (v & 0x20) == 0
    last = bounds[1:][lens > 0] - 1
    bad[lens > 0] |= ~is_end[last]  # the string ends inside a run
    is_end[last] = True  # a token never straddles two strings (such a string is already marked bad)
    ends = np.flatnonzero(is_end)
    starts = np.concatenate(([0], ends[:-1] + 1))
    width = ends - starts + 1
    tok_owner = np.searchsorted(bounds[1:], ends, side="right")
    bad[tok_owner[width > _MAX_RUN_CHARS]] = True
    payload = (v & 0x1F).astype(np.int64)
    x = payload[starts]
    for k in range(1, _MAX_RUN_CHARS):  # rleFrString: x |= (c & 0x1f) << 5k for the k-th character of a run
        longer = np.flatnonzero(width > k)
        if longer.size == 0:
            break
        x[longer] |= payload[starts[longer] + k] << (5 * k)
    negative = (v[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * np.minimum(width[negative], _MAX_RUN_CHARS))
    first_token = np.searchsorted(tok_owner, np.arange(n), side="left")
    j = np.arange(len(ends)) - first_token[tok_owner]
    runs = x.copy()
    # rleFrString: for j > 2, x[j] += runs[j - 2]: a running sum along the odd tokens from j = 1 and along the
    # even tokens from j = 2 of each string.
    for chain in (((j % 2) == 1), ((j % 2) == 0) & (j >= 2)):
        runs[chain] = _segmented_cumsum(x[chain], tok_owner[chain])
    bad |= np.bincount(tok_owner, weights=runs < 0, minlength=n) > 0
    # float64 sums are exact: a string's total stays far below 2**53
    out = np.bincount(tok_owner, weights=runs.astype(np.float64), minlength=n).astype(np.int64)
    out[bad] = INVALID_RLE
    return out


def compressed_counts(segm: Any) -> bytes | None:
    """The compressed RLE string of `segm` as bytes (what pycocotools decodes), or None when it has none."""
    counts = segm.get("counts") if isinstance(segm, dict) else None
    if isinstance(counts, str):
        return counts.encode("utf-8", "replace")  # non-ASCII bytes are out of the RLE alphabet: flagged corrupt
    return counts if isinstance(counts, bytes) else None

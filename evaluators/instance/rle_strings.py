"""Compressed COCO RLE strings checked before anything decodes them: pixel totals in one vectorised pass.

numpy only (no pandas): the evaluators import this before any table exists, so `segpipe evaluate` can score
and free its parsed JSON before pandas is loaded.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from segpipe.evaluators import kernel

_MAX_RUN_CHARS = 7  # 35 bits: pycocotools keeps runs in uint32
INVALID_RLE = -1
_CHUNK_CHARS = 1 << 16  # characters per vectorised pass of rle_totals


def _segmented_cumsum(values: np.ndarray, first_of_segment: np.ndarray) -> np.ndarray:
    """Cumulative sums of `values` restarting wherever `first_of_segment` is True (it is True at index 0)."""
    total = np.cumsum(values)
    first = np.flatnonzero(first_of_segment)
    offset = total[first] - values[first]
    sums: np.ndarray = total - np.repeat(offset, np.diff(np.append(first, values.size)))
    return sums


def rle_totals(counts: Sequence[bytes]) -> np.ndarray:
    """Pixel total (sum of runs) of each compressed COCO RLE string, INVALID_RLE (-1) where it is corrupt.

    pycocotools checks none of this: a corrupt string or a negative run decodes past the end of the mask
    buffer, so every RLE is checked here, all strings in one vectorised pass of pycocotools' rleFrString,
    before anything decodes it.

    >>> rle_totals([b"51", b"5\x7f", b""]).tolist()  # encode() of a 3x2 mask whose last pixel is set; garbage; empty
    [6, -1, 0]
    """
    if kernel.available():  # the same values, one C loop (segpipe/evaluators/_kernel.c)
        totals = np.empty(len(counts), dtype=np.int64)
        kernel.rle_totals(strings=list(counts), out=totals)
        return totals
    return rle_totals_numpy(counts)


def rle_totals_numpy(counts: Sequence[bytes]) -> np.ndarray:
    """rle_totals() without the compiled kernel: the fallback, and the reference the kernel is tested against."""
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
    nonempty = np.flatnonzero(lens)
    if nonempty.size == 0:
        return out
    # Per character only what must be, in uint8: the alphabet check, the continuation bit, the token ends. Per
    # token (about half as many) or per string everything else. uint8 wraps, so characters below '0' land >= 208.
    v = np.frombuffer(b"".join(counts), dtype=np.uint8) - np.uint8(48)
    first_char = (np.cumsum(lens) - lens)[nonempty]
    last_char = first_char + lens[nonempty] - 1
    bad = np.zeros(n, dtype=bool)
    bad_char = v > 63
    if bad_char.any():
        bad[nonempty] = np.logical_or.reduceat(bad_char, first_char)
    is_end = (v & 0x20) == 0
    bad[nonempty] |= ~is_end[last_char]  # the string ends inside a run
    is_end[last_char] = True  # a token never straddles two strings (such a string is already marked bad)
    ends = np.flatnonzero(is_end)
    tokens = np.add.reduceat(is_end, first_char, dtype=np.int64)  # per non-empty string
    tok_owner = np.repeat(nonempty, tokens)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    width = ends - starts + 1
    too_wide = width > _MAX_RUN_CHARS
    if too_wide.any():
        bad[tok_owner[too_wide]] = True
    x = (v[starts] & 0x1F).astype(np.int64)
    longer = np.flatnonzero(width > 1)
    for k in range(1, _MAX_RUN_CHARS):  # rleFrString: x |= (c & 0x1f) << 5k for the k-th character of a run
        if longer.size == 0:
            break
        x[longer] |= (v[starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
        longer = longer[width[longer] > k + 1]
    negative = np.flatnonzero(v[ends] & 0x10)
    # a negative run of 7 characters: pycocotools' rleFrString shifts -1 by 35 bits for it (undefined in C; x86 builds
    # misread it), so it is corrupt here (see _kernel.c read_token)
    bad[tok_owner[negative[width[negative] >= _MAX_RUN_CHARS]]] = True
    x[negative] -= np.left_shift(1, 5 * np.minimum(width[negative], _MAX_RUN_CHARS))
    j = np.arange(ends.size) - np.repeat(np.cumsum(tokens) - tokens, tokens)  # token index within its string
    runs = x.copy()
    # rleFrString: for j > 2, x[j] += runs[j - 2]: a running sum along the odd tokens from j = 1 and along the
    # even tokens from j = 2 of each string; each chain starts afresh at its first token of a string (j 1 or 2).
    for chain in (np.flatnonzero(j & 1), np.flatnonzero(((j & 1) == 0) & (j >= 2))):
        if chain.size:
            runs[chain] = _segmented_cumsum(x[chain], j[chain] <= 2)
    negative_run = runs < 0
    if negative_run.any():
        bad[tok_owner[negative_run]] = True
    # float64 sums are exact: a string's total stays far below 2**53
    out = np.bincount(tok_owner, weights=runs.astype(np.float64), minlength=n).astype(np.int64)
    out[bad] = INVALID_RLE
    return out


def compressed_counts(segm: Any) -> bytes | None:
    """The compressed RLE string of `segm` as bytes (what pycocotools decodes), or None when it has none."""
    counts = segm.get("counts") if isinstance(segm, dict) else None
    if isinstance(counts, str):
        # pycocotools' _frString encodes strictly, so a lone surrogate is an error there. "surrogatepass" makes it
        # bytes >= 0x80, out of the RLE alphabet like every non-ASCII byte: flagged corrupt ("replace" would make
        # it '?', a valid RLE character, and the string would be scored).
        return counts.encode("utf-8", "surrogatepass")
    return counts if isinstance(counts, bytes) else None

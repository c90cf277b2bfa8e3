"""The per-image statistics beside a report's tables, so two reports can be compared later without the
predictions: instance match records (`match_records.npz` + `.json`) or per-image confusion matrices
(`per_image_confusion.npz` + `.json`).

Data only: numpy arrays in an .npz read back with `allow_pickle=False`, metadata as JSON (a report folder may
sit on a shared drive; loading a pickle from it would run whatever code anyone put there). The .npz is written
with fixed zip timestamps, so equal statistics give equal bytes (numpy's own savez stamps the current time).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.core.errors import AnnotationError
from segpipe.core.images import MAX_FILE_BYTES_DEFAULT, MAX_FILE_BYTES_ENV, configured_limit, read_input_bytes
from segpipe.core.errors import EvaluationError

INSTANCE_RECORDS = "match_records"
SEMANTIC_RECORDS = "per_image_confusion"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz archive (np.load reads it) whose bytes depend only on the arrays, in sorted name order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each checked from its headers before anything is inflated or allocated."""
    try:
        data = read_input_bytes(path)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_npz_members(archive, path=path)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in sorted(npz.files)}
    except AnnotationError as err:
        raise EvaluationError(path, "", err.reason) from err
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise EvaluationError(path, "", f"not a readable statistics archive: {type(err).__name__}: {err}") from err


def _check_npz_members(archive: zipfile.ZipFile, *, path: Path) -> None:
    """Refuse a zip bomb (members inflating past the file-size limit) and an .npy header declaring more data
    than its member holds (np.load would allocate the declared shape first), before either costs memory."""
    limit = configured_limit(MAX_FILE_BYTES_ENV, MAX_FILE_BYTES_DEFAULT)
    total = sum(info.file_size for info in archive.infolist())
    if total > limit:
        raise EvaluationError(path, "", f"statistics archive inflates to {total} bytes, over the limit of {limit} "
                                        f"(raise it with {MAX_FILE_BYTES_ENV})")
    for info in archive.infolist():
        with archive.open(info) as member:  # zipfile stops at the declared size: a lying member fails its CRC
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if dtype.hasobject or declared > info.file_size:
            raise EvaluationError(path, info.filename, f"declares a {dtype} array of shape {shape} ({declared} bytes) "
                                                       f"in a {info.file_size}-byte member")


def write_instance_records(directory: Path, *, stats: Any) -> None:
    """`stats`: an InstanceStats (segpipe.evaluators.instance.stats)."""
    arrays, meta = stats.to_arrays()
    atomic_write_bytes(directory / f"{INSTANCE_RECORDS}.npz", npz_bytes(arrays))
    atomic_write_text(directory / f"{INSTANCE_RECORDS}.json", json.dumps(meta, sort_keys=True) + "\n")


def write_semantic_records(directory: Path, *, files: Sequence[str], confusions: np.ndarray, class_names: Sequence[str]) -> None:
    """Per-image confusion matrices [I, n, n+1] in the order of `files`."""
    atomic_write_bytes(directory / f"{SEMANTIC_RECORDS}.npz", npz_bytes({"confusion": np.asarray(confusions, dtype=np.int64)}))
    meta = {"files": [str(f) for f in files], "class_names": [str(c) for c in class_names]}
    atomic_write_text(directory / f"{SEMANTIC_RECORDS}.json", json.dumps(meta, sort_keys=True) + "\n")


def semantic_records_from_shards(shards: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray] | None:
    """(files sorted by name, their confusions) from semantic shard statistics; None if a shard lacks them."""
    if not shards or not all("per_image_confusion" in s for s in shards):
        return None
    files = [str(r["file"]) for s in shards for r in s["per_image"]]
    matrices = np.concatenate([np.asarray(s["per_image_confusion"]) for s in shards])
    order = sorted(range(len(files)), key=files.__getitem__)
    return [files[i] for i in order], matrices[order]


def read_records(directory: Path) -> tuple[str, Any] | None:
    """("instance", InstanceStats) or ("semantic", (files, confusions [I, n, n+1], class_names)), None if absent."""
    directory = Path(directory)
    if (directory / f"{INSTANCE_RECORDS}.npz").is_file():
        from segpipe.evaluators.instance.stats import InstanceStats

        meta = json.loads((directory / f"{INSTANCE_RECORDS}.json").read_text(encoding="utf-8"))
        arrays = read_npz(directory / f"{INSTANCE_RECORDS}.npz")
        return "instance", InstanceStats.from_arrays(arrays, meta, path=str(directory / f"{INSTANCE_RECORDS}.npz"))
    if (directory / f"{SEMANTIC_RECORDS}.npz").is_file():
        path = directory / f"{SEMANTIC_RECORDS}.npz"
        meta = json.loads((directory / f"{SEMANTIC_RECORDS}.json").read_text(encoding="utf-8"))
        confusion = read_npz(path).get("confusion")
        files, names = meta.get("files"), meta.get("class_names")
        if not (isinstance(files, list) and isinstance(names, list) and isinstance(confusion, np.ndarray)
                and confusion.dtype.kind == "i" and confusion.shape == (len(files), len(names), len(names) + 1)):
            raise EvaluationError(path, "confusion", "expected one [n, n+1] integer matrix per file of the .json")
        if confusion.size and int(confusion.min()) < 0:  # pixel counts: a negative one makes NaN or wrong metrics
            image = int(np.argwhere(confusion < 0)[0][0])
            raise EvaluationError(path, "confusion", f"negative pixel count in the matrix of {files[image]!r}: not written by segpipe")
        return "semantic", ([str(f) for f in files], confusion, [str(n) for n in names])
    return None

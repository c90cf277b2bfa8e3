"""Semantic segmentation evaluation: mIoU, Dice, pixel accuracy from one int64 confusion matrix.

Pure parts live beside this module: `segpipe.evaluators.semantic.confusion` (the additive per-image update) and
`segpipe.evaluators.semantic.tables` (the reduction to pandas tables). This module adds the disk edge:
`evaluate_semantic_dirs` streams GT/prediction PNG pairs through a thread pool (cv2 decodes and
histograms with the GIL released, so threads use every core without pickling label maps), keeping
only the running matrix and one small row per image.
"""

from __future__ import annotations

import collections
import importlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from segpipe.core.images import NON_UTF8_REASON, is_hidden_name, is_utf8_name
from segpipe.evaluators.semantic.confusion import (
    IGNORE_INDEX, UNPREDICTED, check_confusion_arguments, confusion_update, unpredicted_update,
)
from segpipe.core.errors import EvaluationError
from segpipe.core.label_maps import read_label_map
from segpipe.evaluators.semantic.tables import (
    MISSING_PREDICTION, NOTES_COLUMNS, PER_CLASS_COLUMNS, PER_IMAGE_COLUMNS, PREDICTION_FOUND,
    PREDICTION_WITHOUT_GT, SUMMARY_METRICS, ClassScores, SemanticReport, check_class_names, class_scores, per_image_row,
    semantic_compute,
)

__all__ = [
    "IGNORE_INDEX", "UNPREDICTED", "MISSING_PREDICTION", "PREDICTION_WITHOUT_GT", "NOTES_COLUMNS",
    "PER_CLASS_COLUMNS", "PER_IMAGE_COLUMNS", "SUMMARY_METRICS", "ClassScores", "SemanticReport",
    "class_scores", "confusion_update", "unpredicted_update", "per_image_row", "semantic_compute",
    "LabelMapPair", "label_maps_by_stem", "match_label_maps", "pair_label_maps", "score_pair", "read_label_map", "evaluate_semantic_dirs",
]

LABEL_MAP_SUFFIX = ".png"
_IN_FLIGHT_PER_WORKER = 4  # bounded look-ahead: never more than this many pairs decoded per worker
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class LabelMapPair:
    stem: str
    gt: Path
    pred: Path | None  # None: the prediction is missing


def pair_label_maps(gt: Mapping[str, Path], pred: Mapping[str, Path]) -> tuple[list[LabelMapPair], list[str]]:
    """Pair GT and prediction label maps by stem, sorted (the one pairing rule of `segpipe evaluate semantic`
    and of `segpipe run`'s shards); also return the names of predictions without GT."""
    pairs = [LabelMapPair(stem=stem, gt=gt[stem], pred=pred.get(stem)) for stem in sorted(gt)]
    orphans = sorted(pred[stem].name for stem in pred if stem not in gt)
    return pairs, orphans


def match_label_maps(gt_dir: Path, pred_dir: Path) -> tuple[list[LabelMapPair], list[str]]:
    """Pair GT and prediction PNGs by stem (sorted); also return prediction files without GT."""
    gt = label_maps_by_stem(gt_dir)
    if not gt:
        raise EvaluationError(gt_dir, "", f"no {LABEL_MAP_SUFFIX} label maps in the ground-truth directory")
    return pair_label_maps(gt, label_maps_by_stem(pred_dir))


def evaluate_semantic_dirs(
    gt_dir: Path,
    pred_dir: Path,
    *,
    class_names: Sequence[str],
    ignore_index: int = IGNORE_INDEX,
    workers: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> SemanticReport:
    """Score every GT map in `gt_dir` against the same-stem PNG in `pred_dir`.

    A missing prediction counts every labelled GT pixel as a miss and is listed in `notes`; a
    prediction without GT is listed and ignored. Unreadable, multi-channel or wrong-size maps and
    out-of-range values raise EvaluationError naming the first bad file (in sorted order) after all
    files were checked. `progress(k)` is called as images finish (a CLI progress bar hook).
    """
    num_classes = len(check_class_names(class_names))
    check_confusion_arguments(num_classes=num_classes, ignore_index=ignore_index)
    pairs, orphans = match_label_maps(Path(gt_dir), Path(pred_dir))
    # pandas (and the pyarrow it loads: about half a second of CPU) is needed only for the tables at the end: it is
    # imported on its own thread while the maps decode, which they do mostly without the GIL.
    importer = threading.Thread(target=_import_quietly, args=("pandas",), name="semantic-eval-import", daemon=True)
    importer.start()
    total = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    rows: list[dict[str, object]] = []
    errors: list[EvaluationError] = []

    def score(pair: LabelMapPair) -> tuple[np.ndarray, dict[str, object]] | EvaluationError:
        try:
            return score_pair(pair, num_classes=num_classes, ignore_index=ignore_index)
        except EvaluationError as err:
            return err

    n_workers = max(1, workers if workers is not None else _available_cores())
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="semantic-eval") as pool:
        for result in _bounded_map(pool, score, pairs, window=n_workers * _IN_FLIGHT_PER_WORKER):
            if isinstance(result, EvaluationError):
                errors.append(result)
            else:
                total += result[0]
                rows.append(result[1])
            if progress is not None:
                progress(1)
    importer.join()
    import pandas as pd

    if errors:
        first = errors[0]
        others = ""
        if len(errors) > 1:
            others = f" (and {len(errors) - 1} more bad files: {', '.join(_error_files(errors[1:6]))})"
        raise EvaluationError(first.path, first.field, first.reason + others) from first
    notes = pd.DataFrame(
        [{"file": row["file"], "issue": MISSING_PREDICTION} for row in rows if row["prediction"] == MISSING_PREDICTION]
        + [{"file": name, "issue": PREDICTION_WITHOUT_GT} for name in orphans],
        columns=list(NOTES_COLUMNS),
    )
    per_image = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
    return semantic_compute(total, class_names=class_names, per_image=per_image, notes=notes)


def score_pair(pair: LabelMapPair, *, num_classes: int, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, dict[str, object]]:
    """One image's confusion matrix and per-image row; a missing prediction counts every labelled GT pixel as
    a miss. Errors name the file at fault (the GT or the prediction)."""
    gt = read_label_map(pair.gt)
    if pair.pred is None:
        confusion = unpredicted_update(gt, num_classes=num_classes, ignore_index=ignore_index, path=pair.gt)
        return confusion, per_image_row(confusion, file=pair.gt.name, prediction=MISSING_PREDICTION)
    pred = read_label_map(pair.pred)
    if pred.shape != gt.shape:
        raise EvaluationError(pair.pred, "size", f"prediction is {pred.shape[1]}x{pred.shape[0]}, "
                              f"ground truth {pair.gt.name} is {gt.shape[1]}x{gt.shape[0]} (width x height)")
    confusion = _confusion_naming_files(gt=gt, pred=pred, pair=pair, num_classes=num_classes, ignore_index=ignore_index)
    return confusion, per_image_row(confusion, file=pair.gt.name, prediction=PREDICTION_FOUND)


def _confusion_naming_files(
    *, gt: np.ndarray, pred: np.ndarray, pair: LabelMapPair, num_classes: int, ignore_index: int
) -> np.ndarray:
    # confusion_update checks GT values before prediction values; name whichever file is at fault.
    try:
        return confusion_update(gt, pred, num_classes=num_classes, ignore_index=ignore_index, path=pair.pred or pair.gt)
    except EvaluationError as err:
        if err.field.startswith("ground truth"):
            raise EvaluationError(pair.gt, err.field, err.reason) from err
        raise


def label_maps_by_stem(directory: Path) -> dict[str, Path]:
    """The PNG label maps of a folder by stem (not recursive); two files with one stem are an error."""
    if not directory.is_dir():
        raise EvaluationError(directory, "", "not a directory")
    found: dict[str, Path] = {}
    # Sorted by name (what sorting the children's Paths does), with os.scandir's cached file types: a folder of
    # thousands of maps is listed several times per command (counting, the partial-output check, pairing).
    with os.scandir(directory) as scan:
        entries = sorted(((entry.name, entry) for entry in scan if entry.name.lower().endswith(LABEL_MAP_SUFFIX)),
                         key=lambda item: item[0])
    for name, entry in entries:
        path = directory / name
        # Hidden files are not inputs (one rule with the converters); killed atomic writers leave `.<name>.tmp-*.png`.
        if path.suffix.lower() != LABEL_MAP_SUFFIX or is_hidden_name(path.name) or not _is_file(entry, path):
            continue
        if not is_utf8_name(path.name):  # tables and reports need UTF-8 names
            raise EvaluationError(path, "name", NON_UTF8_REASON.replace("skipped: ", "refused: "))
        if path.stem in found:
            raise EvaluationError(path, "stem", f"two label maps share the stem {path.stem!r}: {found[path.stem].name}")
        found[path.stem] = path
    return found


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # the import in the caller's thread raises it


def _is_file(entry: os.DirEntry[str], path: Path) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return path.is_file()  # the same answer and errors as before os.scandir


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Sequence[_T], *, window: int) -> Iterator[_R]:
    """`pool.map` in order, but with at most `window` items in flight (streaming, bounded memory)."""
    pending: collections.deque[Future[_R]] = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count, inside containers)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _error_files(errors: Sequence[EvaluationError]) -> list[str]:
    return [Path(err.path).name for err in errors]

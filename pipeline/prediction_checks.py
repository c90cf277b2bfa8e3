"""Checks every reader of predictions (`evaluate`, `compare`, `audit`) makes before scoring them: were they
made on the ground truth's label space, and did the inference that wrote them finish?

Ids alone cannot tell: a model that predicts one `pet` class (id 1) scored against a cat/dog ground truth
(ids 1, 2) counts every pet as a cat. `segpipe infer` records the category names of the dataset it predicted
(OUT/.segpipe.json, segpipe.core.out_manifest; older folders: the dataset meta.json names), so names are compared.
A plain results list from another tool carries no names: it gets the warnings of `plain_results_warnings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from segpipe.core.errors import SegpipeError
from segpipe.core.layout import INSTANCES_FILE, META_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR
from segpipe.core.out_manifest import SHARDS_DIR, is_partial_prediction, prediction_folder_of, read_manifest

ALLOW_MISMATCH_FLAG = "--allow-label-mismatch"
ALLOW_PARTIAL_FLAG = "--allow-partial"


class PredictionCheckError(SegpipeError):
    """Predictions that must not be scored as given (another label space, an unfinished inference): a usage
    error naming the override flag."""


def _category_list(categories: Iterable[Any]) -> list[tuple[int, str]]:
    out = []
    for c in categories:
        if isinstance(c, dict):
            out.append((int(c["id"]), str(c["name"])))
        else:
            out.append((int(c[0]), str(c[1])))
    return sorted(out)


def _legacy_space(folder: Path) -> dict[str, Any] | None:
    """An inference folder written before manifests: the label space of the dataset its meta.json names."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        dataset = Path(meta["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    space: dict[str, Any] = {}
    try:
        space["categories"] = json.loads((dataset / INSTANCES_FILE).read_text(encoding="utf-8"))["categories"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    classes = dataset / SEMANTIC_DIR / SEMANTIC_CLASSES_FILE
    if classes.is_file():
        space["semantic_classes"] = [line.strip() for line in classes.read_text(encoding="utf-8").splitlines() if line.strip()]
    return space or None


def prediction_label_space(pred: Path) -> tuple[Path, dict[str, Any]] | None:
    """(the file that says it, {"categories": [(id, name)], "semantic_classes": [...]}) for predictions that
    carry their label space, None for a plain results list or label-map folder from elsewhere."""
    folder = prediction_folder_of(pred)
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("command") == "infer" and ("categories" in manifest or "semantic_classes" in manifest):
        return folder / ".segpipe.json", manifest
    if manifest is None:
        space = _legacy_space(folder)
        if space is not None:
            return folder / META_FILE, space
    return None


def _shown(categories: Sequence[tuple[int, str]]) -> str:
    text = ", ".join(f"{i}={n}" for i, n in categories[:40])
    return f"[{text}{' ...' if len(categories) > 40 else ''}]"


def check_categories(pred: Path, *, gt_categories: Iterable[Any], gt_source: Path, allow_mismatch: bool) -> list[str]:
    """Refuse (PredictionCheckError) instance predictions made on other categories than the ground truth's,
    compared by id and name; with `allow_mismatch` the same is a returned warning."""
    found = prediction_label_space(pred)
    if found is None or "categories" not in found[1]:
        return []
    source, space = found
    theirs, ours = _category_list(space["categories"]), _category_list(gt_categories)
    if theirs == ours:
        return []
    message = (f"{pred} was predicted on the categories {_shown(theirs)} ({source}), but {gt_source} has {_shown(ours)}: "
               "ids would be matched to other names")
    return _refuse_or_warn(message, allow_mismatch)


def check_semantic_classes(pred: Path, *, gt_classes: Sequence[str], gt_source: Path, allow_mismatch: bool) -> list[str]:
    """As check_categories for semantic label maps: class names in index order."""
    found = prediction_label_space(pred)
    if found is None or not found[1].get("semantic_classes"):
        return []
    source, space = found
    theirs = [str(c) for c in space["semantic_classes"]]
    if theirs == list(gt_classes):
        return []
    message = (f"{pred} was predicted on the classes [{', '.join(theirs)}] ({source}), but {gt_source} has "
               f"[{', '.join(gt_classes)}]: pixel values would be scored as other classes")
    return _refuse_or_warn(message, allow_mismatch)


def _refuse_or_warn(message: str, allow: bool) -> list[str]:
    if not allow:
        raise PredictionCheckError(message.split(" ", 1)[0], "", message.split(" ", 1)[1]
                                   + f"; predict on the same conversion, or pass {ALLOW_MISMATCH_FLAG} to score them anyway")
    return [f"{message} (scored anyway: {ALLOW_MISMATCH_FLAG})"]


def finished_shard_results(pred: Path) -> tuple[set[int], list[dict[str, Any]]]:
    """The image ids and results of the finished shards of an unfinished inference folder."""
    from segpipe.inference.outputs import read_shard  # no torch: outputs imports numpy and the writers only

    shards = prediction_folder_of(pred) / SHARDS_DIR
    ids: set[int] = set()
    results: list[dict[str, Any]] = []
    for path in sorted(shards.glob("[0-9]*.json")) if shards.is_dir() else ():
        try:
            shard = read_shard(path)
            ids.update(int(i) for i in shard["image_ids"])
            results.extend(shard["results"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return ids, results


def check_partial(pred: Path, *, allow_partial: bool, missing: Any) -> list[str]:
    """Refuse (PredictionCheckError) predictions of an inference that has not finished; with `allow_partial`
    a warning saying how many images have none. `missing()` -> (images without a prediction, images)."""
    if not is_partial_prediction(pred):
        return []
    folder = prediction_folder_of(pred)
    n_missing, n_total = missing()
    what = (f"the output of a `segpipe infer` that has not finished (interrupted, or still running): "
            f"{n_missing} of {n_total} image(s) have no prediction")
    if not allow_partial:
        raise PredictionCheckError(folder, "", f"{what}; run the same infer command again to finish it, or pass "
                                   f"{ALLOW_PARTIAL_FLAG} to score what there is")
    return [f"{folder}: {what}; scored as partial ({ALLOW_PARTIAL_FLAG}): a missing image counts as missed objects/pixels"]


def plain_results_warnings(results: Any, *, gt: Any, pred_path: Path) -> list[str]:
    """A results list that carries no category names (from another tool): ids are all there is. Warned when
    its ids point at categories no prediction can be meant for (no ground truth object anywhere), or when
    categories with ground truth get no detection while others do: the signs of a list made on another
    label space (fewer or other classes), whose ids mean other names here."""
    if not isinstance(results, list) or not results or not isinstance(gt, dict):
        return []
    names = {c.get("id"): c.get("name") for c in gt.get("categories") or [] if isinstance(c, dict)}
    with_gt = {a.get("category_id") for a in gt.get("annotations") or [] if isinstance(a, dict)}
    used = {r.get("category_id") for r in results if isinstance(r, dict)}
    warnings = []
    empty = sorted(int(c) for c in used if isinstance(c, int) and c in names and c not in with_gt)
    if empty:
        warnings.append(f"{pred_path}: results on categories with no ground-truth object at all: "
                        f"{', '.join(f'{c}={names[c]}' for c in empty)}; was this list made on another label space? "
                        "(a plain results list carries ids only: names cannot be compared)")
    unpredicted = sorted(int(c) for c in with_gt if isinstance(c, int) and c in names and c not in used)
    if unpredicted and used & with_gt:
        warnings.append(f"{pred_path}: {len(unpredicted)} of {len(with_gt & set(names))} categories with ground truth got no "
                        f"result at all ({', '.join(f'{c}={names[c]}' for c in unpredicted[:12])}); if the list was made "
                        "on another label space its ids mean other names here")
    return warnings


def guard_instance_predictions(gt: dict[str, Any], results: Any, *, gt_path: Path, pred_path: Path,
                               allow_label_mismatch: bool, allow_partial: bool) -> tuple[Any, list[str]]:
    """Both checks for a results list (PredictionCheckError when refused): the results to score (an unfinished
    inference's finished shards with `allow_partial`: its results.json, if any, is an earlier run's) and the
    warnings to report."""
    gt_ids = {im.get("id") for im in gt.get("images") or [] if isinstance(im, dict)}
    done, partial_results = finished_shard_results(pred_path) if is_partial_prediction(pred_path) else (set(), [])
    warnings = check_partial(pred_path, allow_partial=allow_partial, missing=lambda: (len(gt_ids - done), len(gt_ids)))
    if warnings:
        results = partial_results
    warnings += check_categories(pred_path, gt_categories=gt.get("categories") or [], gt_source=gt_path,
                                 allow_mismatch=allow_label_mismatch)
    if prediction_label_space(pred_path) is None:
        warnings += plain_results_warnings(results, gt=gt, pred_path=pred_path)
    return results, warnings


def guard_label_maps(gt_dir: Path, pred_dir: Path, *, class_names: Sequence[str], allow_label_mismatch: bool,
                     allow_partial: bool) -> list[str]:
    """Both checks for a folder of predicted label maps (PredictionCheckError when refused); the warnings."""
    from segpipe.evaluators.semantic.evaluation import label_maps_by_stem

    def missing() -> tuple[int, int]:
        gt = set(label_maps_by_stem(gt_dir))
        predicted = set(label_maps_by_stem(pred_dir)) if pred_dir.is_dir() else set()
        return len(gt - predicted), len(gt)

    return [*check_partial(pred_dir, allow_partial=allow_partial, missing=missing),
            *check_semantic_classes(pred_dir, gt_classes=class_names, gt_source=gt_dir / SEMANTIC_CLASSES_FILE,
                                    allow_mismatch=allow_label_mismatch)]

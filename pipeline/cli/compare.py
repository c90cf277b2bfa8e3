"""`segpipe compare A B [--dataset DATASET] -o OUT`: which of two models is better on one dataset, where, and why.

A and B are prediction folders (`segpipe infer`'s output: results.json and/or semantic/) on the converted
dataset DATASET, or two checkpoint report folders of a `segpipe run` (OUT/checkpoints/NAME, which carry
the per-image statistics: segpipe.reports.records). Report folders give everything but TIDE, the instance
confusion matrix, boundary IoU and the gallery, which need the predictions. OUT receives (CSV + Parquet):
  intervals            paired bootstrap intervals of A, B and B - A for the headline metrics, and whether significant
  per_class_delta      every per-class metric of A and B and its change
  per_image_delta      the per-image score of A and B and its change, most regressed first
  A/, B/               each model's tables: instance models summary, per_class, per_image, tide, tide_errors,
                       confusion, thresholds, f1_optimal; semantic models summary, per_class, per_image,
                       per_image_class_iou, worst_per_class (+ boundary_iou with --boundary-iou)
  header.json, compare.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from segpipe.core.errors import EvaluationError
from segpipe.core.layout import INSTANCES_FILE, META_FILE, RESULTS_FILE, SEMANTIC_CLASSES_FILE, SEMANTIC_DIR

if TYPE_CHECKING:
    import pandas as pd

SIDES = ("A", "B")


def prediction_kind(pred_dir: Path) -> str:
    """'semantic' for a folder with semantic/ label maps (unless meta.json says instance), else 'instance'."""
    task = None
    if (pred_dir / META_FILE).is_file():
        task = json.loads((pred_dir / META_FILE).read_text(encoding="utf-8")).get("task")
    if (pred_dir / SEMANTIC_DIR).is_dir() and task != "instance":
        return "semantic"
    from segpipe.core.out_manifest import is_partial_prediction

    if (pred_dir / RESULTS_FILE).is_file() or is_partial_prediction(pred_dir):  # partial: its shards hold the results
        return "instance"
    raise EvaluationError(pred_dir, "", f"neither {RESULTS_FILE} nor {SEMANTIC_DIR}/: not a predictions folder of `segpipe infer`")


def semantic_confusions(gt_dir: Path, pred_dir: Path, *, num_classes: int) -> tuple[list[str], np.ndarray]:
    """Per-image confusion matrices [I, n, n+1] of every GT label map (sorted by name); a missing prediction
    counts every labelled pixel as a miss, as `segpipe evaluate semantic` does."""
    from segpipe.evaluators.semantic.confusion import confusion_update, unpredicted_update
    from segpipe.evaluators.semantic.evaluation import label_maps_by_stem, read_label_map

    gt_maps, pred_maps = label_maps_by_stem(gt_dir), label_maps_by_stem(pred_dir)
    files, matrices = [], []
    for stem in sorted(gt_maps):
        gt = read_label_map(gt_maps[stem])
        if stem in pred_maps:
            pred = read_label_map(pred_maps[stem])
            if pred.shape != gt.shape:
                raise EvaluationError(pred_maps[stem], "size", f"prediction is {pred.shape[::-1]}, ground truth {gt.shape[::-1]} (width, height)")
            matrices.append(confusion_update(gt, pred, num_classes=num_classes, path=pred_maps[stem]))
        else:
            matrices.append(unpredicted_update(gt, num_classes=num_classes, path=gt_maps[stem]))
        files.append(gt_maps[stem].name)
    return files, np.stack(matrices) if matrices else np.zeros((0, num_classes, num_classes + 1), dtype=np.int64)


def report_records_dir(path: Path) -> Path | None:
    """The folder holding a report's per-image statistics: PATH itself (OUT/checkpoints/NAME/semantic) or its one
    evaluation sub-folder (OUT/checkpoints/NAME); None when PATH is no such report."""
    from segpipe.reports.records import INSTANCE_RECORDS, SEMANTIC_RECORDS

    def has(p: Path) -> bool:
        return any((p / f"{name}.npz").is_file() for name in (INSTANCE_RECORDS, SEMANTIC_RECORDS))

    if has(path):
        return path
    found = [p for p in sorted(path.iterdir()) if p.is_dir() and has(p)]
    if len(found) > 1:
        raise EvaluationError(path, "", f"holds several evaluations ({', '.join(p.name for p in found)}): name one of them")
    return found[0] if found else None


def _compare_reports(a: Path, b: Path, *, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Two report folders of `segpipe run` (OUT/checkpoints/NAME): what their per-image statistics allow."""
    from segpipe.evaluators.analysis import comparison
    from segpipe.evaluators.analysis.compare import instance_image_scores
    from segpipe.evaluators.analysis.thresholds import threshold_tables
    from segpipe.reports.data import read_table
    from segpipe.reports.records import read_records

    with comparison.model_side("A"):
        found_a = read_records(a)
    with comparison.model_side("B"):
        found_b = read_records(b)
    if found_a is None or found_b is None or found_a[0] != found_b[0]:
        raise EvaluationError(b, "", "A and B are not reports of the same kind of evaluation: nothing to compare")
    found = (found_a, found_b)

    def required_table(directory: Path, name: str) -> pd.DataFrame:
        table = read_table(directory, name)
        if table is None:
            raise EvaluationError(directory, name, f"no {name}.parquet or {name}.csv in this report: run the evaluation again")
        return table

    tables = {side: {name: required_table(p, name) for name in ("summary", "per_class", "per_image")} for side, p in zip(SIDES, (a, b))}
    if found[0][0] == "instance":
        stats = [f[1] for f in found]
        for side, st in zip(SIDES, stats):
            tables[side]["per_image"] = instance_image_scores(tables[side]["per_image"])
            tables[side]["thresholds"], tables[side]["f1_optimal"] = threshold_tables(st)
        result = comparison.compare_instances((stats[0], tables["A"]), (stats[1], tables["B"]), **options["bootstrap"])
        return stats[0].iou_type, {"compare": result, **tables}
    (files_a, conf_a, names), (files_b, conf_b, _) = found[0][1], found[1][1]
    if files_a != files_b:
        raise EvaluationError(b, "images", "A and B were not scored on the same images: compare runs on one dataset")
    for side, conf in zip(SIDES, (conf_a, conf_b)):
        extra = comparison.semantic_analysis(conf, files=files_a, class_names=names)
        tables[side] |= {k: extra[k] for k in ("per_image_class_iou", "worst_per_class")}
    result = comparison.compare_semantic(conf_a, conf_b, tables["A"], tables["B"], **options["bootstrap"])
    return "semantic", {"compare": result, **tables}


def _compare(a: Path, b: Path, *, dataset: Path | None, iou_type: str | None, options: dict[str, Any],
             boundary_ratio: float | None) -> tuple[str, dict[str, Any]]:
    from segpipe.evaluators.analysis import comparison

    reports = [report_records_dir(p) for p in (a, b)]
    if reports[0] is not None and reports[1] is not None:
        compared = _compare_reports(reports[0], reports[1], options=options)
        if compared[0] == "semantic" and iou_type is not None:
            raise click.UsageError(f"--iou-type {iou_type} applies to instance evaluations; A and B are semantic reports: leave it out")
        return compared
    if dataset is None:
        raise click.UsageError("prediction folders need the dataset they were predicted on: give --dataset")
    kinds = {prediction_kind(a), prediction_kind(b)}
    if len(kinds) != 1:
        raise EvaluationError(b, "", "A holds instance results and B semantic label maps (or the reverse): nothing to compare")
    kind = kinds.pop()
    if kind == "semantic" and iou_type is not None:
        raise click.UsageError(f"--iou-type {iou_type} applies to instance predictions; A and B hold semantic label maps "
                               "(scored by mIoU): leave --iou-type out")
    if kind == "instance":
        from segpipe.evaluators.instance.coco_results import default_iou_type
        from segpipe.evaluators.json_files import read_json_file

        gt = read_json_file(dataset / INSTANCES_FILE, what="ground truth")
        loaded, analyses = [], []
        for side, p in zip(SIDES, (a, b)):
            with comparison.model_side(side):
                loaded.append(_guarded_results(p, gt=gt, dataset=dataset, options=options))
        kind = iou_type or default_iou_type(loaded[0])
        for side, r in zip(SIDES, loaded):
            with comparison.model_side(side):
                analyses.append(comparison.instance_analysis(gt, r, iou_type=kind, score_threshold=options["score_threshold"]))
        tables = comparison.compare_instances(analyses[0], analyses[1], **options["bootstrap"])
        return kind, {"compare": tables, "A": analyses[0][1], "B": analyses[1][1]}
    from segpipe.cli.evaluate_semantic import read_class_names

    gt_dir = dataset / SEMANTIC_DIR
    names = read_class_names(str(gt_dir / SEMANTIC_CLASSES_FILE), gt_dir=gt_dir)
    for side, p in zip(SIDES, (a, b)):
        with comparison.model_side(side):
            _guard_label_maps(p, gt_dir=gt_dir, names=names, options=options)
    found = []
    for side, p in zip(SIDES, (a, b)):
        with comparison.model_side(side):
            found.append(semantic_confusions(gt_dir, p / SEMANTIC_DIR, num_classes=len(names)))
    files = found[0][0]
    boundaries: list[Any] = [None, None]
    if boundary_ratio is not None:
        from segpipe.evaluators.semantic.boundary import boundary_iou_dirs

        boundaries = [boundary_iou_dirs(gt_dir, p / SEMANTIC_DIR, class_names=names, dilation_ratio=boundary_ratio) for p in (a, b)]
    per_model = [comparison.semantic_analysis(c, files=files, class_names=names, boundary=bd) for (_, c), bd in zip(found, boundaries)]
    tables = comparison.compare_semantic(found[0][1], found[1][1], per_model[0], per_model[1], **options["bootstrap"])
    return "semantic", {"compare": tables, "A": per_model[0], "B": per_model[1]}


def _guarded_results(pred: Path, *, gt: Any, dataset: Path, options: dict[str, Any]) -> Any:
    """One side's results after segpipe.prediction_checks' checks (a refusal is a usage error; warnings are
    printed): an unfinished inference's finished shards with --allow-partial."""
    from segpipe.evaluators.json_files import read_json_file
    from segpipe.core.out_manifest import is_partial_prediction
    from segpipe.prediction_checks import PredictionCheckError, guard_instance_predictions

    results = [] if is_partial_prediction(pred) else read_json_file(pred / RESULTS_FILE, what="results")
    try:
        results, warnings = guard_instance_predictions(gt, results, gt_path=dataset / INSTANCES_FILE, pred_path=pred / RESULTS_FILE,
                                                       allow_label_mismatch=options["allow_label_mismatch"],
                                                       allow_partial=options["allow_partial"])
    except PredictionCheckError as err:
        raise click.UsageError(str(err)) from err
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return results


def _guard_label_maps(pred: Path, *, gt_dir: Path, names: list[str], options: dict[str, Any]) -> None:
    """One side's label maps through segpipe.prediction_checks' checks (a refusal is a usage error; warnings are printed)."""
    from segpipe.prediction_checks import PredictionCheckError, guard_label_maps

    try:
        warnings = guard_label_maps(gt_dir, pred / SEMANTIC_DIR, class_names=names, allow_label_mismatch=options["allow_label_mismatch"],
                                    allow_partial=options["allow_partial"])
    except PredictionCheckError as err:
        raise click.UsageError(str(err)) from err
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command("compare")
@click.argument("a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The converted dataset both were predicted on (instances.json, semantic/); needed for prediction folders.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--iou-type", type=click.Choice(["segm", "bbox"]), default=None, help="[default: segm when A's results carry masks]")
@click.option("--replicates", type=click.IntRange(min=1), default=1000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed (same seed, same intervals).")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True)
@click.option("--score-threshold", type=float, default=0.5, show_default=True, help="Instance confusion matrix: detections kept.")
@click.option("--boundary-iou", "boundary_ratio", type=float, default=None, is_flag=False, flag_value=0.02,
              help="Semantic: also boundary IoU (Cheng et al. 2021) with this dilation ratio of the image diagonal [flag alone: 0.02].")
@click.option("--gallery", "n_gallery", type=click.IntRange(min=0), default=6, show_default=True,
              help="Images shown per side of the regressed / improved galleries (0: none).")
@click.option("--html/--no-html", default=True, show_default=True)
@click.option("--allow-label-mismatch", is_flag=True,
              help="Compare predictions whose recorded label space differs from the dataset's (a warning, not a usage error).")
@click.option("--allow-partial", is_flag=True,
              help="Compare the predictions of an unfinished (interrupted) `segpipe infer`; images it has not reached count as missed.")
def compare(a: Path, b: Path, dataset: Path | None, out: Path, iou_type: str | None, replicates: int, seed: int, confidence: float,
            score_threshold: float, boundary_ratio: float | None, n_gallery: int, html: bool, allow_label_mismatch: bool,
            allow_partial: bool) -> None:
    """Compare two models' predictions on one dataset: deltas per class and per image, paired bootstrap
    intervals with a significance statement, and each model's error analysis."""
    from segpipe.evaluators.analysis.comparison import verdict
    from segpipe.core.out_manifest import COMPARE, check_output_folder, claim_output_folder
    from segpipe.reports.tables import write_report_dir

    check_output_folder(out, command=COMPARE)
    options = {"score_threshold": score_threshold, "bootstrap": {"replicates": replicates, "seed": seed, "confidence": confidence},
               "allow_partial": allow_partial, "allow_label_mismatch": allow_label_mismatch}
    try:
        evaluation, tables = _compare(a, b, dataset=dataset, iou_type=iou_type, options=options, boundary_ratio=boundary_ratio)
    except EvaluationError as err:
        raise click.ClickException(str(err)) from err
    claim_output_folder(out, command=COMPARE, what="`segpipe compare`", owns=())
    lines = verdict(tables["compare"]["intervals"])
    header = {"command": "compare", "A": str(a.resolve()), "B": str(b.resolve()), "dataset": str(dataset.resolve()) if dataset else None,
              "evaluation": evaluation, "replicates": replicates, "seed": seed, "confidence": confidence,
              "score_threshold": score_threshold, "boundary_dilation_ratio": boundary_ratio, "verdict": lines}
    for side in SIDES:
        write_report_dir(out / side, tables[side], header={**header, "model": side})
    write_report_dir(out, tables["compare"], header=header)
    for line in lines:
        click.echo(line)
    if html:
        from segpipe.reports.compare_page import render_compare

        from_predictions = report_records_dir(a) is None  # report folders hold no predictions to draw
        page = render_compare(out, dataset=dataset if from_predictions else None, predictions={"A": a, "B": b}, n_gallery=n_gallery)
        click.echo(f"comparison written to {out} ({page.name})", err=True)

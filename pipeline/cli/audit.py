"""`segpipe audit DATASET [--pred PRED] -o AUDIT_DIR [--top N]`: label-quality audit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import pandas as pd

from segpipe.commands.audit import FINDINGS_TABLE as FINDINGS_TABLE, PARTIAL_RESULTS_FILE, SUMMARY_TABLE, write_audit

# Exit codes: findings never fail the command; unreadable inputs do. 2 is click's usage error.
EXIT_OK = 0
EXIT_UNREADABLE_INPUT = 1
MESSAGE_WIDTH = 110


def format_audit_summary(findings: pd.DataFrame, summary: pd.DataFrame, *, top: int) -> str:
    """The text printed on stdout: counts per severity, per check, then the `top` highest-scored findings."""
    by_sev = findings["severity"].value_counts()
    lines = [f"{len(findings)} finding(s): " + ", ".join(f"{int(by_sev.get(s, 0))} {s}" for s in ("error", "warning", "info"))]
    for row in summary.itertuples(index=False):
        lines.append(f"  {row.check:<32} {row.severity:<8} {row.count:>7}")
    if top > 0 and not findings.empty:
        lines.append(f"top {min(top, len(findings))} by score:")
        for finding in findings.head(top).to_dict("records"):
            where = finding["file_name"] or "(dataset)"
            ann = f" ann {finding['annotation_id']}" if not pd.isna(finding["annotation_id"]) else ""
            message: str = finding["message"]
            msg = message if len(message) <= MESSAGE_WIDTH else message[: MESSAGE_WIDTH - 3] + "..."
            lines.append(f"  {finding['score']:.3f} {finding['severity']:<7} {finding['check']:<24} {where}{ann}: {msg}")
    return "\n".join(lines)


@click.command()
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--pred",
    "pred",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Predictions dir (with results.json) or a COCO results JSON: enables the model-assisted checks.",
)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Audit directory: findings.csv, summary.csv (+ .parquet). Created if missing.",
)
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True, help="How many top-scored findings to print.")
@click.option("--relabel", "relabel", type=click.Choice(("cvat", "labelme")), default=None,
              help="Also write OUT/relabel/: the flagged images as a CVAT or LabelMe task (findings attached, --pred's suggestions).")
@click.option("--relabel-min-score", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Only images with a finding scored at least this go into the relabel task.")
@click.option("--relabel-suggest-min-score", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Only predictions scored at least this become suggestions in the relabel task.")
@click.option("--allow-label-mismatch", is_flag=True,
              help="Use predictions whose recorded label space differs from the dataset's (a warning instead of a usage error).")
@click.option("--allow-partial", is_flag=True, help="Use the predictions of an unfinished (interrupted) `segpipe infer`.")
def audit(dataset: Path, pred: Path | None, out: Path, top: int, relabel: str | None = None, relabel_min_score: float = 0.0,
          relabel_suggest_min_score: float = 0.5, allow_label_mismatch: bool = False, allow_partial: bool = False) -> None:
    """Audit label quality of DATASET: a converted dataset dir (its conversion_report.csv rows are carried in)
    or any COCO json file with its images (in the json's folder or an images/ folder beside it).

    Checks format and integrity (ids, crowd flags, boxes and masks vs the image, image files, duplicates),
    per-class geometry and statistics (robust z-score outliers, near-duplicates, tiny or fragmented masks,
    Oxford-IIIT Pet layout checks) and, with --pred, model-assisted mistakes (possibly missing, spurious,
    wrong class, sloppy outline). Rows of findings.csv are ranked by score in [0, 1] (higher = more likely a
    real problem).

    Exit code: 0 whenever the audit ran, whatever it found; 1 when the dataset or predictions cannot be read;
    2 for a usage error.
    """
    from segpipe.evaluators.audit.dataset import audit_path
    from segpipe.evaluators.audit.findings import CHECK_NO_PREDICTIONS
    from segpipe.core.errors import EvaluationError
    from segpipe.core.out_manifest import AUDIT, check_output_folder, claim_output_folder

    check_output_folder(out, command=AUDIT)
    warnings: list[str] = []
    if pred is not None:
        pred, warnings = _guarded_predictions(dataset, pred, out=out, allow_label_mismatch=allow_label_mismatch,
                                              allow_partial=allow_partial)
    try:
        result = audit_path(dataset, pred=pred)
    except EvaluationError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(EXIT_UNREADABLE_INPUT) from err
    try:
        claim_output_folder(out, command=AUDIT, what="`segpipe audit`", owns=())
        path = write_audit(out, findings=result.findings, summary=result.summary)
    except OSError as err:
        click.echo(f"error: cannot write the audit to {out}: {err}", err=True)
        raise SystemExit(EXIT_UNREADABLE_INPUT) from err
    click.echo(format_audit_summary(result.findings, result.summary, top=top))
    for message in result.findings.loc[result.findings["check"] == CHECK_NO_PREDICTIONS, "message"]:
        click.echo(f"warning: {pred}: {message}", err=True)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    from segpipe.reports.gallery import GallerySource
    from segpipe.reports.html import render_audit_report

    gallery = None
    if dataset.is_dir():  # a converted dataset dir; a bare COCO file gets the page without thumbnails
        gallery = GallerySource.from_dirs(dataset=dataset, predictions=pred if pred is not None and pred.is_dir() else None)
        if pred is not None and pred.is_file():  # --pred results.json: the prediction panel still shows it
            gallery = replace(gallery, results=pred)
    page = render_audit_report(out, gallery=gallery)
    click.echo(f"wrote {path}, {out / (SUMMARY_TABLE + '.csv')} (+ parquet) and {page}")
    if relabel is not None:
        from segpipe.relabel import audit_relabel_task

        click.echo(audit_relabel_task(dataset, result.findings, out, fmt=relabel, pred=pred, min_score=relabel_min_score,
                                      suggest_min_score=relabel_suggest_min_score))


def _guarded_predictions(dataset: Path, pred: Path, *, out: Path, allow_label_mismatch: bool,
                         allow_partial: bool) -> tuple[Path, list[str]]:
    """--pred through the checks of segpipe.prediction_checks (a refusal is a usage error): the predictions to
    use (an unfinished inference's finished shards, written to OUT/partial_results.json, with --allow-partial)
    and the warnings to print."""
    import json

    from segpipe.core.atomic_write import atomic_write_text
    from segpipe.core.layout import INSTANCES_FILE
    from segpipe.prediction_checks import PredictionCheckError, check_categories, check_partial, finished_shard_results

    gt_file = dataset / INSTANCES_FILE if dataset.is_dir() else dataset
    if pred.is_file() and _first_character(pred) == "{" and _is_ground_truth(pred):  # results are a JSON array
        raise click.UsageError(f"--pred {pred} is a COCO ground truth (it has images/annotations), not a results list: "
                               "is it a ground truth? (DATASET is the ground truth, --pred the predictions)")
    try:
        gt = json.loads(gt_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return pred, []  # unreadable: the audit itself says so
    if not isinstance(gt, dict):
        return pred, []
    gt_ids = {im.get("id") for im in gt.get("images") or [] if isinstance(im, dict)}
    done, partial_results = finished_shard_results(pred)
    try:
        warnings = check_partial(pred, allow_partial=allow_partial, missing=lambda: (len(gt_ids - done), len(gt_ids)))
        warnings += check_categories(pred, gt_categories=gt.get("categories") or [], gt_source=gt_file,
                                     allow_mismatch=allow_label_mismatch)
    except PredictionCheckError as err:
        raise click.UsageError(str(err)) from err
    if warnings and any("--allow-partial" in w for w in warnings):
        pred = atomic_write_text(out / PARTIAL_RESULTS_FILE, json.dumps(partial_results, sort_keys=True) + "\n")
    return pred, warnings


def _first_character(path: Path) -> str:
    """The first non-blank character of a file (a UTF-8 BOM skipped), read from its first 4 KiB."""
    with path.open("rb") as handle:
        head = handle.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def _is_ground_truth(path: Path) -> bool:
    """A JSON object with COCO ground-truth keys; False for anything unreadable (the audit itself says so)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool({"images", "annotations"} & set(data))

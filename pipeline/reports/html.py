"""Self-contained HTML pages over saved report tables: evaluate (instances, semantic), leaderboard, audit.

The CSV/Parquet tables are the source of truth; these pages are their face. Each render function
reads only files in its directory (plus the image source named in `report_inputs.json`), writes one HTML
file atomically and returns its path. Equal inputs give byte-identical pages: no run time, no random ids.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jinja2
import numpy as np
import pandas as pd
from tqdm import tqdm

from segpipe.core.atomic_write import write_bytes_if_changed
from segpipe.core.layout import REPORT_HEADER_FILE, REPORT_PAGE_FILE
from segpipe.reports import data as rd
from segpipe.reports import plots as plots
from segpipe.reports.gallery import GallerySource, instance_thumbnail, semantic_thumbnail
from segpipe.reports.overlay import GT_OUTLINE, HIGHLIGHT_COLOUR, IGNORE_COLOUR, class_colours

REPORT_INPUTS_FILE = "report_inputs.json"
EVALUATE_PAGE = REPORT_PAGE_FILE
LEADERBOARD_PAGE = "leaderboard.html"
AUDIT_PAGE = "audit.html"
# Rows per check on the audit page; the full list stays in findings.csv (keeps the page small).
AUDIT_ROWS_PER_CHECK = 200
SEVERITY_RANK: Mapping[str, int] = {"error": 0, "warning": 1, "info": 2}
LEADERBOARD_NON_METRICS: tuple[str, ...] = ("checkpoint", "sha256", "status", "error", "path", "epoch", "n_images", "seconds", "model",
                                            "significantly_worse")
PREFERRED_CLASS_METRICS: tuple[str, ...] = ("AP", "IoU", "Dice", "AP50")
HEADLINE_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "AR100", "mIoU", "mDice", "aAcc")
_MAX_LINES = 10


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(Path(__file__).with_name("templates")))
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=False, keep_trailing_newline=True)


def write_text_if_changed(path: Path, text: str) -> Path:
    """Atomic write that leaves an identical file alone: a no-op `segpipe run` rerun rewrites nothing."""
    write_bytes_if_changed(path, text.encode("utf-8"))
    return path


def _render(template: str, out: Path, **context: Any) -> Path:
    html = _environment().get_template(template).render(**context)
    return write_text_if_changed(out, html)


def _css(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def write_report_inputs(directory: Path, *, kind: str, gallery: GallerySource | None, options: Mapping[str, Any]) -> Path:
    """Persist what re-rendering needs (absolute paths), so `segpipe report DIR` needs nothing else."""
    data = {"kind": kind, "gallery": gallery.to_json() if gallery is not None else None, "options": dict(options)}
    return write_text_if_changed(directory / REPORT_INPUTS_FILE, json.dumps(data, sort_keys=True, indent=2) + "\n")


def read_report_inputs(directory: Path) -> tuple[str | None, GallerySource | None, dict[str, Any]]:
    data = rd.read_json(Path(directory) / REPORT_INPUTS_FILE)
    gallery = data.get("gallery")
    return data.get("kind"), GallerySource.from_json(gallery) if gallery else None, dict(data.get("options") or {})


def _progress(items: Sequence[Any], *, enabled: bool, desc: str) -> Iterable[Any]:
    return tqdm(items, desc=desc, unit="img", disable=not enabled, leave=False)


def warnings_banner(header: Mapping[str, Any]) -> list[str]:
    """The warnings a report's header.json lists, one line each, for the banner at the top of the page (a
    JSON list in a table cell is easy to miss)."""
    found = header.get("warnings") or []
    return [str(w) for w in (found if isinstance(found, list) else [found]) if str(w).strip()]


def _header_without_warnings(header: Mapping[str, Any]) -> dict[str, Any]:
    n = len(warnings_banner(header))
    rest = {k: v for k, v in header.items() if k != "warnings"}
    if "warnings" in header:
        rest["warnings"] = f"{n}, listed at the top of the page" if n else "none"
    return rest


def prediction_state(header: Mapping[str, Any], per_class: pd.DataFrame | None, *, kind: str) -> list[str]:
    """What makes a page of zeros readable: the predictions held no detection, or model classes were dropped
    because the dataset does not have them (the run's inference says which, in header.json)."""
    lines = []
    if kind == "instances" and per_class is not None and "n_dt" in per_class.columns:
        n_dt = int(pd.to_numeric(per_class["n_dt"], errors="coerce").fillna(0).sum())
        if n_dt == 0:
            lines.append("0 detections: the predictions hold no detection of any dataset category, so every AP and AR is 0 "
                         "(check the score threshold and that the model's classes map onto the dataset's).")
    dropped = int(header.get("n_dropped_model_outputs") or 0)
    if dropped:
        names = [str(n) for n in header.get("dropped_model_classes") or []]
        shown = ", ".join(names[:10]) + (f" … ({len(names) - 10} more)" if len(names) > 10 else "")
        lines.append(f"{dropped} model classes dropped (not in the dataset): {shown}.")
    return lines


# --- evaluate ------------------------------------------------------------------------------------------------


def evaluate_kind(per_class: pd.DataFrame | None, header: Mapping[str, Any]) -> str:
    """'instances' or 'semantic', from the header's task or the per-class columns."""
    task = str(header.get("task", header.get("kind", ""))).lower()
    if task in ("instances", "semantic"):
        return task
    cols = {str(c) for c in (per_class.columns if per_class is not None else [])}
    return "semantic" if "IoU" in cols and "AP" not in cols else "instances"


def render_evaluate_report(report_dir: Path, *, gallery: GallerySource | None = None, n_worst: int = 24,
                           progress: bool = False) -> Path:
    """Write REPORT_DIR/report.html from summary/per_class/per_image/pr_curves/confusion tables.

    Without `gallery`, images come from the `gt`/`pred` paths in header.json when they exist; `n_worst=0`
    leaves the pictures out."""
    report_dir = Path(report_dir)
    summary, per_class = rd.read_table(report_dir, "summary"), rd.read_table(report_dir, "per_class")
    if summary is None and per_class is None:
        raise rd.MissingReportFile(report_dir, "", "no summary.csv or per_class.csv to render: not a report folder")
    header = rd.read_json(report_dir / REPORT_HEADER_FILE)
    if gallery is None:
        # The evaluate commands record their inputs (gt, pred) in header.json: draw from those when they exist.
        gallery = GallerySource.from_header(header)
    per_image = rd.read_table(report_dir, "per_image")
    kind = evaluate_kind(per_class, header)
    label = "category" if kind == "instances" else "class"
    if per_class is not None and label not in per_class.columns:
        label = str(per_class.columns[0])
    names = [str(n) for n in per_class[label]] if per_class is not None else []
    if kind == "instances" and gallery is not None and gallery.category_names:
        # Category id order from the ground truth, so colours match across reports of one dataset.
        names = [*[gallery.category_names[k] for k in sorted(gallery.category_names)], *[n for n in names if n not in gallery.category_names.values()]]
    colours = class_colours(names, background=names[0] if kind == "semantic" and names else None)
    context: dict[str, Any] = {
        "kind": kind, "iou_type": header.get("iou_type", "segm"),
        "summary": rd.table_model(summary, digits=4), "per_class": rd.table_model(per_class, digits=4),
        "pr_curves": None, "confusion": None,
    }
    pc = per_class if per_class is not None else pd.DataFrame()
    if kind == "instances":
        context["bars"] = plots.plot_per_class_bars(pc, label=label, bar="AP", markers=("AP50", "AP75"), colours=colours,
                                                    title="AP per category (bars), AP50 and AP75 (markers)")
        context["bars_caption"] = "AP@[.50:.95] per category; categories without ground truth are marked (no GT)."
        context["pr_curves"] = plots.plot_pr_curves(rd.tidy_pr_curves(rd.read_table(report_dir, "pr_curves")), colours=colours)
        worst = rd.worst_instance_images(per_image, n=n_worst)
        context["worst_rule"] = "Ranked by errors (false positives + false negatives at IoU 0.5), then by lowest mean IoU of matched pairs."
    else:
        context["bars"] = plots.plot_per_class_bars(pc, label=label, bar="IoU", markers=("Dice",), colours=colours,
                                                    title="IoU per class (bars) and Dice (markers)")
        context["bars_caption"] = "Dataset-level IoU and Dice per class from the summed confusion matrix."
        matrix, cm_rows, cm_cols = rd.tidy_confusion(rd.read_table(report_dir, "confusion"), class_names=names or None)
        context["confusion"] = plots.plot_confusion(matrix, class_names=cm_rows, column_names=cm_cols) if matrix.size else None
        worst = rd.worst_semantic_images(per_image, n=n_worst)
        context["worst_rule"] = "Ranked by lowest per-image IoU."
    context["worst"] = rd.table_model(worst, digits=4)
    context["gallery"], used = _evaluate_gallery(worst, kind=kind, gallery=gallery, colours=colours, names=names, progress=progress)
    context["legend"] = [(n, _css(colours[n])) for n in names if n in used]
    if kind == "instances" and context["gallery"]:
        context["legend"].insert(0, ("ground truth (white outline)", _css(GT_OUTLINE)))
    if kind == "semantic" and context["gallery"]:
        context["legend"].append(("ignore (255)", _css(IGNORE_COLOUR)))
    inputs = gallery.input_paths() if gallery is not None else []
    context["state"] = prediction_state(header, per_class, kind=kind)
    title = f"{'Instance' if kind == 'instances' else 'Semantic'} evaluation: {header.get('checkpoint', report_dir.name)}"
    nav = [("summary", "summary"), ("per-class", "per class"),
           ("pr-curves", "PR curves") if kind == "instances" else ("confusion", "confusion"), ("worst", "worst images")]
    write_report_inputs(report_dir, kind=f"evaluate-{kind}", gallery=gallery, options={"n_worst": n_worst})
    return _render("evaluate.html.j2", report_dir / EVALUATE_PAGE, title=title, nav=nav, banner=warnings_banner(header),
                   header=rd.header_rows(_header_without_warnings(header), extra_inputs=inputs), **context)


def _evaluate_gallery(worst: pd.DataFrame, *, kind: str, gallery: GallerySource | None, colours: Mapping[str, Any],
                      names: Sequence[str], progress: bool) -> tuple[list[dict[str, Any]], set[str]]:
    if gallery is None or worst.empty:
        return [], set()
    items: list[dict[str, Any]] = []
    used: set[str] = set()
    rows = list(worst.to_dict("records"))
    for row in _progress(rows, enabled=progress, desc="gallery"):
        if kind == "instances":
            image_id = int(row["image_id"])
            thumb = instance_thumbnail(gallery, image_id=image_id, colours=colours)
            anns = gallery.annotations_by_image.get(image_id, []) + gallery.detections_by_image.get(image_id, [])
            # Raw JSON ids: a missing or non-int id simply finds no name.
            used |= {gallery.category_names.get(a.get("category_id"), "") for a in anns if isinstance(a, dict)}  # type: ignore[arg-type]
            caption = f"{row.get('file_name', image_id)}: tp {row.get('tp', '?')}, fp {row.get('fp', '?')}, fn {row.get('fn', '?')}"
        else:
            file = str(row.get("file", row.get("file_name", "")))
            thumb = semantic_thumbnail(gallery, file=file, colours=[colours[n] for n in names])
            used |= set(names[1:])
            iou = row.get("IoU")
            caption = f"{file}: IoU n/a" if iou is None or pd.isna(iou) else f"{file}: IoU {float(iou):.3f}"
        items.append({"uri": thumb.uri, "width": thumb.width, "height": thumb.height, "alt": caption, "caption": caption, "severity": ""})
    return items, used


# --- leaderboard ---------------------------------------------------------------------------------------------


def _checkpoint_reports(out_dir: Path, checkpoint: str) -> list[str]:
    base = out_dir / "checkpoints" / checkpoint
    if not base.is_dir():
        return []
    pages = sorted(base.rglob(EVALUATE_PAGE), key=lambda p: p.as_posix())
    return [p.relative_to(out_dir).as_posix() for p in pages]


def checkpoint_notes(out_dir: Path, checkpoint: str) -> str:
    """'0 detections; 88 model classes dropped' for a checkpoint whose reports say so (empty when nothing to say)."""
    lines: list[str] = []
    for header_path in sorted((out_dir / "checkpoints" / checkpoint).glob("*/" + REPORT_HEADER_FILE)):
        header = rd.read_json(header_path)
        kind = "semantic" if header.get("evaluation") == "semantic" or header.get("task") == "semantic" else "instances"
        per_class = rd.read_table(header_path.parent, "per_class")
        for line in prediction_state(header, per_class, kind=kind):
            short = line.split(":", 1)[0] if line.startswith("0 detections") else line.split(" (", 1)[0]
            if short not in lines:
                lines.append(short)
    return "; ".join(lines)


def leaderboard_model(board: pd.DataFrame, *, links: Mapping[str, list[str]], notes: Mapping[str, str]) -> dict[str, Any]:
    """The leaderboard table in leaderboard.csv's order (best first), compact enough to fit a page: each
    metric's bootstrap interval sits under its value, `vs_best` carries its interval and the
    `significantly_worse` flag, the hash is shortened into the checkpoint cell's tooltip; every number of
    the CSV is still on the page (tooltip or cell)."""
    columns = [str(c) for c in board.columns]
    intervals = {c: (f"{c}_low", f"{c}_high") for c in columns if f"{c}_low" in columns and f"{c}_high" in columns}
    folded = {x for lo_hi in intervals.values() for x in lo_hi} | {"sha256", "significantly_worse"}
    shown = [c for c in columns if c not in folded and not (c == "error" and board[c].fillna("").astype(str).eq("").all())]
    head = ["checkpoint", "report"] + [c for c in shown if c != "checkpoint"]
    if any(notes.values()):
        head.append("notes")
    rows = []
    for rec in board.to_dict("records"):
        name = str(rec["checkpoint"])
        sha = str(rec.get("sha256") or "")
        row: list[dict[str, Any]] = [{"text": name, "sort": "", "title": f"sha256 {sha}" if sha else ""}]
        page = links.get(name) or []
        row.append({"text": "report" if page else "", "sort": "", "link": page[0] if page else None})
        for c in shown:
            if c == "checkpoint":
                continue
            text, key = rd.format_cell(rec.get(c))
            cell: dict[str, Any] = {"text": text, "sort": key}
            if c in intervals:
                lo, _ = rd.format_cell(rec.get(intervals[c][0]))
                hi, _ = rd.format_cell(rec.get(intervals[c][1]))
                cell["sub"] = f"[{lo}, {hi}]" if lo and hi else ""
            if c == "vs_best" and bool(rec.get("significantly_worse")) is True:
                cell["flag"] = "significantly worse"
            row.append(cell)
        if "notes" in head:
            row.append({"text": notes.get(name, ""), "sort": "", "warn": bool(notes.get(name))})
        rows.append(row)
    return {"columns": head, "rows": rows}


def leaderboard_metrics(table: pd.DataFrame) -> list[str]:
    """Score-like summary columns (values within [−1, 1]) for the line plot, headline metrics first, at most ten."""
    scores = []
    for c in rd.numeric_metric_columns(table, exclude=LEADERBOARD_NON_METRICS):
        if c.endswith(("_low", "_high")) or c.startswith("vs_best"):  # intervals and differences, not metrics
            continue
        v = pd.to_numeric(table[c], errors="coerce").dropna()
        if not v.empty and v.between(-1.0, 1.0).all():
            scores.append(c)
    ordered = [m for m in HEADLINE_METRICS if m in scores] + [m for m in scores if m not in HEADLINE_METRICS]
    return ordered[:_MAX_LINES]


def per_class_heatmaps(by_ckpt: pd.DataFrame, *, order: Sequence[str]) -> list[tuple[str | None, str]]:
    """One heatmap (class × checkpoint) per evaluation for its headline per-class metrics (AP or IoU, Dice)."""
    out: list[tuple[str | None, str]] = []
    evaluations = sorted(by_ckpt["evaluation"].astype(str).unique()) if "evaluation" in by_ckpt.columns else [""]
    for evaluation in evaluations:
        part = by_ckpt[by_ckpt["evaluation"].astype(str) == evaluation] if evaluation else by_ckpt
        present = [str(m) for m in dict.fromkeys(part["metric"].astype(str))]
        for metric in [m for m in PREFERRED_CLASS_METRICS if m in present][:2] or present[:1]:
            sub = part[part["metric"].astype(str) == metric].assign(value=lambda t: pd.to_numeric(t["value"], errors="coerce"))
            wide = sub.pivot_table(index="category", columns="checkpoint", values="value", aggfunc="first", sort=False, dropna=False)
            wide = wide.reindex(index=list(dict.fromkeys(sub["category"])), columns=[c for c in order if c in set(sub["checkpoint"].astype(str))])
            name = f"{metric} ({evaluation})" if evaluation else metric
            uri = plots.plot_heatmap(wide, title=f"{name} per class and checkpoint", xlabel="checkpoint", ylabel="class")
            out.append((uri, f"{name} per class (rows) for every checkpoint (columns, natural order); grey = not defined."))
    return out


def _report_inputs_date(header: Path) -> str:
    """A report's 'inputs modified' as its own page shows it: `segpipe run` headers hold content keys, not
    paths, so the date comes from the inputs saved beside them (report_inputs.json)."""
    _, gallery, _ = read_report_inputs(header.parent)
    return rd.header_rows(rd.read_json(header), extra_inputs=gallery.input_paths() if gallery else [])[-1][1]


def render_leaderboard(out_dir: Path) -> Path:
    """Write OUT/leaderboard.html from OUT/leaderboard.csv and OUT/per_class_by_checkpoint.csv."""
    out_dir = Path(out_dir)
    board = rd.read_table(out_dir, "leaderboard")
    if board is None:
        raise rd.MissingReportFile(out_dir, "", "no leaderboard.csv to render: not a `segpipe run` output folder")
    if "checkpoint" not in board.columns:
        raise rd.ReportError(out_dir / "leaderboard.csv", "checkpoint", "missing column")
    notes = {str(c): checkpoint_notes(out_dir, str(c)) for c in board["checkpoint"]}
    model = leaderboard_model(board, links={str(c): _checkpoint_reports(out_dir, str(c)) for c in board["checkpoint"]}, notes=notes)
    by_ckpt = rd.read_table(out_dir, "per_class_by_checkpoint")
    natural = rd.order_checkpoints(board)  # the trend plot and heatmaps read left to right in training order
    heatmaps = [] if by_ckpt is None or by_ckpt.empty else per_class_heatmaps(by_ckpt, order=[str(c) for c in natural["checkpoint"]])
    header = {"output": str(out_dir.resolve()), "checkpoints": str(len(board))}
    dates = [_report_inputs_date(p) for p in sorted(out_dir.glob("checkpoints/*/**/header.json"))]
    dates = sorted(d for d in dates if d != "unknown")  # ISO dates: the string order is the time order
    if dates:
        header["inputs_date"] = dates[-1]
    rows = rd.header_rows(header)
    best = rd.read_json(out_dir / "best.json") if (out_dir / "best.json").is_file() else {}
    if best:
        pages = sorted((out_dir / "best").glob(f"*/{EVALUATE_PAGE}"))
        best["page"] = pages[0].relative_to(out_dir).as_posix() if pages else "best/"
    write_report_inputs(out_dir, kind="leaderboard", gallery=None, options={})
    banner = [f"{c}: {n}" for c, n in notes.items() if n]
    return _render("leaderboard.html.j2", out_dir / LEADERBOARD_PAGE, title="Checkpoint leaderboard", header=rows, banner=banner,
                   nav=[("leaderboard", "leaderboard"), ("trend", "trend"), ("per-class", "per class")], leaderboard=model,
                   lines=plots.plot_metric_lines(natural, x="checkpoint", metrics=leaderboard_metrics(natural)), heatmaps=heatmaps,
                   best=best, comparison=(out_dir / "comparison" / "compare.html").is_file() or (out_dir / "comparison" / "header.json").is_file())


# --- audit ---------------------------------------------------------------------------------------------------


def rank_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """The audit's own ranking, score descending (higher = more likely a real problem, NaN last), then
    severity (error, warning, info), check and image id to break ties deterministically."""
    t = findings.assign(
        _sev=findings.get("severity", pd.Series("", index=findings.index)).map(lambda s: SEVERITY_RANK.get(str(s), 3)),
        _score=-pd.to_numeric(findings.get("score", pd.Series(math.nan, index=findings.index)), errors="coerce").fillna(-math.inf),
    )
    keys = ["_score", "_sev"] + [c for c in ("check", "image_id", "annotation_id") if c in t.columns]
    return t.sort_values(keys, kind="mergesort", na_position="last").drop(columns=["_sev", "_score"]).reset_index(drop=True)


def audit_groups(ranked: pd.DataFrame) -> list[tuple[str, dict[str, Any], bool]]:
    """(check, table, open) per check: checks with errors first, then warnings, then info-only ones (closed)."""
    groups = []
    for check in sorted(ranked["check"].astype(str).unique()):
        rows = ranked[ranked["check"].astype(str) == check]
        worst = min(SEVERITY_RANK.get(str(v), 3) for v in rows["severity"])
        groups.append((worst, check, rd.table_model(rows.drop(columns=["check"]), max_rows=AUDIT_ROWS_PER_CHECK)))
    return [(check, model, worst < SEVERITY_RANK["info"]) for worst, check, model in sorted(groups, key=lambda g: (g[0], g[1]))]


def flagged_prediction_box(message: str) -> list[float] | None:
    """The bbox a model-assisted finding names for its prediction ('... at bbox [x, y, w, h] ...'), if any.

    >>> flagged_prediction_box("confident 'cat' prediction (score 0.90) at bbox [1.0, 2.5, 30.0, 40.0] matches no annotation")
    [1.0, 2.5, 30.0, 40.0]
    """
    found = re.search(r"at bbox \[([-+0-9.e]+), ([-+0-9.e]+), ([-+0-9.e]+), ([-+0-9.e]+)\]", message)
    return [float(v) for v in found.groups()] if found else None


def render_audit_report(audit_dir: Path, *, gallery: GallerySource | None = None, top: int = 24, progress: bool = False) -> Path:
    """Write AUDIT_DIR/audit.html from findings.csv (+ summary.csv): counts per check, top findings, groups."""
    audit_dir = Path(audit_dir)
    findings = rd.read_table(audit_dir, "findings")
    if findings is None:
        raise rd.MissingReportFile(audit_dir, "", "no findings.csv to render: not an audit folder")
    for col in ("check", "severity"):
        if col not in findings.columns:
            raise rd.ReportError(audit_dir / "findings.csv", col, "missing column")
    ranked = rank_findings(findings)
    counts = (ranked.groupby(["check", "severity"], sort=True).size().rename("findings").reset_index()
              if not ranked.empty else pd.DataFrame(columns=["check", "severity", "findings"]))
    groups = audit_groups(ranked)
    # Hundreds of info rows (e.g. test images without a head XML) must not push the warnings out of sight: the
    # thumbnails and the chart show errors and warnings first / only, the info rows stay in their tables.
    is_info = ranked["severity"].astype(str) == "info"
    ranked_for_top = pd.concat([ranked[~is_info], ranked[is_info]])
    plotted = counts[counts["severity"].astype(str) != "info"] if (~is_info).any() else counts
    n_info = int(is_info.sum())
    plot_caption = ("Number of findings per check, split by severity"
                    + (f"; the {n_info} info row(s) are left out of the chart (they are in the tables)." if len(plotted) < len(counts) else "."))
    names = [gallery.category_names[k] for k in sorted(gallery.category_names)] if gallery is not None else []
    colours = class_colours(names)
    items: list[dict[str, Any]] = []
    used: set[str] = set()
    repeated: dict[int, int] = {}
    if gallery is not None and "image_id" in ranked.columns:
        with_image = ranked_for_top[pd.to_numeric(ranked_for_top["image_id"], errors="coerce").notna()]
        # One thumbnail per image, for its highest-ranked finding: the same picture side by side said nothing new.
        ids = pd.to_numeric(with_image["image_id"], errors="coerce").astype("int64")
        repeated = {int(k): int(v) for k, v in zip(*np.unique(ids.to_numpy(), return_counts=True))}
        with_image = with_image[~ids.duplicated()].head(top)
        for row in _progress(list(with_image.to_dict("records")), enabled=progress, desc="thumbnails"):
            raw = row.get("annotation_id")
            ann = None if raw is None or pd.isna(raw) else int(raw)
            thumb = instance_thumbnail(gallery, image_id=int(row["image_id"]), colours=colours, highlight=ann,
                                       highlight_box=flagged_prediction_box(str(row.get("message", ""))))
            anns = gallery.annotations_by_image.get(int(row["image_id"]), []) + gallery.detections_by_image.get(int(row["image_id"]), [])
            # Raw JSON ids: a missing or non-int id simply finds no name.
            used |= {gallery.category_names.get(a.get("category_id"), "") for a in anns if isinstance(a, dict)}  # type: ignore[arg-type]
            where = f"{row.get('file_name', row['image_id'])}" + (f", annotation {ann}" if ann is not None else "")
            more = int(repeated.get(int(row["image_id"]), 1)) - 1
            caption = f"{row['check']}: {where}. {row.get('message', '')}" + (
                f" (+{more} more finding{'s' if more > 1 else ''} on this image: see the tables below)" if more else "")
            items.append({"uri": thumb.uri, "width": thumb.width, "height": thumb.height, "alt": caption, "caption": caption,
                          "severity": str(row.get("severity", ""))})
    header = {"audit": str(audit_dir.resolve()), "findings": str(len(findings))}
    write_report_inputs(audit_dir, kind="audit", gallery=gallery, options={"top": top})
    return _render("audit.html.j2", audit_dir / AUDIT_PAGE, title="Label audit",
                   header=rd.header_rows(header, extra_inputs=gallery.input_paths() if gallery else []),
                   nav=[("counts", "counts"), ("top", "top findings"), ("by-check", "by check")],
                   summary=rd.table_model(rd.read_table(audit_dir, "summary")), counts=rd.table_model(counts),
                   counts_plot=plots.plot_counts(plotted, label="check", value="findings", hue="severity", title="findings per check"),
                   counts_caption=plot_caption,
                   top=items, groups=groups,
                   legend=[("ground truth (white outline)", _css(GT_OUTLINE)), ("what the finding names (magenta)", _css(HIGHLIGHT_COLOUR)),
                           *[(n, _css(colours[n])) for n in names if n in used]] if items else [])

"""Report figures: matplotlib (Agg) drawings returned as PNG data URIs, byte-identical for equal inputs.

Every function takes tidy pandas tables and returns a `data:image/png;base64,...` string (or None when there
is nothing to draw), so the HTML page stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: reports render on headless machines

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.typing import LineStyleType  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RGB = tuple[int, int, int]
# PNG text chunks carry "Software: matplotlib x.y" by default; dropping it keeps bytes stable across versions.
_PNG_METADATA: Mapping[str, None] = {"Software": None}
_DPI = 96
MIN_PR_FIGURE_WIDTH_IN = 5.6  # the PR legend's width at fontsize 8, plus margins
_PR_IOUS: tuple[tuple[float, str, LineStyleType], ...] = ((0.5, "IoU 0.50", "-"), (0.75, "IoU 0.75", "--"))


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value: epoch_2 before epoch_10.

    >>> sorted(["epoch_10", "epoch_2", "best"], key=natural_key)
    ['best', 'epoch_2', 'epoch_10']
    """
    parts = re.split(r"(\d+)", str(text))
    return tuple((1, int(p)) if p.isdigit() else (0, p.lower()) for p in parts if p != "")


def figure_to_data_uri(fig: Figure, *, tight: bool = True) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata=dict(_PNG_METADATA), bbox_inches="tight" if tight else None, pad_inches=0.1)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _mpl_colour(rgb: RGB) -> tuple[float, float, float]:
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


def plot_per_class_bars(
    table: pd.DataFrame, *, label: str, bar: str, markers: Sequence[str], colours: Mapping[str, RGB], title: str
) -> str | None:
    """Horizontal bars of `bar` per class (class colours) with `markers` metrics as ticks on the same axis.

    Values below zero (COCO's −1 for "no ground truth") and NaN are left out and said so in the label.
    """
    if table.empty or bar not in table.columns:
        return None
    names = [str(n) for n in table[label]]
    values = pd.to_numeric(table[bar], errors="coerce").to_numpy(dtype=float)
    valid = np.isfinite(values) & (values >= 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.28 * n))
    y = np.arange(n)
    ax.barh(y, np.where(valid, values, 0.0), color=[_mpl_colour(colours.get(nm, (128, 128, 128))) for nm in names],
            edgecolor="#333333", linewidth=0.4, label=bar, height=0.7)
    # Hollow diamond, cross, circle: visible on any bar colour and distinct in greyscale print.
    marker_styles = (("D", "white"), ("X", "black"), ("o", "white"))
    for i, metric in enumerate(m for m in markers if m in table.columns):
        mv = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(mv) & (mv >= 0)
        shape, face = marker_styles[i % len(marker_styles)]
        ax.scatter(mv[ok], y[ok], marker=shape, facecolor=face, edgecolor="black", linewidth=1.0, s=36, zorder=3, label=metric)
    ax.set_yticks(y, labels=[nm if ok else f"{nm} (no GT)" for nm, ok in zip(names, valid)], fontsize=8)
    ax.invert_yaxis()  # first class on top, like the table
    ax.set_xlim(0.0, 1.03)  # room for a marker at 1.0
    ax.set_xlabel(bar)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # outside: never hides a bar
    return figure_to_data_uri(fig)


def plot_pr_curves(curves: pd.DataFrame, *, colours: Mapping[str, RGB], columns: int = 5) -> str | None:
    """Small multiples: one panel per category, precision against recall at IoU 0.5 (solid) and 0.75 (dashed).

    `curves` is the tidy table from `report_data.tidy_pr_curves`: category, iou, recall, precision.
    All panels are drawn into one Axes at offsets: a matplotlib Axes per panel costs ~60 ms to build and
    lay out, which made 80 COCO classes take over a minute.
    """
    if curves.empty:
        return None
    categories = list(dict.fromkeys(curves["category"].astype(str)))
    n = len(categories)
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    step_x, step_y = 1.3, 1.45  # panel pitch in data units (a panel is 1 x 1)
    # One or two classes get larger panels, and the figure is never narrower than its legend: a single-class
    # plot at small-multiple size was a thumbnail with the legend cut off at both sides.
    panel = 2.7 if n > 2 else 4.2
    height = (2.6 if n > 2 else 3.9) * rows + 0.5
    fig, ax = plt.subplots(figsize=(max(panel * cols + 0.4, MIN_PR_FIGURE_WIDTH_IN), height))
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.02, top=1 - 0.45 / height)
    grouped = {cat: sub for cat, sub in curves.groupby(curves["category"].astype(str), sort=False)}
    pad = 0.04  # the frame sits outside the 0-1 square: a curve at precision 1 or recall 1 is not drawn on it
    for i, cat in enumerate(categories):
        r, c = divmod(i, cols)
        ox, oy = c * step_x, -r * step_y
        ax.add_patch(Rectangle((ox - pad, oy - pad), 1 + 2 * pad, 1 + 2 * pad, fill=False, linewidth=0.7, edgecolor="#888888"))
        for g in (0.25, 0.5, 0.75):
            ax.plot([ox + g, ox + g], [oy - pad, oy + 1 + pad], color="#e3e3e3", linewidth=0.5, zorder=0)
            ax.plot([ox - pad, ox + 1 + pad], [oy + g, oy + g], color="#e3e3e3", linewidth=0.5, zorder=0)
        sub = grouped[cat]
        colour = _mpl_colour(colours.get(cat, (80, 80, 80)))
        drawn = False
        for iou, _, style in _PR_IOUS:
            cur = sub[np.isclose(sub["iou"].to_numpy(dtype=float), iou)].sort_values("recall")
            p = np.clip(cur["precision"].to_numpy(dtype=float), 0.0, 1.0)
            if cur.empty or not np.isfinite(p).any():
                continue
            ax.plot(ox + cur["recall"].to_numpy(dtype=float), oy + p, style, color=colour, linewidth=2.0, zorder=3)
            drawn = True
        if not drawn:
            ax.text(ox + 0.5, oy + 0.5, "no ground truth", ha="center", va="center", fontsize=9, color="#666666")
        ax.text(ox + 0.5, oy + 1 + pad + 0.03, cat, ha="center", va="bottom", fontsize=10)
        for t in (0.0, 0.5, 1.0):
            ax.text(ox - pad - 0.03, oy + t, f"{t:g}", ha="right", va="center", fontsize=8, color="#444444")
            ax.text(ox + t, oy - pad - 0.03, f"{t:g}", ha="center", va="top", fontsize=8, color="#444444")
    y0, y1 = -(rows - 1) * step_y - 0.2, 1.22
    x0, x1 = -0.2, (cols - 1) * step_x + 1.08
    if n <= 2:  # the figure is wider than the panels: widen the x range so that panels stay square, centred
        box = ax.get_position()
        fig_w, fig_h = fig.get_size_inches()
        half = (y1 - y0) * (box.width * fig_w) / (box.height * fig_h) / 2
        x0, x1 = (x0 + x1) / 2 - half, (x0 + x1) / 2 + half
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.axis("off")
    handles = [Line2D([], [], color="#333333", linestyle=s, label=nm) for _, nm, s in _PR_IOUS]
    handles.append(Line2D([], [], color="none", label="x: recall, y: precision (0 to 1)"))
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1.0))
    return figure_to_data_uri(fig, tight=False)


def plot_confusion(confusion: np.ndarray, *, class_names: Sequence[str], column_names: Sequence[str] | None = None) -> str | None:
    """Row-normalised confusion matrix (rows = ground truth), each cell labelled with its share.

    `column_names` defaults to `class_names`; extra columns (e.g. "(no prediction)") follow the classes."""
    if confusion.size == 0:
        return None
    columns = list(column_names) if column_names is not None else list(class_names)
    counts = confusion.astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n, m = len(class_names), len(columns)
    side = max(3.5, 0.55 * max(n, m) + 1.8)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(np.arange(m), labels=columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(n), labels=list(class_names), fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if max(n, m) <= 25:  # cell labels stop being legible beyond this
        size = 11 if n <= 6 else 8 if n <= 12 else 6
        for i in range(n):
            for j in range(m):
                text = "–" if totals[i, 0] == 0 else f"{norm[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=size, color="white" if norm[i, j] > 0.55 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the ground-truth row")
    ax.set_title("confusion matrix, normalised per ground-truth class", fontsize=10)
    return figure_to_data_uri(fig)


def plot_metric_lines(table: pd.DataFrame, *, x: str, metrics: Sequence[str]) -> str | None:
    """One line per metric across the rows of `table` (already in natural checkpoint order)."""
    metrics = [m for m in metrics if m in table.columns]
    if table.empty or not metrics:
        return None
    labels = [str(v) for v in table[x]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) + 2.5), 4.0))
    xs = np.arange(len(labels))
    cmap = plt.get_cmap("tab10")
    for i, metric in enumerate(metrics):
        v = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        v = np.where(v < 0, np.nan, v)  # COCO's −1 means "not defined", not a score
        ax.plot(xs, v, marker="o", markersize=4 if len(labels) > 1 else 8, linewidth=1.5, color=cmap(i % 10), label=metric)
    values = np.concatenate([pd.to_numeric(table[m], errors="coerce").to_numpy(dtype=float) for m in metrics])
    values = values[np.isfinite(values) & (values >= 0)]
    if values.size == 0 or values.max() - values.min() < 0.05:
        # Nearly equal values get the whole 0-1 scale: a leaderboard of zeros must read as zeros, not as a
        # dot on a ±0.04 axis that matplotlib would zoom onto.
        ax.set_ylim(-0.03, 1.03)
    if len(labels) == 1:
        ax.set_xlim(-1.0, 1.0)
    ax.set_xticks(xs, labels=labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center", fontsize=8)
    ax.set_xlabel("checkpoint (natural order)")
    ax.set_ylabel("metric value")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_title("metrics by checkpoint", fontsize=10)
    return figure_to_data_uri(fig)


def plot_heatmap(matrix: pd.DataFrame, *, title: str, xlabel: str, ylabel: str) -> str | None:
    """Rows × columns heatmap in [0, 1] with values printed; NaN (and COCO's −1) cells drawn grey."""
    if matrix.empty:
        return None
    values = matrix.to_numpy(dtype=float)
    values = np.where(values < 0, np.nan, values)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * n_cols + 2.8), max(2.5, 0.32 * n_rows + 1.6)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(np.arange(n_cols), labels=[str(c) for c in matrix.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(n_rows), labels=[str(r) for r in matrix.index], fontsize=8)
    if n_rows * n_cols <= 400:
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if (not np.isfinite(v) or v > 0.6) else "white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return figure_to_data_uri(fig)


def plot_counts(counts: pd.DataFrame, *, label: str, value: str, hue: str | None, title: str) -> str | None:
    """Horizontal stacked bars of `value` per `label`, split by `hue` (e.g. findings per check by severity)."""
    if counts.empty:
        return None
    labels = sorted(counts[label].astype(str).unique())
    hues = sorted(counts[hue].astype(str).unique()) if hue else [""]
    palette = {"error": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.32 * len(labels)))
    left = np.zeros(len(labels))
    for i, h in enumerate(hues):
        sub = counts if not hue else counts[counts[hue].astype(str) == h]
        per = sub.groupby(sub[label].astype(str))[value].sum().reindex(labels, fill_value=0).to_numpy(dtype=float)
        ax.barh(np.arange(len(labels)), per, left=left, label=h or value, height=0.7,
                color=palette.get(h, plt.get_cmap("tab10")(i % 10)))
        left += per
    for i, total in enumerate(left):
        ax.text(total, i, f" {int(total)}", va="center", fontsize=8)
    ax.set_yticks(np.arange(len(labels)), labels=labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, left.max() * 1.15))
    ax.set_xlabel(value)
    ax.grid(axis="x", alpha=0.3)
    if hue:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    return figure_to_data_uri(fig)


def plot_per_class_delta(table: pd.DataFrame, *, label: str, metrics: Sequence[str], a: str, b: str) -> str | None:
    """Per class, the change B − A of each of `metrics` (one panel each): bars right of 0 (green) where B is
    better, left (red) where it is worse, each with its value; classes without a value are marked n/a."""
    metrics = [m for m in metrics if f"{m}_delta" in table.columns]
    if table.empty or not metrics or label not in table.columns:
        return None
    names = [str(n) for n in table[label]]
    n = len(names)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics) + 1.6, 1.0 + 0.32 * n), sharey=True, squeeze=False)
    y = np.arange(n)
    for ax, metric in zip(axes[0], metrics):
        delta = pd.to_numeric(table[f"{metric}_delta"], errors="coerce").to_numpy(dtype=float)
        for col in (f"{metric}_A", f"{metric}_B"):  # COCO's −1 (no ground truth) is no value, not a change
            if col in table.columns:
                delta = np.where(pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float) < 0, np.nan, delta)
        ok = np.isfinite(delta)
        reach = max(0.05, float(np.abs(delta[ok]).max()) if ok.any() else 0.0) * 1.35
        colours = ["#2e7d32" if d >= 0 else "#c62828" for d in np.where(ok, delta, 0.0)]
        ax.barh(y, np.where(ok, delta, 0.0), color=colours, height=0.65)
        ax.axvline(0.0, color="#333333", linewidth=0.8)
        for yi, d, good in zip(y, delta, ok):
            text = f"{d:+.3f}" if good else "n/a"
            ax.text(d if good else 0.0, yi, f" {text} " if good else " n/a", va="center", ha="left" if not good or d >= 0 else "right", fontsize=8)
        ax.set_xlim(-reach, reach)
        ax.set_yticks(y, labels=names, fontsize=9)
        if ax is axes[0][0]:  # the panels share the y axis: invert it once, first class on top like the table
            ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(f"{metric}: B − A", fontsize=9)
        ax.set_title(f"{metric} per class: B = {b} − A = {a}\n(green, right of 0: B better)", fontsize=9)
    fig.tight_layout()
    return figure_to_data_uri(fig)

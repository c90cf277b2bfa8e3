"""Defects of the rendered pages, each checked on the page itself: the run's audit page has thumbnails,
`audit --pred results.json` shows the prediction panel and outlines the flagged prediction, a single-class PR
plot is full size with its legend inside, info rows do not bury warnings, the leaderboard knows its date."""

from __future__ import annotations

import base64
import html as html_lib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.converters.dataset_layout import write_dataset_meta
from segpipe.reports.gallery import instance_thumbnail
from segpipe.reports.html import flagged_prediction_box, render_audit_report, render_leaderboard
from segpipe.reports.overlay import class_colours
from segpipe.reports.plots import plot_pr_curves
from segpipe.reports.tables import write_table
from segpipe.runner.driver import run_pipeline
from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, settings_for
from tests.pipeline.test_report_html import CATEGORIES, make_instance_dataset


def _figures(page: str) -> list[tuple[str, str]]:
    """(img data URI, caption text) of each gallery figure (thumbnails are JPEG, plots PNG)."""
    found = re.findall(r'<figure><img src="(data:image/jpeg[^"]+)"[^>]*>\s*<figcaption>(.*?)</figcaption>', page, flags=re.S)
    return [(uri, html_lib.unescape(re.sub(r"<[^>]+>", "", cap))) for uri, cap in found]


def _decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_run_audit_page_shows_thumbnails(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=6)
    (dataset / "annotations" / "xmls" / "Bengal_1.xml").unlink()  # an image-level (info) finding to show
    make_checkpoint(tmp_path / "ckpts" / "m.pt", seed=0)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", audit=True, html=True)
    assert run_pipeline(settings).exit_code == 0
    page = (settings.out / "audit" / "audit.html").read_text(encoding="utf-8")
    assert "Top 1 findings" in page
    (uri, caption), = _figures(page)
    assert uri.startswith("data:image/jpeg") and "Bengal_1.jpg" in caption and _decode(uri).std() > 10  # a photo


def test_audit_with_a_results_json_shows_predictions_and_outlines_the_flagged_one(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds", n_images=6)
    write_dataset_meta(tmp_path / "ds", format="coco", image_root=source.image_root, options={})
    result = CliRunner().invoke(main, ["audit", str(tmp_path / "ds"), "--pred", str(source.results), "-o", str(tmp_path / "audit"),
                                       "--top", "40"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "audit" / "audit.html").read_text(encoding="utf-8")
    missing = [(uri, cap) for uri, cap in _figures(page) if "possibly_missing:" in cap]
    assert missing, [cap for _, cap in _figures(page)]
    uri, caption = missing[0]
    image_id = int(pd.read_csv(tmp_path / "audit" / "findings.csv").query("check == 'possibly_missing'")["image_id"].iloc[0])
    colours = class_colours(list(CATEGORIES))
    gt_only = instance_thumbnail(type(source)(image_root=source.image_root, gt_coco=source.gt_coco), image_id=image_id, colours=colours)
    shown = _decode(uri)
    assert shown.shape[1] > 1.8 * gt_only.width  # ground truth | prediction panels
    box = flagged_prediction_box(caption)
    assert box is not None
    plain = _decode(instance_thumbnail(source, image_id=image_id, colours=colours).uri)
    outlined = _decode(instance_thumbnail(source, image_id=image_id, colours=colours, highlight_box=box).uri)
    assert np.abs(plain.astype(int) - outlined.astype(int)).max() > 60  # the outline changes the prediction panel
    assert np.abs(shown.astype(int) - outlined.astype(int)).mean() < np.abs(shown.astype(int) - plain.astype(int)).mean()


def test_single_class_pr_plot_is_full_size_with_its_legend_inside() -> None:
    r = np.linspace(0, 1, 101)
    curves = pd.DataFrame({"category": ["pet"] * 202, "iou": [0.5] * 101 + [0.75] * 101, "recall": np.r_[r, r],
                           "precision": np.r_[1 - 0.3 * r, 1 - 0.6 * r]})
    image = _decode(plot_pr_curves(curves, colours={})).mean(axis=2)
    assert image.shape[1] >= 500 and image.shape[0] >= 300
    ink = image < 200
    assert not ink[:, :2].any() and not ink[:, -2:].any() and not ink[:2].any()  # nothing cut at the borders
    cols = np.flatnonzero(ink.any(axis=0))
    assert cols.min() > 0.05 * image.shape[1] and cols.max() < 0.95 * image.shape[1]


def test_info_rows_do_not_bury_warnings(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds", n_images=6)
    rows = [{"check": "conversion:no_head_xml", "severity": "info", "image_id": 1 + k % 6, "file_name": f"img_{1 + k % 6:04d}.jpg",
             "annotation_id": None, "category": "", "score": 0.9, "message": "no head XML"} for k in range(300)]
    rows += [{"check": "area_outlier", "severity": "warning", "image_id": k + 1, "file_name": f"img_{k + 1:04d}.jpg",
              "annotation_id": None, "category": "cat", "score": 0.3, "message": "area"} for k in range(5)]
    audit = tmp_path / "audit"
    write_table(audit, "findings", pd.DataFrame(rows))
    page = render_audit_report(audit, gallery=source, top=5).read_text(encoding="utf-8")
    assert [cap.split(":")[0] for _, cap in _figures(page)] == ["warning area_outlier"] * 5
    by_check = page.split('id="by-check"')[1]
    assert by_check.index("area_outlier (5)") < by_check.index("conversion:no_head_xml (300)")
    assert "<details><summary>conversion:no_head_xml (300)" in by_check  # info group closed
    assert "the 300 info row(s) are left out of the chart" in page


def test_leaderboard_of_a_run_knows_when_its_inputs_changed(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "pets", n_images=4)
    make_checkpoint(tmp_path / "ckpts" / "m.pt", seed=0)
    settings = settings_for(tmp_path, dataset=dataset, ckpts=tmp_path / "ckpts", html=True)
    assert run_pipeline(settings).exit_code == 0
    page = render_leaderboard(settings.out).read_text(encoding="utf-8")
    date = re.search(r"inputs modified</th><td>([^<]*)", page)
    assert date is not None and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", date.group(1)), date

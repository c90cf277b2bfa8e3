"""Defects of the rendered pages, each checked on the page itself: the run's audit page has thumbnails,
`audit --pred results.json` shows the prediction panel and outlines the flagged prediction, a single-class PR
plot is full size with its legend inside, info rows do not bury warnings, the leaderboard knows its date."""

from __future__ import annotations

import base64
import json
import html as html_lib
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main
from segpipe.core.dataset_layout import write_dataset_meta
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


# --- what a reader of the pages needs to see (pages checked on their HTML and their pixels) ---


def _zero_detection_run(tmp_path: Path) -> Path:
    """A run output whose one instance checkpoint found nothing and had 88 of its classes dropped."""
    from tests.pipeline.test_report_html import make_run_output

    source = make_instance_dataset(tmp_path / "ds", n_images=4)
    out = make_run_output(tmp_path / "run", source)
    report = out / "checkpoints" / "epoch_1" / "segm"
    per_class = pd.read_csv(report / "per_class.csv").assign(n_dt=0, AP=0.0, AP50=0.0)
    write_table(report, "per_class", per_class)
    header = json.loads((report / "header.json").read_text(encoding="utf-8"))
    header.update(n_dropped_model_outputs=88, dropped_model_classes=[f"class{k}" for k in range(88)],
                  warnings=["results: the results list is empty: every category with ground truth scores 0"])
    (report / "header.json").write_text(json.dumps(header), encoding="utf-8")
    return out


def test_leaderboard_and_report_say_zero_detections_and_dropped_classes(tmp_path: Path) -> None:
    from segpipe.reports.html import render_evaluate_report

    out = _zero_detection_run(tmp_path)
    board = render_leaderboard(out).read_text(encoding="utf-8")
    banner = re.search(r'<div class="banner" id="warnings">(.*?)</div>', board, flags=re.S)
    assert banner is not None and "epoch_1: 0 detections; 88 model classes dropped" in html_lib.unescape(banner.group(1))
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", board, flags=re.S) if ">epoch_1<" in r)
    assert '<td class="warn">0 detections; 88 model classes dropped</td>' in row
    other = next(r for r in re.findall(r"<tr>(.*?)</tr>", board, flags=re.S) if ">epoch_2<" in r)
    assert "detections" not in other

    page = render_evaluate_report(out / "checkpoints" / "epoch_1" / "segm", n_worst=0).read_text(encoding="utf-8")
    state = re.search(r'<div class="state" id="state">(.*?)</div>', page, flags=re.S)
    assert state is not None
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", state.group(1)))
    assert "0 detections" in text and "88 model classes dropped (not in the dataset): class0, class1" in text and "(78 more)" in text
    # the header's warnings are a banner at the top, not a JSON list in a table cell
    top = page.split('<h2 id="header">', 1)[0]
    assert "1 warning</b>" in top and "the results list is empty" in top
    assert '["results: the results list' not in page and "1, listed at the top of the page" in page


def test_a_page_without_warnings_has_no_banner(tmp_path: Path) -> None:
    from tests.pipeline.test_report_html import make_run_output

    source = make_instance_dataset(tmp_path / "ds", n_images=4)
    out = make_run_output(tmp_path / "run", source)
    assert 'class="banner"' not in render_leaderboard(out).read_text(encoding="utf-8")
    assert "class=\"notes\"" not in render_leaderboard(out).read_text(encoding="utf-8") and ">notes<" not in render_leaderboard(out).read_text(encoding="utf-8")


def test_leaderboard_folds_intervals_and_flags_under_their_values(tmp_path: Path) -> None:
    from tests.pipeline.test_report_html import make_run_output

    source = make_instance_dataset(tmp_path / "ds", n_images=4)
    out = make_run_output(tmp_path / "run", source)
    board = pd.read_csv(out / "leaderboard.csv")
    board = board.assign(AP_low=board["AP"] - 0.05, AP_high=board["AP"] + 0.05, vs_best=-0.1, vs_best_low=-0.2, vs_best_high=-0.01,
                         significantly_worse=True)
    write_table(out, "leaderboard", board)
    page = render_leaderboard(out).read_text(encoding="utf-8")
    head = re.findall(r"<th>([^<]+)</th>", page.split('id="leaderboard-table"', 1)[1].split("</thead>", 1)[0])
    assert "AP_low" not in head and "AP_high" not in head and "sha256" not in head and "significantly_worse" not in head
    first = board.iloc[0]
    assert f"[{first['AP_low']:.4f}, {first['AP_high']:.4f}]" in page  # the interval under its value
    assert page.count('<span class="flag">significantly worse</span>') == len(board)
    assert f'title="sha256 {first["sha256"]}"' in page  # every number of the CSV is still on the page


def test_gallery_labels_only_the_top_detections_and_outlines_ground_truth_apart(tmp_path: Path) -> None:
    from segpipe.reports.gallery import LABELLED_DETECTIONS, _instance_items
    from segpipe.reports.overlay import GT_OUTLINE, draw_instances

    source = make_instance_dataset(tmp_path / "ds", n_images=2)
    colours = class_colours(list(CATEGORIES))
    image_id = next(iter(source.annotations_by_image))
    gt = source.annotations_by_image[image_id]
    dets = [{**a, "score": round(0.1 + 0.05 * k, 2)} for k, a in enumerate(gt * 6)][::-1]  # 12+ detections, best first
    items = _instance_items(dets, source=source, colours=colours, height=240, width=320, scores=True, labelled=LABELLED_DETECTIONS)
    assert [i["label"] != "" for i in items] == [k < LABELLED_DETECTIONS for k in range(len(items))]
    assert items[0]["label"].endswith(f"{dets[0]['score']:.2f}")
    gt_items = _instance_items(gt, source=source, colours=colours, height=240, width=320, scores=False)
    assert all(i["outline"] == GT_OUTLINE and i["halo"] for i in gt_items) and all("outline" not in i for i in items)
    # drawn: the ground truth's outline is white on black, a colour no class has
    canvas = np.full((240, 320, 3), 120, dtype=np.uint8)
    drawn = draw_instances(canvas.copy(), gt_items, scale=1.0)
    assert ((drawn >= 250).all(axis=2)).sum() > 50 and ((drawn <= 40).all(axis=2)).sum() > 50
    assert all(tuple(GT_OUTLINE) != c for c in colours.values())


def test_audit_gallery_never_repeats_an_image(tmp_path: Path) -> None:
    source = make_instance_dataset(tmp_path / "ds", n_images=6)
    write_dataset_meta(tmp_path / "ds", format="coco", image_root=source.image_root, options={})
    result = CliRunner().invoke(main, ["audit", str(tmp_path / "ds"), "--pred", str(source.results), "-o", str(tmp_path / "audit"),
                                       "--top", "40"])
    assert result.exit_code == 0, result.output
    findings = pd.read_csv(tmp_path / "audit" / "findings.csv")
    per_image = findings["image_id"].dropna().astype(int).value_counts()
    assert (per_image > 1).any()  # the case: several findings on one image
    captions = [cap for _, cap in _figures((tmp_path / "audit" / "audit.html").read_text(encoding="utf-8"))]
    files = [re.search(r": (img_\d+\.\w+)", c).group(1) for c in captions]  # type: ignore[union-attr]
    assert len(files) == len(set(files)) == len(per_image)
    repeated = per_image[per_image > 1]
    names = dict(zip(findings["image_id"].dropna().astype(int), findings.loc[findings["image_id"].notna(), "file_name"]))
    for image_id, n in repeated.items():
        caption = next(c for c in captions if f": {names[image_id]}" in c)
        assert f"(+{n - 1} more finding" in caption


def test_report_rerenders_a_compare_folder_and_the_page_names_both_sides(tmp_path: Path) -> None:
    from segpipe.demo.sample import generate_sample

    generate_sample(tmp_path / "sample", n_images=4, seed=0)
    runner = CliRunner()
    assert runner.invoke(main, ["convert", "oxford-pet", str(tmp_path / "sample"), "-o", str(tmp_path / "converted")]).exit_code == 0
    for name, erode in (("model-a", 4), ("model-b", 0)):
        (tmp_path / name / "semantic").mkdir(parents=True)
        for path in sorted((tmp_path / "converted" / "semantic").glob("*.png")):
            gt = np.asarray(Image.open(path))
            pet = (gt == 1).astype(np.uint8)
            if erode:
                pet = cv2.erode(pet, np.ones((3, 3), np.uint8), iterations=erode)
            Image.fromarray(pet).save(tmp_path / name / "semantic" / path.name)
    out = tmp_path / "cmp"
    result = runner.invoke(main, ["compare", str(tmp_path / "model-a"), str(tmp_path / "model-b"), "--dataset", str(tmp_path / "converted"),
                                  "-o", str(out), "--replicates", "50", "--gallery", "2"])
    assert result.exit_code == 0, result.output
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "<title>Comparison: A = model-a vs B = model-b</title>" in page
    assert 'alt="per-class change chart"' in page and "verdict</th>" not in page
    thumbs = _figures(page)
    assert thumbs and all("left to right: ground truth, A = model-a, B = model-b" in cap for _, cap in thumbs)
    assert len({cap.split(":")[0] for _, cap in thumbs}) == len(thumbs)  # one picture per image
    before = (out / "compare.html").read_bytes()
    (out / "compare.html").unlink()
    again = runner.invoke(main, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert "compare page" in again.output and (out / "compare.html").read_bytes() == before

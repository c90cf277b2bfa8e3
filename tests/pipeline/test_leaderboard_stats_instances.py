"""The leaderboard additions for instance models (segpipe.tasks.leaderboard_stats) on records and report folders
made in the test; the semantic path runs end to end in test_run_leaderboard_intervals.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from click.testing import CliRunner

from segpipe.cli import main
from segpipe.cli.evaluate_instances import write_instance_report
from segpipe.reports.records import read_records, write_instance_records
from segpipe.evaluators.analysis.bootstrap import instance_headline
from segpipe.evaluators.instance.evaluation import instance_compute, instance_update
from segpipe.tasks.leaderboard_stats import add_intervals
from tests.evaluators.test_instance import make_dataset

# Every test here runs with the compiled kernel and on the numpy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_evaluation_paths")


def test_instance_leaderboard_intervals_best_and_comparison(tmp_path: Path) -> None:
    gt, results = make_dataset(seed=1, n_images=6)
    variants = {"epoch_1": [r for r in results if r["score"] > 0.6], "epoch_2": results, "epoch_10": [r for r in results if r["score"] > 0.3]}
    stats, dirs, rows = {}, {}, []
    for name, res in variants.items():
        s = instance_update(gt, res, iou_type="segm")
        report = instance_compute(s)
        write_instance_report(report, tmp_path / name / "segm", header={"checkpoint": name})
        write_instance_records(tmp_path / name / "segm", stats=s)
        stats[name] = ("instance", s)
        dirs[name] = tmp_path / name
        rows.append({"checkpoint": name, "sha256": name, "status": "ok", "error": "", "AP": report.stats[0], "AP50": report.stats[1]})
    table = pd.DataFrame(rows).sort_values("AP", ascending=False, kind="mergesort").reset_index(drop=True)
    out = tmp_path / "lb"
    board = add_intervals(table, statistics=stats, report_dirs=dirs, out=out, replicates=50, seed=3)
    best = board["checkpoint"].iloc[0]
    draws = np.random.default_rng(3).integers(0, 6, size=(50, 6))
    for name in variants:
        samples = np.array([instance_headline(stats[name][1], d)["AP"] for d in draws])
        row = board.set_index("checkpoint").loc[name]
        assert (row["AP_low"], row["AP_high"]) == pytest.approx(tuple(np.percentile(samples, [2.5, 97.5])))
    record = json.loads((out / "best.json").read_text())
    assert record["checkpoint"] == best and record["metric"] == "AP"
    order = ["epoch_1", "epoch_2", "epoch_10"]  # natural order
    before = [c for c in board["checkpoint"] if order.index(c) < order.index(best)]
    assert record["previous_best"] == (before[0] if before else board["checkpoint"].iloc[1])
    deltas = pd.read_csv(out / "comparison" / "per_class_delta.csv")
    assert {"AP_A", "AP_B", "AP_delta"} <= set(deltas.columns)
    assert "f1_delta" in pd.read_csv(out / "comparison" / "per_image_delta.csv").columns
    assert (out / "comparison" / "compare.html").is_file()
    # the same folders through `segpipe compare` (report mode: from the published statistics)
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "epoch_1"), str(tmp_path / "epoch_2"), "-o", str(tmp_path / "cmp"), "--replicates", "20"])
    assert result.exit_code == 0, result.output
    intervals = pd.read_csv(tmp_path / "cmp" / "intervals.csv").set_index("metric")
    by_name = board.set_index("checkpoint")
    assert (intervals.loc["AP", "A"], intervals.loc["AP", "B"]) == pytest.approx((by_name.loc["epoch_1", "AP"], by_name.loc["epoch_2", "AP"]))
    assert (tmp_path / "cmp" / "B" / "f1_optimal.csv").is_file() and (tmp_path / "cmp" / "B" / "thresholds.parquet").is_file()
    back = read_records(tmp_path / "epoch_2" / "segm")
    assert back is not None and np.array_equal(back[1].det_matched, stats["epoch_2"][1].det_matched)
    write_instance_records(tmp_path / "again", stats=stats["epoch_2"][1])
    for name in ("match_records.npz", "match_records.json"):  # fixed zip timestamps: same statistics, same bytes
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "epoch_2" / "segm" / name).read_bytes()

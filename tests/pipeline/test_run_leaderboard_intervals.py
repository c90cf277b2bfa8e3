"""`segpipe run`: bootstrap intervals on the leaderboard, the `best` pointer and best vs previous best,
checked against a plain numpy resampling of the per-image confusion matrices rebuilt from the cached predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import main

from segpipe.reports.plots import natural_key
from segpipe.runner.driver import run_pipeline
from tests.pipeline.pipeline_fixtures import make_checkpoint, make_dataset, report_files, settings_for

N_IMAGES = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("run")
    dataset = make_dataset(tmp / "pets", n_images=N_IMAGES)
    for seed in (0, 1, 2):
        make_checkpoint(tmp / "ckpts" / f"m{seed}.pt", seed=seed)
    settings = settings_for(tmp, dataset=dataset, ckpts=tmp / "ckpts", shard_size=4, html=True)
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0, outcome.failed
    return {"settings": settings}


def _confusions(out: Path, sha256: str) -> np.ndarray:
    cache = out / ".cache"
    merged = next((cache / "convert" / "merged").iterdir())
    shard_dirs = [m.parent for m in sorted(cache.glob("infer/*/*/*/pred/meta.json"))
                  if json.loads(m.read_text())["checkpoint_sha256"] == sha256]
    mats = []
    for gt_path in sorted((merged / "semantic").glob("*.png")):
        gt = np.asarray(Image.open(gt_path)).astype(np.int64)
        pred = np.asarray(Image.open(next(d / "semantic" / gt_path.name for d in shard_dirs if (d / "semantic" / gt_path.name).is_file()))).astype(np.int64)
        keep = gt != 255
        mats.append(np.bincount(gt[keep] * 2 + pred[keep], minlength=4).reshape(2, 2))
    return np.stack(mats)


def _miou(mats: np.ndarray) -> float:
    conf = mats.sum(axis=0)
    tp = np.diag(conf)
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(tp / (conf.sum(0) + conf.sum(1) - tp)))


def test_leaderboard_intervals_best_and_comparison(run: dict[str, object]) -> None:
    out = run["settings"].out
    board = pd.read_csv(out / "leaderboard.csv")
    for column in ("mIoU_low", "mIoU_high", "mDice_low", "mDice_high", "vs_best", "vs_best_low", "vs_best_high", "significantly_worse"):
        assert column in board.columns
    best_record = json.loads((out / "best.json").read_text())
    best = board["checkpoint"].iloc[0]
    assert best_record["checkpoint"] == best and best_record["metric"] == "mIoU"
    assert (out / "best" / "semantic" / "summary.csv").read_bytes() == (out / "checkpoints" / best / "semantic" / "summary.csv").read_bytes()
    before = [c for c in board["checkpoint"] if natural_key(c) < natural_key(best)]
    previous = before[0] if before else board["checkpoint"].iloc[1]
    assert best_record["previous_best"] == previous

    indexed = board.set_index("checkpoint")
    mats = {name: _confusions(out, indexed.loc[name, "sha256"]) for name in indexed.index}
    draws = np.random.default_rng(0).integers(0, N_IMAGES, size=(1000, N_IMAGES))
    samples = {name: np.array([_miou(m[d]) for d in draws]) for name, m in mats.items()}
    for name in indexed.index:
        assert indexed.loc[name, "mIoU"] == pytest.approx(_miou(mats[name]), rel=1e-12)
        assert (indexed.loc[name, "mIoU_low"], indexed.loc[name, "mIoU_high"]) == pytest.approx(tuple(np.percentile(samples[name], [2.5, 97.5])), rel=1e-12)
        if name != best:
            lo, hi = np.percentile(samples[name] - samples[best], [2.5, 97.5])
            assert (indexed.loc[name, "vs_best_low"], indexed.loc[name, "vs_best_high"]) == pytest.approx((lo, hi), rel=1e-12, abs=1e-15)
            assert bool(indexed.loc[name, "significantly_worse"]) == (hi < 0)
    intervals = pd.read_csv(out / "comparison" / "intervals.csv").set_index("metric")
    lo, hi = np.percentile(samples[best] - samples[previous], [2.5, 97.5])
    assert (intervals.loc["mIoU", "delta_low"], intervals.loc["mIoU", "delta_high"]) == pytest.approx((lo, hi), rel=1e-12, abs=1e-15)
    assert (intervals.loc["mIoU", "A"], intervals.loc["mIoU", "B"]) == pytest.approx((indexed.loc[previous, "mIoU"], indexed.loc[best, "mIoU"]))
    assert (out / "comparison" / "compare.html").is_file() and (out / "comparison" / "per_image_delta.csv").is_file()
    page = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert "against the previous best" in page and 'href="best/semantic/report.html"' in page
    from segpipe.reports.html import leaderboard_metrics

    plotted = leaderboard_metrics(board)  # intervals and the significance flag are not drawn as metrics
    assert "mIoU" in plotted and not [c for c in plotted if c.endswith(("_low", "_high")) or c.startswith(("vs_best", "significantly"))]


def test_compare_two_checkpoint_folders_of_the_run(run: dict[str, object], tmp_path: Path) -> None:
    """`segpipe compare OUT/checkpoints/X OUT/checkpoints/Y` from the statistics published beside the reports:
    the same intervals as the run's own comparison (same seed, same image order)."""
    out = run["settings"].out
    record = json.loads((out / "best.json").read_text())
    args = ["compare", str(out / "checkpoints" / record["previous_best"]), str(out / "checkpoints" / record["checkpoint"]), "-o", str(tmp_path / "cmp")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp" / "intervals.csv").read_bytes() == (out / "comparison" / "intervals.csv").read_bytes()
    assert (tmp_path / "cmp" / "per_image_delta.csv").read_bytes() == (out / "comparison" / "per_image_delta.csv").read_bytes()
    worst = pd.read_csv(tmp_path / "cmp" / "A" / "worst_per_class.csv")
    assert set(worst["class"]) <= {"background", "pet"} and (worst["rank"] >= 1).all()


def test_noop_rerun_keeps_best_and_comparison_byte_identical(run: dict[str, object]) -> None:
    settings = run["settings"]
    before = report_files(settings.out)
    outcome = run_pipeline(settings)
    assert outcome.exit_code == 0 and not outcome.ran and not outcome.published
    after = report_files(settings.out)
    assert before == after and any("comparison" in k for k in after) and any(k.startswith("best") for k in after)

"""`segpipe run` reports carry the worst-images gallery: predictions gathered from the inference shards."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from segpipe.cli import main


def test_demo_reports_show_the_worst_images_with_predictions(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "ran    infer+evaluate checkpoint=unet_e01 group=0" in result.output  # progress lines while it works
    report = out / "checkpoints" / "unet_e01" / "semantic"
    gallery = sorted(p.name for p in (report / "gallery" / "semantic").glob("*.png"))
    per_image = (report / "per_image.csv").read_text().splitlines()[1:]
    assert len(gallery) == min(24, len(per_image)) > 0
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "No image source was given" not in html
    # one GT and one prediction thumbnail per gallery image, plus the plots
    assert html.count("data:image/jpeg") >= len(gallery)

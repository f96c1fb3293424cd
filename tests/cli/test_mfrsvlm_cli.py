"""`rsvl train mfrsvlm`, `rsvl caption`, `rsvl classify` with a tiny LLaVA on tiny SynthRS datasets."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from rsvl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from rsvl.synth import generate_dataset

    root = tmp_path_factory.mktemp("mf")
    for fmt in ("captions", "rsvqa", "classification"):
        generate_dataset(fmt, root / fmt, 3, seed=0, size=112, progress=False)
    sources = [
        {"format": "captions", "root": str(root / "captions"), "task": "caption"},
        {"format": "rsvqa", "root": str(root / "rsvqa"), "task": "vqa"},
        {"format": "classification", "root": str(root / "classification"), "task": "classification"},
    ]
    data = {
        "name": "mini",
        "model": {"tiny": True, "tile_size": 56, "variant": "fusion_injection"},
        "sources": sources,
        "eval_sources": sources,
        "train": {"stage": 1, "steps": 2, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 1},
        "max_new_tokens": 4,
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, root


def test_train_writes_trained_parts_and_scores_then_caption_and_classify_use_them(recipe, tmp_path):
    path, root = recipe
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "mfrsvlm", "-c", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "trainable.safetensors").exists() and (out / "last.pt").exists()
    report = json.loads((out / "eval.json").read_text())
    assert set(report) == {"caption", "vqa", "classification"}
    assert "evaluation:" in result.output and "eval.json" in result.output.replace("\n", "")  # where it went
    image = next((root / "classification").rglob("*.png"), None) or next((root / "classification").rglob("*.jp*g"))
    weights = str(out / "trainable.safetensors")
    said = runner.invoke(app, ["caption", str(image), "-c", str(path), "--weights", weights, "--max-new-tokens", "4"])
    assert said.exit_code == 0, said.output
    label = runner.invoke(
        app, ["classify", str(image), "--classes", "forest,harbor", "-c", str(path), "--weights", weights]
    )
    assert label.exit_code == 0 and "model said" in label.output
    vqa = ["vqa", str(image), "Is there a forest?", "--method", "mfrsvlm", "-c", str(path), "--weights", weights]
    answered = runner.invoke(app, vqa)
    assert answered.exit_code == 0 and "answer:" in answered.output, answered.output
    zoo_with_weights = runner.invoke(app, ["vqa", str(image), "q", "--method", "mfrsvlm", "--weights", weights])
    assert zoo_with_weights.exit_code == 2 and "--weights goes with -c" in zoo_with_weights.output
    assert runner.invoke(app, ["vqa", str(image), "q", "--method", "blip"]).exit_code == 2
    again = runner.invoke(app, ["train", "mfrsvlm", "-c", str(path), "-o", str(out), "--no-eval"])
    assert again.exit_code == 0 and "2 steps" in again.output  # resumed: nothing left to do


def test_bad_recipes_and_options_exit_2(recipe, tmp_path):
    path, _ = recipe
    both = ["train", "mfrsvlm", "-c", str(path), "-o", str(tmp_path / "x"), "--set", "model.gguf=/nope.gguf"]
    assert runner.invoke(app, both).exit_code == 2  # tiny and gguf at once
    assert runner.invoke(app, ["train", "mfrsvlm", "-c", str(path), "--set", "train.stage=3"]).exit_code == 2
    one_class = ["classify", str(path), "--classes", "forest", "-c", str(path)]
    assert runner.invoke(app, one_class).exit_code == 2
    missing = runner.invoke(app, ["caption", str(tmp_path / "gone.png"), "-c", str(path)])
    assert missing.exit_code == 2 and "gone.png" in missing.output

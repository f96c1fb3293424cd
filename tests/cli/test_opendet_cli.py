"""`rsvl train opendet` and `rsvl detect --method opendet` on a tiny SynthRS open-vocabulary split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rsvl.cli import app

runner = CliRunner()
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "opendet" / "synth_tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rsvl.synth import generate_dataset

    root = tmp_path_factory.mktemp("odcli")
    generate_dataset("coco", root / "data", 5, seed=1, size=128, novel_classes=["helicopter"], progress=False)
    recipe = yaml.safe_load(CONFIG.read_text())  # the committed plumbing recipe, shrunk further
    recipe["data"].update(root=str(root / "data" / "train"), crop_size=128)
    recipe["model"].update(backbone_weights=False, min_queries=8, max_queries=20)
    recipe["names"]["head_steps"] = 1
    recipe["optim"].update(steps=2, image_size=96, checkpoint_every=1)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["--quiet", "train", "opendet", "-c", str(path), "-o", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root


def test_train_writes_the_model(trained):
    assert (trained / "run" / "opendet.pt").is_file()
    assert (trained / "run" / "config.yaml").is_file()
    history = json.loads((trained / "run" / "history.json").read_text())
    assert [h["step"] for h in history][-1] == 2


def test_detect_names_every_box_and_writes_geojson(trained, tmp_path):
    image = next((trained / "data" / "train" / "images").glob("*.png"))
    args = ["--quiet", "detect", str(image), "--method", "opendet", "-m", str(trained / "run" / "opendet.pt")]
    result = runner.invoke(app, [*args, "-o", str(tmp_path), "--score-threshold", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "detections.json").read_text())
    dets = report["images"][0]["detections"]
    assert dets and all(isinstance(d["name"], str) and d["name"] for d in dets)
    assert all(0 <= d["box"][0] <= d["box"][2] <= 128 for d in dets)
    geo = json.loads((tmp_path / f"{image.stem}.geojson").read_text())
    assert [f["properties"]["name"] for f in geo["features"]] == [d["name"] for d in dets]
    assert dets[0]["name"] in result.output  # the table shows the names


def test_detect_usage_errors_exit_2(trained, tmp_path):
    image = next((trained / "data" / "train" / "images").glob("*.png"))
    model = str(trained / "run" / "opendet.pt")
    bad_method = runner.invoke(app, ["detect", str(image), "--method", "nope", "-m", model])
    assert bad_method.exit_code == 2 and "opendet" in bad_method.output
    bad_format = runner.invoke(app, ["detect", str(image), "--method", "opendet", "-m", model, "-f", "dota"])
    assert bad_format.exit_code == 2
    not_a_model = tmp_path / "x.pt"
    torch.save({"format": "something else"}, not_a_model)
    wrong = runner.invoke(app, ["detect", str(image), "--method", "opendet", "-m", str(not_a_model)])
    assert wrong.exit_code == 2 and "not an rsvl Open-Det model" in wrong.output

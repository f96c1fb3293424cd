"""`rsvl ground`: one image with tiny models, refusal without weights, dataset mode with resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rsvl.cli import app

runner = CliRunner()
# Two Qwen layers, so the tiny random VLM stays small; Lite0 focus carries real packaged weights.
TINY = ["--tiny", "--set", "overview.layers=[0,1]", "--set", "overview.layer_weights=[0.5,0.5]"]


@pytest.fixture()
def picture(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, size=(72, 96, 3), dtype=np.uint8)
    img[20:50, 30:70] = 230
    path = tmp_path / "scene.png"
    Image.fromarray(img).save(path)
    return path


def test_ground_one_image_writes_mask_box_overlay(tmp_path, picture, monkeypatch):
    import rsvl.cli as cli

    shown = []
    real_status = cli.err_console.status
    monkeypatch.setattr(cli.err_console, "status", lambda message, **kw: shown.append(message) or real_status(message))
    out = tmp_path / "out"
    result = runner.invoke(app, ["ground", str(picture), "the bright square", "-o", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "box xyxy" in result.output
    assert shown == ["grounding 'the bright square' in scene.png"]  # a spinner while the models run
    record = json.loads((out / "scene.json").read_text())
    assert record["expression"] == "the bright square"
    x0, y0, x1, y1 = record["box_xyxy"]
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 72
    mask = np.asarray(Image.open(out / "scene.mask.png"))
    assert mask.shape == (72, 96)
    overlay = np.asarray(Image.open(out / "scene.overlay.png"))
    assert overlay.shape[:2] == (72, 96)
    assert record["providers"]["overview"]["real_weights"] is False
    assert record["providers"]["focus"]["name"] == "lite0_affinity"
    assert record["providers"]["focus"]["real_weights"] is True
    assert not (out / "scene.geojson").exists()  # a PNG has no georeferencing


def test_ground_refuses_random_models_without_tiny(tmp_path, picture):
    result = runner.invoke(app, ["ground", str(picture), "the square", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--vlm-path" in result.output and "--tiny" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args",
    [
        [],  # neither an image nor a dataset
        ["--dataset", "rrsisd"],  # dataset without root
        ["--focus", "telepathy"],  # unknown provider
        ["--fusion", "product"],  # unknown fusion mode
        ["--device", "cuda:7"],  # a GPU this machine does not have
        ["--device", "toaster"],  # not a device at all
        ["--limit", "3"],  # a batch-mode option without --dataset
        ["--set", "overview.max_pixels=0"],  # the processor would crash
        ["--set", "overview.min_pixels=900000"],  # above max_pixels
    ],
)
def test_ground_usage_errors_exit_2(tmp_path, picture, args):
    base = [] if not args or args[0] == "--dataset" else [str(picture), "x"]
    result = runner.invoke(app, ["ground", *base, *args, "-o", str(tmp_path / "o"), *TINY])
    assert result.exit_code == 2, result.output


def test_ground_missing_image_exits_2_naming_it(tmp_path):
    result = runner.invoke(app, ["ground", str(tmp_path / "gone.tif"), "x", "-o", str(tmp_path / "o"), *TINY])
    assert result.exit_code == 2 and "gone.tif" in result.output


def test_ground_dataset_scores_and_resumes(tmp_path):
    from rsvl.synth import generate_dataset

    root = tmp_path / "rrsisd"
    generate_dataset("rrsisd", root, n=4, seed=1, size=128, progress=False)  # 5 expressions
    out = tmp_path / "run"
    args = ["ground", "--dataset", "rrsisd", "--root", str(root), "-o", str(out), "--limit", "2", *TINY]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "mIoU" in first.output or "miou" in first.output.lower()
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2
    report = json.loads((out / "eval.json").read_text())
    assert report["n"] == 2 and report["new"] == 2 and report["mask"] is not None
    assert 0.0 <= report["mask"]["metrics"]["mIoU"] <= 1.0
    second = runner.invoke(app, [*args[: -len(TINY) - 2], "--limit", "3", *TINY])
    assert second.exit_code == 0, second.output
    assert "1 new" in second.output
    assert (out / "predictions.jsonl").read_text().splitlines()[:2] == lines

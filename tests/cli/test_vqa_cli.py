"""`rsvl vqa`: one large image with a tiny model, refusal without weights, benchmark mode with resume."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rsvl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def lrs_root(tmp_path_factory):
    from rsvl.synth import generate_dataset

    root = tmp_path_factory.mktemp("lrs")
    generate_dataset("lrsvqa", root, 1, seed=3, size=1024, progress=False)
    return root


def image_of(root):
    return next((root / "LRS_VQA" / "image").glob("*.tif"))


def test_vqa_one_image_prints_answer_tokens_and_writes_tiles(lrs_root, tmp_path):
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["vqa", str(image_of(lrs_root)), "What is the color of the pool?", "-o", str(out), "--tiny"]
    )
    assert result.exit_code == 0, result.output
    assert "answer:" in result.output and "vision tokens into the LLM" in result.output
    (saved,) = out.glob(f"{image_of(lrs_root).stem}.what-is-the-color-of-*.vqa.json")
    record = json.loads(saved.read_text())
    assert record["vision_tokens"] < record["full_resolution_tokens"]
    assert saved.with_name(saved.name.replace(".vqa.json", ".tiles.png")).exists()
    assert str(saved) in result.output.replace("\n", "")  # where the outputs are


@pytest.mark.parametrize(
    "args",
    [
        [],  # no weights and no --tiny
        ["--tiny", "--mode", "all"],
        ["--tiny", "--limit", "2"],  # batch option without --dataset
        ["--tiny", "--set", "selection.pruning_ratio=0"],
        ["--tiny", "--device", "cuda:5"],
        ["--tiny", "--model-path", "/nonexistent/llava"],
    ],
)
def test_vqa_usage_errors_exit_2(lrs_root, tmp_path, args):
    result = runner.invoke(app, ["vqa", str(image_of(lrs_root)), "q", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output


def test_vqa_missing_image_names_it(tmp_path):
    result = runner.invoke(app, ["vqa", str(tmp_path / "gone.tif"), "q", "-o", str(tmp_path / "o"), "--tiny"])
    assert result.exit_code == 2 and "gone.tif" in result.output


def test_vqa_benchmark_mode_scores_and_resumes(lrs_root, tmp_path):
    args = ["vqa", "--dataset", "lrsvqa", "--root", str(lrs_root), "-o", str(tmp_path / "run"), "--tiny"]
    first = runner.invoke(app, [*args, "--limit", "2", "--set", "model.max_new_tokens=2"])
    assert first.exit_code == 0, first.output
    assert "OA" in first.output and "2 new" in first.output
    second = runner.invoke(app, [*args, "--set", "model.max_new_tokens=2"])
    assert second.exit_code == 0, second.output
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) > 2 and f"{len(lines) - 2} new" in second.output

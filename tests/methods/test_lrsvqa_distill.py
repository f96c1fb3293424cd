"""Distilling the Region Focus Module over a dataset: resumable, deterministic, and on the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.errors import InputError
from rsvl.methods.lrsvqa.config import LRSVQAConfig
from rsvl.methods.lrsvqa.distill import distill_on_dataset
from rsvl.methods.lrsvqa.pipeline import LargeImageVQA
from rsvl.models.llava import tiny_llava


@pytest.fixture(scope="module")
def lrs_root(tmp_path_factory):
    from rsvl.synth import generate_dataset

    root = tmp_path_factory.mktemp("lrs")
    generate_dataset("lrsvqa", root, 2, seed=3, size=1024, progress=False)
    return root


def engine():
    cfg = LRSVQAConfig.model_validate({"rfm": {"teacher_layers": [2, 3]}})
    return LargeImageVQA(cfg, bundle=tiny_llava(tile_size=56))


def test_an_interrupted_run_resumes_to_the_same_weights(lrs_root, tmp_path):
    straight = distill_on_dataset(
        engine(), lrs_root, tmp_path / "a", steps=6, lr=1e-2, checkpoint_every=3, progress=False
    )
    distill_on_dataset(engine(), lrs_root, tmp_path / "b", steps=3, lr=1e-2, checkpoint_every=3, progress=False)
    resumed = distill_on_dataset(
        engine(), lrs_root, tmp_path / "b", steps=6, lr=1e-2, checkpoint_every=3, progress=False
    )
    a, b = load_file(tmp_path / "a" / "rfm.safetensors"), load_file(tmp_path / "b" / "rfm.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed["steps"] == straight["steps"] == 6
    assert resumed["held_out_loss_after"] == pytest.approx(straight["held_out_loss_after"], rel=1e-4)
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert len(state["losses"]) == 6 and state["teacher_layers"] == [2, 3]
    # the weights changed from the initial copy of the LLM's layers
    init = engine()
    from rsvl.methods.lrsvqa.rfm import RegionFocusModule

    first = RegionFocusModule(init.bundle.model, [2, 3]).state_dict()
    assert any(not torch.allclose(first[k], a[k]) for k in a)


def test_resume_refuses_other_teacher_layers_and_bad_arguments(lrs_root, tmp_path):
    distill_on_dataset(engine(), lrs_root, tmp_path / "r", steps=1, progress=False)
    other = LargeImageVQA(LRSVQAConfig.model_validate({"rfm": {"teacher_layers": [1, 3]}}), bundle=tiny_llava(56))
    with pytest.raises(InputError, match="teacher_layers"):
        distill_on_dataset(other, lrs_root, tmp_path / "r", steps=2, progress=False)
    with pytest.raises(InputError, match="steps"):
        distill_on_dataset(engine(), lrs_root, tmp_path / "x", steps=0, progress=False)


def test_attention_only_distillation_resumes_and_keeps_the_rest_of_the_llm(lrs_root, tmp_path):
    def attention_engine(trainable="attention"):
        cfg = LRSVQAConfig.model_validate({"rfm": {"teacher_layers": [3], "trainable": trainable}})
        return LargeImageVQA(cfg, bundle=tiny_llava(tile_size=56))

    straight = distill_on_dataset(attention_engine(), lrs_root, tmp_path / "a", steps=4, lr=1e-2,
                                  checkpoint_every=2, progress=False)  # fmt: skip
    distill_on_dataset(attention_engine(), lrs_root, tmp_path / "b", steps=2, lr=1e-2, checkpoint_every=2,
                       progress=False)  # fmt: skip
    distill_on_dataset(attention_engine(), lrs_root, tmp_path / "b", steps=4, lr=1e-2, checkpoint_every=2,
                       progress=False)  # fmt: skip
    a, b = load_file(tmp_path / "a" / "rfm.safetensors"), load_file(tmp_path / "b" / "rfm.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert a and all(".self_attn." in k for k in a)  # the file holds the attention only
    assert straight["trainable"] == "attention" and straight["trained_values"] == sum(v.numel() for v in a.values())
    from rsvl.methods.lrsvqa.rfm import RegionFocusModule

    first = RegionFocusModule(attention_engine().bundle.model, [3], "attention").state_dict()
    assert all(not torch.equal(first[k], a[k]) for k in a if k.endswith("q_proj.weight"))  # attention learned
    with pytest.raises(InputError, match="trainable"):
        distill_on_dataset(attention_engine("all"), lrs_root, tmp_path / "b", steps=6, progress=False)


def test_cli_distils_and_the_weights_drive_rsvl_vqa(lrs_root, tmp_path):
    runner = CliRunner()
    out = tmp_path / "rfm"
    args = ["train", "lrsvqa-rfm", "--root", str(lrs_root), "-o", str(out), "--steps", "2", "--tiny"]
    result = runner.invoke(app, [*args, "--set", "rfm.teacher_layers=[2,3]"])
    assert result.exit_code == 0, result.output
    assert "held-out loss" in result.output and (out / "report.json").exists()
    image = next((lrs_root / "LRS_VQA" / "image").glob("*.tif"))
    answer = runner.invoke(
        app,
        [
            "vqa",
            str(image),
            "Where is it?",
            "-o",
            str(tmp_path / "v"),
            "--tiny",
            "--rfm-path",
            str(out / "rfm.safetensors"),
        ],
    )
    assert answer.exit_code == 0, answer.output
    (saved,) = (tmp_path / "v").glob(f"{image.stem}.*.vqa.json")
    record = json.loads(saved.read_text())
    assert record["providers"]["scorer"] == "rfm"
    no_weights = runner.invoke(app, ["train", "lrsvqa-rfm", "--root", str(lrs_root), "-o", str(tmp_path / "n")])
    assert no_weights.exit_code == 2

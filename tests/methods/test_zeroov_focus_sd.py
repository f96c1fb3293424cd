"""The Stable Diffusion Focus provider and SD parts on the tiny random model (real diffusers/transformers)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rsvl.attention.diffusers_capture import capture_self_attention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import FocusConfig
from rsvl.methods.zeroov.focus_sd import (
    StableDiffusionFocus,
    available_sides,
    build_stable_diffusion_focus,
    tiny_stable_diffusion_focus,
)
from rsvl.methods.zeroov.providers import FOCUS_PROVIDERS, FocusProvider
from rsvl.models.stable_diffusion import load_stable_diffusion, tiny_stable_diffusion


@pytest.fixture(scope="module")
def parts():
    return tiny_stable_diffusion(seed=0)


def _image(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_null_text_is_empty_prompt_padded_with_eos(parts):
    tok = parts.tokenizer
    ids = parts.null_text_ids[0].tolist()
    assert ids == [tok.bos_token_id] + [tok.eos_token_id] * (tok.model_max_length - 1)
    assert len(ids) == parts.text_encoder.config.max_position_embeddings
    emb = parts.null_text_embedding()
    assert emb.shape == (1, len(ids), parts.unet.config.cross_attention_dim)


def test_provider_returns_finest_requested_grid(parts):
    focus = StableDiffusionFocus(parts, image_size=64, resolutions=[4, 8], ddim_steps=2)
    assert isinstance(focus, FocusProvider) and focus.name == "stable_diffusion" and not focus.real_weights
    sa = focus.self_attention(_image(50, 70))
    assert sa.grid == (8, 8) and sa.matrix.shape == (64, 64)
    np.testing.assert_allclose(sa.matrix.sum(axis=1), 1.0, atol=1e-5)
    assert "4x4" in sa.source and "8x8" in sa.source
    coarse = StableDiffusionFocus(parts, image_size=64, resolutions=[2, 4], ddim_steps=2).self_attention(_image())
    assert coarse.grid == (4, 4)
    # sides the model lacks are dropped when another requested side exists
    assert StableDiffusionFocus(parts, image_size=64, resolutions=[8, 32], ddim_steps=1).resolutions == [8]


def test_one_step_equals_one_unet_call_at_the_first_inversion_timestep(parts):
    """Known answer built by hand: image in [-1, 1] -> VAE mean * scale -> one UNet call on null text."""
    image = _image()  # already 64 px: the resize is the identity
    focus = StableDiffusionFocus(parts, image_size=64, resolutions=[8], ddim_steps=1)
    got = focus.self_attention(image)
    with torch.inference_mode():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        latent = parts.vae.encode(x).latent_dist.mean * parts.vae.config.scaling_factor
        scheduler = parts.inverse_scheduler()
        scheduler.set_timesteps(1)
        with capture_self_attention(parts.unet, [8]) as store:
            parts.unet(latent, scheduler.timesteps[0], encoder_hidden_states=parts.null_text_embedding())
    np.testing.assert_allclose(got.matrix, store.maps()[0].matrix, atol=1e-6)


def test_attention_is_averaged_over_every_inversion_step(parts):
    calls = []
    handle = parts.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        one = StableDiffusionFocus(parts, 64, [8], ddim_steps=1).self_attention(_image())
        calls.clear()
        three = StableDiffusionFocus(parts, 64, [8], ddim_steps=3).self_attention(_image())
    finally:
        handle.remove()
    assert len(calls) == 3
    assert not np.allclose(one.matrix, three.matrix, atol=1e-6)


def test_deterministic_and_image_dependent(parts):
    focus = StableDiffusionFocus(parts, 64, [4, 8], ddim_steps=2)
    a1, a2, b = (focus.self_attention(_image(seed=s)) for s in (0, 0, 1))
    np.testing.assert_array_equal(a1.matrix, a2.matrix)
    assert not np.allclose(a1.matrix, b.matrix, atol=1e-4)


def test_bad_settings_and_inputs_raise_input_error(parts):
    assert available_sides(parts, 64) == [1, 2, 4, 8]
    with pytest.raises(InputError, match=r"\[1, 2, 4, 8\]"):
        StableDiffusionFocus(parts, image_size=64, resolutions=[16, 32])
    with pytest.raises(InputError, match="multiple"):
        StableDiffusionFocus(parts, image_size=60, resolutions=[8])
    focus = StableDiffusionFocus(parts, 64, [8], ddim_steps=1)
    with pytest.raises(InputError, match="uint8"):
        focus.self_attention(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="uint8"):
        focus.self_attention(np.zeros((64, 64), np.uint8))


def test_load_missing_folder_or_subfolders_names_the_path(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_stable_diffusion(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    with pytest.raises(InputError) as err:
        load_stable_diffusion(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "missing vae/, text_encoder/, tokenizer/ (" in message


def test_load_corrupt_subfolder_is_input_error(tmp_path):
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / name).mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(InputError, match="cannot load"):
        load_stable_diffusion(tmp_path)


def test_load_tokenizer_without_vocabulary_is_input_error(parts, tmp_path):
    parts.save_pretrained(tmp_path)
    for file in (tmp_path / "tokenizer").iterdir():
        file.unlink()
    with pytest.raises(InputError, match=r"vocab\.json"):
        load_stable_diffusion(tmp_path)


def test_save_load_round_trip_through_registry(parts, tmp_path):
    parts.save_pretrained(tmp_path / "sd")
    loaded = load_stable_diffusion(tmp_path / "sd")
    assert loaded.real_weights
    assert torch.equal(loaded.null_text_ids, parts.null_text_ids)
    assert loaded.scheduler_config["beta_schedule"] == "scaled_linear"
    cfg = FocusConfig(path=tmp_path / "sd", image_size=64, resolutions=[4, 8], ddim_steps=2)
    focus = FOCUS_PROVIDERS.get("stable_diffusion")(cfg)
    assert focus.real_weights
    expected = StableDiffusionFocus(parts, 64, [4, 8], ddim_steps=2).self_attention(_image())
    got = focus.self_attention(_image())
    assert got.real_weights and not expected.real_weights
    np.testing.assert_allclose(got.matrix, expected.matrix, atol=1e-6)


def test_builder_without_path_warns_random(caplog):
    cfg = FocusConfig(image_size=64, resolutions=[8], ddim_steps=1)
    with caplog.at_level(logging.WARNING):
        focus = build_stable_diffusion_focus(cfg)
    assert "RANDOM" in caplog.text and not focus.real_weights
    quick = tiny_stable_diffusion_focus()
    assert quick.resolutions == [4, 8] and quick.self_attention(_image()).grid == (8, 8)

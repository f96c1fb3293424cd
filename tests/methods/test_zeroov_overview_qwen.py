"""The Qwen2.5-VL Overview provider on a tiny random model: layout, query position, weighting, hooks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rsvl.attention.maps import CrossAttention
from rsvl.attention.qwen_vl import image_token_layout, text_to_image_attention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import OverviewConfig
from rsvl.methods.zeroov.overview_qwen import QwenVLOverview, build_qwen_overview
from rsvl.methods.zeroov.providers import OVERVIEW_PROVIDERS, OverviewProvider
from rsvl.models.qwen2_5_vl import tiny_qwen2_5_vl

PIXELS = {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 24}
EXPRESSION = "the white storage tank"


@pytest.fixture(scope="module")
def tiny():
    return tiny_qwen2_5_vl(seed=0, num_layers=2, **PIXELS)


@pytest.fixture(scope="module")
def image():
    """130x290: resized by the processor to 84x196, a 3x7 merged grid."""
    return np.random.default_rng(0).integers(0, 256, (130, 290, 3), dtype=np.uint8)


def _overview(tiny, layers=(0, 1), weights=(0.5, 0.5), query="expression_end"):
    model, processor = tiny
    return QwenVLOverview(model, processor, layers, weights, query)


def test_map_is_finite_non_negative_on_the_resized_grid(tiny, image):
    ov = _overview(tiny)
    assert isinstance(ov, OverviewProvider) and ov.name == "qwen2_5_vl" and not ov.real_weights
    ca = ov.cross_attention(image, EXPRESSION)
    assert isinstance(ca, CrossAttention)
    assert ca.grid == (3, 7)
    assert np.isfinite(ca.map).all() and (ca.map >= 0).all()
    assert 0 < ca.map.sum() <= 1 + 1e-5  # a share of one softmax row
    assert ca.source == "qwen2_5_vl layers 0-1" and ca.real_weights is False
    tall = ov.cross_attention(np.zeros((300, 60, 3), np.uint8), EXPRESSION)
    assert tall.grid == (11, 2)


def test_layer_weights_are_applied(tiny, image):
    only0 = _overview(tiny, (0,), (1.0,)).cross_attention(image, EXPRESSION).map
    only1 = _overview(tiny, (1,), (1.0,)).cross_attention(image, EXPRESSION).map
    assert not np.allclose(only0, only1)  # otherwise the checks below prove nothing
    np.testing.assert_allclose(_overview(tiny, (0, 1), (1.0, 0.0)).cross_attention(image, EXPRESSION).map, only0)
    np.testing.assert_allclose(_overview(tiny, (0, 1), (0.0, 2.0)).cross_attention(image, EXPRESSION).map, only1)
    mixed = _overview(tiny, (0, 1), (1.0, 3.0)).cross_attention(image, EXPRESSION).map
    np.testing.assert_allclose(mixed, 0.25 * only0 + 0.75 * only1, rtol=1e-5, atol=1e-8)


def test_query_positions_expression_end_and_prompt_end(tiny, image):
    model, processor = tiny
    ov = _overview(tiny)
    text = ov.prompt(EXPRESSION)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    positions, _ = image_token_layout(inputs["input_ids"], inputs["image_grid_thw"], model.config.image_token_id, 2)
    index = ov._expression_end(text, EXPRESSION, inputs["input_ids"], positions.numel())
    ids = inputs["input_ids"][0].tolist()
    after_image = int(positions[-1]) + 2  # skip <|vision_end|>
    assert processor.tokenizer.decode(ids[after_image : index + 1]) == "Locate: " + EXPRESSION
    assert processor.tokenizer.convert_ids_to_tokens(ids[index + 1]) == "<|im_end|>"
    end = ov.cross_attention(image, EXPRESSION).map
    last = _overview(tiny, query="prompt_end").cross_attention(image, EXPRESSION).map
    assert not np.allclose(end, last)
    # whitespace in the expression is normalised; a trailing punctuation mark is the last token
    np.testing.assert_allclose(ov.cross_attention(image, "  the white\n storage   tank ").map, end)
    assert ov.cross_attention(image, "the tank.").grid == (3, 7)


def test_hooked_rows_equal_output_attentions(tiny, image):
    model, processor = tiny
    ov = _overview(tiny, (0, 1), (0.2, 0.8))
    text = ov.prompt(EXPRESSION)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    positions, grid = image_token_layout(inputs["input_ids"], inputs["image_grid_thw"], model.config.image_token_id, 2)
    query = ov._expression_end(text, EXPRESSION, inputs["input_ids"], positions.numel())
    with torch.inference_mode():
        out = model(**inputs, output_attentions=True, use_cache=False)
    want = text_to_image_attention(list(out.attentions), query, positions, grid, [0.2, 0.8])
    hooks = [len(layer.self_attn._forward_hooks) for layer in ov.decoder_layers]  # transformers' own ones
    np.testing.assert_allclose(ov.cross_attention(image, EXPRESSION).map, want, rtol=1e-5, atol=1e-8)
    assert [len(layer.self_attn._forward_hooks) for layer in ov.decoder_layers] == hooks  # ours are removed


def test_invalid_input_raises(tiny, image):
    with pytest.raises(InputError, match=r"\[2, 5\] do not exist.*valid 0\.\.1"):
        _overview(tiny, (0, 2, 5), (1, 1, 1))
    with pytest.raises(InputError, match="one weight per layer"):
        _overview(tiny, (0, 1), (1.0,))
    with pytest.raises(InputError, match="unknown query"):
        _overview(tiny, query="middle")
    ov = _overview(tiny)
    with pytest.raises(InputError, match="empty"):
        ov.cross_attention(image, "  \n ")
    with pytest.raises(InputError, match="special tokens"):
        ov.cross_attention(image, "the <|image_pad|> tank")
    with pytest.raises(InputError, match="uint8"):
        ov.cross_attention(image.astype(np.float32), EXPRESSION)
    with pytest.raises(InputError, match="aspect ratio"):  # transformers' smart_resize would raise ValueError
        ov.cross_attention(np.zeros((2, 600, 3), dtype=np.uint8), EXPRESSION)


def test_saved_model_loads_through_the_registry_with_the_same_map(tiny, image, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    cfg = OverviewConfig(path=tmp_path, layers=[0, 1], layer_weights=[0.3, 0.7], **PIXELS)
    loaded = OVERVIEW_PROVIDERS.get("qwen2_5_vl")(cfg)
    assert loaded.real_weights and tmp_path.name in loaded.source
    want = _overview(tiny, (0, 1), (0.3, 0.7)).cross_attention(image, EXPRESSION).map
    got = loaded.cross_attention(image, EXPRESSION)
    assert got.real_weights
    np.testing.assert_allclose(got.map, want, rtol=1e-5, atol=1e-8)
    with pytest.raises(InputError, match=r"valid 0\.\.1"):
        build_qwen_overview(cfg.model_copy(update={"layers": [16], "layer_weights": [1.0]}))


def test_builder_without_path_is_a_tiny_random_model_with_the_paper_layers(image, caplog):
    with caplog.at_level(logging.WARNING):
        ov = build_qwen_overview(OverviewConfig(**PIXELS))
    assert "RANDOM" in caplog.text
    assert len(ov.decoder_layers) == 20 and ov.layers == [16, 17, 18, 19]
    assert ov.layer_weights == [0.1, 0.1, 0.3, 0.5] and not ov.real_weights
    ca = ov.cross_attention(image[:56, :84], "a ship")
    assert ca.grid == (2, 3) and np.isfinite(ca.map).all()

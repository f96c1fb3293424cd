"""Qwen2.5-VL builders: in-memory Qwen2 tokenizer, real processor, tiny eager model, local loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from rsvl.attention.qwen_vl import image_token_layout
from rsvl.errors import InputError
from rsvl.models.qwen2_5_vl import (
    QWEN_SPECIAL_TOKENS,
    build_qwen2_tokenizer,
    load_qwen2_5_vl,
    tiny_qwen2_5_vl,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_qwen2_5_vl(seed=0, num_layers=2, min_pixels=28 * 28, max_pixels=28 * 28 * 24)


def _inputs(processor, img, text="Locate: the ship"):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[prompt], images=[img], return_tensors="pt")


def test_tokenizer_has_qwen_specials_in_order_and_round_trips(tmp_path):
    tok = build_qwen2_tokenizer(["storage tank"])
    ids = tok.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    assert ids == list(range(len(tok) - len(QWEN_SPECIAL_TOKENS), len(tok)))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.image_token == "<|image_pad|>" and tok.image_token_id == ids[-2]
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Locate: the storage tank, zebra 42<|im_end|>\n"
    enc = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(enc, skip_special_tokens=False) == text
    pieces = tok.convert_ids_to_tokens(enc)
    assert pieces[:3] == ["<|im_start|>", "user", "Ċ"] and "Ġstorage" in pieces and "Ġtank" in pieces
    assert "zebra" not in pieces and "Ġzebra" not in pieces  # unseen words still tokenise, by bytes
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False).input_ids == enc


def test_processor_image_tokens_match_the_resized_grid_for_non_square_images(tiny):
    _, processor = tiny
    assert isinstance(processor, Qwen2_5_VLProcessor)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # (H, W) -> patch grid after smart_resize within [784, 18816] px: known answers
    for (h, w), (ph, pw) in {(56, 84): (4, 6), (50, 90): (4, 6), (130, 290): (6, 14), (300, 60): (22, 4)}.items():
        inputs = _inputs(processor, np.zeros((h, w, 3), np.uint8))
        assert inputs["image_grid_thw"].tolist() == [[1, ph, pw]], (h, w)
        positions, grid = image_token_layout(inputs["input_ids"], inputs["image_grid_thw"], image_id, 2)
        assert grid == (ph // 2, pw // 2)
        assert int((inputs["input_ids"] == image_id).sum()) == grid[0] * grid[1] == positions.numel()
        assert inputs["pixel_values"].shape[0] == ph * pw


def test_tiny_model_is_eager_and_returns_per_layer_attention(tiny):
    model, processor = tiny
    assert model.config._attn_implementation == "eager"
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    inputs = _inputs(processor, np.full((56, 84, 3), 128, np.uint8))
    with torch.inference_mode():
        out = model(**inputs, output_attentions=True, use_cache=False)
    length = inputs["input_ids"].shape[1]
    assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 4, length, length)
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(1, 4, length))
    assert torch.all(out.attentions[0][0, :, 0, 1:] == 0)  # causal: the first token sees only itself


def test_tiny_seed_fixes_weights_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_qwen2_5_vl(seed=5, num_layers=1)
    after = torch.rand(1)
    b, _ = tiny_qwen2_5_vl(seed=5, num_layers=1)
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_load_round_trip_and_pixel_bounds(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, proc = load_qwen2_5_vl(tmp_path, max_pixels=28 * 28 * 6)
    assert isinstance(loaded, Qwen2_5_VLForConditionalGeneration)
    assert loaded.config._attn_implementation == "eager" and not loaded.training
    assert proc.chat_template is not None
    img = np.zeros((130, 290, 3), np.uint8)
    assert _inputs(proc, img)["image_grid_thw"].tolist() == [[1, 2, 6]]  # the new max_pixels applies
    inputs = _inputs(processor, img)
    with torch.inference_mode():
        want = model(**inputs, use_cache=False).logits
        got = loaded(**inputs, use_cache=False).logits
    torch.testing.assert_close(got, want)
    half, _ = load_qwen2_5_vl(tmp_path, dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16


def test_load_rejects_missing_or_foreign_folders(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_qwen2_5_vl(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "florence2"}))
    with pytest.raises(InputError, match=r"not a Qwen2\.5-VL checkpoint"):
        load_qwen2_5_vl(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(InputError, match="no weights"):
        load_qwen2_5_vl(tmp_path)
    with pytest.raises(InputError, match="unknown dtype"):
        load_qwen2_5_vl(tmp_path, dtype="float8")


def test_load_rejects_corrupt_weights(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"cannot load the Qwen2\.5-VL model") as err:
        load_qwen2_5_vl(tmp_path)
    assert str(tmp_path) in str(err.value)

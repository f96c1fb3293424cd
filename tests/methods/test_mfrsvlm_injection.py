"""MF-RSVLM detail injection on real (tiny) transformers LMs: identity at init, causality, KV cache."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rsvl.errors import InputError
from rsvl.methods.mfrsvlm.injection import (
    DetailInjector,
    InjectionConfig,
    decoder_layers,
    image_span_starts,
    inject,
)

D = 32
VOCAB = 64


def _llama(layers: int = 8) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).eval()


def _qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(config).eval()


def _open(injector: DetailInjector, alpha: float = 1.0) -> DetailInjector:
    """Open the zero-initialised tanh gate so the injection has an effect."""
    with torch.no_grad():
        injector.gate_alpha.fill_(alpha)
    return injector


def _inputs(batch: int = 2, seq: int = 10, n: int = 4, k: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    detail = torch.randn(batch, k, n, D, generator=g)
    return ids, detail


def test_identity_at_initialisation_llama_and_qwen2() -> None:
    for model in (_llama(), _qwen2()):
        ids, detail = _inputs()
        injector = DetailInjector(D)
        with torch.no_grad():
            base = model(ids).logits
            with inject(model, injector, detail, slice(3, 7)) as state:
                injected = model(ids).logits
        assert torch.equal(base, injected)
        assert state.applied == {2: 1, 4: 1, 6: 1, 8: 1}  # the hooks did run, and wrote a zero delta


def test_open_gate_changes_only_positions_from_the_span_on() -> None:
    model = _llama()
    ids, detail = _inputs()
    injector = _open(DetailInjector(D))
    with torch.no_grad():
        base = model(ids).logits
        with inject(model, injector, detail, slice(3, 7)):
            injected = model(ids).logits
    torch.testing.assert_close(injected[:, :3], base[:, :3], rtol=0, atol=1e-6)  # causal: before the span
    changed = (injected - base).abs().amax(dim=-1)  # (B, S)
    assert bool((changed[:, 3:] > 1e-4).all())


@pytest.mark.parametrize("factory", [_llama, _qwen2])
def test_layer_one_equals_adding_the_delta_to_the_embeddings(factory) -> None:
    """Known answer: injecting at "LLM layer 1" is adding the delta to the input embeddings."""
    model = factory()
    ids, detail = _inputs()
    injector = _open(DetailInjector(D, InjectionConfig(layers=(1,))), 0.7)
    with torch.no_grad():
        with inject(model, injector, detail, slice(2, 6)):
            injected = model(ids).logits
        embeds = model.get_input_embeddings()(ids)
        reference = embeds.clone()
        reference[:, 2:6] += injector(embeds[:, 2:6], detail, 0)
        expected = model(inputs_embeds=reference).logits
    torch.testing.assert_close(injected, expected, rtol=1e-5, atol=1e-5)


def test_layer_number_is_the_input_of_that_decoder_layer() -> None:
    """Layer 3 (1-based) edits the input of layers[2]: layers[1]'s input is untouched, layers[2]'s is not."""
    model = _llama()
    ids, detail = _inputs()
    seen: dict[int, torch.Tensor] = {}
    probes = [
        decoder_layers(model)[i].register_forward_hook(
            lambda m, a, kw, out, i=i: seen.__setitem__(i, a[0]), with_kwargs=True
        )
        for i in (1, 2)
    ]
    try:
        with torch.no_grad():
            model(ids)
            base = dict(seen)
            with inject(model, _open(DetailInjector(D, InjectionConfig(layers=(3,)))), detail, slice(3, 7)):
                model(ids)
    finally:
        for probe in probes:
            probe.remove()
    assert torch.equal(seen[1], base[1])
    assert not torch.allclose(seen[2][:, 3:7], base[2][:, 3:7])
    torch.testing.assert_close(seen[2][:, :3], base[2][:, :3], rtol=0, atol=0)
    torch.testing.assert_close(seen[2][:, 7:], base[2][:, 7:], rtol=0, atol=0)  # same layer: only the span


def test_router_weights_sum_to_one_and_fuse_is_the_weighted_sum() -> None:
    injector = DetailInjector(D)
    g = torch.Generator().manual_seed(3)
    visual, detail = torch.randn(2, 5, D, generator=g), torch.randn(2, 4, 5, D, generator=g)
    with torch.no_grad():
        weights = injector.router_weights(visual, detail, 1)
        block = injector.blocks[1]
        q = block.router_query(visual.mean(1))
        keys = block.router_key(detail.mean(2))
        logits = torch.einsum("bkd,bd->bk", keys, q) / math.sqrt(D)
        fused = injector.fuse(visual, detail, 1)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(weights, torch.softmax(logits, -1))
    torch.testing.assert_close(fused, torch.einsum("bk,bknd->bnd", weights, detail))


def test_router_selects_a_planted_stack_when_its_logit_is_forced() -> None:
    injector = DetailInjector(D)
    block = injector.blocks[0]
    with torch.no_grad():
        for lin in (block.router_query[1], block.router_key[1]):
            lin.weight.copy_(10 * torch.eye(D))
            lin.bias.zero_()
    g = torch.Generator().manual_seed(4)
    visual = torch.randn(2, 5, D, generator=g)
    detail = torch.randn(2, 4, 5, D, generator=g)
    detail[:, 2] = visual + 0.01 * torch.randn(2, 5, D, generator=g)  # planted: matches the visual stream
    with torch.no_grad():
        weights = injector.router_weights(visual, detail, 0)
        fused = injector.fuse(visual, detail, 0)
    assert weights.argmax(-1).tolist() == [2, 2]
    assert bool((weights[:, 2] > 0.999).all())
    torch.testing.assert_close(fused, detail[:, 2], rtol=1e-3, atol=1e-3)


def test_hooks_removed_after_the_block_and_after_an_exception() -> None:
    model = _llama()
    ids, detail = _inputs()
    injector = _open(DetailInjector(D))
    layers = decoder_layers(model)
    with torch.no_grad():
        base = model(ids).logits
        with inject(model, injector, detail, slice(3, 7)):
            assert sum(len(layer._forward_pre_hooks) for layer in layers) == 4
        assert all(not layer._forward_pre_hooks for layer in layers)
        with pytest.raises(RuntimeError, match="boom"), inject(model, injector, detail, slice(3, 7)):
            raise RuntimeError("boom")
        assert all(not layer._forward_pre_hooks for layer in layers)
        assert torch.equal(model(ids).logits, base)


def _greedy_without_cache(model, ids, mask, steps):
    seq, mask = ids, mask
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=seq, attention_mask=mask, position_ids=positions, use_cache=False).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return seq


def test_generate_with_kv_cache_matches_cache_free_greedy_loop_with_left_padding() -> None:
    model = _llama()
    ids, detail = _inputs(batch=2, seq=10, n=4)
    ids[0, :2] = 0  # row 0 left-padded by 2: its image span starts 2 later
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    starts = torch.tensor([4, 2])
    injector = _open(DetailInjector(D, InjectionConfig(residual_scale=4.0)))
    steps = 6
    with torch.no_grad():
        with inject(model, injector, detail, starts):
            loop = _greedy_without_cache(model, ids, mask, steps)
        with inject(model, injector, detail, starts) as state:
            generated = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False, pad_token_id=0
            )
        plain = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False, pad_token_id=0
        )
    assert torch.equal(generated, loop)
    assert state.applied == {2: 1, 4: 1, 6: 1, 8: 1}  # prefill only
    assert state.skipped == {layer: steps - 1 for layer in (2, 4, 6, 8)}  # cached decoding steps
    assert not torch.equal(generated, plain)  # the injection did steer generation


def test_span_in_a_later_chunk_is_offset_by_the_cache_length() -> None:
    """Text prefix cached first, then a chunk holding the image: same logits as one full forward."""
    model = _llama()
    ids, detail = _inputs()
    injector = _open(DetailInjector(D))
    with torch.no_grad(), inject(model, injector, detail, slice(3, 7)) as state:
        full = model(ids).logits
        prefix = model(ids[:, :3], use_cache=True)
        chunk = model(ids[:, 3:], cache=prefix.past_key_values, use_cache=True).logits
    torch.testing.assert_close(chunk, full[:, 3:], rtol=1e-5, atol=1e-5)
    assert state.applied == {2: 2, 4: 2, 6: 2, 8: 2} and state.skipped == {2: 1, 4: 1, 6: 1, 8: 1}


def test_batch_multiple_repeats_detail_per_row() -> None:
    model = _llama()
    ids, detail = _inputs(batch=2)
    injector = _open(DetailInjector(D))
    with torch.no_grad():
        with inject(model, injector, detail.repeat_interleave(2, 0), slice(3, 7)):
            expected = model(ids.repeat_interleave(2, 0)).logits
        with inject(model, injector, detail, slice(3, 7)):
            got = model(ids.repeat_interleave(2, 0)).logits
    torch.testing.assert_close(got, expected)


def test_bad_layers_and_inputs_raise_input_error() -> None:
    model = _llama(layers=6)
    ids, detail = _inputs()
    with pytest.raises(InputError, match="out of range"), inject(model, DetailInjector(D), detail, slice(3, 7)):
        pass
    assert all(not layer._forward_pre_hooks for layer in decoder_layers(model))
    for layers in ((0, 2), (2, 2), ()):
        with pytest.raises(InputError):
            InjectionConfig(layers=layers)
    with (
        pytest.raises(InputError, match="covers"),
        inject(model, DetailInjector(D, InjectionConfig(layers=(2,))), detail, slice(3, 9)),
    ):
        pass
    with (
        pytest.raises(InputError, match="width"),
        inject(model, DetailInjector(16, InjectionConfig(layers=(2,))), detail, slice(3, 7)),
    ):
        pass
    injector = _open(DetailInjector(D, InjectionConfig(layers=(2,))))
    with (
        torch.no_grad(),
        pytest.raises(InputError, match="whole image span"),
        inject(model, injector, detail, slice(3, 7)),
    ):
        model(ids[:, :5], use_cache=True)  # a prefill chunk that splits the image span


def test_gradients_reach_only_the_injector() -> None:
    model = _llama()
    model.requires_grad_(False)
    ids, detail = _inputs()
    injector = _open(DetailInjector(D), 0.5)
    with inject(model, injector, detail, slice(3, 7)):
        loss = model(ids).logits[:, 5:].pow(2).mean()
    loss.backward()
    for name, param in injector.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in model.parameters())
    # at initialisation (alpha = 0) the tanh gate itself still learns
    fresh = DetailInjector(D)
    with inject(model, fresh, detail, slice(3, 7)):
        model(ids).logits[:, 5:].pow(2).mean().backward()
    assert float(fresh.gate_alpha.grad.abs().min()) > 0


def test_image_span_starts_and_llava_layers() -> None:
    ids = torch.tensor([[0, 0, 5, 9, 9, 9, 7], [5, 9, 9, 9, 7, 7, 7]])
    starts, length = image_span_starts(ids, 9)
    assert starts.tolist() == [3, 1] and length == 3
    with pytest.raises(InputError, match="contiguous"):
        image_span_starts(torch.tensor([[9, 1, 9, 9]]), 9)
    with pytest.raises(InputError, match="different numbers"):
        image_span_starts(torch.tensor([[9, 9, 1], [9, 1, 1]]), 9)
    text = LlamaConfig(
        vocab_size=VOCAB, hidden_size=D, intermediate_size=64, num_hidden_layers=8, num_attention_heads=4
    )
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    llava = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_index=VOCAB - 1)
    )
    assert decoder_layers(llava) is llava.model.language_model.layers
    with pytest.raises(InputError, match="decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))

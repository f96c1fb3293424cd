"""Self-attention capture inside a real diffusers UNet: known answers, no change to the model, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from rsvl.attention import diffusers_capture
from rsvl.attention.diffusers_capture import (
    SelfAttentionCaptureProcessor,
    SelfAttentionStore,
    capture_self_attention,
    self_attention_grids,
)
from rsvl.errors import InputError
from rsvl.models.stable_diffusion import tiny_stable_diffusion


@pytest.fixture(scope="module")
def parts():
    return tiny_stable_diffusion(seed=0)


def _manual_mean_probs(attn: Attention, hidden: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T * scale) from the module's own weights, averaged over batch and heads."""
    b, n, _ = hidden.shape
    q = attn.to_q(hidden).view(b, n, attn.heads, -1).transpose(1, 2)
    k = attn.to_k(hidden).view(b, n, attn.heads, -1).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
    return probs.mean(dim=(0, 1))


@pytest.mark.parametrize("chunk_elements", [None, 16 * 16])  # 16*16: one (batch, head) pair per chunk
@torch.no_grad()
def test_single_module_equals_manual_softmax_and_output_unchanged(chunk_elements, monkeypatch):
    if chunk_elements is not None:
        monkeypatch.setattr(diffusers_capture, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(1)
    attn = Attention(query_dim=24, heads=3, dim_head=8).eval()
    h1, h2 = torch.randn(2, 16, 24), torch.randn(2, 16, 24)  # 16 tokens -> a 4x4 grid
    expected_out = attn(h1)
    store = SelfAttentionStore([4])
    attn.set_processor(SelfAttentionCaptureProcessor(store, AttnProcessor2_0()))
    out = attn(h1)
    attn(h2)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=1e-5)
    (captured,) = store.maps()
    expected = ((_manual_mean_probs(attn, h1) + _manual_mean_probs(attn, h2)) / 2).numpy()
    assert captured.grid == (4, 4)
    np.testing.assert_allclose(captured.matrix, expected, atol=1e-6)
    assert store.counts[(4, 4)] == 2 * 2 * 3  # two calls x batch 2 x 3 heads


@torch.no_grad()
def test_unet_output_unchanged_and_counts_match_module_layout(parts):
    torch.manual_seed(2)
    latent, text = torch.randn(1, 4, 8, 8), parts.null_text_embedding()
    reference = parts.unet(latent, 10, encoder_hidden_states=text).sample
    with capture_self_attention(parts.unet, [8, 4, 2, 1]) as store:
        out = parts.unet(latent, 10, encoder_hidden_states=text).sample
        parts.unet(latent, 500, encoder_hidden_states=text)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    maps = store.maps()
    assert [m.grid for m in maps] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    for m in maps:
        np.testing.assert_allclose(m.matrix.sum(axis=1), 1.0, atol=1e-5)
        assert (m.matrix >= 0).all()
    modules_per_grid: dict[tuple[int, int], int] = {}
    for grid in self_attention_grids(parts.unet, (8, 8)).values():
        modules_per_grid[grid] = modules_per_grid.get(grid, 0) + 1
    heads = parts.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads
    assert modules_per_grid == {(8, 8): 3, (4, 4): 3, (2, 2): 3, (1, 1): 1}
    assert store.counts == {grid: n * heads * 2 for grid, n in modules_per_grid.items()}


@torch.no_grad()
def test_only_requested_grids_are_stored(parts):
    latent = torch.randn(1, 4, 8, 8)
    with capture_self_attention(parts.unet, [4]) as store:
        parts.unet(latent, 10, encoder_hidden_states=parts.null_text_embedding())
    assert set(store.sums) == {(4, 4)}
    assert set(store.seen) == {(8, 8), (4, 4), (2, 2), (1, 1)}
    assert store.sums[(4, 4)].dtype == torch.float32 and store.sums[(4, 4)].shape == (16, 16)


@torch.no_grad()
def test_non_square_latent_grids(parts):
    latent = torch.randn(1, 4, 8, 6)
    grids = set(self_attention_grids(parts.unet, (8, 6)).values())
    assert grids == {(8, 6), (4, 3), (2, 2), (1, 1)}
    with capture_self_attention(parts.unet, [(4, 3), (8, 6)]) as store:
        parts.unet(latent, 10, encoder_hidden_states=parts.null_text_embedding())
    assert [m.grid for m in store.maps()] == [(4, 3), (8, 6)]
    assert store.maps()[1].matrix.shape == (48, 48)


def test_processors_restored_after_exit_and_after_error(parts):
    before = dict(parts.unet.attn_processors)
    with capture_self_attention(parts.unet, [8]):
        during = parts.unet.attn_processors
        assert all(isinstance(p, SelfAttentionCaptureProcessor) == ("attn1" in n) for n, p in during.items())
    assert all(parts.unet.attn_processors[n] is p for n, p in before.items())
    with pytest.raises(RuntimeError, match="boom"), capture_self_attention(parts.unet, [8]):
        raise RuntimeError("boom")
    assert all(parts.unet.attn_processors[n] is p for n, p in before.items())
    assert not parts.unet._forward_pre_hooks


def test_bad_requests_raise_input_error():
    with pytest.raises(InputError):
        SelfAttentionStore([])
    with pytest.raises(InputError):
        SelfAttentionStore([0])
    with pytest.raises(InputError, match="latent shape"):
        SelfAttentionStore([4]).grid_for(12)
    store = SelfAttentionStore([4])
    store.latent_hw = (8, 8)
    with pytest.raises(InputError, match="match no level"):
        store.grid_for(12)
    with pytest.raises(InputError, match="no self-attention"), capture_self_attention(torch.nn.Linear(2, 2), [4]):
        pass


def test_sd14_layout_grids_at_512_px():
    """SD-1.4 UNet (on the meta device: no memory): self-attention at 64/32/16 (5 modules each) and 8 (mid)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8
        )
    counts: dict[tuple[int, int], int] = {}
    for grid in self_attention_grids(unet, (64, 64)).values():
        counts[grid] = counts.get(grid, 0) + 1
    assert counts == {(64, 64): 5, (32, 32): 5, (16, 16): 5, (8, 8): 1}

"""Fusion of cross- and self-attention: known answers on block-structured self-attention."""

from __future__ import annotations

import numpy as np
import pytest

from rsvl.attention import CrossAttention, SelfAttention
from rsvl.errors import InputError
from rsvl.methods.zeroov.fusion import fuse, normalise, resize_map


def two_region_attention(h: int = 6, w: int = 6) -> tuple[SelfAttention, np.ndarray]:
    """Cells in the left 2 columns attend uniformly among themselves; the rest among themselves."""
    left = np.zeros((h, w), dtype=bool)
    left[:, :2] = True
    flat = left.reshape(-1)
    s = (flat[:, None] == flat[None, :]).astype(np.float32)
    s /= s.sum(axis=1, keepdims=True)
    return SelfAttention(s, (h, w)), left


@pytest.mark.parametrize("mode", ["weighted_sum", "cosine"])
def test_a_corner_response_fills_its_region(mode):
    attn, left = two_region_attention()
    cross = np.zeros((6, 6), dtype=np.float32)
    cross[0, 0] = 1.0  # the VLM looked at a corner of the left object only
    fused = fuse(CrossAttention(cross), attn, mode)
    assert fused.shape == (6, 6)
    np.testing.assert_allclose(fused[left], 1.0, atol=1e-6)
    np.testing.assert_allclose(fused[~left], 0.0, atol=1e-6)


def test_weighted_sum_is_cross_weighted_rows():
    rng = np.random.default_rng(0)
    s = rng.random((9, 9)).astype(np.float32)
    s /= s.sum(axis=1, keepdims=True)
    a = rng.random((3, 3)).astype(np.float32)
    expected = normalise(((a.reshape(-1) / a.sum()) @ s).reshape(3, 3))
    cross, attn = CrossAttention(a), SelfAttention(s, (3, 3))
    np.testing.assert_allclose(fuse(cross, attn, "weighted_sum"), expected, atol=1e-6)
    cos = (s @ a.reshape(-1)) / (np.linalg.norm(s, axis=1) * np.linalg.norm(a))
    np.testing.assert_allclose(fuse(cross, attn, "cosine"), normalise(cos.reshape(3, 3)), atol=1e-5)


def test_cross_map_is_resized_to_the_self_attention_grid():
    attn, left = two_region_attention(8, 8)
    cross = np.zeros((2, 2), dtype=np.float32)
    cross[:, 0] = 1.0  # left half of the image on a coarse grid
    fused = fuse(CrossAttention(cross), attn)
    assert fused.shape == (8, 8)
    assert fused[left].mean() > fused[~left].mean()


def test_zero_cross_attention_gives_zero_map_and_unknown_mode_raises():
    attn, _ = two_region_attention()
    assert not fuse(CrossAttention(np.zeros((3, 3))), attn).any()
    with pytest.raises(InputError, match="unknown fusion mode"):
        fuse(CrossAttention(np.ones((3, 3))), attn, "product")


def test_normalise_and_resize():
    np.testing.assert_allclose(normalise(np.array([[2.0, 4.0], [6.0, 10.0]])), [[0, 0.25], [0.5, 1.0]])
    assert not normalise(np.full((2, 2), 3.0)).any()
    big = resize_map(np.eye(4, dtype=np.float32), (8, 8))
    assert big.shape == (8, 8) and big[0, 0] > big[0, 7]

"""Attention containers, resizing of self-attention between grids, merging, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from rsvl.attention import CrossAttention, SelfAttention, merge_self_attention, resize_self_attention
from rsvl.errors import InputError
from rsvl.registry import Registry


def random_attention(side: int, seed: int = 0) -> SelfAttention:
    m = np.random.default_rng(seed).random((side * side, side * side)).astype(np.float32)
    return SelfAttention(m / m.sum(axis=1, keepdims=True), (side, side), "test", True)


def test_containers_validate():
    with pytest.raises(InputError):
        SelfAttention(np.ones((4, 4)), (3, 3))
    with pytest.raises(InputError):
        CrossAttention(np.ones(4))
    with pytest.raises(InputError):
        CrossAttention(np.array([[np.nan]]))
    assert CrossAttention(np.ones((2, 3))).grid == (2, 3)


def test_resize_keeps_rows_stochastic_and_queries_nearest():
    attn = random_attention(4)
    big = resize_self_attention(attn, (8, 8))
    assert big.matrix.shape == (64, 64)
    np.testing.assert_allclose(big.matrix.sum(axis=1), 1.0, rtol=1e-5)
    # the four fine cells covered by coarse cell (1, 2) share its key map
    rows = [r * 8 + c for r in (2, 3) for c in (4, 5)]
    for row in rows[1:]:
        np.testing.assert_allclose(big.matrix[row], big.matrix[rows[0]])


def test_resizing_a_block_map_keeps_the_blocks():
    side = 4
    left = np.zeros((side, side), dtype=bool)
    left[:, :2] = True
    flat = left.reshape(-1)
    m = (flat[:, None] == flat[None, :]).astype(np.float32)
    attn = SelfAttention(m / m.sum(axis=1, keepdims=True), (side, side))
    big = resize_self_attention(attn, (8, 8)).matrix.reshape(8, 8, 8, 8)
    # a query on the far left puts (almost) all its mass on the left half
    assert big[3, 0, :, :4].sum() > 0.85


def test_merge_weights_and_provenance():
    a, b = random_attention(4, 1), random_attention(8, 2)
    merged = merge_self_attention([a, b])
    assert merged.grid == (8, 8)
    expected = (resize_self_attention(a, (8, 8)).matrix + b.matrix) / 2
    np.testing.assert_allclose(merged.matrix, expected, rtol=1e-5, atol=1e-7)
    only_b = merge_self_attention([a, b], weights=[0, 1])
    np.testing.assert_allclose(only_b.matrix, b.matrix, rtol=1e-5)
    fake = SelfAttention(b.matrix, (8, 8), "random", False)
    assert not merge_self_attention([a, fake]).real_weights
    with pytest.raises(InputError):
        merge_self_attention([])
    with pytest.raises(InputError):
        merge_self_attention([a], weights=[-1])


def test_registry_names_and_errors():
    reg: Registry[int] = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    assert reg.get("b") == 2
    with pytest.raises(InputError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(RuntimeError):
        reg.register("a")(3)

"""Qwen-VL image-token layout and text-to-image attention maps, with planted attention peaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rsvl.attention.qwen_vl import (
    capture_attention_rows,
    grid_cell_to_pixel,
    image_token_layout,
    text_to_image_attention,
)
from rsvl.errors import InputError
from rsvl.models.qwen2_5_vl import build_qwen2_5_vl_processor, build_qwen2_tokenizer

# 130x290 px with at most 24 cells of 28x28: smart_resize gives 84x196 px (y x0.646, x x0.676),
# 6x14 patches, a 3x7 merged grid: non-square and resized on each axis differently.
H, W = 130, 290
GRID = (3, 7)
CELL = (1, 5)  # x in [207.1, 248.6), y in [43.3, 86.7) of the original image
RECT = (212, 48, 244, 82)  # x0, y0, x1, y1 strictly inside that cell


@pytest.fixture(scope="module")
def processor():
    return build_qwen2_5_vl_processor(build_qwen2_tokenizer(), min_pixels=28 * 28, max_pixels=28 * 28 * 24)


def _marked_image() -> np.ndarray:
    img = np.full((H, W, 3), 20, np.uint8)
    x0, y0, x1, y1 = RECT
    img[y0:y1, x0:x1] = 255
    return img


def _encode(processor, img: np.ndarray):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Locate: the roof"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=[img], return_tensors="pt")


def _planted(length: int, key: int, query: int, heads: int = 3, seed: int = 0) -> torch.Tensor:
    """Row-stochastic (1, heads, L, L) attention: small noise everywhere, a peak at (query, key)."""
    gen = torch.Generator().manual_seed(seed)
    attn = torch.rand(1, heads, length, length, generator=gen) * 0.1
    attn[0, :, query, key] += 5.0
    return attn / attn.sum(-1, keepdim=True)


def test_planted_token_peak_maps_to_the_right_cell_and_pixel(processor):
    img = _marked_image()
    inputs = _encode(processor, img)
    thw = inputs["image_grid_thw"]
    assert thw.tolist() == [[1, 6, 14]]  # the processor did resize (130x290 -> 84x196)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    positions, grid = image_token_layout(inputs["input_ids"], thw, image_id, merge_size=2)
    assert grid == GRID

    # which merged token holds the bright rectangle, read from the processor's own pixel_values
    tokens = inputs["pixel_values"].reshape(grid[0] * grid[1], -1).mean(dim=1)
    bright = int(tokens.argmax())
    assert divmod(bright, grid[1]) == CELL  # row-major over the merged grid

    length = inputs["input_ids"].shape[1]
    query = length - 4
    layers = [_planted(length, int(positions[bright]), query, seed=s) for s in range(3)]
    amap = text_to_image_attention(layers, query, positions, grid, [0.1, 0.3, 0.6])
    assert amap.shape == GRID
    assert np.unravel_index(int(amap.argmax()), amap.shape) == CELL
    x, y = grid_cell_to_pixel(*CELL, grid, (H, W))
    x0, y0, x1, y1 = RECT
    assert x0 <= x < x1 and y0 <= y < y1
    assert img[int(y), int(x)].tolist() == [255, 255, 255]


def test_layout_positions_follow_vision_start_and_count_matches_grid(processor):
    inputs = _encode(processor, _marked_image())
    ids = inputs["input_ids"][0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    start_id = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    positions, grid = image_token_layout(inputs["input_ids"], inputs["image_grid_thw"], image_id, 2)
    assert positions.numel() == grid[0] * grid[1] == 21
    assert int(ids[positions[0] - 1]) == start_id
    assert torch.equal(positions, torch.arange(int(positions[0]), int(positions[0]) + 21))


def test_inconsistent_token_count_grid_or_video_raises():
    ids = torch.tensor([[5, 9, 9, 9, 9, 9, 9, 7]])
    positions, grid = image_token_layout(ids, torch.tensor([[1, 4, 6]]), 9, 2)
    assert grid == (2, 3) and positions.tolist() == [1, 2, 3, 4, 5, 6]
    with pytest.raises(InputError, match="found 6 image tokens"):
        image_token_layout(ids, torch.tensor([[1, 4, 8]]), 9, 2)
    with pytest.raises(InputError, match="found 5 image tokens"):
        image_token_layout(torch.tensor([[5, 9, 9, 9, 9, 9, 7]]), torch.tensor([[1, 4, 6]]), 9, 2)
    with pytest.raises(InputError, match="t = 1"):
        image_token_layout(ids, torch.tensor([[2, 2, 6]]), 9, 2)
    with pytest.raises(InputError, match="divisible"):
        image_token_layout(ids, torch.tensor([[1, 3, 8]]), 9, 2)
    with pytest.raises(InputError, match="consecutive"):
        image_token_layout(torch.tensor([[9, 9, 9, 1, 9, 9, 9]]), torch.tensor([[1, 4, 6]]), 9, 2)
    with pytest.raises(InputError, match="one image"):
        image_token_layout(ids, torch.tensor([[1, 4, 6], [1, 4, 6]]), 9, 2)


def test_layers_are_head_averaged_and_weighted_with_normalised_weights():
    length, query = 10, 8
    positions = torch.tensor([2, 3, 4, 5, 6, 7])
    a = _planted(length, 3, query, seed=1)
    b = _planted(length, 6, query, seed=2)
    row_a = a[0, :, query, positions].mean(0).reshape(2, 3).numpy()
    row_b = b[0, :, query, positions].mean(0).reshape(2, 3).numpy()
    got = text_to_image_attention([a, b], query, positions, (2, 3), [1.0, 3.0])
    np.testing.assert_allclose(got, 0.25 * row_a + 0.75 * row_b, rtol=1e-6)
    # the query row alone, as (1, H, 1, L) or (1, H, L), gives the same map
    rows = [a[:, :, query : query + 1], b[:, :, query]]
    np.testing.assert_allclose(text_to_image_attention(rows, query, positions, (2, 3), [1, 3]), got, rtol=1e-6)
    np.testing.assert_allclose(text_to_image_attention([a], query, positions, (2, 3)), row_a, rtol=1e-6)
    with pytest.raises(InputError, match="one non-negative weight per layer"):
        text_to_image_attention([a, b], query, positions, (2, 3), [1.0])
    with pytest.raises(InputError, match="do not fill"):
        text_to_image_attention([a], query, positions, (2, 2))


def test_grid_cell_to_pixel_scales_each_axis_independently():
    assert grid_cell_to_pixel(0, 0, (3, 7), (130, 290)) == pytest.approx((290 / 14, 130 / 6))
    assert grid_cell_to_pixel(2, 6, (3, 7), (130, 290)) == pytest.approx((6.5 * 290 / 7, 2.5 * 130 / 3))
    with pytest.raises(InputError, match="outside"):
        grid_cell_to_pixel(3, 0, (3, 7), (130, 290))


class _ToyAttention(nn.Module):
    """Returns (output, weights) like transformers' eager attention, or (output, None) like SDPA."""

    def __init__(self, weights: torch.Tensor | None):
        super().__init__()
        self.weights = weights

    def forward(self, x: torch.Tensor):
        return x, self.weights


def test_capture_keeps_only_the_query_row_and_removes_hooks():
    weights = _planted(6, 2, 4)
    module = _ToyAttention(weights)
    with capture_attention_rows({7: module}, 4) as rows:
        module(torch.zeros(1))
    assert set(rows) == {7} and rows[7].shape == (1, 3, 6)
    assert torch.equal(rows[7], weights[:, :, 4, :])
    assert not module._forward_hooks
    sdpa_like = _ToyAttention(None)
    with pytest.raises(RuntimeError, match="eager"), capture_attention_rows({0: sdpa_like}, 0):
        sdpa_like(torch.zeros(1))
    assert not sdpa_like._forward_hooks

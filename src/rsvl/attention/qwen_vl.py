"""Where Qwen2-VL / Qwen2.5-VL put an image's tokens, and one text position's attention over them.

These helpers are model-agnostic (pure torch/numpy): they read the token ids, the image grid the
processor reports and attention tensors, so they can be tested with planted values.

Layout (transformers' ``Qwen2VLImageProcessor`` + ``Qwen2_5_VLProcessor``): the processor resizes
the image with ``smart_resize`` to ``H' x W'`` (both multiples of ``patch_size * merge_size`` = 28,
each axis scaled on its own, so the **whole** original image is stretched onto the grid), cuts it
into ``h = H'/14`` by ``w = W'/14`` patches, and the vision tower merges ``merge x merge`` blocks of
patches into one token. ``image_grid_thw = [t, h, w]`` counts patches; the prompt holds
``t*h*w / merge**2`` consecutive ``<|image_pad|>`` tokens, in row-major order over the merged grid
``(h/merge, w/merge)``. So image token ``k`` is merged cell ``(k // gw, k % gw)``, and that cell
covers the rectangle ``[c*W/gw, (c+1)*W/gw) x [r*H/gh, (r+1)*H/gh)`` of the original image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from rsvl.errors import InputError

__all__ = ["capture_attention_rows", "grid_cell_to_pixel", "image_token_layout", "text_to_image_attention"]


def image_token_layout(
    input_ids: torch.Tensor, image_grid_thw: torch.Tensor, image_token_id: int, merge_size: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Positions of one image's tokens in the sequence and the merged grid they form.

    Args:
        input_ids: ``(1, L)`` (or ``(L,)``) token ids of one prompt holding one image.
        image_grid_thw: ``(1, 3)`` (or ``(3,)``) ``[t, h, w]`` in patches, as the processor returns.
        image_token_id: the id of ``<|image_pad|>`` (``model.config.image_token_id``).
        merge_size: the vision tower's ``spatial_merge_size`` (2 for Qwen2-VL / Qwen2.5-VL).

    Returns:
        ``positions``: ``(gh*gw,)`` long tensor of the image tokens' sequence indices, ascending
        (token ``k`` is grid cell ``(k // gw, k % gw)``); ``grid``: ``(gh, gw) = (h/merge, w/merge)``.

    Raises:
        InputError: more than one prompt or image, a video (``t != 1``), a grid not divisible by
        ``merge_size``, or a number of image tokens other than ``t*h*w / merge**2`` (or not one block).
    """
    ids = torch.as_tensor(input_ids)
    if ids.ndim == 2:
        if ids.shape[0] != 1:
            raise InputError(f"expected one prompt (batch 1), got input_ids of shape {tuple(ids.shape)}")
        ids = ids[0]
    if ids.ndim != 1:
        raise InputError(f"input_ids must be (1, L) or (L,), got shape {tuple(ids.shape)}")
    thw = torch.as_tensor(image_grid_thw).reshape(-1)
    if thw.numel() != 3:
        raise InputError(f"expected the [t, h, w] grid of exactly one image, got image_grid_thw {image_grid_thw!r}")
    t, h, w = (int(v) for v in thw)
    if t != 1:
        raise InputError(f"only single images are supported (t = 1), got a temporal grid of {t} (a video?)")
    if merge_size < 1 or h % merge_size or w % merge_size:
        raise InputError(f"patch grid {h}x{w} is not divisible by the merge size {merge_size}")
    gh, gw = h // merge_size, w // merge_size
    positions = torch.nonzero(ids == int(image_token_id), as_tuple=False).flatten()
    expected = t * h * w // merge_size**2
    if positions.numel() != expected:
        raise InputError(
            f"found {positions.numel()} image tokens (id {image_token_id}) but image_grid_thw [{t}, {h}, {w}] "
            f"with merge size {merge_size} needs t*h*w/merge^2 = {expected}; the prompt and the image grid disagree"
        )
    if int(positions[-1] - positions[0]) + 1 != expected:
        raise InputError("the image tokens are not one consecutive block; expected one image in the prompt")
    return positions, (gh, gw)


def _query_row(attn: torch.Tensor, query_index: int, layer: int) -> torch.Tensor:
    """The ``(heads, L)`` attention row of ``query_index`` from a full matrix or an already-sliced row."""
    a = torch.as_tensor(attn)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise InputError(f"layer {layer}: expected batch 1, got attention of shape {tuple(a.shape)}")
        a = a[0]
        if a.shape[1] == a.shape[2]:
            length = a.shape[2]
            if not -length <= query_index < length:
                raise InputError(f"query index {query_index} is outside a sequence of {length} tokens")
            return a[:, query_index, :]
        if a.shape[1] == 1:
            return a[:, 0, :]
        raise InputError(f"layer {layer}: attention of shape {tuple(attn.shape)} is neither (1, H, L, L) nor a row")
    if a.ndim == 3 and a.shape[0] == 1:
        return a[0]
    raise InputError(
        f"layer {layer}: expected attention (1, heads, L, L), (1, heads, 1, L) or (1, heads, L), got {tuple(a.shape)}"
    )


def text_to_image_attention(
    layer_attentions: Sequence[torch.Tensor],
    query_index: int,
    positions: torch.Tensor,
    grid: tuple[int, int],
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """One text position's attention to the image tokens, head-averaged and layer-weighted, on the grid.

    For each layer: the attention row of ``query_index`` (a full ``(1, heads, L, L)`` matrix, or the
    row alone as ``(1, heads, 1, L)`` / ``(1, heads, L)``), averaged over heads, read at
    ``positions`` and reshaped row-major to ``grid``. The layers are summed with ``weights``
    normalised to sum 1 (uniform when None). The values are attention probabilities (non-negative,
    not renormalised over the image), as float32 ``(gh, gw)``.
    """
    if not layer_attentions:
        raise InputError("no attention layers given")
    weights = [1.0] * len(layer_attentions) if weights is None else [float(v) for v in weights]
    if len(weights) != len(layer_attentions) or any(v < 0 for v in weights) or sum(weights) <= 0:
        raise InputError(
            f"need one non-negative weight per layer ({len(layer_attentions)}) with a positive sum, got {weights}"
        )
    gh, gw = (int(v) for v in grid)
    pos = torch.as_tensor(positions, dtype=torch.long).flatten()
    if pos.numel() != gh * gw:
        raise InputError(f"{pos.numel()} image positions do not fill a {gh}x{gw} grid")
    total = torch.zeros(gh * gw, dtype=torch.float64)
    for layer, (attn, weight) in enumerate(zip(layer_attentions, weights, strict=True)):
        row = _query_row(attn, query_index, layer).detach().to("cpu", torch.float64).mean(dim=0)
        if int(pos.max()) >= row.shape[0]:
            raise InputError(f"layer {layer}: image position {int(pos.max())} beyond the {row.shape[0]} keys")
        total += row[pos] * (weight / sum(weights))
    return total.reshape(gh, gw).numpy().astype(np.float32)


def grid_cell_to_pixel(row: int, col: int, grid: tuple[int, int], image_hw: tuple[int, int]) -> tuple[float, float]:
    """Centre ``(x, y)`` of grid cell ``(row, col)`` in original-image pixel coordinates (pixel edges).

    The processor stretched the whole image onto the grid, each axis on its own, so the cell
    spans ``W/gw`` by ``H/gh`` original pixels: ``x = (col + 0.5) * W / gw``, ``y = (row + 0.5) * H / gh``.
    """
    gh, gw = (int(v) for v in grid)
    height, width = (int(v) for v in image_hw)
    if not (0 <= row < gh and 0 <= col < gw):
        raise InputError(f"cell ({row}, {col}) is outside the {gh}x{gw} grid")
    if height < 1 or width < 1:
        raise InputError(f"image size must be positive, got {height}x{width}")
    return (col + 0.5) * width / gw, (row + 0.5) * height / gh


@contextmanager
def capture_attention_rows(modules: Mapping[int, nn.Module], query_index: int) -> Iterator[dict[int, torch.Tensor]]:
    """Record one query row of the attention weights that each module returns, and nothing else.

    ``modules`` maps a layer index to an attention module whose forward returns
    ``(output, weights)`` with ``weights`` of shape ``(batch, heads, L, L)`` (transformers' eager
    attention does; SDPA / flash return ``None`` and raise here). Inside the ``with`` block every
    forward call stores ``weights[:, :, query_index, :]`` as float32 on the CPU under the layer's
    index, so the full ``L x L`` maps are never kept: a forward with ``output_attentions=True`` would
    hold all of them for every layer at once.
    """
    rows: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(
                    f"layer {layer}'s attention returned no weights: load the model with attn_implementation='eager'"
                )
            rows[layer] = weights[:, :, query_index, :].detach().to("cpu", torch.float32)

        return hook

    handles = [module.register_forward_hook(make_hook(layer)) for layer, module in modules.items()]
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()

"""Record the self-attention probabilities of a diffusers UNet while it runs.

diffusers computes attention inside swappable *attention processors*; the default one
(``AttnProcessor2_0``) calls ``scaled_dot_product_attention`` and never materialises the
probabilities. :class:`SelfAttentionCaptureProcessor` replaces the processor of every ``attn1``
module (the self-attention of each transformer block) with one that computes
``softmax(Q K^T * scale)`` explicitly via ``attn.get_attention_scores``, uses it for the output
exactly as diffusers' ``AttnProcessor`` does, and adds the head-averaged matrix to a running sum in
a :class:`SelfAttentionStore`.

* Only the grids the caller asked for are stored: one ``(N, N)`` float32 sum per grid, never one
  map per call, so a 20-step inversion of SD-1.4 at 512 px keeps 64 MiB (64x64) + 4 MiB (32x32).
  Modules at other grids run their original processor untouched.
* A module's grid follows from its token count ``N`` and the UNet input's latent ``(h, w)``
  (recorded by a forward pre-hook): the UNet halves the grid at every down block with a stride-2,
  padding-1 convolution, so the levels are ``(h, w), (ceil(h/2), ceil(w/2)), ...``. Without a
  recorded latent (a module called on its own) the grid must be square (``N = r*r``).
* :func:`capture_self_attention` installs the processors and restores the originals on exit, also
  when the body raises. :meth:`SelfAttentionStore.maps` gives one row-stochastic
  :class:`~rsvl.attention.maps.SelfAttention` per captured grid: the mean over batch items, heads,
  layers and calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rsvl.attention.maps import SelfAttention
from rsvl.errors import InputError

__all__ = [
    "SelfAttentionCaptureProcessor",
    "SelfAttentionStore",
    "capture_self_attention",
    "is_self_attention_name",
    "self_attention_grids",
]

#: Attention probabilities are computed in chunks of (batch*heads) rows of at most this many elements.
CHUNK_ELEMENTS = 1 << 26

Grid = tuple[int, int]


def _as_grid(resolution: int | Sequence[int]) -> Grid:
    """``r`` -> ``(r, r)``; ``(h, w)`` stays; anything else is an :class:`InputError`."""
    grid = (resolution, resolution) if isinstance(resolution, int) else tuple(int(v) for v in resolution)
    if len(grid) != 2 or min(grid) < 1:
        raise InputError(f"a self-attention resolution is a side r or a grid (h, w) of positive ints: {resolution!r}")
    return grid[0], grid[1]


def _halvings(latent_hw: Grid) -> list[Grid]:
    """The grids of the UNet's levels for a latent of ``latent_hw``, finest first, down to 1x1."""
    h, w = latent_hw
    chain = [(h, w)]
    while (h, w) != (1, 1):
        h, w = -(-h // 2), -(-w // 2)
        chain.append((h, w))
    return chain


def is_self_attention_name(name: str) -> bool:
    """Whether a processor name from ``unet.attn_processors`` belongs to a transformer block's ``attn1``."""
    return name.endswith("attn1.processor")


def self_attention_grids(unet: nn.Module, latent_hw: Grid) -> dict[str, Grid]:
    """The grid each ``attn1`` module of a ``UNet2DConditionModel`` sees for a latent of ``latent_hw``.

    Known without running the model: down block ``i`` works at level ``i`` (every down block but the
    last ends with a downsampler), the mid block at the coarsest level, up block ``j`` at level
    ``n - 1 - j``. Keys are processor names (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor``).
    """
    n_levels = len(unet.config.down_block_types)
    chain = _halvings(_as_grid(latent_hw))
    chain += [chain[-1]] * n_levels
    grids: dict[str, Grid] = {}
    for name in unet.attn_processors:
        if not is_self_attention_name(name):
            continue
        parts = name.split(".")
        if parts[0] == "down_blocks":
            level = int(parts[1])
        elif parts[0] == "mid_block":
            level = n_levels - 1
        elif parts[0] == "up_blocks":
            level = n_levels - 1 - int(parts[1])
        else:
            raise InputError(f"cannot place attention module {name!r}: not in down_blocks, mid_block or up_blocks")
        grids[name] = chain[level]
    return grids


class SelfAttentionStore:
    """Running sums of head-averaged self-attention probabilities, one per requested grid.

    Args:
        resolutions: grids to keep: sides ``r`` (``r x r``) or ``(h, w)`` pairs.
        source: recorded in the maps' ``source`` (with the grid appended).
        real_weights: recorded in the maps.
    """

    def __init__(
        self, resolutions: Iterable[int | Sequence[int]], source: str = "diffusers unet", real_weights: bool = False
    ) -> None:
        self.requested: list[Grid] = list(dict.fromkeys(_as_grid(r) for r in resolutions))
        if not self.requested:
            raise InputError("no self-attention resolutions requested")
        self.source = source
        self.real_weights = real_weights
        self.latent_hw: Grid | None = None
        self.sums: dict[Grid, torch.Tensor] = {}
        self.counts: dict[Grid, int] = {}
        self.seen: dict[Grid, int] = {}

    def grid_for(self, tokens: int) -> Grid:
        """The ``(h, w)`` grid of a module with ``tokens`` query positions in the current UNet call."""
        if self.latent_hw is not None:
            for grid in _halvings(self.latent_hw):
                if grid[0] * grid[1] == tokens:
                    return grid
            raise InputError(
                f"{tokens} tokens match no level of a {self.latent_hw[0]}x{self.latent_hw[1]} latent "
                f"(levels {_halvings(self.latent_hw)}): not a UNet whose down blocks halve the grid"
            )
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise InputError(
                f"cannot tell the grid of {tokens} tokens without the latent shape: call the module through "
                "capture_self_attention(unet, ...) so the UNet input's (h, w) is known"
            )
        return side, side

    def wants(self, grid: Grid) -> bool:
        """Whether maps on ``grid`` are stored."""
        return grid in self.requested

    def add(self, grid: Grid, probs_sum: torch.Tensor, count: int) -> None:
        """Add ``probs_sum`` (the sum of ``count`` ``(N, N)`` probability matrices) to ``grid``'s total."""
        part = probs_sum.detach().float()
        if grid in self.sums:
            self.sums[grid] += part
        else:
            self.sums[grid] = part.clone()
        self.counts[grid] = self.counts.get(grid, 0) + int(count)

    def note(self, grid: Grid) -> None:
        """Remember that a self-attention module ran on ``grid`` (stored or not)."""
        self.seen[grid] = self.seen.get(grid, 0) + 1

    def record_latent(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook of the UNet: keep the spatial shape of its ``sample`` input."""
        sample = args[0] if args else kwargs.get("sample")
        if isinstance(sample, torch.Tensor) and sample.ndim >= 3:
            self.latent_hw = int(sample.shape[-2]), int(sample.shape[-1])

    def maps(self) -> list[SelfAttention]:
        """One map per captured grid, in the order requested: mean over batch items, heads, layers, calls.

        Rows are renormalised to sum to exactly 1 (the mean of row-stochastic matrices is one up
        to rounding, which matters in float16). Grids that were requested but never seen are absent.
        """
        out = []
        for grid in self.requested:
            if grid not in self.sums:
                continue
            mean = self.sums[grid] / self.counts[grid]
            mean = mean / mean.sum(dim=1, keepdim=True).clamp_min(1e-12)
            source = f"{self.source} self-attention {grid[0]}x{grid[1]}".strip()
            out.append(SelfAttention(mean.cpu().numpy(), grid, source, self.real_weights))
        return out


class SelfAttentionCaptureProcessor:
    """An attention processor that computes probabilities explicitly and adds them to a store.

    Used on self-attention modules only: when called with ``encoder_hidden_states`` (cross-
    attention) or on a grid the store does not want, it hands the call to ``original`` unchanged
    (diffusers' default ``AttnProcessor2_0`` when None). Otherwise it follows diffusers'
    ``AttnProcessor`` step by step, so the module's output is the same up to rounding.

    Args:
        store: where the probabilities go.
        original: the processor it replaces.
    """

    def __init__(self, store: SelfAttentionStore, original: Any | None = None) -> None:
        if original is None:
            from diffusers.models.attention_processor import AttnProcessor2_0

            original = AttnProcessor2_0()
        self.store = store
        self.original = original

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        shape = hidden_states.shape
        tokens = shape[-2] if hidden_states.ndim == 3 else shape[-2] * shape[-1]
        grid = self.store.grid_for(int(tokens))
        self.store.note(grid)
        if not self.store.wants(grid):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        return self._attend(attn, hidden_states, attention_mask, temb, grid)

    def _attend(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
        grid: Grid,
    ) -> torch.Tensor:
        """diffusers' ``AttnProcessor`` for self-attention, keeping the probabilities' sum."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)

        hidden_states = self._probabilities_times_values(attn, query, key, value, attention_mask, grid)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _probabilities_times_values(
        self,
        attn: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        grid: Grid,
    ) -> torch.Tensor:
        """``softmax(Q K^T * scale) V`` over (batch*heads) in chunks, summing the probabilities into the store."""
        rows, n_q, _ = query.shape
        chunk = max(1, CHUNK_ELEMENTS // max(1, n_q * key.shape[1]))
        outputs = []
        total = torch.zeros(n_q, key.shape[1], dtype=torch.float32, device=query.device)
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            mask = None if attention_mask is None else attention_mask[start:stop]
            probs = attn.get_attention_scores(query[start:stop], key[start:stop], mask)
            outputs.append(torch.bmm(probs, value[start:stop]))
            total += probs.float().sum(dim=0)
        self.store.add(grid, total, rows)
        return torch.cat(outputs, dim=0)


@contextmanager
def capture_self_attention(
    unet: nn.Module,
    resolutions: Iterable[int | Sequence[int]],
    source: str = "diffusers unet",
    real_weights: bool = False,
) -> Iterator[SelfAttentionStore]:
    """Install capturing processors on every ``attn1`` of ``unet`` for the ``with`` body.

    Every UNet call inside the body adds its self-attention at the requested grids to the yielded
    store; on exit (normal or by exception) the original processors are put back and the store
    keeps its sums, so ``store.maps()`` works after the block.

    Args:
        unet: a diffusers model with ``attn_processors`` / ``set_attn_processor`` (``UNet2DConditionModel``).
        resolutions: grid sides ``r`` or ``(h, w)`` pairs to keep.
        source, real_weights: recorded in the maps.
    """
    store = SelfAttentionStore(resolutions, source, real_weights)
    if not hasattr(unet, "set_attn_processor"):
        raise InputError(f"{type(unet).__name__} has no self-attention processors (not a diffusers model)")
    originals = dict(unet.attn_processors)
    targets = [name for name in originals if is_self_attention_name(name)]
    if not targets:
        raise InputError(f"{type(unet).__name__} has no self-attention (attn1) modules to capture")
    replaced = dict(originals)
    replaced.update({name: SelfAttentionCaptureProcessor(store, originals[name]) for name in targets})
    hook = unet.register_forward_pre_hook(store.record_latent, with_kwargs=True)
    try:
        unet.set_attn_processor(replaced)  # set_attn_processor pops from the dict it is given
        yield store
    finally:
        hook.remove()
        unet.set_attn_processor(dict(originals))

"""Containers for attention maps and the resizing/merging of self-attention across grids.

Two kinds of map feed training-free grounding (RSVG-ZeroOV):

* :class:`CrossAttention`: how much one text position attends to each image region, a
  ``(gh, gw)`` grid that covers the **whole** image (row 0 at the top, column 0 at the left), so
  cell ``(r, c)`` is the image rectangle ``[c*W/gw, (c+1)*W/gw) x [r*H/gh, (r+1)*H/gh)`` whatever
  resizing the model's processor did.
* :class:`SelfAttention`: an ``(N, N)`` row-stochastic matrix over a ``(h, w)`` grid (``N = h*w``,
  row-major): row ``i`` is where region ``i`` looks, a probability distribution over all regions.

Self-attention of a diffusion UNet comes at several resolutions (32x32 and 64x64 for a 512 px input
of SD-1.4). :func:`resize_self_attention` brings an ``(r*r, r*r)`` matrix to another grid: each row's
key map is resized bilinearly (and renormalised to sum 1), and each query row is taken from the
query cell that covers it (nearest), which is what the DiffSeg/DiffSegmenter family does when it
upsamples 32x32 maps to 64x64. :func:`merge_self_attention` averages several maps on one grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from rsvl.errors import InputError

__all__ = ["CrossAttention", "SelfAttention", "merge_self_attention", "resize_self_attention"]


@dataclass(frozen=True)
class CrossAttention:
    """One text position's attention over an image, on a grid covering the whole image.

    Attributes:
        map: ``(gh, gw)`` float32, non-negative (not necessarily normalised).
        source: what produced it (``"qwen2_5_vl layers 16-19"``), recorded in outputs.
        real_weights: whether the producing model had real pretrained weights (not a tiny random one).
    """

    map: np.ndarray
    source: str = ""
    real_weights: bool = False

    def __post_init__(self) -> None:
        m = np.asarray(self.map, dtype=np.float32)
        if m.ndim != 2 or m.size == 0:
            raise InputError(f"a cross-attention map must be a non-empty 2-D grid, got shape {m.shape}")
        if not np.isfinite(m).all():
            raise InputError("cross-attention map has NaN or infinite values")
        object.__setattr__(self, "map", m)

    @property
    def grid(self) -> tuple[int, int]:
        """``(gh, gw)``."""
        return int(self.map.shape[0]), int(self.map.shape[1])


@dataclass(frozen=True)
class SelfAttention:
    """Region-to-region attention on a ``(h, w)`` grid covering the whole image.

    Attributes:
        matrix: ``(h*w, h*w)`` float32; row ``i`` (query, row-major cell index) sums to 1.
        grid: ``(h, w)``.
        source: what produced it; real_weights: as in :class:`CrossAttention`.
    """

    matrix: np.ndarray
    grid: tuple[int, int]
    source: str = ""
    real_weights: bool = False

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float32)
        h, w = (int(v) for v in self.grid)
        n = h * w
        if h < 1 or w < 1 or m.shape != (n, n):
            raise InputError(f"self-attention matrix of shape {m.shape} does not match grid {h}x{w} ({n}x{n})")
        if not np.isfinite(m).all():
            raise InputError("self-attention matrix has NaN or infinite values")
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "grid", (h, w))


def _row_normalise(m: torch.Tensor) -> torch.Tensor:
    return m / m.sum(dim=1, keepdim=True).clamp_min(1e-12)


def resize_self_attention(attn: SelfAttention, grid: tuple[int, int]) -> SelfAttention:
    """The same attention expressed on another grid (keys bilinear, queries nearest; rows sum to 1)."""
    h, w = attn.grid
    th, tw = (int(v) for v in grid)
    if (h, w) == (th, tw):
        return attn
    m = torch.from_numpy(attn.matrix)
    keys = m.reshape(h * w, 1, h, w)
    keys = functional.interpolate(keys, size=(th, tw), mode="bilinear", align_corners=False).clamp_min(0)
    keys = keys.reshape(h, w, th * tw)  # query cells still on the source grid
    rows = (torch.arange(th) * h // th).clamp_max(h - 1)
    cols = (torch.arange(tw) * w // tw).clamp_max(w - 1)
    resized = keys[rows][:, cols].reshape(th * tw, th * tw)
    return SelfAttention(_row_normalise(resized).numpy(), (th, tw), attn.source, attn.real_weights)


def merge_self_attention(
    maps: Sequence[SelfAttention], grid: tuple[int, int] | None = None, weights: Sequence[float] | None = None
) -> SelfAttention:
    """Weighted mean of self-attention maps on one grid (default: the finest grid among ``maps``).

    Every map is first brought to ``grid`` with :func:`resize_self_attention`; the result's rows sum
    to 1. ``source`` joins the inputs' sources; ``real_weights`` holds only if it holds for all.
    """
    if not maps:
        raise InputError("no self-attention maps to merge")
    if grid is None:
        grid = max((m.grid for m in maps), key=lambda g: g[0] * g[1])
    if weights is None:
        weights = [1.0] * len(maps)
    if len(weights) != len(maps) or any(wt < 0 for wt in weights) or sum(weights) <= 0:
        raise InputError(f"need one non-negative weight per map ({len(maps)}), got {list(weights)}")
    total = None
    for m, wt in zip(maps, weights, strict=True):
        part = torch.from_numpy(resize_self_attention(m, grid).matrix) * float(wt)
        total = part if total is None else total + part
    assert total is not None
    sources = list(dict.fromkeys(m.source for m in maps if m.source))
    real = all(m.real_weights for m in maps)
    return SelfAttention(_row_normalise(total).numpy(), grid, " + ".join(sources), real)

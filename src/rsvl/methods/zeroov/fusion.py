"""The Focus-stage interaction: combine a cross-attention map with a self-attention matrix.

With ``a`` the cross-attention resized to the self-attention grid and flattened (``N`` cells), and
``S`` the row-stochastic ``(N, N)`` self-attention (row ``i`` = where cell ``i`` looks):

* ``weighted_sum`` (the authors' form, as in DiffSegmenter): ``f = a_n @ S`` with ``a_n = a / sum(a)``:
  every cell spreads its cross-attention over the region it attends to, so a response on an
  object's corner fills the object whose cells attend to each other;
* ``cosine`` (the paper's equation): ``f_i = cos(S[i, :], a)``: a cell scores high when the region
  it attends to looks like the cross-attention map.

Both are min-max normalised to ``[0, 1]`` so the Evolve thresholds (tau, alpha) mean the same for
every provider. :func:`resize_map` brings any map to another grid (bilinear, antialiased when
shrinking) and is also how maps reach image resolution.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

from rsvl.attention.maps import CrossAttention, SelfAttention
from rsvl.errors import InputError

__all__ = ["FUSION_MODES", "fuse", "normalise", "resize_map"]

FUSION_MODES = ("cosine", "weighted_sum")


def normalise(values: np.ndarray) -> np.ndarray:
    """Min-max scale to ``[0, 1]`` (float32); a constant map becomes all zeros."""
    v = np.asarray(values, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return np.zeros_like(v)
    return (v - lo) / (hi - lo)


def resize_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized to ``shape`` (bilinear; antialiased when shrinking), float32."""
    v = np.asarray(values, dtype=np.float32)
    if v.shape == tuple(shape):
        return v.copy()
    t = torch.from_numpy(np.ascontiguousarray(v))[None, None]
    shrinking = shape[0] < v.shape[0] or shape[1] < v.shape[1]
    size = (int(shape[0]), int(shape[1]))
    out = functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out[0, 0].numpy()


def fuse(cross: CrossAttention, self_attn: SelfAttention, mode: str = "weighted_sum") -> np.ndarray:
    """The fused map on the self-attention grid, in ``[0, 1]`` (see the module docstring)."""
    if mode not in FUSION_MODES:
        raise InputError(f"unknown fusion mode {mode!r}; known: {', '.join(FUSION_MODES)}")
    h, w = self_attn.grid
    a = np.clip(resize_map(cross.map, (h, w)), 0, None).reshape(-1).astype(np.float64)
    s = self_attn.matrix.astype(np.float64)
    if a.sum() <= 0:
        return np.zeros((h, w), dtype=np.float32)
    if mode == "weighted_sum":
        fused = (a / a.sum()) @ s
    else:
        row_norms = np.linalg.norm(s, axis=1)
        fused = (s @ a) / np.maximum(row_norms * np.linalg.norm(a), 1e-12)
    return normalise(fused.reshape(h, w))

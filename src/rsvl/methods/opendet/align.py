"""BVLA-M: bidirectional vision-language alignment between object queries and name embeddings.

The paper scores a query ``q`` (width ``D``, 256) against a name embedding ``t`` (width ``T``, 768
for CLIP text) in both spaces, ``S = cos(q M_VL, t) + cos(q, t M_LV)``, because mapping the narrow
query up to the text width alone aligns poorly. The authors' code (``VL_Align_Ours``) computes the
first term as a cosine against the L2-normalised text embedding and the second as a plain dot
product of the two projections, which gives the logits their range (two cosines alone would cap
the sigmoid at ``sigma(2)``). We follow the code and divide the dot product by ``sqrt(D)`` (the
usual attention scaling) so that random initialisations start with logits of order one.

The logits feed the masked alignment loss in training and the matcher's class cost; at inference
there is no vocabulary, so the aligner is not used.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from rsvl.errors import InputError

__all__ = ["BidirectionalAligner"]


class BidirectionalAligner(nn.Module):
    """``(Q, D)`` queries x ``(M, T)`` name embeddings -> ``(Q, M)`` alignment logits."""

    def __init__(self, hidden: int, text_dim: int) -> None:
        super().__init__()
        self.vision_to_language = nn.Linear(hidden, text_dim)
        self.query_proj = nn.Linear(hidden, hidden)
        self.language_to_vision = nn.Linear(text_dim, hidden)
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, queries: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if queries.ndim != 2 or text.ndim != 2:
            raise InputError(
                f"queries (Q, D) and text (M, T) expected, got {tuple(queries.shape)}, {tuple(text.shape)}"
            )
        v2l = functional.normalize(self.vision_to_language(queries), dim=-1) @ functional.normalize(text, dim=-1).T
        l2v = (self.query_proj(queries) @ self.language_to_vision(text).T) * self.scale
        return v2l + l2v

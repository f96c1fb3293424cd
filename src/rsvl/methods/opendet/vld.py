"""VLD-M: the vision-to-language distiller that turns object queries into VL-prompts.

A query knows its object but little of the scene around it, while an image-text model's name
embedding was learnt from whole images. VLD-M (the authors' ``DecoderForGenerate`` + ``MLP_Projection``)
lets each (detached) query gather context with deformable cross-attention around its predicted box,
once over the encoder memory and once over the projected backbone features (``vld_layers`` layers
each, ``vld_points`` sampling points), projects the query and the two refined versions with a gated
MLP (``MLP(x) + Linear(x) * sigmoid(Linear_gate(x))``, ReLU6, 256 -> 2048 -> 2048 -> T) and fuses
the three with one linear map (dropout 0.3 on its inputs) into a VL-prompt of the text width ``T``.
The prompt is distilled towards the name's text embedding (cosine loss) and is what the name
generator reads.
"""

from __future__ import annotations

import torch
from torch import nn

from rsvl.methods.opendet.config import OpenDetConfig
from rsvl.methods.opendet.detector import CrossAttentionLayer, FeatureMaps

__all__ = ["GatedProjection", "VLDistiller"]


class GatedProjection(nn.Module):
    """``MLP(x) + Linear(x) * sigmoid(Linear_gate(x))`` from the query width to the text width."""

    def __init__(self, hidden: int, inner: int, out: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(hidden, inner), nn.ReLU6(), nn.Dropout(dropout),
            nn.Linear(inner, inner), nn.ReLU6(), nn.Dropout(dropout),
            nn.Linear(inner, out), nn.Dropout(dropout),
        )  # fmt: skip
        self.identity = nn.Linear(hidden, out, bias=False)
        self.gate = nn.Linear(hidden, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.identity(x) * self.gate(x).sigmoid()


class VLDistiller(nn.Module):
    """Queries ``(B, Q, D)`` + boxes ``(B, Q, 4)`` + the feature maps -> VL-prompts ``(B, Q, T)``."""

    def __init__(self, config: OpenDetConfig, hf_config: object) -> None:
        super().__init__()
        self.over_memory = nn.ModuleList(
            CrossAttentionLayer(hf_config, config.vld_points) for _ in range(config.vld_layers)
        )
        self.over_backbone = nn.ModuleList(
            CrossAttentionLayer(hf_config, config.vld_points) for _ in range(config.vld_layers)
        )
        t, inner = config.text_dim, config.vld_hidden
        self.project_query = GatedProjection(config.hidden, inner, t)
        self.project_memory = GatedProjection(config.hidden, inner, t)
        self.project_backbone = GatedProjection(config.hidden, inner, t)
        self.input_dropout = nn.Dropout(0.3)
        self.fuse = nn.Linear(3 * t, t, bias=False)

    def forward(self, hidden: torch.Tensor, boxes: torch.Tensor, maps: FeatureMaps) -> torch.Tensor:
        query = hidden.detach()
        reference = boxes.detach()
        from_memory, from_backbone = query, query
        for layer in self.over_memory:
            from_memory = layer(from_memory, maps.memory, reference, maps)
        for layer in self.over_backbone:
            from_backbone = layer(from_backbone, maps.flat, reference, maps)
        parts = (
            self.project_query(query),
            self.project_backbone(from_backbone),
            self.project_memory(from_memory),
        )
        return self.fuse(torch.cat([self.input_dropout(p) for p in parts], dim=-1))

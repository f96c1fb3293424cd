"""The paper's Focus provider: Stable Diffusion UNet self-attention after null-text DDIM inversion.

For one image (text-free):

1. the whole image is stretched to ``image_size`` x ``image_size`` (bilinear, antialiased), so every
   attention grid covers the whole image, and scaled to ``[-1, 1]``;
2. the VAE encodes it; the latent is ``latent_dist.mean * vae.config.scaling_factor`` (the mean,
   not a sample, so the map is deterministic);
3. ``ddim_steps`` steps of DDIM inversion (``diffusers.DDIMInverseScheduler`` with the model's noise
   schedule) walk the latent from clean towards noise, each step a UNet call conditioned on the
   null-text embedding (the empty prompt, as SD's unconditional branch);
4. the self-attention (``attn1``) of **every UNet call of the inversion** is captured at the
   requested grid sides and averaged over heads, layers and calls: the map is the mean over all the
   noise levels the inversion visits. (The paper gives "20-step DDIM" and no single timestep; the
   mean over the whole trajectory is the choice here.)
5. the per-side maps are merged with :func:`rsvl.attention.merge_self_attention` on the finest
   requested side (SD-1.4 at 512 px: sides 64, 32, 16 and 8 exist; the paper uses 32 and 64).

Without ``FocusConfig.path`` the builder uses the tiny random model of
:func:`rsvl.models.stable_diffusion.tiny_stable_diffusion` (tests only: its maps carry no structure).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from rsvl.attention.diffusers_capture import capture_self_attention, self_attention_grids
from rsvl.attention.maps import SelfAttention, merge_self_attention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import FocusConfig
from rsvl.methods.zeroov.providers import FOCUS_PROVIDERS, check_image
from rsvl.models.stable_diffusion import StableDiffusionParts, load_stable_diffusion, tiny_stable_diffusion

logger = logging.getLogger(__name__)

__all__ = ["StableDiffusionFocus", "available_sides", "build_stable_diffusion_focus", "tiny_stable_diffusion_focus"]


def available_sides(parts: StableDiffusionParts, image_size: int) -> list[int]:
    """Grid sides at which the UNet has self-attention for a square ``image_size`` input, ascending."""
    factor = parts.vae_scale_factor
    if image_size % factor:
        raise InputError(f"image_size {image_size} must be a multiple of the VAE's downsampling factor {factor}")
    latent = image_size // factor
    return sorted({grid[0] for grid in self_attention_grids(parts.unet, (latent, latent)).values()})


class StableDiffusionFocus:
    """Self-attention of a Stable Diffusion UNet over a DDIM inversion (the paper's Focus stage).

    Args:
        parts: UNet, VAE, text encoder and schedule (:func:`load_stable_diffusion` or the tiny model).
        image_size: side of the square the image is stretched to (a multiple of the VAE factor).
        resolutions: grid sides to capture; those the model lacks at ``image_size`` are dropped with a
            log message, and none left is an :class:`InputError` listing the available sides.
        ddim_steps: DDIM inversion steps (= UNet calls whose attention is averaged).
    """

    name = "stable_diffusion"

    def __init__(
        self,
        parts: StableDiffusionParts,
        image_size: int = 512,
        resolutions: Sequence[int] = (32, 64),
        ddim_steps: int = 20,
    ) -> None:
        if ddim_steps < 1:
            raise InputError(f"ddim_steps must be >= 1, got {ddim_steps}")
        sides = available_sides(parts, image_size)
        keep = sorted({int(r) for r in resolutions if int(r) in sides})
        if not keep:
            raise InputError(
                f"stable_diffusion at image_size {image_size} has self-attention at grid sides {sides}; "
                f"none of the requested {list(resolutions)}"
            )
        dropped = sorted({int(r) for r in resolutions} - set(keep))
        if dropped:
            logger.info("stable_diffusion: no self-attention at sides %s at %d px; using %s", dropped, image_size, keep)
        self.parts = parts
        self.image_size = int(image_size)
        self.resolutions = keep
        self.ddim_steps = int(ddim_steps)
        self.real_weights = parts.real_weights

    def _input(self, image: np.ndarray) -> torch.Tensor:
        """``(1, 3, S, S)`` in ``[-1, 1]``: the whole image stretched to the square input."""
        image = check_image(image)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        size = (self.image_size, self.image_size)
        x = functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x / 127.5 - 1.0).clamp(-1.0, 1.0)
        return x.to(device=self.parts.device, dtype=self.parts.vae.dtype)

    def encode(self, image: np.ndarray) -> torch.Tensor:
        """The image's scaled VAE latent (the posterior mean), ``(1, 4, S/f, S/f)``."""
        vae = self.parts.vae
        latent = vae.encode(self._input(image)).latent_dist.mean * vae.config.scaling_factor
        return latent.to(self.parts.unet.dtype)

    def invert(self, latent: torch.Tensor) -> torch.Tensor:
        """``ddim_steps`` steps of null-text DDIM inversion from ``latent``; returns the noised latent."""
        scheduler = self.parts.inverse_scheduler()
        scheduler.set_timesteps(self.ddim_steps, device=latent.device)
        text = self.parts.null_text_embedding().expand(latent.shape[0], -1, -1)
        for t in scheduler.timesteps:
            noise = self.parts.unet(scheduler.scale_model_input(latent, t), t, encoder_hidden_states=text).sample
            latent = scheduler.step(noise, t, latent).prev_sample
        return latent

    @torch.inference_mode()
    def self_attention(self, image: np.ndarray) -> SelfAttention:
        """The UNet's self-attention over the inversion, merged on the finest requested grid (rows sum to 1)."""
        latent = self.encode(image)
        with capture_self_attention(self.parts.unet, self.resolutions, self.parts.source, self.real_weights) as store:
            self.invert(latent)
        maps = store.maps()
        if not maps:
            raise RuntimeError(f"no self-attention captured at sides {self.resolutions}")  # a bug, not bad input
        return merge_self_attention(maps)


def tiny_stable_diffusion_focus(
    image_size: int = 64, resolutions: Sequence[int] = (4, 8), ddim_steps: int = 2, seed: int = 0
) -> StableDiffusionFocus:
    """A fast provider on the tiny random model (tests, smoke runs): 64 px -> 8x8 latent."""
    return StableDiffusionFocus(tiny_stable_diffusion(seed), image_size, resolutions, ddim_steps)


@FOCUS_PROVIDERS.register("stable_diffusion")
def build_stable_diffusion_focus(cfg: FocusConfig) -> StableDiffusionFocus:
    """The provider for a recipe section: the local folder ``cfg.path``, else the tiny random model."""
    if cfg.path is None:
        logger.warning("focus stable_diffusion: no path given, using a tiny RANDOM model (its maps are meaningless)")
        parts = tiny_stable_diffusion().to(device=cfg.device)
    else:
        parts = load_stable_diffusion(cfg.path, cfg.device, cfg.dtype)
    return StableDiffusionFocus(parts, cfg.image_size, cfg.resolutions, cfg.ddim_steps)

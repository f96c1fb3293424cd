"""Model builders: thin wrappers around timm / torchvision / HF models with checked weight loading."""

from rsvl.models.backbones import (
    LITE0_MEAN,
    LITE0_MEAN_255,
    LITE0_STD,
    LITE0_STD_255,
    efficientnet_lite0,
    efficientnet_lite0_classifier,
    load_lite0_weights,
)

__all__ = [
    "LITE0_MEAN",
    "LITE0_MEAN_255",
    "LITE0_STD",
    "LITE0_STD_255",
    "efficientnet_lite0",
    "efficientnet_lite0_classifier",
    "load_lite0_weights",
]

"""The pluggable attention sources of RSVG-ZeroOV and their registries.

An *overview provider* turns ``(image, expression)`` into a :class:`~rsvl.attention.CrossAttention`
over the whole image; a *focus provider* turns an image into a row-stochastic
:class:`~rsvl.attention.SelfAttention`. Each registry maps a name to a builder that takes the
stage's config section and returns a ready provider, so recipes and ``--set overview.provider=...``
pick them by name.

Images are ``(H, W, 3)`` uint8 RGB numpy arrays, never resized by the caller: each provider does
the resizing its model needs and returns a map covering the whole image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from rsvl.attention.maps import CrossAttention, SelfAttention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import FocusConfig, OverviewConfig
from rsvl.registry import Registry

__all__ = ["FOCUS_PROVIDERS", "OVERVIEW_PROVIDERS", "FocusProvider", "OverviewProvider", "check_image"]


@runtime_checkable
class OverviewProvider(Protocol):
    """Cross-attention of a referring expression to image regions."""

    name: str
    real_weights: bool

    def cross_attention(self, image: np.ndarray, expression: str) -> CrossAttention:
        """``image``: (H, W, 3) uint8 RGB; returns a map over a grid covering the whole image."""
        ...


@runtime_checkable
class FocusProvider(Protocol):
    """Self-attention among image regions (a structural prior), text-free."""

    name: str
    real_weights: bool

    def self_attention(self, image: np.ndarray) -> SelfAttention:
        """``image``: (H, W, 3) uint8 RGB; returns one row-stochastic matrix (scales already merged)."""
        ...


OVERVIEW_PROVIDERS: Registry[Callable[[OverviewConfig], OverviewProvider]] = Registry("overview provider")
FOCUS_PROVIDERS: Registry[Callable[[FocusConfig], FocusProvider]] = Registry("focus provider")


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as a contiguous ``(H, W, 3)`` uint8 array, or an InputError saying what is wrong."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} array of shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"the image is empty (shape {image.shape})")
    return np.ascontiguousarray(image)

"""Pictures for people: masks, heat maps, boxes and points drawn over an image, saved atomically.

Every method that shows its work (grounding masks, detections, the tiles a VQA model looked at)
draws with these few functions, so overlays look the same across ``rsvl`` commands and reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rsvl.utils.atomic import atomic_path

__all__ = ["draw_overlay", "heat_colours", "save_png"]

Colour = tuple[int, int, int]


def heat_colours(values: np.ndarray) -> np.ndarray:
    """A ``[0, 1]`` map as ``(H, W, 3)`` uint8 colours, dark blue -> red -> yellow (no matplotlib)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(2.0 * v, 0, 1)
    g = np.clip(2.0 * v - 1.0, 0, 1)
    b = np.clip(0.5 - v, 0, 0.5)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def draw_overlay(
    image: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    heat: np.ndarray | None = None,
    boxes: Sequence[Sequence[float]] = (),
    points: Sequence[Sequence[float]] = (),
    mask_colour: Colour = (0, 255, 120),
    box_colour: Colour = (255, 40, 40),
    opacity: float = 0.45,
) -> Image.Image:
    """The image with a heat map and/or mask blended in, boxes outlined and points marked.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool, filled with ``mask_colour`` at ``opacity``.
        heat: ``(H, W)`` map in ``[0, 1]`` blended at ``opacity`` (drawn before the mask).
        boxes: ``xyxy`` boxes (pixel edges) or 8-number polygons.
        points: ``(x, y)`` pixel positions, drawn as small circles.
    """
    out = np.asarray(image, dtype=np.float32).copy()
    if heat is not None:
        out = (1 - opacity) * out + opacity * heat_colours(heat).astype(np.float32)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        out[m] = (1 - opacity) * out[m] + opacity * np.asarray(mask_colour, dtype=np.float32)
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    width = max(1, round(max(pil.size) / 300))
    for box in boxes:
        b = [float(v) for v in box]
        if len(b) == 4:
            draw.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], outline=box_colour, width=width)
        else:
            draw.polygon(b, outline=box_colour, width=width)
    radius = 2 * width + 1
    for x, y in points:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(255, 255, 0), width=width)
    return pil


def save_png(path: str | os.PathLike[str], picture: Image.Image | np.ndarray) -> Path:
    """Write a PNG atomically (a bool/uint8 array is saved as an 8-bit grey image, True = 255)."""
    if isinstance(picture, np.ndarray):
        arr = picture.astype(np.uint8) * 255 if picture.dtype == bool else picture
        picture = Image.fromarray(np.ascontiguousarray(arr))
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)

"""Drawing objects and their shadows onto a window of the image, and their pixel masks.

Everything is computed on the object's own pixel box and then cropped to the window, so an
object cut by a tile border is drawn identically in both tiles. The mask of an object is its
silhouette filled by the pixel-centre rule; an object so small that no pixel centre falls
inside (a 2 px vehicle at an angle) gets the pixel under its centre, so that every labelled
object has at least one pixel and every drawn pixel is labelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from rsvl.synth.objects import SceneObject
from rsvl.synth.raster import rasterize

__all__ = ["draw_objects", "object_mask", "pixel_box"]


def pixel_box(bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)`` of the pixels whose centres may lie inside ``bounds``."""
    x0, y0 = math.floor(bounds[0]), math.floor(bounds[1])
    x1, y1 = math.ceil(bounds[2]), math.ceil(bounds[3])
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def object_mask(obj: SceneObject) -> tuple[np.ndarray, int, int]:
    """``(mask, x0, y0)``: the silhouette on the object's whole pixel box (cached on the object)."""
    if obj.mask_cache is None:
        x0, y0, w, h = pixel_box(obj.bounds())
        mask = rasterize(obj.silhouette, x0, y0, w, h)
        if not mask.any():
            cx, cy = math.floor(obj.cx), math.floor(obj.cy)
            mask[min(max(cy - y0, 0), h - 1), min(max(cx - x0, 0), w - 1)] = True
        obj.mask_cache = (mask, x0, y0)
    return obj.mask_cache


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def draw_objects(rgb: np.ndarray, x0: int, y0: int, objects: Iterable[SceneObject], antialias: bool = False) -> None:
    """Draw ``objects`` (shadows first, then bodies in order) into the float32 window ``rgb``.

    ``rgb`` is ``(h, w, 3)`` and its top-left pixel is ``(x0, y0)`` of the image; it is modified in
    place. ``antialias`` blends edges by 3 x 3 supersampling (the masks stay the hard ones).
    """
    h, w = rgb.shape[:2]
    window = (x0, y0, w, h)
    objects = list(objects)
    shade = np.zeros((h, w), np.float32)
    ss = 3 if antialias else 1
    for obj in objects:
        if not obj.shadow:
            continue
        box = pixel_box(_bounds(obj.shadow))
        part = _overlap(box, window)
        if part is None:
            continue
        cov = rasterize(obj.shadow, *part, supersample=ss)
        sl = (slice(part[1] - y0, part[1] - y0 + part[3]), slice(part[0] - x0, part[0] - x0 + part[2]))
        np.maximum(shade[sl], cov.astype(np.float32) * np.float32(obj.shadow_alpha), out=shade[sl])
    rgb *= (np.float32(1.0) - shade)[..., None]
    for obj in objects:
        mask, mx0, my0 = object_mask(obj)
        box = (mx0, my0, mask.shape[1], mask.shape[0])
        part = _overlap(box, window)
        if part is None:
            continue
        sl = (slice(part[1] - y0, part[1] - y0 + part[3]), slice(part[0] - x0, part[0] - x0 + part[2]))
        target = rgb[sl]
        for layer in obj.layers:
            colour = np.asarray(layer.rgb, np.float32)
            if layer.silhouette and ss == 1:
                m = mask[part[1] - my0 : part[1] - my0 + part[3], part[0] - mx0 : part[0] - mx0 + part[2]]
                target[m] = colour
                continue
            cov = rasterize(layer.polys, *box, supersample=ss)
            if layer.silhouette and not (cov > 0).any():
                cov = mask.astype(np.float32)
            cov = cov[part[1] - my0 : part[1] - my0 + part[3], part[0] - mx0 : part[0] - mx0 + part[2]]
            if ss == 1:
                target[cov] = colour
            else:
                a = cov[..., None]
                target *= np.float32(1.0) - a
                target += a * colour


def _bounds(polys: list[np.ndarray]) -> tuple[float, float, float, float]:
    pts = np.concatenate(polys, 0)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

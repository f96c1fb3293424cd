"""Polygon rasterisation, clipping and mask encoding in plain numpy (no OpenCV, no skimage).

* :func:`rasterize` fills polygons by the pixel-centre rule (a pixel belongs to a polygon when its
  centre lies inside, even-odd per polygon, union over polygons). The rule is exact and
  window-independent: the same polygon rasterised in two overlapping windows sets the same
  pixels, which is what lets a large image be drawn tile by tile. With ``supersample=k`` it
  returns the fraction of ``k x k`` sub-pixel centres covered (anti-aliasing).
* :func:`clip_polygon` clips a polygon to a rectangle (Sutherland-Hodgman).
* :func:`rle_from_local` turns a mask known only on a small window into the COCO compressed RLE of
  the whole image without ever allocating the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as _coco_mask

__all__ = ["clip_polygon", "polygons_bounds", "rasterize", "rle_from_local"]


def polygons_bounds(polys: Sequence[np.ndarray]) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of all vertices of ``polys`` (each ``(K, 2)``)."""
    pts = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polys], 0)
    lo, hi = pts.min(0), pts.max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def rasterize(
    polys: Sequence[np.ndarray], x0: int, y0: int, width: int, height: int, supersample: int = 1
) -> np.ndarray:
    """Fill ``polys`` (global pixel coordinates) on the window ``(x0, y0, width, height)``.

    Returns a bool ``(height, width)`` mask for ``supersample == 1``, else float32 coverage in
    ``[0, 1]`` (the share of the ``k x k`` sub-pixel centres inside).
    """
    k = int(supersample)
    if width <= 0 or height <= 0 or not polys:
        shape = (max(height, 0), max(width, 0))
        return np.zeros(shape, bool) if k == 1 else np.zeros(shape, np.float32)
    rows, cols = height * k, width * k
    toggles = np.zeros(len(polys) * rows * (cols + 1), np.int32)
    row_idx = np.arange(rows, dtype=np.float64)
    for p_i, poly in enumerate(polys):
        pts = np.asarray(poly, np.float64).reshape(-1, 2)
        # sample coordinates: sample (r, c) has its centre at integer (c, r)
        sx = (pts[:, 0] - x0) * k - 0.5
        sy = (pts[:, 1] - y0) * k - 0.5
        ax, ay = sx, sy
        bx, by = np.roll(sx, -1), np.roll(sy, -1)
        cross = (ay[:, None] <= row_idx[None, :]) != (by[:, None] <= row_idx[None, :])
        e_idx, r_idx = np.nonzero(cross)
        if e_idx.size == 0:
            continue
        t = (row_idx[r_idx] - ay[e_idx]) / (by[e_idx] - ay[e_idx])
        xc = ax[e_idx] + t * (bx[e_idx] - ax[e_idx])
        first = np.clip(np.floor(xc).astype(np.int64) + 1, 0, cols)
        flat = (p_i * rows + r_idx) * (cols + 1) + first
        toggles += np.bincount(flat, minlength=toggles.size).astype(np.int32)
    inside = (np.cumsum(toggles.reshape(len(polys), rows, cols + 1), axis=2)[:, :, :cols] & 1).astype(bool)
    inside = inside.any(0)
    if k == 1:
        return inside
    return inside.reshape(height, k, width, k).mean((1, 3), dtype=np.float32)


def clip_polygon(poly: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Clip a polygon ``(K, 2)`` to the rectangle ``[x0, x1] x [y0, y1]`` (Sutherland-Hodgman).

    Works for concave polygons against the convex rectangle; returns ``(M, 2)``, possibly empty.
    """
    pts = np.asarray(poly, np.float64).reshape(-1, 2)
    for axis, bound, keep_greater in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(pts) == 0:
            break
        vals = pts[:, axis] - bound
        inside = vals >= 0 if keep_greater else vals <= 0
        out: list[np.ndarray] = []
        n = len(pts)
        for i in range(n):
            cur, nxt = pts[i], pts[(i + 1) % n]
            cin, nin = inside[i], inside[(i + 1) % n]
            if cin:
                out.append(cur)
            if cin != nin:
                dv = vals[(i + 1) % n] - vals[i]
                t = -vals[i] / dv if dv != 0 else 0.0
                out.append(cur + t * (nxt - cur))
        pts = np.array(out, np.float64).reshape(-1, 2)
    return pts


def rle_from_local(mask: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict[str, Any]:
    """COCO compressed RLE of an image-sized mask that is empty outside ``mask``'s window.

    ``mask`` is the bool window whose top-left pixel is ``(x0, y0)``; it must lie inside the
    ``height x width`` image. Runs are built column-major (COCO's order) from the window's pixels
    only, so a mask on a 30,000 px image costs what its window costs.
    """
    m = np.asarray(mask, bool)
    h, w = m.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError(f"mask window ({x0}, {y0}, {w}, {h}) is not inside the {width} x {height} image")
    cols, rows = np.nonzero(m.T)
    total = height * width
    if cols.size == 0:
        counts = [total]
    else:
        idx = (cols.astype(np.int64) + x0) * height + rows.astype(np.int64) + y0
        breaks = np.nonzero(np.diff(idx) != 1)[0]
        starts = np.concatenate([idx[:1], idx[breaks + 1]])
        ends = np.concatenate([idx[breaks] + 1, idx[-1:] + 1])
        gaps = starts - np.concatenate([[0], ends[:-1]])
        seq = np.empty(2 * len(starts) + 1, np.int64)
        seq[0:-1:2] = gaps
        seq[1:-1:2] = ends - starts
        seq[-1] = total - ends[-1]
        counts = seq.tolist()
    rle = _coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}

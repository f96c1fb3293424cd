"""Vectorised value noise on global pixel coordinates (textures, shorelines, canopy).

Lattice values come from :func:`rsvl.synth.rng.hash_unit` of the integer lattice coordinates, and
are blended with smoothstep weights, x first and then y. The grid version (a window of pixel
centres, computed separably: cheap) and the point version (arbitrary coordinates, used when
objects are placed) run the same float32 operations in the same order, so they agree exactly, and
two windows that overlap return identical values where they overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rsvl.synth.rng import hash_unit

__all__ = ["fbm_grid", "fbm_points", "value_noise_grid", "value_noise_points", "white_noise_grid"]


def _smooth(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float32)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def _axis(start: int, n: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index and smoothstep weight of the pixel centres ``start .. start + n - 1``."""
    u = (np.arange(start, start + n, dtype=np.float64) + 0.5) / cell
    i0 = np.floor(u)
    return i0.astype(np.int64), _smooth(u - i0)


def value_noise_grid(seed: int, x0: int, y0: int, width: int, height: int, cell: float) -> np.ndarray:
    """Value noise in ``[-1, 1)`` at the pixel centres of a window, float32 ``(height, width)``."""
    ix, sx = _axis(x0, width, cell)
    iy, sy = _axis(y0, height, cell)
    gx = np.arange(ix[0], ix[-1] + 2)
    gy = np.arange(iy[0], iy[-1] + 2)
    lattice = hash_unit(seed, gx[None, :], gy[:, None]) * np.float32(2.0) - np.float32(1.0)
    cols = ix - ix[0]
    left, right = lattice[:, cols], lattice[:, cols + 1]
    rows_x = left + (right - left) * sx[None, :]
    rows = iy - iy[0]
    top, bottom = rows_x[rows], rows_x[rows + 1]
    return top + (bottom - top) * sy[:, None]


def value_noise_points(seed: int, xs: np.ndarray, ys: np.ndarray, cell: float) -> np.ndarray:
    """Value noise at arbitrary points (pixel-centre coordinates give the grid's values)."""
    ux = np.asarray(xs, dtype=np.float64) / cell
    uy = np.asarray(ys, dtype=np.float64) / cell
    fx, fy = np.floor(ux), np.floor(uy)
    sx, sy = _smooth(ux - fx), _smooth(uy - fy)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    two, one = np.float32(2.0), np.float32(1.0)
    v00 = hash_unit(seed, ix, iy) * two - one
    v10 = hash_unit(seed, ix + 1, iy) * two - one
    v01 = hash_unit(seed, ix, iy + 1) * two - one
    v11 = hash_unit(seed, ix + 1, iy + 1) * two - one
    top = v00 + (v10 - v00) * sx
    bottom = v01 + (v11 - v01) * sx
    return top + (bottom - top) * sy


def fbm_grid(seed: int, x0: int, y0: int, width: int, height: int, cells: Sequence[float]) -> np.ndarray:
    """Sum of octaves (cell sizes ``cells``, amplitudes halving), normalised to about ``[-1, 1]``."""
    out = np.zeros((height, width), np.float32)
    amp, total = 1.0, 0.0
    for k, cell in enumerate(cells):
        out += np.float32(amp) * value_noise_grid(seed + 7919 * k, x0, y0, width, height, cell)
        total += amp
        amp *= 0.5
    return out / np.float32(total)


def fbm_points(seed: int, xs: np.ndarray, ys: np.ndarray, cells: Sequence[float]) -> np.ndarray:
    """Point version of :func:`fbm_grid` (same octaves, same values at pixel centres)."""
    out = np.zeros(np.broadcast_shapes(np.shape(xs), np.shape(ys)), np.float32)
    amp, total = 1.0, 0.0
    for k, cell in enumerate(cells):
        out += np.float32(amp) * value_noise_points(seed + 7919 * k, xs, ys, cell)
        total += amp
        amp *= 0.5
    return out / np.float32(total)


def white_noise_grid(seed: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Independent per-pixel noise in ``[-1, 1)`` (sensor grain), float32 ``(height, width)``."""
    xs = np.arange(x0, x0 + width)[None, :]
    ys = np.arange(y0, y0 + height)[:, None]
    return hash_unit(seed, xs, ys) * np.float32(2.0) - np.float32(1.0)

"""Ground: a scene's terrain as an ordered list of analytic regions, and its vectorised texture.

A :class:`GroundPlan` is a base ground type plus :class:`Region` s drawn in order (later ones
win): rectangles (aprons, parking lots, piers), disks (clearings, ponds), bands (roads, rivers,
runways, optionally meandering) and half-planes (a shoreline), each with an optional noisy edge
and a paint/shade pattern (road markings, parking stalls, crop parcels). Everything is a function
of global pixel coordinates, so the plan answers "which ground is under this point?" during
object placement and renders any window of the image (a tile of a 10,000 px GeoTIFF or the whole
512 px image) with the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rsvl.synth.noise import fbm_grid, value_noise_grid, value_noise_points, white_noise_grid
from rsvl.synth.palette import (
    GROUND_BASE,
    GROUND_HI,
    GROUND_LO,
    GROUND_NAMES,
    GROUND_TINT,
    PAINT,
)
from rsvl.synth.rng import hash_unit

__all__ = ["GroundPlan", "Region", "stall_slots"]

_INF = float("inf")


@dataclass(frozen=True)
class Region:
    """One piece of terrain.

    Attributes:
        ground: ground type id (:class:`rsvl.synth.palette.Ground`) inside the region.
        shape: ``all``, ``rect`` (cx, cy, length, width, angle), ``disk`` (cx, cy, r), ``band``
            (px, py, angle, width[, meander_amp, meander_wavelength, phase]) or ``halfplane``
            (px, py, angle; inside is the side to the left of the direction, ``v < 0``).
        params: the shape's numbers (pixels, radians).
        edge_noise: amplitude in pixels of the noise added to the boundary (0: straight edges).
        pattern: ``none``, ``road``/``runway`` (line width, dash, gap, paint code), ``stalls``
            (stall width, stall depth, aisle, line width) or ``parcels`` (cell a, cell b, ground ids...).
        clip: optional ``(x0, y0, x1, y1)`` the region is cut to (districts of large images).
        name: a tag for captions and questions (``river``, ``parking lot``...).
        seed: noise seed of the edge and pattern.
    """

    ground: int
    shape: str
    params: tuple[float, ...] = ()
    edge_noise: float = 0.0
    pattern: str = "none"
    pattern_params: tuple[float, ...] = ()
    clip: tuple[float, float, float, float] | None = None
    name: str = ""
    seed: int = 0

    def bounds(self) -> tuple[float, float, float, float]:
        """Extent for culling (infinite for unclipped bands and half-planes)."""
        e = self.edge_noise
        if self.shape == "rect":
            cx, cy, length, width, angle = self.params[:5]
            hx = abs(length / 2 * math.cos(angle)) + abs(width / 2 * math.sin(angle)) + e
            hy = abs(length / 2 * math.sin(angle)) + abs(width / 2 * math.cos(angle)) + e
            b = (cx - hx, cy - hy, cx + hx, cy + hy)
        elif self.shape == "disk":
            cx, cy, r = self.params[:3]
            b = (cx - r - e, cy - r - e, cx + r + e, cy + r + e)
        else:
            b = (-_INF, -_INF, _INF, _INF)
        if self.clip is not None:
            c = self.clip
            b = (max(b[0], c[0]), max(b[1], c[1]), min(b[2], c[2]), min(b[3], c[3]))
        return b

    def local(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(u, v, d)``: coordinates in the region's frame and a signed distance (< 0 inside)."""
        p = self.params
        if self.shape == "all":
            zero = np.zeros(np.broadcast_shapes(np.shape(xs), np.shape(ys)), np.float32)
            return zero + xs, zero + ys, zero - 1.0
        if self.shape == "disk":
            u, v = xs - p[0], ys - p[1]
            return u, v, np.sqrt(u * u + v * v) - p[2]
        c, s = math.cos(p[2] if self.shape != "rect" else p[4]), math.sin(p[2] if self.shape != "rect" else p[4])
        dx, dy = xs - p[0], ys - p[1]
        u = dx * c + dy * s
        v = -dx * s + dy * c
        if self.shape == "rect":
            return u, v, np.maximum(np.abs(u) - p[2] / 2, np.abs(v) - p[3] / 2)
        if self.shape == "band":
            if len(p) > 4 and p[4] > 0:
                v = v - p[4] * np.sin(u * (2 * math.pi / p[5]) + p[6])
            return u, v, np.abs(v) - p[3] / 2
        if self.shape == "halfplane":
            return u, v, v
        raise ValueError(f"unknown region shape {self.shape!r}")


def stall_slots(region: Region) -> np.ndarray:
    """Parking slots of a ``stalls`` region: ``(N, 3)`` rows of ``(x, y, angle)``.

    Vehicles parked in a slot point across the row (angle = region angle + pi/2).
    """
    cx, cy, length, width, angle = region.params[:5]
    stall_w, stall_d, aisle = region.pattern_params[:3]
    pitch = 2 * stall_d + aisle
    n_u = int(length // stall_w)
    us = -length / 2 + (np.arange(n_u) + 0.5) * stall_w
    vs: list[float] = []
    base = -width / 2
    while base + 2 * stall_d <= width / 2 + 1e-6:
        vs.extend([base + stall_d / 2, base + 1.5 * stall_d])
        base += pitch
    if base + stall_d <= width / 2 + 1e-6:
        vs.append(base + stall_d / 2)
    if not vs or n_u == 0:
        return np.zeros((0, 3))
    uu, vv = np.meshgrid(us, np.array(vs))
    c, s = math.cos(angle), math.sin(angle)
    xs = cx + uu * c - vv * s
    ys = cy + uu * s + vv * c
    ang = np.full(xs.shape, angle + math.pi / 2)
    return np.stack([xs.ravel(), ys.ravel(), ang.ravel()], 1)


@dataclass
class GroundPlan:
    """A scene's terrain: ``base`` ground type everywhere, then ``regions`` in order.

    ``seed`` drives every texture; ``scale`` (pixels per nominal pixel) sizes the texture and the
    markings so that a zoomed-out (AI-TOD-like) scene has finer texture.
    """

    base: int
    regions: list[Region] = field(default_factory=list)
    seed: int = 0
    scale: float = 1.0

    # ------------------------------------------------------------------ evaluation

    def _evaluate(
        self, xs: np.ndarray, ys: np.ndarray, grid: tuple[int, int, int, int] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = np.broadcast_shapes(np.shape(xs), np.shape(ys))
        ids = np.full(shape, self.base, np.uint8)
        shade = np.zeros(shape, np.float32)
        paint = np.zeros(shape, np.uint8)
        if grid is not None:
            gx0, gy0, gw, gh = grid
            win = (gx0, gy0, gx0 + gw, gy0 + gh)
        else:
            win = (float(np.min(xs)), float(np.min(ys)), float(np.max(xs)) + 1, float(np.max(ys)) + 1)
        for region in self.regions:
            b = region.bounds()
            if b[0] >= win[2] or b[2] <= win[0] or b[1] >= win[3] or b[3] <= win[1]:
                continue
            if grid is not None:
                c0 = math.floor(max(b[0], win[0])) - gx0
                r0 = math.floor(max(b[1], win[1])) - gy0
                c1 = min(gw, math.ceil(min(b[2], win[2])) - gx0 + 1)
                r1 = min(gh, math.ceil(min(b[3], win[3])) - gy0 + 1)
                if c1 <= c0 or r1 <= r0:
                    continue
                sub = (slice(r0, r1), slice(c0, c1))
                sx = xs[:, c0:c1]
                sy = ys[r0:r1, :]
                sub_grid = (gx0 + c0, gy0 + r0, c1 - c0, r1 - r0)
            else:
                sub = (slice(None),) * len(shape)
                sx, sy, sub_grid = xs, ys, None
            self._apply(region, sx, sy, sub_grid, ids, shade, paint, sub)
        return ids, shade, paint

    def _apply(
        self,
        region: Region,
        xs: np.ndarray,
        ys: np.ndarray,
        grid: tuple[int, int, int, int] | None,
        ids: np.ndarray,
        shade: np.ndarray,
        paint: np.ndarray,
        sub: tuple[slice, ...],
    ) -> None:
        u, v, d = region.local(xs, ys)
        if region.edge_noise > 0:
            cell = max(6.0, 3.0 * region.edge_noise)
            if grid is not None:
                n = value_noise_grid(region.seed, *grid, cell)
            else:
                n = value_noise_points(region.seed, xs, ys, cell)
            d = d + np.float32(region.edge_noise) * n
        inside = d < 0
        if region.clip is not None:
            c = region.clip
            inside &= (xs >= c[0]) & (xs < c[2]) & (ys >= c[1]) & (ys < c[3])
        inside = np.broadcast_to(inside, np.broadcast_shapes(inside.shape, ids[sub].shape))
        if not inside.any():
            return
        shade[sub][inside] = 0
        paint[sub][inside] = 0
        if region.pattern == "parcels":
            self._parcels(region, u, v, inside, ids, shade, sub)
        else:
            ids[sub][inside] = region.ground
        if region.pattern in ("road", "runway"):
            self._road(region, u, v, inside, paint, sub)
        elif region.pattern == "stalls":
            self._stalls(region, u, v, inside, paint, sub)

    def _road(self, region: Region, u, v, inside, paint, sub) -> None:
        line_w, dash, gap, code = region.pattern_params[:4]
        width = region.params[3]
        av = np.abs(v)
        centre = (av < line_w / 2) & (np.mod(u, dash + gap) < dash)
        marks = centre
        if width >= 10 * line_w:
            marks = marks | ((av > width / 2 - 2.5 * line_w) & (av < width / 2 - 1.5 * line_w))
        if region.pattern == "runway":
            bars = (np.mod(u, 6 * line_w) < 3 * line_w) & (av < width / 2 - 3 * line_w) & (av > 3 * line_w)
            marks = marks | (bars & (np.mod(u, 40 * dash) < 4 * line_w * 6))
        marks = np.broadcast_to(marks, inside.shape) & inside
        paint[sub][marks] = int(code)

    def _stalls(self, region: Region, u, v, inside, paint, sub) -> None:
        length, width = region.params[2], region.params[3]
        stall_w, stall_d, aisle, line_w = region.pattern_params[:4]
        uu = u + length / 2
        vv = v + width / 2
        p = np.mod(vv, 2 * stall_d + aisle)
        in_rows = p < 2 * stall_d
        sep = np.mod(uu, stall_w) < line_w
        back = np.abs(p - stall_d) < line_w / 2
        marks = np.broadcast_to(in_rows & (sep | back), inside.shape) & inside
        paint[sub][marks] = 1

    def _parcels(self, region: Region, u, v, inside, ids, shade, sub) -> None:
        a, b = region.pattern_params[:2]
        options = np.array(region.pattern_params[2:], np.uint8)
        iu, iv = np.floor(u / a), np.floor(v / b)
        h = hash_unit(region.seed, iu, iv)
        choice = options[np.minimum((h * len(options)).astype(np.int64), len(options) - 1)]
        choice = np.broadcast_to(choice, inside.shape)
        ids[sub][inside] = choice[inside]
        fu, fv = u - iu * a, v - iv * b
        across = hash_unit(region.seed + 1, iu, iv) < 0.5
        period = 5.0 * self.scale
        stripe = np.where(across, np.sin(fu * (2 * math.pi / period)), np.sin(fv * (2 * math.pi / period)))
        edge = (np.minimum(fu, a - fu) < 1.2) | (np.minimum(fv, b - fv) < 1.2)
        s = (np.float32(0.05) * stripe - np.float32(0.14) * edge).astype(np.float32)
        shade[sub] += np.where(inside, np.broadcast_to(s, inside.shape), np.float32(0))

    def ground_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Ground type id under points (continuous pixel coordinates)."""
        xs = np.asarray(xs, np.float64)
        ys = np.asarray(ys, np.float64)
        if xs.size == 0:
            return np.zeros(xs.shape, np.uint8)
        return self._evaluate(xs, ys, None)[0]

    def ground_grid(
        self, x0: int, y0: int, width: int, height: int, keep: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, shade, paint)`` at the pixel centres of a window.

        ``keep=True`` remembers the result for the next call on the same window while the regions
        stay the same (placement evaluates the ground that rendering then needs again).
        """
        key = (x0, y0, width, height, len(self.regions))
        cached = self.__dict__.pop("_kept", None)
        if cached is not None and cached[0] == key:
            result = cached[1]
        else:
            xs = (np.arange(x0, x0 + width, dtype=np.float32) + np.float32(0.5))[None, :]
            ys = (np.arange(y0, y0 + height, dtype=np.float32) + np.float32(0.5))[:, None]
            result = self._evaluate(xs, ys, (x0, y0, width, height))
        if keep:
            self.__dict__["_kept"] = (key, result)
        return result

    # ------------------------------------------------------------------ rendering

    def render(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Ground colours of a window as float32 ``(height, width, 3)`` in 0..255 (before grain)."""
        ids, shade, paint = self.ground_grid(x0, y0, width, height)
        s = self.scale
        n_lo = fbm_grid(self.seed + 11, x0, y0, width, height, (110 * s, 40 * s))
        n_hi = fbm_grid(self.seed + 23, x0, y0, width, height, (max(2.0, 5 * s), max(1.5, 2 * s)))
        n_t = value_noise_grid(self.seed + 37, x0, y0, width, height, 170 * s)
        bright = np.float32(1.0) + GROUND_LO.take(ids) * n_lo + GROUND_HI.take(ids) * n_hi + shade
        rgb = np.empty((height, width, 3), np.float32)
        for ch in range(3):  # per-channel 1-D lookups are several times faster than a (T, 3) gather
            rgb[..., ch] = GROUND_BASE[:, ch].take(ids) * bright + GROUND_TINT[:, ch].take(ids) * n_t
        if paint.any():
            table = np.zeros((max(PAINT) + 1, 3), np.float32)
            for code, colour in PAINT.items():
                table[code] = colour
            painted = paint > 0
            rgb[painted] = table[paint[painted]] * (np.float32(0.92) + np.float32(0.08) * n_hi[painted, None])
        return rgb

    def grain(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Per-pixel sensor grain in ``[-1, 1)`` (added after the objects are drawn)."""
        return white_noise_grid(self.seed + 53, x0, y0, width, height)

    def cover(self, x0: int, y0: int, width: int, height: int, samples: int = 24) -> dict[str, float]:
        """Share of the window covered by each ground name (sampled on a ``samples`` grid)."""
        xs = x0 + (np.arange(samples) + 0.5) * width / samples
        ys = y0 + (np.arange(samples) + 0.5) * height / samples
        ids = self.ground_at(np.repeat(xs[None, :], samples, 0), np.repeat(ys[:, None], samples, 1))
        out: dict[str, float] = {}
        for gid, count in zip(*np.unique(ids, return_counts=True), strict=True):
            name = GROUND_NAMES[int(gid)]
            out[name] = out.get(name, 0.0) + float(count) / ids.size
        return out

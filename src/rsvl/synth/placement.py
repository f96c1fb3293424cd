"""Placing objects without overlaps on the ground they belong on.

A :class:`Placer` works on one canvas (the whole image, or one district of a large image) with
an occupancy raster of object ids. A candidate is accepted when the ground under its outline is
one its class allows (ships on water, planes on pavement...), it overlaps earlier objects by at
most ``overlap_tol`` of the smaller one's area, and enough of it lies inside the image (objects
cut by the border are allowed and flagged as truncated later). Reserved areas (VisDrone ignored
regions) refuse every object except those placed for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rsvl.synth.draw import object_mask
from rsvl.synth.objects import CLASSES, ClassSpec, SceneObject, build_object
from rsvl.synth.terrain import GroundPlan

__all__ = ["Placer", "PlacerConfig"]


@dataclass(frozen=True)
class PlacerConfig:
    """Rules of placement: overlap tolerance, truncation, and the smallest drawable object."""

    overlap_tol: float = 0.02
    allow_truncated: bool = True
    min_visible: float = 0.4
    min_length: float = 2.0
    max_objects: int = 400


class Placer:
    """Places objects on the canvas ``(x0, y0, w, h)`` of an image of size ``image``."""

    def __init__(
        self,
        canvas: tuple[int, int, int, int],
        image: tuple[int, int],
        ground: GroundPlan,
        rng: np.random.Generator,
        sun: tuple[float, float],
        config: PlacerConfig | None = None,
    ):
        self.canvas = canvas
        self.image = image
        self.ground = ground
        self.rng = rng
        self.sun = sun
        self.config = config or PlacerConfig()
        self.objects: list[SceneObject] = []
        self._areas: list[int] = []
        self._occ: np.ndarray | None = None
        self._ids: np.ndarray | None = None
        self._reserved: list[tuple[float, float, float, float]] = []
        self.keep_ground = False
        """Leave the evaluated ground in the plan's one-entry cache for rendering (whole images)."""

    # ------------------------------------------------------------------ ground lookups

    def _ground_ids(self) -> np.ndarray:
        if self._ids is None:
            x0, y0, w, h = self.canvas
            self._ids = self.ground.ground_grid(x0, y0, w, h, keep=self.keep_ground)[0]
            self._occ = np.zeros((h, w), np.int32)
        return self._ids

    def freeze_ground(self) -> None:
        """Snapshot the ground (call after the last region is added; placement does it lazily)."""
        self._ground_ids()

    def ground_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Ground ids at points; 255 for points outside the canvas."""
        ids = self._ground_ids()
        x0, y0, w, h = self.canvas
        cols = np.floor(np.asarray(xs) - x0).astype(np.int64)
        rows = np.floor(np.asarray(ys) - y0).astype(np.int64)
        ok = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
        out = np.full(cols.shape, 255, np.uint8)
        out[ok] = ids[rows[ok], cols[ok]]
        return out

    @property
    def occupancy(self) -> np.ndarray:
        self._ground_ids()
        assert self._occ is not None
        return self._occ

    # ------------------------------------------------------------------ reservations

    def reserve(self, rect: tuple[float, float, float, float]) -> bool:
        """Reserve an axis-aligned rectangle (x0, y0, x1, y1) if no object overlaps it; -1 marks it."""
        occ = self.occupancy
        cx0, cy0, w, h = self.canvas
        c0, r0 = max(int(rect[0]) - cx0, 0), max(int(rect[1]) - cy0, 0)
        c1, r1 = min(math.ceil(rect[2]) - cx0, w), min(math.ceil(rect[3]) - cy0, h)
        if c1 <= c0 or r1 <= r0 or occ[r0:r1, c0:c1].any():
            return False
        occ[r0:r1, c0:c1] = -1 - len(self._reserved)
        self._reserved.append(rect)
        return True

    # ------------------------------------------------------------------ candidates

    def sample_size(
        self, spec: ClassSpec, scale: float, size: tuple[float, float] | None = None
    ) -> tuple[float, float]:
        """A random ``(length, width)`` in pixels (``size`` overrides the class's length range)."""
        lo, hi = size or spec.length
        length = max(self.rng.uniform(lo, hi) * scale, self.config.min_length)
        width = max(length * self.rng.uniform(*spec.aspect), min(self.config.min_length, length) * 0.6)
        return length, width

    def sample_color(self, spec: ClassSpec) -> str:
        """A colour name drawn with the class's weights."""
        names = [c for c, _ in spec.colors]
        weights = np.array([w for _, w in spec.colors], np.float64)
        return names[int(self.rng.choice(len(names), p=weights / weights.sum()))]

    def try_add(
        self,
        spec: ClassSpec | str,
        cx: float,
        cy: float,
        length: float,
        width: float,
        angle: float,
        *,
        color: str | None = None,
        grounds: frozenset[int] | None = None,
        check_ground: bool = True,
        reserved: int | None = None,
        attrs: dict | None = None,
    ) -> SceneObject | None:
        """Build the object and keep it if it fits; returns it, or None when refused.

        ``reserved`` is the reservation index the object belongs to (it may only stand there).
        """
        if isinstance(spec, str):
            spec = CLASSES[spec]
        if len(self.objects) >= self.config.max_objects:
            return None
        occ = self.occupancy
        cx0, cy0, w, h = self.canvas
        col, row = math.floor(cx - cx0), math.floor(cy - cy0)
        allowed = spec.grounds if grounds is None else grounds
        if 0 <= col < w and 0 <= row < h:
            centre = occ[row, col]
            if reserved is None and centre != 0:
                return None
            if reserved is not None and centre != -1 - reserved:
                return None
            if check_ground and int(self._ground_ids()[row, col]) not in allowed:
                return None
        elif not self.config.allow_truncated:
            return None
        obj = build_object(spec, self.rng, cx, cy, length, width, angle, color or self.sample_color(spec), self.sun)
        if attrs:
            obj.attrs.update(attrs)
        mask, mx0, my0 = object_mask(obj)
        full_area = int(mask.sum())
        # the part of the mask on the canvas, and on the image
        ix0, iy0 = max(mx0, cx0), max(my0, cy0)
        ix1, iy1 = min(mx0 + mask.shape[1], cx0 + w), min(my0 + mask.shape[0], cy0 + h)
        inside = mask[iy0 - my0 : iy1 - my0, ix0 - mx0 : ix1 - mx0] if ix1 > ix0 and iy1 > iy0 else None
        visible = int(inside.sum()) if inside is not None else 0
        if visible < full_area:
            if not self.config.allow_truncated or not self._canvas_edge_is_image_edge(mx0, my0, mask.shape):
                return None
            if visible < self.config.min_visible * full_area or visible == 0:
                return None
        if check_ground:
            pts = np.concatenate(obj.silhouette, 0)
            if len(pts) > 24:
                pts = pts[:: math.ceil(len(pts) / 24)]
            pts = np.concatenate([pts * 0.9 + np.array([cx, cy]) * 0.1, [[cx, cy]]], 0)
            g = self.ground_at(pts[:, 0], pts[:, 1])
            g = g[g != 255]
            if g.size == 0 or not np.isin(g, list(allowed)).all():
                return None
        assert inside is not None
        window = occ[iy0 - cy0 : iy1 - cy0, ix0 - cx0 : ix1 - cx0]
        under = window[inside]
        if reserved is None and (under < 0).any():
            return None
        if reserved is not None and ((under < 0) & (under != -1 - reserved)).any():
            return None
        others = under[under > 0]
        if others.size:
            ids, counts = np.unique(others, return_counts=True)
            for oid, count in zip(ids.tolist(), counts.tolist(), strict=True):
                limit = self.config.overlap_tol * min(visible, self._areas[oid - 1])
                if count > limit:
                    return None
        self.objects.append(obj)
        self._areas.append(visible)
        free = inside & (window <= 0)
        window[free] = len(self.objects)
        return obj

    def _canvas_edge_is_image_edge(self, mx0: int, my0: int, shape: tuple[int, ...]) -> bool:
        """Objects may leave the canvas only across the image border (not into a neighbour district)."""
        cx0, cy0, w, h = self.canvas
        W, H = self.image
        if mx0 < cx0 and cx0 != 0:
            return False
        if my0 < cy0 and cy0 != 0:
            return False
        if mx0 + shape[1] > cx0 + w and cx0 + w != W:
            return False
        return not (my0 + shape[0] > cy0 + h and cy0 + h != H)

    def scatter(
        self,
        spec: ClassSpec | str,
        count: int,
        scale: float,
        *,
        area: tuple[float, float, float, float] | None = None,
        angle: float | None = None,
        angle_jitter: float = 0.0,
        flip: bool = True,
        size: tuple[float, float] | None = None,
        grounds: frozenset[int] | None = None,
        tries: int = 10,
        color: str | None = None,
        reserved: int | None = None,
    ) -> list[SceneObject]:
        """Place up to ``count`` objects at random positions in ``area`` (default: the canvas).

        ``angle`` fixes the heading (``flip`` lets half of them face the other way); otherwise it is
        uniform. Gives up on an object after ``tries`` refused candidates.
        """
        if isinstance(spec, str):
            spec = CLASSES[spec]
        cx0, cy0, w, h = self.canvas
        if area is None:
            margin = 0.15 * spec.length[1] * scale if self.config.allow_truncated else 0.0
            area = (cx0 - margin, cy0 - margin, cx0 + w + margin, cy0 + h + margin)
        placed: list[SceneObject] = []
        for _ in range(max(count, 0)):
            for _ in range(tries):
                x = self.rng.uniform(area[0], area[2])
                y = self.rng.uniform(area[1], area[3])
                if angle is None:
                    a = self.rng.uniform(-math.pi, math.pi)
                else:
                    a = angle + self.rng.normal(0, angle_jitter) + (math.pi if flip and self.rng.random() < 0.5 else 0)
                length, width = self.sample_size(spec, scale, size)
                obj = self.try_add(spec, x, y, length, width, a, color=color, grounds=grounds, reserved=reserved)
                if obj is not None:
                    placed.append(obj)
                    break
        return placed

"""Object classes: their shapes, colours, sizes, where they may stand, and how tall they are.

Each class has a shape function that draws the object in its own frame (``u`` along the length,
``v`` across, centred) as layers of polygons: silhouette layers (the instance mask) in the body
colour, then detail layers (windshields, court lines, roof ridges, rotor blades...) drawn on top.
:func:`build_object` places a shape in the image (centre, angle), re-centres it on its tight
extent so that the oriented box ``(cx, cy, length, width, angle)`` touches the silhouette on all
four sides, and adds the shadow cast by the scene's sun. Shapes are distinct in outline, colour
and shadow, so a small detector can tell a plane from a helicopter from a storage tank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsvl.synth.palette import COLORS, Ground
from rsvl.synth.raster import clip_polygon

__all__ = ["CLASSES", "CLASS_NAMES", "ClassSpec", "Layer", "SceneObject", "build_object"]

ColorSpec = str | tuple[str, Any]
LocalLayer = tuple[list[np.ndarray], ColorSpec, bool]
ShapeResult = list[LocalLayer] | tuple[list[LocalLayer], str]
"""A shape function returns its layers, or ``(layers, subtype)`` (``truck``/``bus`` for large vehicles)."""


# --------------------------------------------------------------------------- shape helpers


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float64)


def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cu + ru * np.cos(t), cv + rv * np.sin(t)], 1)


def _outline(u0: float, v0: float, u1: float, v1: float, t: float) -> list[np.ndarray]:
    """Four thin rectangles tracing the border of a rectangle (line thickness ``t``)."""
    return [_rect(u0, v0, u1, v0 + t), _rect(u0, v1 - t, u1, v1), _rect(u0, v0, u0 + t, v1), _rect(u1 - t, v0, u1, v1)]


def _ring(cu: float, cv: float, r: float, t: float, n: int = 32) -> list[np.ndarray]:
    """An annulus as one polygon (outer circle, then the inner one backwards: even-odd fill)."""
    outer = _ellipse(cu, cv, r, r, n)
    inner = _ellipse(cu, cv, max(r - t, 0.1), max(r - t, 0.1), n)[::-1]
    return [np.concatenate([outer, outer[:1], inner, inner[:1]], 0)]


def _line_w(size: float) -> float:
    return max(0.8, 0.012 * size)


# --------------------------------------------------------------------------- shapes (u: length, v: width)


def _plane(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    fw = max(0.06 * L, 0.5)
    fus = np.array(
        [[0.5 * L, 0], [0.44 * L, -fw], [-0.44 * L, -0.8 * fw], [-0.5 * L, -0.3 * fw],
         [-0.5 * L, 0.3 * fw], [-0.44 * L, 0.8 * fw], [0.44 * L, fw]]
    )  # fmt: skip
    sweep = rng.uniform(0.12, 0.22) * L
    tip_u = 0.14 * L - sweep
    wings = [
        np.array([[0.14 * L, s * fw], [tip_u, s * W / 2], [tip_u - 0.08 * L, s * W / 2], [-0.02 * L, s * fw]])
        for s in (-1, 1)
    ]
    tail = [
        np.array([[-0.36 * L, s * fw], [-0.46 * L, s * 0.2 * W], [-0.5 * L, s * 0.2 * W], [-0.45 * L, s * fw]])
        for s in (-1, 1)
    ]
    eng = [_rect(0.0, s * 0.2 * W - 0.025 * L, 0.09 * L, s * 0.2 * W + 0.025 * L) for s in (-1, 1)]
    cockpit = [np.array([[0.47 * L, 0], [0.43 * L, -0.6 * fw], [0.41 * L, 0.0], [0.43 * L, 0.6 * fw]])]
    return [([fus, *wings, *tail], "body", True), (eng, ("shade", 0.55), False), (cockpit, ("shade", 0.3), False)]


def _helicopter(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    body = _ellipse(0.12 * L, 0, 0.22 * L, 0.16 * L, 20)
    boom = _rect(-0.5 * L, -0.03 * L, 0.0, 0.03 * L)
    fin = _rect(-0.5 * L, -0.1 * L, -0.45 * L, 0.1 * L)
    r = 0.5 * min(W, 0.95 * L)
    phi = rng.uniform(0, math.pi / 2)
    blades = []
    for a in (phi, phi + math.pi / 2):
        c, s = math.cos(a), math.sin(a)
        t = 0.025 * L
        pts = np.array([[-r, -t], [r, -t], [r, t], [-r, t]])
        blades.append(np.stack([0.1 * L + pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], 1))
    hub = [_ellipse(0.1 * L, 0, 0.05 * L, 0.05 * L, 12)]
    return [([body, boom, fin, *blades], "body", True), (blades, ("shade", 0.45), False), (hub, ("shade", 0.3), False)]


def _ship(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    hull = np.array(
        [[-0.5 * L, -0.45 * W], [0.22 * L, -0.5 * W], [0.4 * L, -0.36 * W], [0.5 * L, 0.0],
         [0.4 * L, 0.36 * W], [0.22 * L, 0.5 * W], [-0.5 * L, 0.45 * W]]
    )  # fmt: skip
    bridge = [_rect(-0.44 * L, -0.32 * W, -0.28 * L, 0.32 * W)]
    layers: list[LocalLayer] = [([hull], "body", True), (bridge, ("contrast", None), False)]
    if L > 40:
        n = int(rng.integers(2, 6))
        us = np.linspace(-0.2 * L, 0.3 * L, n + 1)
        hatches = [_rect(us[i] + 0.01 * L, -0.3 * W, us[i + 1] - 0.01 * L, 0.3 * W) for i in range(n)]
        layers.append((hatches, ("shade", 0.8), False))
    return layers


def _small_vehicle(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    c = 0.18 * W
    body = np.array(
        [[-0.5 * L + c, -0.5 * W], [0.5 * L - c, -0.5 * W], [0.5 * L, -0.5 * W + c], [0.5 * L, 0.5 * W - c],
         [0.5 * L - c, 0.5 * W], [-0.5 * L + c, 0.5 * W], [-0.5 * L, 0.5 * W - c], [-0.5 * L, -0.5 * W + c]]
    )  # fmt: skip
    glass = [_rect(0.1 * L, -0.4 * W, 0.27 * L, 0.4 * W), _rect(-0.38 * L, -0.38 * W, -0.28 * L, 0.38 * W)]
    return [([body], "body", True), (glass, ("shade", 0.3), False)]


def _large_vehicle(rng: np.random.Generator, L: float, W: float) -> tuple[list[LocalLayer], str]:
    body = [_rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)]
    if rng.random() < 0.5:  # truck: cab and trailer
        details = [_rect(0.27 * L, -0.5 * W, 0.3 * L, 0.5 * W), _rect(0.42 * L, -0.42 * W, 0.48 * L, 0.42 * W)]
        roof = [_rect(-0.46 * L, -0.05 * W, 0.24 * L, 0.05 * W)]
        return [(body, "body", True), (details, ("shade", 0.35), False), (roof, ("shade", 0.85), False)], "truck"
    windows = [_rect(-0.45 * L, -0.5 * W, 0.45 * L, -0.36 * W), _rect(-0.45 * L, 0.36 * W, 0.45 * L, 0.5 * W)]
    units = [_rect(-0.2 * L, -0.18 * W, -0.05 * L, 0.18 * W), _rect(0.42 * L, -0.4 * W, 0.48 * L, 0.4 * W)]
    return [(body, "body", True), (windows + units, ("shade", 0.4), False)], "bus"


def _storage_tank(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    r = L / 2
    return [
        ([_ellipse(0, 0, r, r, 40)], "body", True),
        (_ring(0, 0, 0.86 * r, max(0.08 * r, 0.6), 40), ("shade", 0.78), False),
        ([_ellipse(0.0, 0.0, 0.08 * r, 0.08 * r, 10)], ("shade", 0.5), False),
    ]


def _building(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    if rng.random() < 0.35:
        cu, cv = rng.uniform(0.3, 0.55) * L, rng.uniform(0.3, 0.55) * W
        outline = np.array(
            [[-0.5 * L, -0.5 * W], [0.5 * L - cu, -0.5 * W], [0.5 * L - cu, 0.5 * W - cv], [0.5 * L, 0.5 * W - cv],
             [0.5 * L, 0.5 * W], [-0.5 * L, 0.5 * W]]
        )  # fmt: skip
    else:
        outline = _rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)
    half = clip_polygon(outline, -0.5 * L, 0.0, 0.5 * L, 0.5 * W)
    ridge = _rect(-0.5 * L, -max(0.02 * W, 0.4), 0.5 * L, max(0.02 * W, 0.4))
    ridge = clip_polygon(ridge, -0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)
    layers: list[LocalLayer] = [([outline], "body", True)]
    if len(half) >= 3:
        layers.append(([half], ("shade", 0.84), False))
    if L > 16 and len(ridge) >= 3:
        clipped = clip_polygon(ridge, *_bounds_of(outline))
        if len(clipped) >= 3:
            layers.append(([clipped], ("shade", 0.65), False))
    return layers


def _bounds_of(poly: np.ndarray) -> tuple[float, float, float, float]:
    return float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max())


def _tree(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    n = 14
    t = np.linspace(0, 2 * math.pi, n, endpoint=False) + rng.uniform(0, 1)
    rad = 0.5 * rng.uniform(0.78, 1.0, n)
    crown = np.stack([rad * L * np.cos(t), rad * W * np.sin(t)], 1)
    light = _ellipse(-0.1 * L, -0.1 * W, 0.22 * L, 0.22 * W, 12)
    return [([crown], "body", True), ([light], ("shade", 1.18), False)]


def _tennis_court(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    t = _line_w(L) * 1.2
    iu, iv = 0.4 * L, 0.36 * W
    lines = _outline(-iu, -iv, iu, iv, t)
    lines += [_rect(-t / 2, -iv, t / 2, iv), _rect(-0.22 * L, -t / 2, 0.22 * L, t / 2)]
    lines += [_rect(-0.22 * L, -iv, -0.22 * L + t, iv), _rect(0.22 * L - t, -iv, 0.22 * L, iv)]
    return [([_rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)], "body", True), (lines, ("rgb", COLORS["white"]), False)]


def _basketball_court(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    t = _line_w(L) * 1.2
    iu, iv = 0.44 * L, 0.42 * W
    lines = [*_outline(-iu, -iv, iu, iv, t), _rect(-t / 2, -iv, t / 2, iv), *_ring(0, 0, 0.13 * W, t)]
    keys = [_rect(-iu, -0.14 * W, -iu + 0.2 * L, 0.14 * W), _rect(iu - 0.2 * L, -0.14 * W, iu, 0.14 * W)]
    return [
        ([_rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)], "body", True),
        (keys, ("shade", 0.75), False),
        (lines, ("rgb", COLORS["white"]), False),
    ]


def _soccer_field(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    t = _line_w(L) * 1.2
    iu, iv = 0.46 * L, 0.44 * W
    stripes = [_rect(-iu + k * 2 * iu / 10, -iv, -iu + (k + 1) * 2 * iu / 10, iv) for k in range(0, 10, 2)]
    lines = [*_outline(-iu, -iv, iu, iv, t), _rect(-t / 2, -iv, t / 2, iv), *_ring(0, 0, 0.1 * L, t)]
    lines += _outline(-iu, -0.3 * W, -iu + 0.16 * L, 0.3 * W, t) + _outline(iu - 0.16 * L, -0.3 * W, iu, 0.3 * W, t)
    return [
        ([_rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)], "body", True),
        (stripes, ("shade", 0.88), False),
        (lines, ("rgb", COLORS["white"]), False),
    ]


def _bridge(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    t = max(0.8, 0.08 * W)
    edges = [_rect(-0.5 * L, -0.5 * W, 0.5 * L, -0.5 * W + t), _rect(-0.5 * L, 0.5 * W - t, 0.5 * L, 0.5 * W)]
    n = max(1, int(L // max(6.0, 1.2 * W)))
    dash = [_rect(-0.5 * L + (k + 0.25) * L / n, -t / 3, -0.5 * L + (k + 0.6) * L / n, t / 3) for k in range(n)]
    return [
        ([_rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)], "body", True),
        (edges, ("shade", 0.6), False),
        (dash, ("rgb", COLORS["white"]), False),
    ]


def _swimming_pool(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    t = max(0.7, 0.07 * W)
    deep = [_rect(0.1 * L, -0.5 * W + t, 0.5 * L - t, 0.5 * W - t)]
    return [
        ([_rect(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W)], "body", True),
        (deep, ("shade", 0.85), False),
        (_outline(-0.5 * L, -0.5 * W, 0.5 * L, 0.5 * W, t), ("rgb", COLORS["white"]), False),
    ]


def _roundabout(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    r = L / 2
    return [
        ([_ellipse(0, 0, r, r, 48)], "body", True),
        (_ring(0, 0, 0.34 * r, max(0.04 * r, 0.8), 40), ("rgb", COLORS["white"]), False),
        ([_ellipse(0, 0, 0.3 * r, 0.3 * r, 40)], ("rgb", (70.0, 128.0, 56.0)), False),
    ]


def _wind_mill(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    r = L / 2
    phi = rng.uniform(0, 2 * math.pi / 3)
    blades = []
    for k in range(3):
        a = phi + k * 2 * math.pi / 3
        c, s = math.cos(a), math.sin(a)
        pts = np.array([[0.0, -0.08 * r], [r, -0.045 * r], [r, 0.045 * r], [0.0, 0.08 * r]])
        blades.append(np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], 1))
    hub = _ellipse(0, 0, 0.1 * r, 0.1 * r, 12)
    return [([*blades, hub], "body", True), ([_ellipse(0, 0, 0.05 * r, 0.05 * r, 8)], ("shade", 0.6), False)]


def _person(rng: np.random.Generator, L: float, W: float) -> list[LocalLayer]:
    return [
        ([_ellipse(0, 0, L / 2, W / 2, 12)], "body", True),
        ([_ellipse(0, 0, 0.22 * L, 0.3 * W, 8)], ("rgb", (40.0, 30.0, 26.0)), False),
    ]


# --------------------------------------------------------------------------- class table

_LAND = frozenset({Ground.GRASS, Ground.URBAN, Ground.PAVEMENT, Ground.BARE_SOIL, Ground.SAND})
_PAVED = frozenset({Ground.PAVEMENT, Ground.ASPHALT, Ground.URBAN})
_FIELDS = frozenset({Ground.FIELD_GREEN, Ground.FIELD_YELLOW, Ground.FIELD_BROWN})


@dataclass(frozen=True)
class ClassSpec:
    """One object class.

    Attributes:
        name: label name (DOTA spelling where DOTA has the class).
        noun, plural: words for captions and questions.
        length: range of the long side in pixels at scene scale 1 (about 0.5 m/px).
        aspect: range of width / length.
        colors: colour names the class comes in, with weights.
        grounds: ground types the whole object may stand on.
        height: shadow length as a fraction of the object's length (0: flat, no shadow).
        tower: cast a pole shadow from the centre too (wind turbines, people).
        shape: the shape function.
        supercategory: COCO supercategory.
    """

    name: str
    noun: str
    plural: str
    length: tuple[float, float]
    aspect: tuple[float, float]
    colors: tuple[tuple[str, float], ...]
    grounds: frozenset[int]
    height: float
    shape: Callable[[np.random.Generator, float, float], ShapeResult]
    supercategory: str
    tower: bool = False


CLASSES: dict[str, ClassSpec] = {
    c.name: c
    for c in (
        ClassSpec("plane", "plane", "planes", (36, 120), (0.8, 1.0),
                  (("white", 6), ("gray", 2), ("red", 1), ("blue", 1)),
                  frozenset({Ground.PAVEMENT, Ground.ASPHALT}), 0.08, _plane, "aircraft"),
        ClassSpec("helicopter", "helicopter", "helicopters", (24, 40), (0.85, 0.95),
                  (("red", 2), ("white", 2), ("blue", 1), ("yellow", 1), ("black", 1)),
                  frozenset({Ground.PAVEMENT, Ground.ASPHALT, Ground.GRASS}), 0.1, _helicopter, "aircraft"),
        ClassSpec("ship", "ship", "ships", (18, 150), (0.2, 0.32),
                  (("white", 3), ("gray", 2), ("red", 2), ("blue", 2), ("black", 1), ("orange", 1)),
                  frozenset({Ground.WATER}), 0.05, _ship, "vessel"),
        ClassSpec("small-vehicle", "small vehicle", "small vehicles", (8, 14), (0.42, 0.52),
                  (("white", 4), ("black", 3), ("gray", 3), ("red", 2), ("blue", 2), ("yellow", 1), ("green", 1)),
                  _PAVED | {Ground.BARE_SOIL}, 0.12, _small_vehicle, "vehicle"),
        ClassSpec("large-vehicle", "large vehicle", "large vehicles", (20, 40), (0.28, 0.38),
                  (("white", 3), ("yellow", 2), ("blue", 2), ("red", 2), ("orange", 1), ("gray", 1)),
                  _PAVED | {Ground.BARE_SOIL}, 0.14, _large_vehicle, "vehicle"),
        ClassSpec("storage-tank", "storage tank", "storage tanks", (16, 80), (1.0, 1.0),
                  (("white", 5), ("gray", 3)),
                  frozenset({Ground.PAVEMENT, Ground.BARE_SOIL, Ground.URBAN, Ground.SAND}), 0.3, _storage_tank,
                  "facility"),
        ClassSpec("building", "building", "buildings", (18, 90), (0.45, 1.0),
                  (("gray", 3), ("red", 3), ("brown", 2), ("white", 2), ("blue", 1)),
                  _LAND, 0.3, _building, "facility"),
        ClassSpec("tree", "tree", "trees", (8, 30), (0.85, 1.0),
                  (("green", 3), ("dark green", 3)),
                  frozenset({Ground.GRASS, Ground.URBAN, Ground.BARE_SOIL, Ground.SAND}) | _FIELDS, 0.35, _tree,
                  "vegetation"),
        ClassSpec("tennis-court", "tennis court", "tennis courts", (44, 56), (0.45, 0.55),
                  (("green", 3), ("blue", 2), ("red", 1)),
                  frozenset({Ground.GRASS, Ground.URBAN, Ground.PAVEMENT}), 0.0, _tennis_court, "playfield"),
        ClassSpec("basketball-court", "basketball court", "basketball courts", (48, 62), (0.5, 0.58),
                  (("orange", 3), ("blue", 2), ("red", 1)),
                  frozenset({Ground.GRASS, Ground.URBAN, Ground.PAVEMENT}), 0.0, _basketball_court, "playfield"),
        ClassSpec("soccer-ball-field", "soccer field", "soccer fields", (180, 240), (0.6, 0.68),
                  (("green", 1),),
                  frozenset({Ground.GRASS, Ground.URBAN, Ground.PAVEMENT}), 0.0, _soccer_field, "playfield"),
        ClassSpec("bridge", "bridge", "bridges", (80, 300), (0.06, 0.2),
                  (("gray", 3), ("white", 1)),
                  frozenset(), 0.06, _bridge, "facility"),
        ClassSpec("swimming-pool", "swimming pool", "swimming pools", (14, 40), (0.4, 0.7),
                  (("cyan", 3), ("blue", 2)),
                  frozenset({Ground.GRASS, Ground.URBAN, Ground.PAVEMENT}), 0.0, _swimming_pool, "facility"),
        ClassSpec("roundabout", "roundabout", "roundabouts", (60, 130), (1.0, 1.0),
                  (("gray", 1),),
                  frozenset(), 0.0, _roundabout, "facility"),
        ClassSpec("wind-mill", "wind turbine", "wind turbines", (30, 70), (1.0, 1.0),
                  (("white", 1),),
                  _FIELDS | {Ground.GRASS, Ground.BARE_SOIL, Ground.SAND}, 0.9, _wind_mill, "facility", tower=True),
        ClassSpec("person", "person", "people", (2.5, 4.0), (0.6, 0.8),
                  (("red", 2), ("blue", 2), ("white", 2), ("black", 2), ("yellow", 1)),
                  _LAND | {Ground.ASPHALT}, 0.9, _person, "person", tower=True),
    )
}  # fmt: skip
"""Every object class, by label name."""

CLASS_NAMES: tuple[str, ...] = tuple(CLASSES)


# --------------------------------------------------------------------------- placed objects


@dataclass
class Layer:
    """Polygons (global pixel coordinates) drawn in one colour; ``silhouette`` layers form the mask."""

    polys: list[np.ndarray]
    rgb: tuple[float, float, float]
    silhouette: bool


@dataclass(eq=False)
class SceneObject:
    """An object placed in a scene, in global pixel coordinates.

    ``(cx, cy, length, width, angle)`` is the oriented box of the whole object (before any
    truncation by the image border; ``length`` along the heading). Labels derived from pixels
    (mask, truncation, visible boxes) are computed by :mod:`rsvl.synth.scene`.
    """

    category: str
    color: str
    rgb: tuple[float, float, float]
    cx: float
    cy: float
    length: float
    width: float
    angle: float
    layers: list[Layer]
    shadow: list[np.ndarray]
    shadow_alpha: float
    subtype: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    mask_cache: tuple[np.ndarray, int, int] | None = field(default=None, repr=False, compare=False)
    label: Any = field(default=None, repr=False)

    @property
    def silhouette(self) -> list[np.ndarray]:
        return [p for layer in self.layers if layer.silhouette for p in layer.polys]

    def bounds(self, with_shadow: bool = False) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` enclosing the silhouette (and the shadow)."""
        polys = self.silhouette + (self.shadow if with_shadow else [])
        pts = np.concatenate(polys, 0)
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def translate(self, dx: float, dy: float) -> None:
        """Move the object (and its shadow) by ``(dx, dy)`` pixels."""
        d = np.array([dx, dy])
        self.mask_cache = None
        self.cx += dx
        self.cy += dy
        for layer in self.layers:
            layer.polys = [p + d for p in layer.polys]
        self.shadow = [p + d for p in self.shadow]


def _resolve(spec: ColorSpec, rgb: np.ndarray, color: str) -> tuple[float, float, float]:
    if spec == "body":
        out = rgb
    elif spec[0] == "shade":
        out = rgb * float(spec[1])
    elif spec[0] == "rgb":
        out = np.asarray(spec[1], np.float64)
    elif spec[0] == "contrast":  # a part in a colour that stands out from the body
        out = np.asarray(COLORS["gray"] if color == "white" else COLORS["white"], np.float64)
    else:
        raise ValueError(f"unknown colour spec {spec!r}")
    out = np.clip(out, 0, 255)
    return float(out[0]), float(out[1]), float(out[2])


def build_object(
    spec: ClassSpec,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    length: float,
    width: float,
    angle: float,
    color: str,
    sun: tuple[float, float],
    subtype: str | None = None,
) -> SceneObject:
    """Draw ``spec`` at ``(cx, cy)`` heading ``angle`` (radians, image coordinates, y down).

    ``sun`` is the shadow direction as a unit vector; the shadow's length is ``spec.height`` times
    the object's length. The object is re-centred on its silhouette's tight extent.
    """
    local = spec.shape(rng, length, width)
    if isinstance(local, tuple):
        local, subtype = local[0], subtype or local[1]
    sil = np.concatenate([p for polys, _, s in local if s for p in polys], 0)
    u0, v0 = sil.min(0)
    u1, v1 = sil.max(0)
    shift = np.array([(u0 + u1) / 2, (v0 + v1) / 2])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # row vectors: [u, v] @ rot = [u c - v s, u s + v c]
    centre = np.array([cx, cy])
    base_rgb = np.asarray(COLORS[color], np.float64) * rng.uniform(0.93, 1.07)
    layers = [
        Layer([(p - shift) @ rot + centre for p in polys], _resolve(cs, base_rgb, color), bool(sil_flag))
        for polys, cs, sil_flag in local
    ]
    obj_len, obj_wid = float(u1 - u0), float(v1 - v0)
    # tall things cast long shadows, but a large footprint does not make a building taller
    offset = np.array(sun) * spec.height * min(max(obj_len, obj_wid), 50.0)
    shadow: list[np.ndarray] = []
    if spec.height > 0:
        shadow = [p + offset for layer in layers if layer.silhouette for p in layer.polys]
        if spec.tower:
            n = np.array([-offset[1], offset[0]]) / max(float(np.hypot(*offset)), 1e-9)
            half = max(0.04 * obj_len, 0.5) * n
            shadow.append(np.array([centre - half, centre + half, centre + offset + half, centre + offset - half]))
    return SceneObject(
        category=spec.name,
        color=color,
        rgb=_resolve("body", base_rgb, color),
        cx=cx,
        cy=cy,
        length=obj_len,
        width=obj_wid,
        angle=angle,
        layers=layers,
        shadow=shadow,
        shadow_alpha=0.45,
        subtype=subtype,
    )

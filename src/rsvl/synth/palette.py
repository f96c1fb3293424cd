"""Named colours of objects and the ground types of the terrain, with their rendering parameters.

Object colours use a small vocabulary of names that captions, VQA answers and referring
expressions share; each name has one RGB value far enough from the others that "the red
vehicle" is visibly red. Ground types carry a base colour and the amplitudes of the low- and
high-frequency texture noise that makes water smooth, forest canopy rough and fields patchy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "COLORS",
    "GROUND",
    "GROUND_BASE",
    "GROUND_HI",
    "GROUND_LO",
    "GROUND_NAMES",
    "GROUND_TINT",
    "PAINT",
    "Ground",
    "GroundType",
    "nearest_color",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "gray": (128, 128, 132),
    "black": (28, 28, 32),
    "red": (196, 34, 30),
    "blue": (36, 70, 190),
    "green": (52, 150, 48),
    "dark green": (24, 84, 32),
    "yellow": (228, 198, 36),
    "orange": (232, 122, 24),
    "brown": (124, 78, 42),
    "cyan": (48, 192, 212),
}
"""Object colour names and their RGB values."""


def nearest_color(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """The colour name whose RGB value is nearest (Euclidean) to ``rgb``."""
    names = list(COLORS)
    table = np.array([COLORS[n] for n in names], np.float64)
    d = ((table - np.asarray(rgb, np.float64)[None, :]) ** 2).sum(1)
    return names[int(np.argmin(d))]


class Ground:
    """Ground type ids (small ints, stored per pixel as uint8)."""

    GRASS = 0
    FIELD_GREEN = 1
    FIELD_YELLOW = 2
    FIELD_BROWN = 3
    FOREST = 4
    WATER = 5
    URBAN = 6
    PAVEMENT = 7
    ASPHALT = 8
    BARE_SOIL = 9
    SAND = 10


@dataclass(frozen=True)
class GroundType:
    """How one ground type looks: base RGB, texture amplitudes (fractions of brightness), tint."""

    id: int
    name: str
    rgb: tuple[int, int, int]
    lo: float
    hi: float
    tint: tuple[float, float, float]


GROUND: tuple[GroundType, ...] = (
    GroundType(Ground.GRASS, "grass", (96, 132, 62), 0.10, 0.08, (6.0, 8.0, -2.0)),
    GroundType(Ground.FIELD_GREEN, "field", (108, 150, 58), 0.06, 0.05, (8.0, 6.0, 0.0)),
    GroundType(Ground.FIELD_YELLOW, "field", (192, 172, 98), 0.05, 0.05, (6.0, 4.0, -4.0)),
    GroundType(Ground.FIELD_BROWN, "field", (138, 104, 72), 0.06, 0.06, (6.0, 3.0, 0.0)),
    GroundType(Ground.FOREST, "forest", (38, 74, 40), 0.10, 0.30, (4.0, 10.0, 2.0)),
    GroundType(Ground.WATER, "water", (34, 66, 88), 0.07, 0.02, (0.0, 6.0, 6.0)),
    GroundType(Ground.URBAN, "urban", (152, 146, 136), 0.06, 0.07, (4.0, 2.0, 0.0)),
    GroundType(Ground.PAVEMENT, "pavement", (176, 176, 170), 0.03, 0.04, (2.0, 2.0, 2.0)),
    GroundType(Ground.ASPHALT, "road", (78, 78, 82), 0.04, 0.04, (1.0, 1.0, 2.0)),
    GroundType(Ground.BARE_SOIL, "bare soil", (156, 120, 84), 0.09, 0.07, (8.0, 4.0, 0.0)),
    GroundType(Ground.SAND, "sand", (206, 186, 146), 0.06, 0.04, (6.0, 4.0, 0.0)),
)
"""Ground types, indexed by id."""

GROUND_NAMES: tuple[str, ...] = tuple(g.name for g in GROUND)
GROUND_BASE = np.array([g.rgb for g in GROUND], np.float32)
GROUND_LO = np.array([g.lo for g in GROUND], np.float32)
GROUND_HI = np.array([g.hi for g in GROUND], np.float32)
GROUND_TINT = np.array([g.tint for g in GROUND], np.float32)

PAINT: dict[int, tuple[int, int, int]] = {1: (232, 232, 226), 2: (226, 196, 58)}
"""Road paint colours by paint code (1 white, 2 yellow); 0 means no paint."""

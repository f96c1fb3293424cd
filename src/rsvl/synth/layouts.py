"""Scene recipes: the terrain and the objects of each scene class.

A recipe lays out the ground of a canvas (regions: runways, aprons, shorelines, roads, parking
lots...) and then asks the :class:`~rsvl.synth.placement.Placer` for the objects that define the
scene (planes on the apron, ships on the water, vehicles in parking stalls...). The scene class
used as the classification label is the recipe's name; each recipe places at least one of its
defining objects (a ``harbor`` has a ship, an ``airport`` a plane...) or, failing that, the
caller retries with another layout. Counts scale with the canvas area and the scene scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rsvl.synth.objects import CLASSES, SceneObject
from rsvl.synth.palette import Ground
from rsvl.synth.placement import Placer
from rsvl.synth.terrain import GroundPlan, Region, stall_slots

__all__ = ["RECIPES", "SCENE_CLASSES", "Feature", "LayoutContext"]

_FIELDS = (Ground.FIELD_GREEN, Ground.FIELD_YELLOW, Ground.FIELD_BROWN)


@dataclass(frozen=True)
class Feature:
    """A named part of the terrain that texts may refer to (``parking lot``, ``river``...)."""

    kind: str
    bbox: tuple[float, float, float, float]
    region: Region | None = None

    def contains(self, x: float, y: float) -> bool:
        """Whether the point lies in the feature (its region when it has one, else its box)."""
        if self.region is not None:
            return bool(self.region.local(np.array([x]), np.array([y]))[2][0] < 0)
        b = self.bbox
        return b[0] <= x < b[2] and b[1] <= y < b[3]


@dataclass
class LayoutContext:
    """What a recipe works with: the canvas, the scale, the ground plan and the placer."""

    rng: np.random.Generator
    canvas: tuple[int, int, int, int]
    scale: float
    ground: GroundPlan
    placer: Placer
    density: float = 1.0
    class_weights: Mapping[str, float] = field(default_factory=dict)
    clip: bool = False
    features: list[Feature] = field(default_factory=list)
    _seed_counter: int = 0

    # -------------------------------------------------------------- geometry helpers

    @property
    def x0(self) -> int:
        return self.canvas[0]

    @property
    def y0(self) -> int:
        return self.canvas[1]

    @property
    def w(self) -> int:
        return self.canvas[2]

    @property
    def h(self) -> int:
        return self.canvas[3]

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.w / 2, self.y0 + self.h / 2

    def point(self, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
        """A random point with relative coordinates in ``[lo, hi]`` of the canvas."""
        return self.x0 + self.rng.uniform(lo, hi) * self.w, self.y0 + self.rng.uniform(lo, hi) * self.h

    def grid_angle(self, axis_prob: float = 0.6) -> float:
        """An orientation for a layout: usually close to the image axes, sometimes anything."""
        if self.rng.random() < axis_prob:
            return float(self.rng.integers(0, 2) * math.pi / 2 + self.rng.normal(0, 0.03))
        return float(self.rng.uniform(-math.pi / 2, math.pi / 2))

    def px(self, lo: float, hi: float) -> float:
        """A random length in ``[lo, hi]`` nominal pixels, scaled."""
        return float(self.rng.uniform(lo, hi) * self.scale)

    def next_seed(self) -> int:
        self._seed_counter += 1
        return int(self.ground.seed * 31 + self._seed_counter * 1009 + self.x0 * 7 + self.y0 * 13) % (1 << 62)

    @property
    def diag(self) -> float:
        return math.hypot(self.w, self.h)

    # -------------------------------------------------------------- building blocks

    def add(self, region: Region) -> Region:
        """Add a region (clipped to the canvas in large images) and return it."""
        if self.clip:
            c = (float(self.x0), float(self.y0), float(self.x0 + self.w), float(self.y0 + self.h))
            region = Region(**{**region.__dict__, "clip": c})
        self.ground.regions.append(region)
        return region

    def road(self, px: float, py: float, angle: float, width: float, paint: int = 1, ground: int = Ground.ASPHALT):
        s = self.scale
        pattern = "road" if paint else "none"
        return self.add(
            Region(
                ground,
                "band",
                (px, py, angle, width),
                pattern=pattern,
                pattern_params=(max(0.8, 1.2 * s), 8 * s, 8 * s, paint),
                name="road",
                seed=self.next_seed(),
            )
        )

    def n(self, lo: int, hi: int, cls: str | None = None) -> int:
        """A random count in ``[lo, hi]`` scaled by canvas area, scale, density and class weight."""
        area = (self.w * self.h) / (512.0 * 512.0) / max(self.scale, 0.05) ** 2
        factor = min(area, 8.0) * self.density
        weight = self.class_weights.get(cls, 1.0) if cls else 1.0
        if weight < 1.0:
            if self.rng.random() >= weight:
                return 0
            weight = 1.0
        value = self.rng.integers(lo, hi + 1) * factor * weight
        return math.floor(value + self.rng.random())

    def scatter(self, cls: str, lo: int, hi: int, **kw) -> list[SceneObject]:
        return self.placer.scatter(cls, self.n(lo, hi, cls), self.scale, **kw)

    def along(self, cls: str, road: Region, count: int, **kw) -> list[SceneObject]:
        """Vehicles driving on a road band (on a lane, heading along it)."""
        px, py, angle, width = road.params[:4]
        c, s = math.cos(angle), math.sin(angle)
        placed = []
        spec = CLASSES[cls]
        for _ in range(count):
            for _ in range(8):
                u = self.rng.uniform(-self.diag / 2, self.diag / 2)
                lane = 1 if self.rng.random() < 0.5 else -1
                v = lane * width / 4
                ccx, ccy = self.centre
                bx = px + (ccx - px) * c * c + (ccy - py) * s * c  # project the canvas centre on the road
                by = py + (ccx - px) * c * s + (ccy - py) * s * s
                x, y = bx + u * c - v * s, by + u * s + v * c
                heading = angle + (0 if lane > 0 else math.pi) + self.rng.normal(0, 0.02)
                length, wid = self.placer.sample_size(spec, self.scale)
                if wid > width / 2:
                    continue
                obj = self.placer.try_add(spec, x, y, length, wid, heading, **kw)
                if obj is not None:
                    placed.append(obj)
                    break
        return placed

    def parking_lot(self, cx: float, cy: float, length: float, width: float, angle: float, occupancy: float):
        """A paved lot with painted stalls; parks small vehicles in a share ``occupancy`` of them."""
        s = self.scale
        stall_w, stall_d, aisle = 7.5 * s, 16.0 * s, 14.0 * s
        region = self.add(
            Region(
                Ground.PAVEMENT,
                "rect",
                (cx, cy, length, width, angle),
                pattern="stalls",
                pattern_params=(stall_w, stall_d, aisle, max(0.7, 0.8 * s)),
                name="parking lot",
                seed=self.next_seed(),
            )
        )
        return region, (stall_w, stall_d)

    def fill_stalls(self, region: Region, stall: tuple[float, float], occupancy: float) -> list[SceneObject]:
        spec = CLASSES["small-vehicle"]
        stall_w, stall_d = stall
        placed = []
        slots = stall_slots(region)
        for x, y, a in slots[self.rng.permutation(len(slots))]:
            if self.rng.random() >= occupancy:
                continue
            length = min(self.rng.uniform(*spec.length) * self.scale, 0.85 * stall_d)
            width = min(length * self.rng.uniform(*spec.aspect), 0.75 * stall_w)
            heading = a + (math.pi if self.rng.random() < 0.5 else 0.0) + self.rng.normal(0, 0.03)
            obj = self.placer.try_add(spec, x + self.rng.normal(0, 0.3), y, length, width, heading)
            if obj is not None:
                placed.append(obj)
        return placed

    def feature(self, kind: str, region: Region) -> None:
        """Record a named part of the terrain (its box clipped to the canvas) for the texts."""
        b = region.bounds()
        x0, y0 = max(b[0], self.x0), max(b[1], self.y0)
        x1, y1 = min(b[2], self.x0 + self.w), min(b[3], self.y0 + self.h)
        if x1 > x0 and y1 > y0:
            self.features.append(Feature(kind, (x0, y0, x1, y1), region))

    def halfplane_into(self, angle: float) -> tuple[float, float]:
        """Unit vector pointing into the inside (``v < 0``) of a half-plane with direction ``angle``."""
        return math.sin(angle), -math.cos(angle)


# ------------------------------------------------------------------------------ recipes

Recipe = Callable[[LayoutContext], None]


def airport(ctx: LayoutContext) -> None:
    rng, s = ctx.rng, ctx.scale
    ctx.ground.base = int(rng.choice([Ground.GRASS, Ground.BARE_SOIL, Ground.SAND]))
    a = ctx.grid_angle(0.5)
    nx, ny = -math.sin(a), math.cos(a)
    cx, cy = ctx.centre
    side = 1 if rng.random() < 0.5 else -1
    off = side * rng.uniform(0.2, 0.38) * min(ctx.w, ctx.h)
    rw = ctx.px(34, 50)
    rx, ry = cx + nx * off, cy + ny * off
    runway = ctx.add(
        Region(Ground.ASPHALT, "band", (rx, ry, a, rw), pattern="runway",
               pattern_params=(max(0.8, 1.5 * s), 18 * s, 14 * s, 1), name="runway", seed=ctx.next_seed())
    )  # fmt: skip
    ctx.feature("runway", runway)
    apron_w = rng.uniform(0.45, 0.6) * min(ctx.w, ctx.h)
    gap = ctx.px(8, 30)
    d = off - side * (rw / 2 + gap + apron_w / 2)
    apron = ctx.add(
        Region(Ground.PAVEMENT, "rect", (cx + nx * d, cy + ny * d, 2 * ctx.diag, apron_w, a),
               edge_noise=0.0, name="apron", seed=ctx.next_seed())
    )  # fmt: skip
    ctx.feature("apron", apron)
    pave = frozenset({Ground.PAVEMENT})
    planes = ctx.scatter("plane", 2, 7, grounds=pave)
    if not planes:
        ctx.placer.scatter("plane", 1, s, grounds=pave, tries=40)
    ctx.scatter("helicopter", 0, 1, grounds=pave)
    ctx.scatter("large-vehicle", 0, 3, grounds=pave)
    ctx.scatter("small-vehicle", 0, 5, grounds=pave)
    ctx.scatter("building", 0, 2)
    ctx.scatter("person", 0, 2)


def harbor(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.URBAN, Ground.PAVEMENT]))
    a = ctx.grid_angle(0.5)
    px, py = ctx.point(0.35, 0.65)
    water = ctx.add(Region(Ground.WATER, "halfplane", (px, py, a), edge_noise=2 * ctx.scale, name="water",
                           seed=ctx.next_seed()))  # fmt: skip
    ctx.feature("harbor basin", water)
    ix, iy = ctx.halfplane_into(a)
    for _ in range(int(rng.integers(1, 4))):
        t = rng.uniform(-0.4, 0.4) * ctx.diag
        sx, sy = px + math.cos(a) * t, py + math.sin(a) * t
        plen, pwid = ctx.px(80, 170), ctx.px(10, 18)
        pier = ctx.add(
            Region(Ground.PAVEMENT, "rect", (sx + ix * (plen / 2 - 4), sy + iy * (plen / 2 - 4), plen, pwid,
                   math.atan2(iy, ix)), name="pier", seed=ctx.next_seed())
        )  # fmt: skip
        ctx.feature("pier", pier)
    ships = ctx.scatter("ship", 3, 10, angle=math.atan2(iy, ix), angle_jitter=0.08)
    ships += ctx.scatter("ship", 0, 3)
    if not ships:
        ctx.placer.scatter("ship", 1, ctx.scale, tries=60)
    ctx.scatter("storage-tank", 0, 4)
    ctx.scatter("large-vehicle", 0, 4)
    ctx.scatter("small-vehicle", 0, 6)
    ctx.scatter("building", 0, 3)
    ctx.scatter("person", 0, 3)


def residential(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.GRASS, Ground.GRASS, Ground.URBAN]))
    a = ctx.grid_angle(0.7)
    roads = [ctx.road(*ctx.point(0.2, 0.8), a, ctx.px(14, 22), paint=int(rng.integers(1, 3)))]
    if rng.random() < 0.6:
        roads.append(ctx.road(*ctx.point(0.2, 0.8), a + math.pi / 2, ctx.px(12, 20)))
    for r in roads:
        ctx.feature("road", r)
    ctx.scatter("building", 6, 18, angle=a, angle_jitter=0.04, size=(18, 55))
    ctx.scatter("swimming-pool", 0, 3, angle=a, angle_jitter=0.05)
    ctx.scatter("tree", 6, 22)
    for r in roads:
        ctx.along("small-vehicle", r, ctx.n(1, 5, "small-vehicle"))
    ctx.scatter("small-vehicle", 0, 3, grounds=frozenset({Ground.URBAN, Ground.PAVEMENT}))
    ctx.scatter("person", 0, 4)
    if rng.random() < 0.2:
        ctx.scatter("basketball-court", 0, 1, angle=a, angle_jitter=0.03)
    if not [o for o in ctx.placer.objects if o.category == "building"]:
        ctx.placer.scatter("building", 2, ctx.scale, size=(18, 40), tries=40)


def farmland(ctx: LayoutContext) -> None:
    rng = ctx.rng
    a = ctx.grid_angle(0.6)
    cx, cy = ctx.centre
    ctx.add(
        Region(Ground.FIELD_GREEN, "rect", (cx, cy, 2 * ctx.diag, 2 * ctx.diag, a), pattern="parcels",
               pattern_params=(ctx.px(70, 150), ctx.px(50, 110), *_FIELDS), name="fields", seed=ctx.next_seed())
    )  # fmt: skip
    if rng.random() < 0.6:
        ctx.feature("road", ctx.road(*ctx.point(0.2, 0.8), a, ctx.px(8, 14), paint=0, ground=Ground.BARE_SOIL))
    yard = None
    if rng.random() < 0.6:
        yx, yy = ctx.point(0.2, 0.8)
        yard = ctx.add(Region(Ground.BARE_SOIL, "rect", (yx, yy, ctx.px(70, 120), ctx.px(50, 90), a),
                              name="farmyard", seed=ctx.next_seed()))  # fmt: skip
    fields = frozenset(_FIELDS)
    ctx.scatter("tree", 0, 10, grounds=fields | {Ground.GRASS})
    if yard is not None:
        b = yard.bounds()
        ctx.scatter("building", 1, 3, area=b, angle=a, angle_jitter=0.04, size=(18, 45),
                    grounds=frozenset({Ground.BARE_SOIL}))  # fmt: skip
        ctx.scatter("large-vehicle", 0, 2, area=b, grounds=frozenset({Ground.BARE_SOIL}))
    if rng.random() < 0.25:
        ctx.scatter("wind-mill", 0, 3)
    ctx.scatter("large-vehicle", 0, 1, grounds=fields)


def forest(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = Ground.FOREST
    a = float(rng.uniform(-math.pi, math.pi))
    px, py = ctx.point(0.3, 0.7)
    ctx.add(Region(Ground.GRASS, "halfplane", (px, py, a), edge_noise=ctx.px(10, 18), name="clearing",
                   seed=ctx.next_seed()))  # fmt: skip
    if rng.random() < 0.5:
        cx, cy = ctx.point(0.2, 0.8)
        ctx.add(Region(Ground.GRASS, "disk", (cx, cy, ctx.px(40, 90)), edge_noise=ctx.px(6, 12), name="clearing",
                       seed=ctx.next_seed()))  # fmt: skip
    if rng.random() < 0.5:
        ctx.feature("track", ctx.road(*ctx.point(0.2, 0.8), ctx.grid_angle(0.3), ctx.px(7, 11), paint=0,
                                      ground=Ground.BARE_SOIL))  # fmt: skip
    trees = ctx.scatter("tree", 14, 40, grounds=frozenset({Ground.GRASS}))
    if not trees:
        ctx.placer.scatter("tree", 3, ctx.scale, grounds=frozenset({Ground.GRASS}), tries=40)
    if rng.random() < 0.3:
        ctx.scatter("building", 0, 1, size=(18, 35))
    ctx.scatter("small-vehicle", 0, 1, grounds=frozenset({Ground.BARE_SOIL}))


def parking_lot(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.URBAN, Ground.GRASS]))
    a = ctx.grid_angle(0.75)
    lots = []
    cx, cy = ctx.centre
    n_lots = 1 if rng.random() < 0.6 else 2
    for k in range(n_lots):
        off = 0.0 if n_lots == 1 else (k - 0.5) * 0.5 * min(ctx.w, ctx.h)
        lx, ly = cx - math.sin(a) * off, cy + math.cos(a) * off
        # lots are sized in metres: a zoomed-out (small-scale) image shows a small lot, not 1,000 stalls
        length = rng.uniform(0.35, 0.75) * min(ctx.w, 480 * ctx.scale)
        width = rng.uniform(0.25, 0.5 if n_lots == 1 else 0.35) * min(ctx.h, 480 * ctx.scale)
        lots.append(ctx.parking_lot(lx, ly, length, width, a, 0.0))
    road = ctx.road(*ctx.point(0.05, 0.95), a, ctx.px(14, 20))
    ctx.feature("road", road)
    occupancy = float(rng.uniform(0.3, 0.85))
    for region, stall in lots:
        ctx.fill_stalls(region, stall, occupancy)
        ctx.feature("parking lot", region)
    ctx.scatter("large-vehicle", 0, 3, grounds=frozenset({Ground.PAVEMENT}), angle=a + math.pi / 2, angle_jitter=0.05)
    ctx.along("small-vehicle", road, ctx.n(0, 3, "small-vehicle"))
    ctx.scatter("tree", 0, 8)
    ctx.scatter("person", 0, 3)
    if not [o for o in ctx.placer.objects if o.category == "small-vehicle"]:
        ctx.placer.scatter("small-vehicle", 3, ctx.scale, grounds=frozenset({Ground.PAVEMENT}), tries=40)


def industrial(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.BARE_SOIL, Ground.PAVEMENT, Ground.SAND]))
    a = ctx.grid_angle(0.7)
    ctx.feature("road", ctx.road(*ctx.point(0.1, 0.9), a, ctx.px(14, 20)))
    c, s = math.cos(a), math.sin(a)
    for _ in range(int(rng.integers(1, 3))):
        d = ctx.px(20, 60)
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(2, 5))
        gap = d * rng.uniform(1.25, 1.6)
        fx, fy = ctx.point(0.25, 0.75)
        pad = ctx.add(Region(Ground.PAVEMENT, "rect", (fx, fy, cols * gap + d * 0.4, rows * gap + d * 0.4, a),
                             name="tank farm", seed=ctx.next_seed()))  # fmt: skip
        colour = str(rng.choice(["white", "white", "gray"]))
        for i in range(rows):
            for j in range(cols):
                u, v = (j - (cols - 1) / 2) * gap, (i - (rows - 1) / 2) * gap
                ctx.placer.try_add("storage-tank", fx + u * c - v * s, fy + u * s + v * c, d, d, 0.0, color=colour)
        ctx.feature("tank farm", pad)
    ctx.scatter("storage-tank", 0, 3)
    ctx.scatter("building", 2, 5, angle=a, angle_jitter=0.03, size=(45, 100))
    ctx.scatter("large-vehicle", 2, 7)
    ctx.scatter("small-vehicle", 0, 5)
    if not [o for o in ctx.placer.objects if o.category == "storage-tank"]:
        ctx.placer.scatter("storage-tank", 2, ctx.scale, tries=40)


def sports_field(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = Ground.GRASS
    a = ctx.grid_angle(0.8)
    c, s = math.cos(a), math.sin(a)
    bx, by = ctx.point(0.3, 0.7)
    n_t = int(rng.integers(1, 5))
    cl, cw = ctx.px(48, 54), 0.0
    cw = cl * 0.5
    block_l, block_w = cw * n_t + 6 * ctx.scale * (n_t + 1), cl + 12 * ctx.scale
    block = ctx.add(Region(Ground.PAVEMENT if rng.random() < 0.5 else Ground.URBAN, "rect",
                           (bx, by, block_l, block_w, a), name="sports ground", seed=ctx.next_seed()))  # fmt: skip
    colour = str(rng.choice(["green", "blue", "red"], p=[0.5, 0.35, 0.15]))
    for k in range(n_t):
        u = -block_l / 2 + 6 * ctx.scale * (k + 1) + cw * (k + 0.5)
        ctx.placer.try_add("tennis-court", bx + u * c, by + u * s, cl, cw, a + math.pi / 2, color=colour)
    ctx.feature("sports ground", block)
    ctx.scatter("basketball-court", 0, 3, angle=a, angle_jitter=0.02)
    if rng.random() < 0.5:
        ctx.placer.scatter("soccer-ball-field", 1, ctx.scale, angle=a, angle_jitter=0.02, tries=20)
    ctx.scatter("tree", 4, 14)
    ctx.scatter("person", 1, 6)
    if rng.random() < 0.5:
        ctx.feature("road", ctx.road(*ctx.point(0.05, 0.95), a, ctx.px(12, 18)))
    ctx.scatter("small-vehicle", 0, 4, grounds=frozenset({Ground.ASPHALT, Ground.PAVEMENT, Ground.URBAN}))
    if not [o for o in ctx.placer.objects if o.category.endswith(("court", "field"))]:
        ctx.placer.scatter("tennis-court", 1, ctx.scale, tries=60)


def _river_region(ctx: LayoutContext, meander: bool) -> tuple[Region, float, float, float]:
    rng = ctx.rng
    a = ctx.grid_angle(0.4)
    px, py = ctx.point(0.35, 0.65)
    width = ctx.px(50, 110)
    amp = ctx.px(10, 40) if meander else 0.0
    region = ctx.add(Region(Ground.WATER, "band", (px, py, a, width, amp, ctx.px(350, 700), rng.uniform(0, 6.3)),
                            edge_noise=ctx.px(2, 5), name="river", seed=ctx.next_seed()))  # fmt: skip
    ctx.feature("river", region)
    return region, a, px, py


def river(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.GRASS, Ground.GRASS, Ground.BARE_SOIL]))
    if rng.random() < 0.4:
        cx, cy = ctx.centre
        ctx.add(Region(Ground.FIELD_GREEN, "rect", (cx, cy, 2 * ctx.diag, 2 * ctx.diag, ctx.grid_angle()),
                       pattern="parcels", pattern_params=(ctx.px(70, 140), ctx.px(50, 100), *_FIELDS),
                       seed=ctx.next_seed()))  # fmt: skip
    _, a, _, _ = _river_region(ctx, meander=True)
    ctx.scatter("ship", 0, 3, angle=a, angle_jitter=0.15, size=(18, 60))
    ctx.scatter("tree", 5, 18)
    ctx.scatter("building", 0, 3)


def bridge(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.GRASS, Ground.URBAN, Ground.BARE_SOIL]))
    # roads first: the river drawn after them covers the road where the bridge crosses
    a = ctx.grid_angle(0.4)
    px, py = ctx.point(0.4, 0.6)
    width = ctx.px(50, 100)
    crossings = []
    n_bridges = 1 if rng.random() < 0.7 else 2
    for k in range(n_bridges):
        t = (k - (n_bridges - 1) / 2) * ctx.px(120, 200)
        qx, qy = px + math.cos(a) * t, py + math.sin(a) * t
        rw = ctx.px(14, 22)
        road_angle = a + math.pi / 2 + rng.normal(0, 0.08)
        crossings.append((qx, qy, road_angle, rw, ctx.road(qx, qy, road_angle, rw)))
    river_region = ctx.add(Region(Ground.WATER, "band", (px, py, a, width), edge_noise=ctx.px(1.5, 3),
                                  name="river", seed=ctx.next_seed()))  # fmt: skip
    ctx.feature("river", river_region)
    for qx, qy, road_angle, rw, road in crossings:
        ctx.feature("road", road)
        span = width / max(abs(math.sin(road_angle - a)), 0.3) + ctx.px(24, 50)
        ctx.placer.try_add("bridge", qx, qy, span, rw * 1.15, road_angle, check_ground=False)
    for *_, road in crossings:
        ctx.along("small-vehicle", road, ctx.n(0, 4, "small-vehicle"))
        ctx.along("large-vehicle", road, ctx.n(0, 1, "large-vehicle"))
    ctx.scatter("ship", 0, 2, angle=a, angle_jitter=0.1, size=(18, 50))
    ctx.scatter("tree", 3, 14)
    ctx.scatter("building", 0, 4)


def roundabout(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.GRASS, Ground.URBAN]))
    a = ctx.grid_angle(0.7)
    px, py = ctx.point(0.35, 0.65)
    rw = ctx.px(14, 20)
    roads = [ctx.road(px, py, a, rw), ctx.road(px, py, a + math.pi / 2 + rng.normal(0, 0.1), rw)]
    for r in roads:
        ctx.feature("road", r)
    d = max(ctx.px(60, 120), 3.2 * rw)
    ctx.placer.try_add("roundabout", px, py, d, d, 0.0, check_ground=False)
    for r in roads:
        ctx.along("small-vehicle", r, ctx.n(1, 5, "small-vehicle"))
        ctx.along("large-vehicle", r, ctx.n(0, 1, "large-vehicle"))
    ctx.scatter("building", 0, 8, angle=a, angle_jitter=0.05, size=(18, 50))
    ctx.scatter("tree", 0, 12)
    ctx.scatter("person", 0, 2)


def wind_farm(ctx: LayoutContext) -> None:
    rng = ctx.rng
    cx, cy = ctx.centre
    if rng.random() < 0.6:
        ctx.add(Region(Ground.FIELD_GREEN, "rect", (cx, cy, 2 * ctx.diag, 2 * ctx.diag, ctx.grid_angle()),
                       pattern="parcels", pattern_params=(ctx.px(80, 160), ctx.px(60, 120), *_FIELDS),
                       seed=ctx.next_seed()))  # fmt: skip
    else:
        ctx.ground.base = int(rng.choice([Ground.GRASS, Ground.BARE_SOIL, Ground.SAND]))
    if rng.random() < 0.6:
        ctx.feature("track", ctx.road(*ctx.point(0.2, 0.8), ctx.grid_angle(), ctx.px(7, 10), paint=0,
                                      ground=Ground.BARE_SOIL))  # fmt: skip
    facing = float(rng.uniform(-math.pi, math.pi))  # every rotor faces the wind
    mills = ctx.scatter("wind-mill", 3, 7, angle=facing, angle_jitter=0.02, flip=False)
    if not mills:
        ctx.placer.scatter("wind-mill", 1, ctx.scale, tries=60)
    ctx.scatter("tree", 0, 6)
    ctx.scatter("large-vehicle", 0, 1)


def bare_land(ctx: LayoutContext) -> None:
    rng = ctx.rng
    ctx.ground.base = int(rng.choice([Ground.SAND, Ground.BARE_SOIL]))
    if rng.random() < 0.3:
        cx, cy = ctx.point(0.2, 0.8)
        ctx.add(Region(Ground.BARE_SOIL if ctx.ground.base == Ground.SAND else Ground.SAND, "disk",
                       (cx, cy, ctx.px(80, 200)), edge_noise=ctx.px(15, 30), seed=ctx.next_seed()))  # fmt: skip
    if rng.random() < 0.5:
        road = ctx.road(*ctx.point(0.2, 0.8), ctx.grid_angle(0.3), ctx.px(8, 14), paint=0, ground=Ground.BARE_SOIL)
        ctx.feature("track", road)
        ctx.along("small-vehicle", road, ctx.n(0, 2, "small-vehicle"))
    ctx.scatter("building", 0, 3, size=(18, 40))
    ctx.scatter("tree", 0, 4)
    ctx.scatter("large-vehicle", 0, 1)


RECIPES: dict[str, Recipe] = {
    "airport": airport,
    "bare_land": bare_land,
    "bridge": bridge,
    "farmland": farmland,
    "forest": forest,
    "harbor": harbor,
    "industrial": industrial,
    "parking_lot": parking_lot,
    "residential": residential,
    "river": river,
    "roundabout": roundabout,
    "sports_field": sports_field,
    "wind_farm": wind_farm,
}
"""Scene class -> recipe."""

SCENE_CLASSES: tuple[str, ...] = tuple(sorted(RECIPES))

DEFINING: dict[str, tuple[str, ...]] = {
    "airport": ("plane",),
    "bridge": ("bridge",),
    "forest": ("tree",),
    "harbor": ("ship",),
    "industrial": ("storage-tank",),
    "parking_lot": ("small-vehicle",),
    "residential": ("building",),
    "roundabout": ("roundabout",),
    "sports_field": ("tennis-court", "basketball-court", "soccer-ball-field"),
    "wind_farm": ("wind-mill",),
}
"""Objects a scene class must show at least one of for its label to hold."""

"""One synthetic scene: layout, labels derived from the geometry, and rendering.

:func:`generate_scene` draws everything that is random about image ``index`` of a dataset with
seed ``seed`` — scene class, scale, sun, terrain, objects — from generators keyed by
``(seed, index)`` alone. :func:`render_scene` turns the scene into pixels (a window of it, or the
whole image); labels never depend on rendering, so a resumed run recomputes the labels of an
image already on disk without drawing it again.

Labels of an object (:class:`ObjectLabel`), all in image pixels:

* ``mask``: COCO RLE of the visible silhouette (pixel-centre rule, cropped to the image);
* ``bbox``: HBB ``xyxy`` of the silhouette's polygons clipped to the image (within 1 px of the
  mask's box);
* ``obb``/``polygon``: le90 box along the object's heading, tight around the visible silhouette
  (the full object's box when it is not truncated), and its DOTA 8-point polygon (clockwise,
  DOTA start vertex) from :func:`rsvl.geometry.obb_to_poly`; polygon vertices outside the image
  (truncated objects, or a corner of a rotated box beyond a border the object itself does not
  cross) are clamped to it, as DOTA_devkit does when it cuts objects at a tile border (the
  ``obb`` keeps the exact rectangle);
* ``truncated``: the silhouette crosses the image border; ``visible``: share of its pixels inside;
* ``position``: the 3 x 3 cell of the box centre (``top left`` ... ``bottom right``);
* ``size``: ``small``/``medium``/``large`` by mask area with COCO's 32**2 and 96**2 limits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsvl.geometry.boxes import normalize_le90, obb_to_poly
from rsvl.synth.draw import draw_objects, object_mask
from rsvl.synth.layouts import DEFINING, RECIPES, Feature, LayoutContext
from rsvl.synth.objects import SceneObject
from rsvl.synth.palette import Ground
from rsvl.synth.placement import Placer, PlacerConfig
from rsvl.synth.raster import clip_polygon, rle_from_local
from rsvl.synth.rng import derive_seed, rng_for
from rsvl.synth.terrain import GroundPlan

__all__ = [
    "CELL_NAMES",
    "ObjectLabel",
    "Scene",
    "SceneConfig",
    "generate_scene",
    "label_object",
    "position_cell",
    "render_scene",
    "render_window",
    "size_bucket",
]

CELL_NAMES: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
"""Names of the 3 x 3 image cells, by row then column."""

#: An image grows its 3 x 3 cells by this share of its size when matching positions, so an
#: object near a cell border also counts as being in the neighbouring cell (see language.py).
CELL_MARGIN = 0.04


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn.

    Attributes:
        width, height: image size in pixels.
        scale: range of the per-image scale (1 = about 0.5 m per pixel; AI-TOD-like tiny objects
            come from scales around 0.2-0.4).
        scene_weights: relative frequency of each scene class (None: all equally likely).
        class_weights: per-class count multiplier; below 1 it is the probability that the class
            appears in an image at all (a long tail, as LVIS needs).
        density: multiplier of every object count.
        allow_truncated: objects may be cut by the image border (flagged ``truncated``).
        min_visible: smallest visible share of a truncated object.
        overlap_tol: largest overlap allowed between two objects, as a share of the smaller one.
        antialias: blend object edges (3 x 3 supersampling); masks stay hard.
        ignored_regions: up to this many VisDrone-style ignored regions per image (crowds of
            small vehicles that are drawn but not labelled individually).
        max_objects: cap on objects per image.
    """

    width: int = 512
    height: int = 512
    scale: tuple[float, float] = (0.8, 1.4)
    scene_weights: Mapping[str, float] | None = None
    class_weights: Mapping[str, float] = field(default_factory=dict)
    density: float = 1.0
    allow_truncated: bool = True
    min_visible: float = 0.4
    overlap_tol: float = 0.02
    antialias: bool = False
    ignored_regions: int = 0
    max_objects: int = 400

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size must be at least 16 x 16 pixels, got {self.width} x {self.height}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale range must be positive and ordered, got {self.scale}")
        unknown = set(self.scene_weights or {}) - set(RECIPES)
        if unknown:
            raise ValueError(f"unknown scene classes {sorted(unknown)}; known: {sorted(RECIPES)}")


@dataclass
class ObjectLabel:
    """Labels of one object, derived from its geometry (see the module docstring)."""

    bbox: tuple[float, float, float, float]
    obb: tuple[float, float, float, float, float]
    polygon: tuple[float, ...]
    mask: dict[str, Any]
    area: int
    truncated: bool
    visible: float
    position: str
    size: str


@dataclass
class Scene:
    """A generated scene: terrain, objects with labels, and what texts need to describe it."""

    seed: int
    index: int
    width: int
    height: int
    label: str
    ground: GroundPlan
    objects: list[SceneObject]
    scale: float
    sun: tuple[float, float]
    cover: dict[str, float]
    features: list[Feature] = field(default_factory=list)
    ignore_regions: list[tuple[float, float, float, float]] = field(default_factory=list)
    antialias: bool = False

    @property
    def labelled(self) -> list[SceneObject]:
        """Objects that are labelled individually (not the crowds inside ignored regions)."""
        return [o for o in self.objects if not o.attrs.get("ignored")]


def position_cell(x: float, y: float, width: float, height: float) -> str:
    """Name of the 3 x 3 cell containing ``(x, y)``."""
    col = min(max(int(3 * x / width), 0), 2)
    row = min(max(int(3 * y / height), 0), 2)
    return CELL_NAMES[row][col]


def size_bucket(area: float) -> str:
    """COCO's size names: ``small`` below 32**2 pixels, ``medium`` below 96**2, else ``large``."""
    if area < 32**2:
        return "small"
    if area < 96**2:
        return "medium"
    return "large"


def label_object(obj: SceneObject, width: int, height: int, with_mask: bool = True) -> ObjectLabel:
    """Compute an object's labels against an image of ``width x height`` pixels."""
    mask, mx0, my0 = object_mask(obj)
    full_area = int(mask.sum())
    x0, y0 = max(mx0, 0), max(my0, 0)
    x1, y1 = min(mx0 + mask.shape[1], width), min(my0 + mask.shape[0], height)
    vis = mask[y0 - my0 : y1 - my0, x0 - mx0 : x1 - mx0] if x1 > x0 and y1 > y0 else np.zeros((0, 0), bool)
    area = int(vis.sum())
    pts = np.concatenate(obj.silhouette, 0)
    truncated = bool((pts[:, 0] < 0).any() or (pts[:, 1] < 0).any() or (pts[:, 0] > width).any())
    truncated = truncated or bool((pts[:, 1] > height).any())
    if truncated:
        clipped = [clip_polygon(p, 0, 0, width, height) for p in obj.silhouette]
        kept = [c for c in clipped if len(c)]
        pts = np.concatenate(kept, 0) if kept else np.array([[obj.cx, obj.cy]])
        pts = np.clip(pts, 0, [width, height])
    bx0, by0 = pts.min(0)
    bx1, by1 = pts.max(0)
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    if truncated:
        d = pts - np.array([obj.cx, obj.cy])
        u = d[:, 0] * c + d[:, 1] * s
        v = -d[:, 0] * s + d[:, 1] * c
        uc, vc = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
        obb = np.array(
            [obj.cx + uc * c - vc * s, obj.cy + uc * s + vc * c, u.max() - u.min(), v.max() - v.min(), obj.angle]
        )
    else:
        obb = np.array([obj.cx, obj.cy, obj.length, obj.width, obj.angle])
    obb[2:4] = np.maximum(obb[2:4], 1e-3)
    obb = normalize_le90(obb)
    polygon = obb_to_poly(obb)
    # DOTA_devkit's rule for objects cut at a border: clamp the vertices to the image
    polygon = np.clip(polygon, 0, np.tile([width, height], 4))
    rle = rle_from_local(vis, x0, y0, height, width) if with_mask and vis.size else None
    return ObjectLabel(
        bbox=(float(bx0), float(by0), float(bx1), float(by1)),
        obb=tuple(float(v) for v in obb),  # type: ignore[arg-type]
        polygon=tuple(float(v) for v in polygon),
        mask=rle if rle is not None else {},
        area=area,
        truncated=truncated,
        visible=area / max(full_area, 1),
        position=position_cell((bx0 + bx1) / 2, (by0 + by1) / 2, width, height),
        size=size_bucket(area),
    )


def _pick(rng: np.random.Generator, weights: Mapping[str, float] | None) -> str:
    names = sorted(RECIPES) if weights is None else sorted(k for k, v in weights.items() if v > 0)
    p = np.array([1.0 if weights is None else weights[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _ignored_regions(ctx: LayoutContext, count: int, scene: list[tuple[float, float, float, float]]) -> None:
    """Reserve free rectangles and fill them with a crowd of small vehicles marked ``ignored``."""
    rng = ctx.rng
    grounds = frozenset(g for g in range(11) if g != Ground.WATER)
    for _ in range(count):
        for _ in range(10):
            w, h = rng.uniform(0.1, 0.25) * ctx.w, rng.uniform(0.08, 0.2) * ctx.h
            x, y = ctx.x0 + rng.uniform(0, ctx.w - w), ctx.y0 + rng.uniform(0, ctx.h - h)
            rect = (float(np.floor(x)), float(np.floor(y)), float(np.ceil(x + w)), float(np.ceil(y + h)))
            if ctx.placer.reserve(rect):
                k = len(ctx.placer._reserved) - 1
                crowd = ctx.placer.scatter(
                    "small-vehicle", int(rng.integers(6, 20)), ctx.scale * 0.6, area=rect, grounds=grounds,
                    reserved=k, tries=6,
                )  # fmt: skip
                for obj in crowd:
                    obj.attrs["ignored"] = True
                scene.append(rect)
                break


def generate_scene(seed: int, index: int, config: SceneConfig | None = None, *, with_masks: bool = True) -> Scene:
    """Lay out image ``index`` of the dataset with seed ``seed`` and label every object.

    The result depends only on ``(seed, index, config)``.
    """
    config = config or SceneConfig()
    image_seed = derive_seed(seed, index)
    rng = rng_for(image_seed, "layout")
    W, H = config.width, config.height
    placer_config = PlacerConfig(
        overlap_tol=config.overlap_tol,
        allow_truncated=config.allow_truncated,
        min_visible=config.min_visible,
        max_objects=config.max_objects,
    )
    for attempt in range(6):
        label = _pick(rng, config.scene_weights)
        scale = float(rng.uniform(*config.scale))
        ground = GroundPlan(Ground.GRASS, [], seed=derive_seed(image_seed, "ground", attempt) % (1 << 62), scale=scale)
        sun_angle = rng.uniform(0, 2 * math.pi)
        sun = (math.cos(sun_angle), math.sin(sun_angle))
        placer = Placer((0, 0, W, H), (W, H), ground, rng, sun, placer_config)
        placer.keep_ground = True
        ctx = LayoutContext(rng, (0, 0, W, H), scale, ground, placer, config.density, dict(config.class_weights))
        RECIPES[label](ctx)
        ignore: list[tuple[float, float, float, float]] = []
        if config.ignored_regions:
            _ignored_regions(ctx, int(rng.integers(0, config.ignored_regions + 1)), ignore)
        defining = DEFINING.get(label, ())
        if not defining or any(o.category in defining for o in placer.objects) or attempt == 5:
            break
    for obj in placer.objects:
        obj.label = label_object(obj, W, H, with_mask=with_masks)
    return Scene(
        seed=image_seed,
        index=index,
        width=W,
        height=H,
        label=label,
        ground=ground,
        objects=placer.objects,
        scale=scale,
        sun=sun,
        cover=ground.cover(0, 0, W, H),
        features=ctx.features,
        ignore_regions=ignore,
        antialias=config.antialias,
    )


def render_window(
    ground: GroundPlan,
    objects: Iterable[SceneObject],
    x0: int,
    y0: int,
    width: int,
    height: int,
    antialias: bool = False,
) -> np.ndarray:
    """Pixels of the window ``(x0, y0, width, height)``: ground, shadows, objects, grain; uint8 RGB."""
    rgb = ground.render(x0, y0, width, height)
    draw_objects(rgb, x0, y0, objects, antialias)
    rgb += np.float32(3.0) * ground.grain(x0, y0, width, height)[..., None]
    np.clip(rgb, 0, 255, out=rgb)
    return (rgb + np.float32(0.5)).astype(np.uint8)


def render_scene(scene: Scene, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Render the whole scene (or ``window = (x0, y0, w, h)`` of it) as ``(h, w, 3)`` uint8 RGB."""
    x0, y0, w, h = window or (0, 0, scene.width, scene.height)
    return render_window(scene.ground, scene.objects, x0, y0, w, h, scene.antialias)

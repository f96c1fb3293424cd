"""Large scenes (8,000 px and more) planned globally and written to GeoTIFF block by block.

A large image is a grid of districts separated by roads; each district is laid out by one of the
scene recipes on its own canvas (its objects stay inside it), so planning needs memory for one
district at a time. The terrain is a single :class:`~rsvl.synth.terrain.GroundPlan` in global
coordinates and objects are global, so :func:`write_large_geotiff` renders each block on its own
— ground from the plan, and only the objects whose (shadowed) extent meets the block, found
through a bucket index — and writes it with a windowed rasterio write. The whole image is never
in memory; a block rendered twice is identical, so blocks are seamless.

LRS-VQA-style questions (:func:`lrs_questions`) ask about something a small part of the image
answers: the colour or position of the only object of its class (a ship on a pond, a helicopter
on a helipad, planted when the image has none; when it has every plantable class, the rarest one
is cleared first), the number of vehicles in a small parking lot,
the number of storage tanks in a tank farm. ``QA.attrs["evidence_bbox"]`` is the ``xyxy`` region
that holds the answer.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from rsvl.datasets.sample import QA
from rsvl.synth.layouts import RECIPES, Feature, LayoutContext
from rsvl.synth.objects import CLASSES, SceneObject, build_object
from rsvl.synth.palette import Ground
from rsvl.synth.placement import Placer, PlacerConfig
from rsvl.synth.rng import derive_seed, rng_for
from rsvl.synth.scene import CELL_MARGIN, label_object, position_cell, render_window
from rsvl.synth.terrain import GroundPlan, Region
from rsvl.utils.atomic import atomic_path

__all__ = ["LargeConfig", "LargeScene", "lrs_questions", "plan_large_scene", "write_large_geotiff"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LargeConfig:
    """How large scenes are laid out and written.

    Attributes:
        width, height: image size in pixels (any size; 8,192 and more is the intended use).
        district: nominal side of a district in pixels (districts are separated by roads).
        tile: GeoTIFF block side (multiple of 16); rendering works one block at a time.
        scale: range of the image's scale (1 = about ``gsd`` metres per pixel).
        scene_weights, class_weights, density, antialias: as in :class:`rsvl.synth.scene.SceneConfig`.
        gsd: ground sample distance written into the GeoTIFF's transform (metres).
        crs: coordinate reference system of the GeoTIFF.
        with_masks: compute COCO RLE masks for the objects (cheap: built from each object's window).
    """

    width: int = 8192
    height: int = 8192
    district: int = 1024
    tile: int = 512
    scale: tuple[float, float] = (0.8, 1.2)
    scene_weights: Mapping[str, float] | None = None
    class_weights: Mapping[str, float] = field(default_factory=dict)
    density: float = 1.0
    antialias: bool = False
    gsd: float = 0.5
    crs: str = "EPSG:32631"
    with_masks: bool = True

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64:
            raise ValueError(f"large images must be at least 64 x 64 pixels, got {self.width} x {self.height}")
        if self.tile % 16 or self.tile <= 0:
            raise ValueError(f"tile must be a positive multiple of 16 (GeoTIFF blocks), got {self.tile}")
        if self.district < 128:
            raise ValueError(f"district must be at least 128 pixels, got {self.district}")


@dataclass
class LargeScene:
    """A planned large scene: global terrain, objects with labels, districts, features, questions."""

    seed: int
    index: int
    width: int
    height: int
    label: str
    ground: GroundPlan
    objects: list[SceneObject]
    districts: list[tuple[tuple[int, int, int, int], str]]
    features: list[Feature]
    scale: float
    sun: tuple[float, float]
    qas: list[QA] = field(default_factory=list)
    antialias: bool = False
    bucket: int = 512
    _buckets: dict[tuple[int, int], list[int]] | None = field(default=None, repr=False)

    def objects_in(self, x0: int, y0: int, w: int, h: int) -> list[SceneObject]:
        """Objects (in drawing order) whose extent with shadow meets the window."""
        if self._buckets is None:
            buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
            for i, obj in enumerate(self.objects):
                b = obj.bounds(with_shadow=True)
                for by in range(math.floor(b[1]) // self.bucket, math.floor(b[3]) // self.bucket + 1):
                    for bx in range(math.floor(b[0]) // self.bucket, math.floor(b[2]) // self.bucket + 1):
                        buckets[(bx, by)].append(i)
            self._buckets = dict(buckets)
        ids: set[int] = set()
        for by in range(y0 // self.bucket, (y0 + h - 1) // self.bucket + 1):
            for bx in range(x0 // self.bucket, (x0 + w - 1) // self.bucket + 1):
                ids.update(self._buckets.get((bx, by), ()))
        return [self.objects[i] for i in sorted(ids)]

    def render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Pixels of one window, uint8 ``(h, w, 3)``."""
        return render_window(self.ground, self.objects_in(x0, y0, w, h), x0, y0, w, h, self.antialias)


def _edges(length: int, district: int) -> list[int]:
    n = max(1, round(length / district))
    return [round(k * length / n) for k in range(n + 1)]


def plan_large_scene(seed: int, index: int, config: LargeConfig | None = None) -> LargeScene:
    """Lay out large image ``index`` of the dataset with seed ``seed`` (depends on nothing else)."""
    config = config or LargeConfig()
    image_seed = derive_seed(seed, index, "large")
    rng = rng_for(image_seed, "plan")
    W, H = config.width, config.height
    scale = float(rng.uniform(*config.scale))
    sun_angle = float(rng.uniform(0, 2 * math.pi))
    sun = (math.cos(sun_angle), math.sin(sun_angle))
    plan = GroundPlan(Ground.URBAN, [], seed=derive_seed(image_seed, "ground") % (1 << 62), scale=scale)
    xs, ys = _edges(W, config.district), _edges(H, config.district)
    rw = max(8.0, 20 * scale)
    road = (max(0.8, 1.2 * scale), 8 * scale, 8 * scale, 1)
    for k, x in enumerate(xs[1:-1]):
        seed_k = derive_seed(image_seed, "vroad", k) % (1 << 62)
        plan.regions.append(Region(Ground.ASPHALT, "band", (x, 0.0, math.pi / 2, rw), pattern="road",
                                   pattern_params=road, name="road", seed=seed_k))  # fmt: skip
    for k, y in enumerate(ys[1:-1]):
        seed_k = derive_seed(image_seed, "hroad", k) % (1 << 62)
        plan.regions.append(Region(Ground.ASPHALT, "band", (0.0, y, 0.0, rw), pattern="road",
                                   pattern_params=road, name="road", seed=seed_k))  # fmt: skip
    objects: list[SceneObject] = []
    districts: list[tuple[tuple[int, int, int, int], str]] = []
    features: list[Feature] = []
    names = sorted(RECIPES) if config.scene_weights is None else sorted(k for k, v in config.scene_weights.items() if v)
    p = np.array([1.0 if config.scene_weights is None else config.scene_weights[n] for n in names], np.float64)
    pad = math.ceil(rw / 2 + 4 * scale)
    placer_config = PlacerConfig(allow_truncated=False, max_objects=4000)
    for j in range(len(ys) - 1):
        for i in range(len(xs) - 1):
            x0 = xs[i] + (pad if i > 0 else 0)
            y0 = ys[j] + (pad if j > 0 else 0)
            x1 = xs[i + 1] - (pad if i < len(xs) - 2 else 0)
            y1 = ys[j + 1] - (pad if j < len(ys) - 2 else 0)
            canvas = (x0, y0, x1 - x0, y1 - y0)
            drng = rng_for(image_seed, "district", i, j)
            label = names[int(drng.choice(len(names), p=p / p.sum()))]
            dplan = GroundPlan(Ground.GRASS, [], seed=plan.seed, scale=scale)
            placer = Placer(canvas, (W, H), dplan, drng, sun, placer_config)
            ctx = LayoutContext(
                drng, canvas, scale, dplan, placer, config.density, dict(config.class_weights), clip=True
            )
            RECIPES[label](ctx)
            clip = (float(x0), float(y0), float(x1), float(y1))
            plan.regions.append(Region(dplan.base, "rect", ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0),
                                       clip=clip, name=label))  # fmt: skip
            plan.regions.extend(dplan.regions)
            for obj in placer.objects:
                obj.mask_cache = None  # free the district's masks; labels recompute them one by one
            objects.extend(placer.objects)
            features.extend(ctx.features)
            districts.append((canvas, label))
    scene = LargeScene(
        seed=image_seed,
        index=index,
        width=W,
        height=H,
        label=Counter(lbl for _, lbl in districts).most_common(1)[0][0],
        ground=plan,
        objects=objects,
        districts=districts,
        features=features,
        scale=scale,
        sun=sun,
        antialias=config.antialias,
        bucket=config.tile,
    )
    _plant_singleton(scene, rng_for(image_seed, "singleton"))
    _plant_small_lot(scene, rng_for(image_seed, "small lot"))
    for obj in scene.objects:
        obj.label = label_object(obj, W, H, with_mask=config.with_masks)
        obj.mask_cache = None
    scene._buckets = None
    scene.qas = lrs_questions(scene, rng_for(image_seed, "questions"))
    return scene


# --------------------------------------------------------------------------- planted features


def _free(scene: LargeScene, bounds: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """No object (``bounds``: their extents with shadow) meets ``box``, which lies inside one district."""
    if not any(
        c[0] <= box[0] and c[1] <= box[1] and box[2] <= c[0] + c[2] and box[3] <= c[1] + c[3]
        for c, _ in scene.districts
    ):
        return False
    if len(bounds) == 0:
        return True
    hit = (bounds[:, 0] < box[2]) & (box[0] < bounds[:, 2]) & (bounds[:, 1] < box[3]) & (box[1] < bounds[:, 3])
    return not bool(hit.any())


def _object_bounds(scene: LargeScene) -> np.ndarray:
    return np.array([o.bounds(with_shadow=True) for o in scene.objects], np.float64).reshape(-1, 4)


#: Classes that can be planted alone, with the patch of ground they stand on (name, ground type).
_PLANTABLE: dict[str, tuple[str, int]] = {
    "ship": ("pond", Ground.WATER),
    "helicopter": ("helipad", Ground.PAVEMENT),
    "plane": ("airstrip apron", Ground.PAVEMENT),
    "wind-mill": ("field", Ground.GRASS),
    "swimming-pool": ("garden", Ground.GRASS),
    "basketball-court": ("playground", Ground.PAVEMENT),
    "storage-tank": ("tank pad", Ground.PAVEMENT),
}
_SINGLETONS = ("ship", "helicopter", "plane", "swimming-pool", "basketball-court", "wind-mill", "roundabout", "bridge")
"""Classes asked about when they occur once in a large image (colour questions need several colours)."""


def _plant_singleton(scene: LargeScene, rng: np.random.Generator) -> None:
    """Make sure a class that comes in several colours occurs exactly once: plant one of an absent class.

    A large scene may hold every plantable class already (8,192 px and more). Then the rarest one
    that no count question is about is cleared from the scene first (its objects only: the ground
    they stood on stays), so that colour and position questions exist at every image size.
    """
    counts = Counter(o.category for o in scene.objects)
    if any(counts[c] == 1 and len(CLASSES[c].colors) > 1 for c in _SINGLETONS):
        return
    options = [c for c in _PLANTABLE if counts[c] == 0]
    if not options:
        counted = {cls for cls, _ in _FEATURE_COUNTS.values()}
        clearable = [c for c in _PLANTABLE if c not in counted and len(CLASSES[c].colors) > 1]
        if not clearable:
            return
        rarest = min(clearable, key=lambda c: (counts[c], c))
        scene.objects[:] = [o for o in scene.objects if o.category != rarest]
        scene._buckets = None
        options = [rarest]
    cls = options[int(rng.integers(len(options)))]
    name, ground = _PLANTABLE[cls]
    spec = CLASSES[cls]
    s = scene.scale
    lo, hi = spec.length
    length = float(rng.uniform(lo, min(hi, max(lo, 60.0)))) * s
    width = length * float(rng.uniform(*spec.aspect))
    r = 0.5 * math.hypot(length, width) + 4 * s
    bounds = _object_bounds(scene)
    for _ in range(500):
        cx = float(rng.uniform(r + 8, scene.width - r - 8))
        cy = float(rng.uniform(r + 8, scene.height - r - 8))
        box = (cx - r - 6, cy - r - 6, cx + r + 6, cy + r + 6)
        if not _free(scene, bounds, box):
            continue
        region = Region(ground, "disk", (cx, cy, r), edge_noise=2 * s if ground == Ground.WATER else 0.0, name=name,
                        seed=derive_seed(scene.seed, name) % (1 << 62))  # fmt: skip
        scene.ground.regions.append(region)
        colour_names = [c for c, _ in spec.colors]
        weights = np.array([w for _, w in spec.colors], np.float64)
        colour = colour_names[int(rng.choice(len(colour_names), p=weights / weights.sum()))]
        angle = float(rng.uniform(-math.pi, math.pi))
        obj = build_object(spec, rng, cx, cy, length, width, angle, colour, scene.sun)
        scene.objects.append(obj)
        scene.features.append(Feature(name, (box[0] + 6, box[1] + 6, box[2] - 6, box[3] - 6), region))
        return


def _plant_small_lot(scene: LargeScene, rng: np.random.Generator) -> None:
    """Add a small parking lot in a 3 x 3 cell of the image that has no other parking lot."""
    s = scene.scale
    stall_w, stall_d, aisle = 7.5 * s, 16.0 * s, 14.0 * s
    cols = int(rng.integers(4, 10))
    length, width = cols * stall_w, 2 * stall_d
    bounds = _object_bounds(scene)
    for _ in range(200):
        cx = float(rng.uniform(length, scene.width - length))
        cy = float(rng.uniform(width, scene.height - width))
        box = (cx - length / 2 - 4, cy - width / 2 - 4, cx + length / 2 + 4, cy + width / 2 + 4)
        cell = position_cell(cx, cy, scene.width, scene.height)
        if any(f.kind == "parking lot" and _in_grown_cell(f, cell, scene) for f in scene.features):
            continue
        if not _free(scene, bounds, box):
            continue
        region = Region(Ground.PAVEMENT, "rect", (cx, cy, length, width, 0.0), pattern="stalls",
                        pattern_params=(stall_w, stall_d, aisle, max(0.7, 0.8 * s)), name="parking lot",
                        seed=derive_seed(scene.seed, "lot") % (1 << 62))  # fmt: skip
        scene.ground.regions.append(region)
        canvas = (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2] - box[0]), math.ceil(box[3] - box[1]))
        placer = Placer(canvas, (scene.width, scene.height), scene.ground, rng, scene.sun,
                        PlacerConfig(allow_truncated=False))  # fmt: skip
        ctx = LayoutContext(rng, canvas, s, scene.ground, placer)
        parked = ctx.fill_stalls(region, (stall_w, stall_d), float(rng.uniform(0.3, 0.9)))
        if not parked:
            parked = ctx.fill_stalls(region, (stall_w, stall_d), 1.0)[:1]
        for obj in parked:
            obj.mask_cache = None
        scene.objects.extend(placer.objects)
        scene.features.append(Feature("parking lot", (box[0] + 4, box[1] + 4, box[2] - 4, box[3] - 4), region))
        return


def _in_grown_cell(feature: Feature, cell: str, scene: LargeScene) -> bool:
    from rsvl.synth.language import in_cell

    b = feature.bbox
    return in_cell((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, cell, scene.width, scene.height, CELL_MARGIN)


# --------------------------------------------------------------------------- questions

_FEATURE_COUNTS = {
    "parking lot": ("small-vehicle", "How many vehicles are parked in the {size}parking lot {where}?"),
    "tank farm": ("storage-tank", "How many storage tanks are there in the tank farm {where}?"),
    "sports ground": ("tennis-court", "How many tennis courts are there in the sports ground {where}?"),
}


def _where(cell: str) -> str:
    if cell == "center":
        return "in the center of the image"
    return f"in the {cell} part of the image"


def lrs_questions(scene: LargeScene, rng: np.random.Generator, max_count_questions: int = 2) -> list[QA]:
    """LRS-VQA-style questions whose answers live in a small region (``attrs["evidence_bbox"]``)."""
    from rsvl.synth.language import in_cell

    qas: list[QA] = []
    counts = Counter(o.category for o in scene.objects)
    asked_colour = asked_position = False
    for cls in _SINGLETONS:
        if counts[cls] != 1:
            continue
        obj = next(o for o in scene.objects if o.category == cls)
        noun = CLASSES[cls].noun
        box = [float(v) for v in obj.label.bbox]
        if not asked_colour and len(CLASSES[cls].colors) > 1:
            qas.append(QA(f"What is the color of the {noun}?", obj.color, "color",
                          attrs={"evidence_bbox": box, "object": cls}))  # fmt: skip
            asked_colour = True
        x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cell = obj.label.position
        if not asked_position and in_cell(x, y, cell, scene.width, scene.height, -CELL_MARGIN):
            qas.append(QA(f"Where is the {noun} located in the image?", cell, "position",
                          attrs={"evidence_bbox": box, "object": cls}))  # fmt: skip
            asked_position = True
    asked = 0
    order = rng.permutation(len(scene.features)).tolist()
    # the planted small lot first: it is the question LRS-VQA is about
    order.sort(key=lambda k: 0 if scene.features[k].kind == "parking lot" and _is_small(scene.features[k]) else 1)
    for k in order:
        feat = scene.features[k]
        if feat.kind not in _FEATURE_COUNTS or asked >= max_count_questions:
            continue
        cls, template = _FEATURE_COUNTS[feat.kind]
        b = feat.bbox
        cell = position_cell((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, scene.width, scene.height)
        same = [f for f in scene.features if f.kind == feat.kind and _in_grown_cell(f, cell, scene)]
        if len(same) != 1:
            continue
        n = sum(1 for o in scene.objects if o.category == cls and feat.contains(o.cx, o.cy))
        if n == 0:
            continue
        size = "small " if feat.kind == "parking lot" and _is_small(feat) else ""
        question = template.format(size=size, where=_where(cell))
        attrs = {"evidence_bbox": [float(v) for v in b], "object": cls, "feature": feat.kind}
        qas.append(QA(question, str(n), "count", attrs=attrs))
        asked += 1
    return qas


def _is_small(feature: Feature) -> bool:
    b = feature.bbox
    return (b[2] - b[0]) * (b[3] - b[1]) < 120 * 120


# --------------------------------------------------------------------------- writing


def write_large_geotiff(
    scene: LargeScene,
    path: str | os.PathLike[str],
    *,
    tile: int | None = None,
    gsd: float = 0.5,
    crs: str = "EPSG:32631",
    on_block: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``scene`` block by block into a tiled, deflate-compressed RGB GeoTIFF (atomically).

    ``on_block(done, total)`` is called after each block (progress). Memory use is one block plus
    GDAL's cache (capped at 64 MB here), whatever the image size.
    """
    tile = tile or scene.bucket
    target = Path(path)
    transform = Affine(gsd, 0.0, 500000.0 + 20000.0 * (scene.index % 20), 0.0, -gsd, 5000000.0)
    profile = {
        "driver": "GTiff",
        "width": scene.width,
        "height": scene.height,
        "count": 3,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": tile,
        "blockysize": tile,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 2,
        "interleave": "pixel",
        "photometric": "RGB",
        "crs": crs,
        "transform": transform,
    }
    total = math.ceil(scene.width / tile) * math.ceil(scene.height / tile)
    done = 0
    with atomic_path(target) as tmp, rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(tmp, "w", **profile) as dst:
        for y0 in range(0, scene.height, tile):
            for x0 in range(0, scene.width, tile):
                w, h = min(tile, scene.width - x0), min(tile, scene.height - y0)
                block = scene.render(x0, y0, w, h)
                dst.write(np.moveaxis(block, 2, 0), window=rasterio.windows.Window(x0, y0, w, h))
                done += 1
                if on_block is not None:
                    on_block(done, total)
            for obj in scene.objects_in(0, y0, scene.width, min(tile, scene.height - y0)):
                obj.mask_cache = None  # keep memory to one row of blocks
    logger.debug("wrote %s (%d blocks)", target, total)
    return target

"""What each dataset format gets from SynthRS: classes, labels, texts, scene mix, image size.

A :class:`FormatProfile` adapts the generic scenes to one format's conventions:

* ``coco``/``lvis``/``dota``/``voc``/``rrsisd``: every class under its SynthRS name (DOTA spelling);
* ``aitod``: AI-TOD's 8 classes (``vehicle`` merges small and large vehicles), scenes drawn at
  scale 0.18-0.4 so that objects of 2-32 px dominate;
* ``visdrone``: VisDrone's names (``car``, ``truck``, ``bus``, ``pedestrian``) plus ``ignored
  regions`` (category 0) over crowds of small vehicles that are drawn but not labelled;
* ``deepforest``: ``Tree`` only, tree-rich scenes;
* ``lvis``: a long tail (some classes appear in few images; frequency r/c/f computed from the
  generated images), ``not_exhaustive_category_ids`` and ``neg_category_ids`` per image;
* ``vrsbench``/``rsvqa``/``captions``/``lrsvqa``/``rrsisd``/``classification``: their texts or labels.

Classes a profile does not map stay in the pictures, unlabelled (buildings in a VisDrone street).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rsvl.synth.objects import CLASS_NAMES

__all__ = ["AITOD_CLASSES", "DEFAULT_NOVEL_CLASSES", "FORMAT_PROFILES", "LVIS_TIERS", "FormatProfile", "profile_for"]

DEFAULT_NOVEL_CLASSES: tuple[str, ...] = ("helicopter", "roundabout", "swimming-pool", "basketball-court", "wind-mill")
"""Classes held out as novel when ``novel_classes=True``."""

AITOD_CLASSES: tuple[str, ...] = (
    "airplane", "bridge", "storage-tank", "ship", "swimming-pool", "vehicle", "person", "wind-mill",
)  # fmt: skip
"""AI-TOD's categories in the order (ids 1-8) of its annotation files."""

LVIS_TIERS: Mapping[str, float] = MappingProxyType(
    {
        **{c: 1.0 for c in ("small-vehicle", "building", "tree", "large-vehicle")},
        **{c: 0.25 for c in ("storage-tank", "ship", "plane", "swimming-pool", "person")},
        **{c: 0.04 for c in ("helicopter", "basketball-court", "wind-mill", "soccer-ball-field", "tennis-court")},
        **{c: 0.1 for c in ("roundabout", "bridge")},
    }
)
"""Per-class weights that make LVIS-style exports long-tailed (below 1: share of images with the class)."""


def _identity() -> Mapping[str, str]:
    return MappingProxyType({c: c for c in CLASS_NAMES})


@dataclass(frozen=True)
class FormatProfile:
    """How scenes become samples of one format.

    Attributes:
        name: registry name of the format.
        classes: SynthRS class -> label name; classes left out are not labelled. ``large-vehicle``
            may map to ``"subtype"`` (VisDrone: ``truck``/``bus`` by the vehicle's body).
        instances, masks, polygons: write objects (boxes), their RLE masks, their OBB polygons.
        instance_attrs: which per-object extras to store (``area``, ``color``, ``truncated``,
            ``visdrone``: truncation/occlusion columns, ``voc``: the truncated flag).
        captions: captions per image; ``detailed_caption``: join them into one paragraph (VRSBench).
        vqa: ``generic``, ``rsvqa``, ``lrs`` or None; ``refs``: referring expressions per image and
            ``ref_sentences`` phrasings each.
        classification: the label is the scene class (class folders).
        large: images are large GeoTIFFs written block by block; ``default_size``: image side when
            the caller gives none.
        scene: overrides of :class:`rsvl.synth.scene.SceneConfig` fields.
        meta: extra ``Sample.meta`` written with every image (DOTA's ``imagesource``...).
        int_stems: images are named by integer id (RSVQA).
    """

    name: str
    classes: Mapping[str, str] = field(default_factory=_identity)
    instances: bool = True
    masks: bool = False
    polygons: bool = False
    instance_attrs: tuple[str, ...] = ()
    captions: int = 0
    detailed_caption: bool = False
    vqa: str | None = None
    refs: int = 0
    ref_sentences: int = 3
    classification: bool = False
    large: bool = False
    default_size: int = 512
    scene: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    int_stems: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names this profile writes, in category-id order."""
        if self.name == "aitod":
            return AITOD_CLASSES
        if self.name == "visdrone":
            return ("ignored regions", "pedestrian", "car", "truck", "bus")
        out: list[str] = []
        for name in self.classes.values():
            if name not in out:
                out.append(name)
        return tuple(out)


_AITOD_MAP = MappingProxyType(
    {
        "plane": "airplane",
        "bridge": "bridge",
        "storage-tank": "storage-tank",
        "ship": "ship",
        "swimming-pool": "swimming-pool",
        "small-vehicle": "vehicle",
        "large-vehicle": "vehicle",
        "person": "person",
        "wind-mill": "wind-mill",
    }
)

_AITOD_SCENES: dict[str, float] = {
    "airport": 1.0, "harbor": 1.5, "parking_lot": 1.5, "industrial": 1.0, "residential": 1.0,
    "bridge": 1.0, "wind_farm": 0.7, "river": 0.5, "roundabout": 0.5,
}  # fmt: skip

_LVIS_SCENES: dict[str, float] = {
    "residential": 3.0, "parking_lot": 2.0, "industrial": 1.5, "harbor": 1.0, "airport": 0.8,
    "farmland": 1.0, "forest": 1.0, "river": 0.8, "bare_land": 0.5, "bridge": 0.15,
    "roundabout": 0.1, "sports_field": 0.1, "wind_farm": 0.05,
}  # fmt: skip

_VISDRONE_SCENES: dict[str, float] = {
    "parking_lot": 3.0, "roundabout": 2.0, "residential": 2.0, "bridge": 1.0, "sports_field": 1.0,
    "industrial": 1.0,
}  # fmt: skip

_TEXT_ONLY: dict[str, Any] = {"instances": False}

FORMAT_PROFILES: Mapping[str, FormatProfile] = MappingProxyType(
    {
        "coco": FormatProfile("coco", masks=True, instance_attrs=("area", "color", "truncated")),
        "aitod": FormatProfile(
            "aitod",
            classes=_AITOD_MAP,
            masks=True,
            instance_attrs=("area",),
            scene={
                "scale": (0.18, 0.4),
                "density": 0.45,
                "class_weights": {"person": 3.0},
                "scene_weights": _AITOD_SCENES,
            },
        ),
        "lvis": FormatProfile(
            "lvis",
            masks=True,
            instance_attrs=("area",),
            scene={
                "class_weights": dict(LVIS_TIERS),
                "scene_weights": _LVIS_SCENES,
            },
        ),
        "dota": FormatProfile("dota", polygons=True, meta={"imagesource": "SynthRS"}),
        "voc": FormatProfile("voc", polygons=True, instance_attrs=("voc",)),
        "visdrone": FormatProfile(
            "visdrone",
            classes=MappingProxyType({"small-vehicle": "car", "large-vehicle": "subtype", "person": "pedestrian"}),
            instance_attrs=("visdrone",),
            scene={
                "ignored_regions": 2,
                "class_weights": {"person": 3.0},
                "scene_weights": _VISDRONE_SCENES,
            },
        ),
        "deepforest": FormatProfile(
            "deepforest",
            classes=MappingProxyType({"tree": "Tree"}),
            scene={
                "class_weights": {"tree": 2.0},
                "scene_weights": {"forest": 3.0, "residential": 1.0, "farmland": 1.0, "sports_field": 0.5},
            },
        ),
        "rrsisd": FormatProfile("rrsisd", masks=True, refs=4, ref_sentences=3),
        "vrsbench": FormatProfile(
            "vrsbench", **_TEXT_ONLY, captions=5, detailed_caption=True, vqa="generic", refs=4, ref_sentences=1
        ),
        "rsvqa": FormatProfile("rsvqa", **_TEXT_ONLY, vqa="rsvqa", int_stems=True),
        "captions": FormatProfile("captions", **_TEXT_ONLY, captions=5),
        "classification": FormatProfile("classification", **_TEXT_ONLY, classification=True),
        "lrsvqa": FormatProfile("lrsvqa", **_TEXT_ONLY, vqa="lrs", large=True, default_size=8192),
    }
)
"""Profile of every supported format, by registry name."""


def profile_for(name: str) -> FormatProfile:
    """The profile of format ``name`` (KeyError for formats SynthRS does not write)."""
    return FORMAT_PROFILES[name.lower()]

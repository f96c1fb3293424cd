"""SynthRS: seeded procedural aerial scenes with labels, written in the real dataset formats.

Quick use::

    from rsvl.synth import generate_dataset
    summary = generate_dataset("coco", "out/synth_coco", n=100, seed=0)   # images/ + annotations.json

Every image depends only on ``(seed, index)``: the same seed gives byte-identical images and
labels, generation runs in parallel and resumes. Pieces, from the bottom up:

* :mod:`~rsvl.synth.rng`, :mod:`~rsvl.synth.noise`: seeds and coordinate-hashed value noise;
* :mod:`~rsvl.synth.terrain`: ground regions (fields, water, forest, urban, roads...) and texture;
* :mod:`~rsvl.synth.objects`: 16 object classes (plane ... person) with shapes, colours, shadows;
* :mod:`~rsvl.synth.placement`, :mod:`~rsvl.synth.layouts`: non-overlapping placement, scene recipes;
* :mod:`~rsvl.synth.scene`: :func:`generate_scene`, labels (HBB, le90 OBB, DOTA polygon, RLE
  mask, truncation), :func:`render_scene`;
* :mod:`~rsvl.synth.language`: captions, VQA pairs, unique referring expressions;
* :mod:`~rsvl.synth.large`: 8,000+ px scenes streamed to GeoTIFF, LRS-VQA-style questions;
* :mod:`~rsvl.synth.profiles`, :mod:`~rsvl.synth.samples`: what each format gets; one image as a
  file plus a :class:`~rsvl.datasets.Sample`;
* :mod:`~rsvl.synth.export`: :func:`generate_dataset` for every format in
  :data:`~rsvl.synth.export.FORMATS`.
"""

from rsvl.synth.export import FORMATS, SynthSummary, generate_dataset, split_of
from rsvl.synth.language import TextView, captions, referring_expressions, vqa_pairs
from rsvl.synth.large import LargeConfig, LargeScene, lrs_questions, plan_large_scene, write_large_geotiff
from rsvl.synth.layouts import SCENE_CLASSES
from rsvl.synth.objects import CLASS_NAMES, CLASSES, ClassSpec, SceneObject
from rsvl.synth.profiles import DEFAULT_NOVEL_CLASSES, FORMAT_PROFILES, FormatProfile
from rsvl.synth.samples import large_config_for, scene_config_for
from rsvl.synth.scene import ObjectLabel, Scene, SceneConfig, generate_scene, render_scene

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "DEFAULT_NOVEL_CLASSES",
    "FORMATS",
    "FORMAT_PROFILES",
    "SCENE_CLASSES",
    "ClassSpec",
    "FormatProfile",
    "LargeConfig",
    "LargeScene",
    "ObjectLabel",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "SynthSummary",
    "TextView",
    "captions",
    "generate_dataset",
    "generate_scene",
    "large_config_for",
    "lrs_questions",
    "plan_large_scene",
    "referring_expressions",
    "render_scene",
    "scene_config_for",
    "split_of",
    "vqa_pairs",
    "write_large_geotiff",
]

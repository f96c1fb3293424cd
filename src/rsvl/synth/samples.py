"""One image of a SynthRS dataset: plan it, render it to its file (unless it exists), label it.

:func:`run_job` is what each worker process runs: it depends only on the :class:`ImageJob`, so
images can be made in any order and in parallel. The labels become a :class:`Sample` of the
target format following its :class:`~rsvl.synth.profiles.FormatProfile` (which classes, masks,
polygons, texts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rsvl.datasets import Instance, Referring, Sample, get_format
from rsvl.errors import InputError
from rsvl.synth.language import TextView, captions, referring_expressions, vqa_pairs
from rsvl.synth.large import LargeConfig, LargeScene, plan_large_scene, write_large_geotiff
from rsvl.synth.objects import CLASS_NAMES, SceneObject
from rsvl.synth.profiles import FORMAT_PROFILES, FormatProfile
from rsvl.synth.rng import rng_for
from rsvl.synth.scene import Scene, SceneConfig, generate_scene, render_scene
from rsvl.utils.atomic import atomic_path

__all__ = ["NOMINAL_GSD", "ImageJob", "ImageResult", "large_config_for", "run_job", "scene_config_for"]

NOMINAL_GSD = 0.5
"""Metres per pixel at scene scale 1."""


@dataclass(frozen=True)
class ImageJob:
    """Everything one image depends on (picklable, sent to the worker processes).

    ``root`` is the dataset root the image and its labels belong to (``out``, or ``out/train`` /
    ``out/test`` with novel classes); ``split`` its split; ``large`` selects the GeoTIFF path.
    """

    format: str
    root: str
    index: int
    seed: int
    size: int
    split: str
    novel: tuple[str, ...]
    antialias: bool
    large: bool


@dataclass
class ImageResult:
    """One image's labels, and whether its file was written (False: it existed already)."""

    index: int
    root: str
    sample: Sample
    written: bool
    scene: str
    objects: Counter[str]


def _stem(profile: FormatProfile, index: int) -> str:
    return str(index) if profile.int_stems else f"synth_{index:06d}"


def scene_config_for(format: str, size: int | None = None, antialias: bool = False) -> SceneConfig:
    """The :class:`SceneConfig` :func:`generate_dataset` uses for ``format`` (to regenerate a scene)."""
    profile = FORMAT_PROFILES[format.lower()]
    size = profile.default_size if size is None else size
    return SceneConfig(width=size, height=size, antialias=antialias, **dict(profile.scene))


def large_config_for(format: str, size: int | None = None, antialias: bool = False) -> LargeConfig:
    """The :class:`LargeConfig` :func:`generate_dataset` uses for large images of ``format``."""
    profile = FORMAT_PROFILES[format.lower()]
    size = profile.default_size if size is None else size
    keep = {k: v for k, v in profile.scene.items() if k in ("scene_weights", "class_weights", "density")}
    district = max(256, min(1024, size // 2))
    return LargeConfig(width=size, height=size, district=district, antialias=antialias, **keep)


def _save_image(path: Path, rgb: np.ndarray) -> None:
    """Write ``rgb`` atomically in the format the file suffix names (PNG, JPEG or TIFF)."""
    suffix = path.suffix.lower()
    image = Image.fromarray(rgb)
    with atomic_path(path) as tmp:
        if suffix == ".png":
            image.save(tmp, format="PNG", compress_level=1)
        elif suffix in (".jpg", ".jpeg"):
            image.save(tmp, format="JPEG", quality=95)
        elif suffix in (".tif", ".tiff"):
            image.save(tmp, format="TIFF", compression="tiff_deflate")
        else:
            raise InputError(f"cannot write an image with suffix {suffix!r} ({path})")


def _label_name(profile: FormatProfile, obj: SceneObject) -> str | None:
    name = profile.classes.get(obj.category)
    if name == "subtype":
        return obj.subtype or "truck"
    return name


def _instance(profile: FormatProfile, obj: SceneObject, name: str) -> Instance:
    lab = obj.label
    attrs: dict[str, Any] = {}
    for key in profile.instance_attrs:
        if key == "area":
            attrs["area"] = lab.area
        elif key == "color":
            attrs["color"] = obj.color
        elif key == "truncated":
            attrs["truncated"] = lab.truncated
        elif key == "visdrone":
            attrs.update(truncation=int(lab.truncated), occlusion=0)
        elif key == "voc":
            attrs["truncated"] = int(lab.truncated)
    return Instance(
        category=name,
        bbox=lab.bbox,
        polygon=lab.polygon if profile.polygons else None,
        mask=lab.mask if profile.masks and lab.mask else None,
        attrs=attrs,
    )


def _lvis_meta(
    rng: np.random.Generator, objects: list[SceneObject], kept: list[SceneObject], vocabulary: Sequence[str]
) -> tuple[list[SceneObject], dict[str, Any]]:
    """LVIS federated labels: maybe drop part of one class (not exhaustive), list verified-absent classes."""
    ids = {name: k + 1 for k, name in enumerate(CLASS_NAMES)}
    present = {o.category for o in objects}
    absent = [c for c in vocabulary if c not in present]
    neg = sorted(ids[c] for c in rng.permutation(absent)[: int(rng.integers(2, 5))].tolist()) if absent else []
    not_exhaustive: list[int] = []
    counts = Counter(o.category for o in kept)
    multi = sorted(c for c, k in counts.items() if k >= 2)
    if multi and rng.random() < 0.15:
        cat = multi[int(rng.integers(len(multi)))]
        of_cat = [o for o in kept if o.category == cat]
        drop = {id(o) for o in of_cat[len(of_cat) - len(of_cat) // 2 :]}
        kept = [o for o in kept if id(o) not in drop]
        not_exhaustive = [ids[cat]]
    return kept, {"not_exhaustive_category_ids": not_exhaustive, "neg_category_ids": neg}


def _build_sample(
    job: ImageJob, profile: FormatProfile, scene: Scene | LargeScene, image: str
) -> tuple[Sample, Counter[str]]:
    """The labels of one image as a :class:`Sample` of the job's format."""
    novel = set(job.novel) if job.split == "train" else set()
    is_large = isinstance(scene, LargeScene)
    everything = scene.objects if is_large else scene.labelled  # type: ignore[union-attr]
    visible = [o for o in everything if o.category not in novel]
    vocabulary = [c for c in CLASS_NAMES if c not in novel]
    rng = rng_for(scene.seed, "text")
    gsd = NOMINAL_GSD / scene.scale
    sample = Sample(image=image, width=scene.width, height=scene.height, split=job.split)
    meta: dict[str, Any] = dict(profile.meta)
    if job.format == "dota":
        meta["gsd"] = round(gsd, 6)
    kept = visible
    if job.format == "lvis":
        kept, extra = _lvis_meta(rng, everything, visible, vocabulary)
        meta.update(extra)
    counts: Counter[str] = Counter()
    if profile.instances:
        pairs = [(o, _label_name(profile, o)) for o in kept]
        labelled = [(o, n) for o, n in pairs if n is not None]
        sample.instances = [_instance(profile, o, n) for o, n in labelled]
        counts.update(n for _, n in labelled)
        if job.format == "visdrone" and not is_large:
            for rect in scene.ignore_regions:  # type: ignore[union-attr]
                r = (max(rect[0], 0.0), max(rect[1], 0.0), min(rect[2], scene.width), min(rect[3], scene.height))
                sample.instances.append(Instance(category="ignored regions", bbox=r, ignore=True))
                counts["ignored regions"] += 1
        text_objects = [o for o, _ in labelled]
    else:
        text_objects = visible
    features = scene.features
    view = TextView(scene.width, scene.height, scene.label, text_objects, vocabulary, getattr(scene, "cover", {}),
                    features, gsd)  # fmt: skip
    if profile.captions:
        caps = [c.text for c in captions(view, rng, n=profile.captions)]
        if profile.detailed_caption:
            sentences: list[str] = []
            for cap in caps:
                for part in cap.split(". "):
                    part = part.rstrip(".") + "."
                    if part not in sentences:
                        sentences.append(part)
            caps = [" ".join(sentences)]
        sample.captions = caps
    if profile.vqa == "lrs":
        sample.qas = list(scene.qas) if is_large else []  # type: ignore[union-attr]
    elif profile.vqa:
        sample.qas = vqa_pairs(view, rng, style=profile.vqa)
    if profile.refs:
        refs = referring_expressions(view, rng, max_refs=profile.refs)
        out_refs: list[Referring] = []
        for ref in refs:
            attrs = {**ref.attrs, "unique": True, "obj_cls": ref.attrs["category"]}
            target = ref.target if profile.instances else None
            sentences = ref.sentences[: max(profile.ref_sentences, 1)]
            out_refs.append(Referring(sentences, target=target, bbox=ref.bbox, attrs=attrs))
        sample.refs = out_refs
    if profile.classification:
        sample.label = scene.label
    if job.format in ("coco", "aitod", "lvis", "rrsisd", "captions"):
        sample.image_id = job.index + 1
    elif job.format == "rsvqa":
        sample.image_id = job.index
    sample.meta = meta
    return sample, counts


def run_job(job: ImageJob) -> ImageResult:
    """Generate one image: plan, render if its file is missing, label."""
    profile = FORMAT_PROFILES[job.format]
    fmt = get_format(job.format)
    stem = _stem(profile, job.index)
    scene: Scene | LargeScene
    if job.large:
        scene = plan_large_scene(job.seed, job.index, large_config_for(job.format, job.size, job.antialias))
        rel = fmt.image_relpath(stem, ".tif", label=scene.label)
    else:
        config = scene_config_for(job.format, job.size, job.antialias)
        scene = generate_scene(job.seed, job.index, config, with_masks=profile.masks)
        rel = fmt.image_relpath(stem, label=scene.label) if profile.classification else fmt.image_relpath(stem)
    path = Path(job.root) / rel
    written = False
    if not path.exists():
        if isinstance(scene, LargeScene):
            write_large_geotiff(scene, path, gsd=NOMINAL_GSD / scene.scale)
        else:
            _save_image(path, render_scene(scene))
        written = True
    sample, counts = _build_sample(job, profile, scene, rel)
    return ImageResult(job.index, job.root, sample, written, scene.label, counts)

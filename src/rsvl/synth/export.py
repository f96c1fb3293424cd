"""Write a SynthRS dataset in any registered format: ``generate_dataset(format, out, n, ...)``.

Images are generated independently from ``(seed, index)`` (in a process pool when there are many),
written where the format's layout keeps them (``get_format(name).image_relpath``), and the
annotation files are written once at the end through the format's own writer, atomically.

Splits. Every image gets a split from a hash of ``(seed, index)``: ``train`` with probability
``train_fraction`` (0.8), the rest shared equally by ``val`` and ``test`` — so an image's split does
not depend on ``n``. Formats that store splits (RSVQA, captions, classification, RRSIS-D) record
them.

Open-vocabulary split (``novel_classes``). The dataset is written as two complete datasets of the
format: ``out/train`` holds the train-split images with the labels of *seen* classes only (novel
objects are in the pictures but unlabelled, and texts never mention them — the usual open-
vocabulary detection protocol), ``out/test`` holds the other images with every class labelled
(seen + novel). ``True`` selects :data:`DEFAULT_NOVEL_CLASSES`.

Resume. ``out/.synthrs/manifest.json`` records the arguments; a rerun with the same arguments skips every
image file that already exists (files are written atomically, so an existing file is complete),
recomputes the labels (cheap: labels never need the pixels) and rewrites the annotation files.
A rerun with different arguments is refused (write to another folder). ``n`` may change between
runs: image ``i`` is the same whatever ``n`` is.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsvl.datasets import Category, Sample, get_format
from rsvl.datasets.base import load_json
from rsvl.errors import DatasetError, InputError
from rsvl.synth.layouts import SCENE_CLASSES
from rsvl.synth.objects import CLASS_NAMES, CLASSES
from rsvl.synth.profiles import DEFAULT_NOVEL_CLASSES, FORMAT_PROFILES, FormatProfile
from rsvl.synth.rng import hash_unit
from rsvl.synth.samples import ImageJob, ImageResult, run_job
from rsvl.utils.atomic import write_json

__all__ = [
    "FORMATS",
    "GENERATOR_VERSION",
    "MANIFEST",
    "SynthSummary",
    "generate_dataset",
    "split_of",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bumped whenever the same arguments would produce different images or labels."""
MANIFEST = ".synthrs/manifest.json"
"""Arguments and summary of a generated dataset, in a hidden folder that no format reader lists."""
FORMATS: tuple[str, ...] = tuple(sorted(FORMAT_PROFILES))
"""Registry names of the formats :func:`generate_dataset` writes."""
LARGE_MIN = 4096
"""Images with a side above this are planned in districts and streamed to GeoTIFF."""


@dataclass
class SynthSummary:
    """What :func:`generate_dataset` did."""

    format: str
    root: Path
    images: int
    written: int
    skipped: int
    instances: int
    per_class: dict[str, int]
    scenes: dict[str, int]
    splits: dict[str, int]
    roots: list[Path]
    novel_classes: tuple[str, ...]
    size: int
    seconds: float
    texts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings)."""
        return {
            "format": self.format,
            "root": str(self.root),
            "images": self.images,
            "written": self.written,
            "skipped": self.skipped,
            "instances": self.instances,
            "per_class": dict(self.per_class),
            "scenes": dict(self.scenes),
            "splits": dict(self.splits),
            "roots": [str(r) for r in self.roots],
            "novel_classes": list(self.novel_classes),
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "texts": dict(self.texts),
        }


def split_of(seed: int, index: int, train_fraction: float = 0.8, novel: bool = False) -> str:
    """Split of image ``index``: ``train`` / ``val`` / ``test`` (``train`` / ``test`` with novel classes)."""
    u = float(hash_unit(seed & 0x7FFFFFFF, np.int64(index), np.int64(0x5B1)))
    if u < train_fraction:
        return "train"
    if novel:
        return "test"
    return "val" if u < train_fraction + (1 - train_fraction) / 2 else "test"


# --------------------------------------------------------------------------- one image


# --------------------------------------------------------------------------- the dataset


def _check_novel(novel_classes: Sequence[str] | bool | None, profile: FormatProfile) -> tuple[str, ...]:
    if novel_classes is None or novel_classes is False:
        return ()
    if profile.classification:
        raise InputError("novel_classes needs a format with object labels; classification labels scenes")
    names = DEFAULT_NOVEL_CLASSES if novel_classes is True else tuple(novel_classes)  # type: ignore[arg-type]
    reverse: dict[str, list[str]] = {}
    for ours, theirs in profile.classes.items():
        reverse.setdefault(theirs, []).append(ours)
    out: list[str] = []
    for name in names:
        if name in CLASSES:
            out.append(name)
        elif name in reverse:
            out.extend(reverse[name])
        else:
            known = sorted(set(CLASS_NAMES) | set(reverse) - {"subtype"})
            raise InputError(f"unknown novel class {name!r}; known classes: {', '.join(known)}")
    if novel_classes is True and profile.instances:
        out = [c for c in out if c in profile.classes]
    if not out:
        raise InputError(f"none of the novel classes {list(names)} is labelled by the {profile.name} format")
    return tuple(sorted(set(out)))


def _manifest_args(fmt: str, seed: int, size: int, novel: tuple[str, ...], antialias: bool, tf: float) -> dict:
    return {
        "generator": "SynthRS",
        "version": GENERATOR_VERSION,
        "format": fmt,
        "seed": seed,
        "size": size,
        "novel_classes": list(novel),
        "antialias": antialias,
        "train_fraction": tf,
    }


def _check_manifest(out: Path, args: dict[str, Any]) -> None:
    path = out / MANIFEST
    if not path.exists():
        return
    try:
        old = load_json(path)
    except DatasetError as exc:
        raise InputError(f"{path}: unreadable SynthRS manifest ({exc.message}); use an empty output folder") from None
    previous = old.get("args") if isinstance(old, dict) else None
    if previous != args:
        diff = sorted(k for k in args if not isinstance(previous, dict) or previous.get(k) != args[k])
        raise InputError(
            f"{path}: this folder holds a SynthRS dataset generated with other arguments ({', '.join(diff)}); "
            "rerun with the same arguments to resume, or write to another folder"
        )


def _categories(profile: FormatProfile, vocabulary: set[str], samples: list[Sample]) -> list[Category] | None:
    """Categories for one root (ids fixed across roots; LVIS frequencies from these samples)."""
    if profile.classification:
        return [Category(k, name) for k, name in enumerate(SCENE_CLASSES)]
    if not profile.instances or profile.name in ("visdrone", "dota", "deepforest", "voc"):
        return None
    cats = []
    for k, name in enumerate(profile.labels):
        ours = [c for c, n in profile.classes.items() if n == name]
        if not any(c in vocabulary for c in ours):
            continue
        spec = CLASSES[ours[0]]
        attrs: dict[str, Any] = {"supercategory": spec.supercategory}
        if profile.name == "lvis":
            attrs = {"synset": f"{spec.noun.replace(' ', '_')}.n.01", "synonyms": sorted({name, spec.noun}),
                     "def": f"a synthetic {spec.noun} seen from above"}  # fmt: skip
        cats.append(Category(k + 1, name, attrs))
    return cats


def _lvis_frequency(cats: list[Category], samples: list[Sample]) -> None:
    """LVIS's r/c/f rule (1-10 / 11-100 / >100 training images) on a 1,000-image scale:
    a class in at most 1 % of the images is rare, at most 10 % common, else frequent."""
    n = max(len(samples), 1)
    images = Counter(name for s in samples for name in {i.category for i in s.instances})
    instances = Counter(i.category for s in samples for i in s.instances)
    for cat in cats:
        share = images[cat.name] / n
        cat.attrs["frequency"] = "r" if share <= 0.01 else "c" if share <= 0.10 else "f"
        cat.attrs["image_count"] = images[cat.name]
        cat.attrs["instance_count"] = instances[cat.name]


def _progress(enabled: bool):
    from rsvl.utils.progress import progress_bar

    return progress_bar(enabled, label="[bold]SynthRS[/]", transient=False)


def _pool_context() -> multiprocessing.context.BaseContext:
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _run_jobs(jobs: list[ImageJob], workers: int, progress: bool, label: str) -> Iterator[ImageResult]:
    """Run the jobs in order (serially, or in a pool of ``workers`` processes), yielding results in order."""
    if workers <= 1 or len(jobs) <= 1:
        with _progress(progress) as bar:
            task = bar.add_task(label, total=len(jobs))
            for job in jobs:
                yield run_job(job)
                bar.advance(task)
        return
    chunk = max(1, min(16, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        # With "fork" the pool starts every worker at the first submit: do it before the progress
        # bar starts its refresh thread, so no process is forked while another thread runs.
        pool.submit(int).result()
        with _progress(progress) as bar:
            task = bar.add_task(label, total=len(jobs))
            for result in pool.map(run_job, jobs, chunksize=chunk):
                yield result
                bar.advance(task)


def generate_dataset(
    format: str,
    out: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    size: int | None = None,
    novel_classes: Sequence[str] | bool | None = None,
    progress: bool = True,
    *,
    workers: int | None = None,
    antialias: bool = False,
    train_fraction: float = 0.8,
) -> SynthSummary:
    """Generate ``n`` synthetic images with labels and write them as a dataset in ``format``.

    Args:
        format: a registry name (:data:`FORMATS`: ``coco``, ``dota``, ``aitod``, ``lvis``...).
        out: the dataset root (created; ``out/train`` and ``out/test`` with ``novel_classes``).
        n: number of images (images ``0 .. n-1``, at least one).
        seed: dataset seed; image ``i`` depends only on ``(seed, i)`` and the arguments.
        size: image side in pixels; None gives the format's default (512; 8,192 for ``lrsvqa``).
            Sides above 4,096 (and every ``lrsvqa`` image) are planned in districts and written
            to GeoTIFF block by block.
        novel_classes: class names held out of the training labels, ``True`` for the default set.
        progress: show a Rich progress bar.
        workers: worker processes (None: 2 when there are at least 16 images, else 1).
        antialias: blend object edges (slower; masks are unchanged).
        train_fraction: share of images in the train split.

    Returns:
        a :class:`SynthSummary`.

    Raises:
        InputError: unknown format or class, bad size, or a folder holding a dataset generated
            with other arguments.
    """
    start = time.perf_counter()
    name = format.lower()
    fmt = get_format(name)  # InputError listing the known formats
    if name not in FORMAT_PROFILES:
        raise InputError(f"SynthRS cannot write the {fmt.name!r} format; it writes {', '.join(FORMATS)}")
    profile = FORMAT_PROFILES[name]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    size = profile.default_size if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        raise InputError(f"size must be an integer of at least 64 pixels, got {size!r}")
    if not 0 < train_fraction <= 1:
        raise InputError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    novel = _check_novel(novel_classes, profile)
    large = profile.large or size > LARGE_MIN
    root = Path(out)
    args = _manifest_args(name, seed, size, novel, antialias, train_fraction)
    _check_manifest(root, args)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / MANIFEST, {"args": args, "status": "generating"})
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n >= 16 else 1
    jobs = []
    for i in range(n):
        split = split_of(seed, i, train_fraction, bool(novel))
        sub = root if not novel else root / ("train" if split == "train" else "test")
        jobs.append(ImageJob(name, str(sub), i, seed, size, split, novel, antialias, large))
    per_root: dict[str, list[Sample]] = {}
    written = skipped = 0
    per_class: Counter[str] = Counter()
    scenes: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    texts: Counter[str] = Counter()
    for result in _run_jobs(jobs, workers, progress, f"{name} x {n}"):
        per_root.setdefault(result.root, []).append(result.sample)
        written += result.written
        skipped += not result.written
        per_class.update(result.objects)
        scenes[result.scene] += 1
        splits[result.sample.split or "none"] += 1
        texts.update(captions=len(result.sample.captions), qas=len(result.sample.qas), refs=len(result.sample.refs))
    roots = [root / "train", root / "test"] if novel else [root]
    vocab_all = set(CLASS_NAMES)
    train_cats: list[Category] | None = None
    for sub in roots:
        samples = per_root.get(str(sub), [])
        vocabulary = vocab_all - set(novel) if novel and sub.name == "train" else vocab_all
        cats = _categories(profile, vocabulary, samples)
        if name == "lvis" and cats is not None:
            if novel and sub.name == "test" and train_cats is not None:
                freq = {c.name: c.attrs for c in train_cats}
                for cat in cats:
                    cat.attrs.update({k: v for k, v in freq.get(cat.name, {}).items() if k != "instance_count"})
                    cat.attrs.setdefault("frequency", "r")
                    cat.attrs.setdefault("image_count", 0)
                    cat.attrs["instance_count"] = sum(1 for s in samples for i in s.instances if i.category == cat.name)
            else:
                _lvis_frequency(cats, samples)
            train_cats = cats
        meta = _dataset_meta(name, seed)
        sub.mkdir(parents=True, exist_ok=True)
        fmt.write(sub, samples, categories=cats, meta=meta)
    summary = SynthSummary(
        format=name,
        root=root,
        images=n,
        written=written,
        skipped=skipped,
        instances=sum(per_class.values()),
        per_class=dict(sorted(per_class.items())),
        scenes=dict(sorted(scenes.items())),
        splits=dict(sorted(splits.items())),
        roots=roots,
        novel_classes=novel,
        size=size,
        seconds=time.perf_counter() - start,
        texts=dict(texts),
    )
    record = summary.to_dict()
    for key in ("seconds", "written", "skipped", "root", "roots"):
        record.pop(key)
    write_json(root / MANIFEST, {"args": args, "status": "complete", "n": n, "summary": record})
    logger.info("SynthRS: %d %s images in %s (%d written, %d kept)", n, name, root, written, skipped)
    return summary


def _dataset_meta(name: str, seed: int) -> dict[str, Any] | None:
    info = {"description": f"SynthRS synthetic aerial scenes (seed {seed})", "version": str(GENERATOR_VERSION)}
    if name in ("coco", "aitod", "lvis", "rrsisd"):
        return {"info": info}
    if name == "captions":
        return {"dataset": "synthrs"}
    return None

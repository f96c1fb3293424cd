"""Check a dataset folder end to end: every annotation parses, every image exists and has the
size the annotation states, every object is inside its image. Backs ``rsvl data check``.

The reader runs with ``strict=False`` so one pass collects every problem (with ``path:line``)
instead of stopping at the first; the caller decides the exit code from :attr:`CheckResult.ok`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from rsvl.datasets.base import Problem, get_format
from rsvl.datasets.images import image_size
from rsvl.datasets.sample import Sample
from rsvl.errors import DatasetError, InputError

log = logging.getLogger(__name__)

_BOX_SLACK = 1.0
"""Pixels an object may stick out of its image before it is reported (rounding in real files)."""


@dataclass
class CheckResult:
    """What ``rsvl data check`` found."""

    root: str
    format: str
    samples: int = 0
    objects: int = 0
    captions: int = 0
    questions: int = 0
    expressions: int = 0
    labelled: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_sample(sample: Sample, result: CheckResult, check_images: bool) -> None:
    result.objects += len(sample.instances)
    result.captions += len(sample.captions)
    result.questions += len(sample.qas)
    result.expressions += len(sample.refs)
    result.labelled += sample.label is not None
    result.categories.update(inst.category for inst in sample.instances)
    where = sample.image
    for ref in sample.refs:
        if ref.target is not None and not 0 <= ref.target < len(sample.instances):
            result.problems.append(Problem(where, None, f"referring expression {ref.id!r} targets a missing object"))
    if not check_images:
        return
    path = sample.image_path
    if not path.is_file():
        result.problems.append(Problem(str(path), None, "image file is missing"))
        return
    size = image_size(path)
    if size is None:
        result.problems.append(Problem(str(path), None, "image cannot be read (corrupt or not an image)"))
        return
    width, height = size
    if width == 0 or height == 0:
        result.problems.append(Problem(str(path), None, "image is empty (0 pixels)"))
        return
    if (sample.width, sample.height) != (None, None) and (sample.width, sample.height) != (width, height):
        result.problems.append(
            Problem(str(path), None, f"annotation says {sample.width}x{sample.height}, image is {width}x{height}")
        )
    outside = sum(
        1
        for inst in sample.instances
        if inst.bbox is not None
        and (
            inst.bbox[0] < -_BOX_SLACK
            or inst.bbox[1] < -_BOX_SLACK
            or inst.bbox[2] > width + _BOX_SLACK
            or inst.bbox[3] > height + _BOX_SLACK
        )
    )
    if outside:
        message = f"{outside} object(s) extend outside the {width}x{height} image"
        result.problems.append(Problem(str(path), None, message))


def check_dataset(
    root: str | PathLike[str], format: str, *, check_images: bool = True, progress: bool = False
) -> CheckResult:
    """Read the dataset at ``root`` in ``format`` and collect every problem.

    Raises:
        InputError: the folder does not exist or does not have the format's layout at all
            (nothing could be read); problems inside files are collected, not raised.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"dataset folder does not exist: {root}")
    fmt = get_format(format)
    result = CheckResult(root=str(root), format=fmt.name)
    dataset = fmt.open(root, strict=False)
    samples = iter(dataset)
    if progress:
        from rich.progress import track

        samples = iter(track(samples, description=f"checking {fmt.name}", transient=True))
    try:
        for sample in samples:
            result.samples += 1
            _check_sample(sample, result, check_images)
    except DatasetError as exc:  # an error the reader could not skip past (e.g. unparseable JSON)
        result.problems.append(Problem(exc.path or str(root), exc.line, exc.message))
    result.problems[:0] = dataset.report.problems
    if result.samples == 0 and not result.problems:
        result.problems.append(Problem(str(root), None, f"no samples found for format {fmt.name!r} ({fmt.layout})"))
    log.debug("checked %s: %d samples, %d problems", root, result.samples, len(result.problems))
    return result


def _has(root: Path, pattern: str) -> bool:
    return next(root.glob(pattern), None) is not None


def _coco_flavour(path: Path) -> str:
    """``lvis`` when the categories carry LVIS ``frequency`` fields, else ``coco`` (AI-TOD is COCO)."""
    from rsvl.datasets.base import load_json

    data = load_json(path)
    categories = data.get("categories") if isinstance(data, dict) else None
    if (
        isinstance(categories, list)
        and categories
        and all(isinstance(c, dict) and "frequency" in c for c in categories)
    ):
        return "lvis"
    return "coco"


def guess_format(root: str | PathLike[str]) -> str:
    """Name the dataset format of ``root`` from its layout (the files each format's reader expects).

    Raises:
        InputError: nothing matches, or the folder does not exist; the message lists the layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder does not exist: {root}")
    rules: list[tuple[str, bool]] = [
        ("dota", (root / "labelTxt").is_dir()),
        ("rrsisd", _has(root, "*/refs(*).p") or _has(root, "refs(*).p")),
        ("visdrone", (root / "annotations").is_dir() and _has(root / "annotations", "*.txt")),
        ("voc", (root / "Annotations").is_dir()),
        ("geojson", (root / "labels").is_dir() and _has(root / "labels", "*.geojson")),
        ("rsvqa", _has(root, "*_split_*_questions.json")),
        ("vrsbench", _has(root, "VRSBench_*.json")),
        ("lrsvqa", _has(root, "LRS_VQA/*.json*") or _has(root, "LRS_VQA*.json*")),
        ("captions", _has(root, "dataset*.json")),
        ("deepforest", (root / "annotations.csv").is_file()),
    ]
    for name, matches in rules:
        if matches:
            return name
    if (root / "annotations.json").is_file():
        return _coco_flavour(root / "annotations.json")
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs and not any(p.is_file() and p.suffix in {".json", ".txt", ".csv", ".xml"} for p in root.iterdir()):
        return "classification"
    if subdirs and (root / "classes.txt").is_file():
        return "classification"
    from rsvl.datasets.base import format_names

    layouts = "; ".join(f"{n}: {get_format(n).layout}" for n in format_names())
    raise InputError(
        f"cannot tell the dataset format of {root}; name it (--format, or --gt-format / --pred-format for "
        f"rsvl eval). Known layouts: {layouts}"
    )

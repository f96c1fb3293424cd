"""Convert a dataset from one format to another (``rsvl data convert``).

Samples stream from the source reader; each image is copied (hard-linked where possible) into the
destination layout, and the destination writer writes the annotations once at the end. Geometry a
target format needs but the source lacks is derived, never invented: an HBB from a polygon or mask
(writers that need a polygon, such as DOTA, write an HBB's corners themselves). Image sizes the
source does not state are read from the image headers; images whose names collide across
folders are renamed apart. Labels the target cannot store (masks in DOTA, captions
in COCO) are counted and reported, not silently dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from rsvl.datasets.base import get_format
from rsvl.datasets.images import with_image_sizes
from rsvl.datasets.sample import Instance, Sample
from rsvl.errors import InputError
from rsvl.utils.atomic import atomic_path
from rsvl.utils.progress import progress_bar

log = logging.getLogger(__name__)

_MASK_FORMATS = {"coco", "aitod", "lvis", "rrsisd"}
"""Formats whose files store instance masks."""


@dataclass
class ConvertSummary:
    samples: int = 0
    objects: int = 0
    images_copied: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    out: str = ""

    def __str__(self) -> str:
        dropped = ", ".join(f"{k}: {v}" for k, v in self.dropped.items() if v) or "nothing"
        return (
            f"{self.samples} samples, {self.objects} objects converted, {self.images_copied} images copied "
            f"-> {self.out}; labels the target format cannot hold: {dropped}"
        )


def complete_geometry(inst: Instance, height: int | None = None, width: int | None = None) -> Instance:
    """Fill a missing HBB from the polygon or mask (a polygon is never made up from a box: writers
    that need one, such as DOTA, write the box's corners themselves)."""
    bbox = inst.bbox
    if bbox is None and inst.polygon is not None:
        xs, ys = inst.polygon[0::2], inst.polygon[1::2]
        bbox = (min(xs), min(ys), max(xs), max(ys))
    if bbox is None and inst.mask is not None and height and width:
        from rsvl.geometry.masks import to_bbox

        bbox = to_bbox(inst.mask, height, width)
    return dataclasses.replace(inst, bbox=bbox)


def _unique_stem(sample: Sample, used: dict[str, Path]) -> str:
    """The image's file stem, made unique when two source images share a name in different folders
    (``a/x.png`` and ``b/x.png`` become ``x`` and ``b__x``): target layouts keep one image folder."""
    rel = Path(sample.image)
    stem = rel.stem
    source = sample.image_path.resolve() if sample.root is not None else rel
    if stem in used and used[stem] != source:
        stem = "__".join([*rel.parent.parts, rel.stem]) or rel.stem
        k = 1
        base = stem
        while stem in used and used[stem] != source:
            stem, k = f"{base}_{k}", k + 1
    used[stem] = source
    return stem


def _place_image(src: Path, dst: Path) -> bool:
    """Hard-link (or copy) ``src`` to ``dst``; False when ``dst`` already holds it (a resumed run).

    A file of another size at ``dst`` (another dataset's image) is replaced. The copy goes through a
    temporary file renamed into place, so an interrupted copy never leaves a truncated image that a
    rerun would take for a finished one.
    """
    if dst.exists() and (os.path.samefile(src, dst) or dst.stat().st_size == src.stat().st_size):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)  # atomic: the link is made whole or not at all
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)
    return True


def convert_dataset(
    src: str | PathLike[str],
    src_format: str,
    dst: str | PathLike[str],
    dst_format: str,
    *,
    progress: bool = False,
) -> ConvertSummary:
    """Read ``src`` as ``src_format`` and write it to ``dst`` as ``dst_format``."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise InputError("destination must differ from the source folder")
    reader, writer = get_format(src_format), get_format(dst_format)
    dataset = reader.open(src)
    summary = ConvertSummary(out=str(dst))
    dropped = {"captions": 0, "questions": 0, "expressions": 0, "masks": 0, "scene labels": 0}
    converted: list[Sample] = []
    used: dict[str, Path] = {}
    copies: list[tuple[Path, Path]] = []
    label = f"[bold]{reader.name} -> {writer.name}[/]"
    with progress_bar(progress, label=label) as bar:
        task = bar.add_task("samples read", total=None)
        samples = with_image_sizes(_advancing(dataset, lambda: bar.advance(task)))
    for sample in samples:
        image_src = sample.image_path
        stem, suffix = _unique_stem(sample, used), Path(sample.image).suffix or ".png"
        new_rel = writer.image_relpath(stem, suffix, sample.label)
        if image_src.is_file():
            copies.append((image_src, dst / new_rel))
        else:
            log.warning("image %s is missing; annotations converted without it", image_src)
        instances = [complete_geometry(i, sample.height, sample.width) for i in sample.instances]
        converted.append(dataclasses.replace(sample, image=new_rel, instances=instances, root=dst))
        summary.samples += 1
        summary.objects += len(instances)
        dropped["captions"] += len(sample.captions) * ("caption" not in writer.tasks)
        dropped["questions"] += len(sample.qas) * ("vqa" not in writer.tasks)
        dropped["expressions"] += len(sample.refs) * ("referring" not in writer.tasks)
        dropped["scene labels"] += (sample.label is not None) * ("classification" not in writer.tasks)
        dropped["masks"] += sum(i.mask is not None for i in instances) * (writer.name not in _MASK_FORMATS)
    same_family = reader.name == writer.name
    dropped["dataset metadata fields"] = 0 if same_family else len(dataset.meta)
    placed: list[Path] = []
    try:
        with progress_bar(progress, label=label) as bar:
            task = bar.add_task("images placed", total=len(copies))
            for source, target in copies:
                if _place_image(source, target):
                    placed.append(target)
                bar.advance(task)
        writer.write(dst, converted, categories=dataset.categories or None, meta=dataset.meta if same_family else None)
    except Exception:
        # a refused conversion leaves no half-converted dataset behind; after Ctrl-C the images
        # placed so far stay (each one whole), and the rerun skips them
        for target in placed:
            target.unlink(missing_ok=True)
        raise
    summary.images_copied = len(copies)
    summary.dropped = dropped
    return summary


def _advancing(samples: Iterable[Sample], advance: Callable[[], None]) -> Iterator[Sample]:
    """``samples``, calling ``advance()`` after each (a progress bar over a lazy reader)."""
    for sample in samples:
        yield sample
        advance()

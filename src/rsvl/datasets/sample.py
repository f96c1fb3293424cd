"""The one sample type every dataset reader yields and every writer takes.

A :class:`Sample` is a plain value: an image reference (a path relative to the dataset root, never
the pixels), its size, and whatever labels the format carries — objects (:class:`Instance`),
captions, question/answer pairs (:class:`QA`), referring expressions (:class:`Referring`) and a
scene label. Two samples compare equal when their labels are equal, which is what the round-trip
tests (``read(write(x)) == x``) check; the dataset root is kept out of the comparison.

Conventions (see ``rsvl.geometry``): ``bbox`` is HBB ``xyxy`` in float pixels with pixel edges
(0..W); ``polygon`` is a flat ``(x1, y1, x2, y2, ...)`` tuple in the order the file gives (DOTA:
4 vertices, clockwise from the first); ``mask`` is COCO-style — an RLE dict
``{"size": [h, w], "counts": str}`` or a list of flat polygons — and :mod:`rsvl.geometry.masks`
decodes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MaskLike = dict[str, Any] | list[list[float]]
"""A COCO segmentation: RLE ``{"size": [h, w], "counts": str | list[int]}`` or a list of flat polygons."""


@dataclass(frozen=True)
class Category:
    """A class of objects as a dataset declares it.

    ``attrs`` keeps the format's extra fields (COCO ``supercategory``, LVIS ``frequency`` and
    ``synonyms``, VisDrone's official id) so that writers can reproduce them.
    """

    id: int
    name: str
    attrs: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class Instance:
    """One annotated (or predicted) object.

    Attributes:
        category: class name (not id: ids are a property of one file, names survive conversion).
        bbox: HBB ``(x1, y1, x2, y2)`` in pixels, or None when the format has only a polygon/mask.
        polygon: flat vertex tuple (DOTA 8 numbers), or None.
        mask: COCO segmentation (RLE dict or list of polygons), or None.
        score: detection confidence for predictions, None for ground truth.
        difficult: DOTA/VOC ``difficult`` flag (ignored by the official metrics).
        ignore: an ignored region or crowd (VisDrone category 0, COCO ``iscrowd``).
        id: the annotation id in the file, where the format has one.
        attrs: remaining per-object fields (VisDrone truncation/occlusion, VOC pose, COCO area...).
    """

    category: str
    bbox: tuple[float, float, float, float] | None = None
    polygon: tuple[float, ...] | None = None
    mask: MaskLike | None = None
    score: float | None = None
    difficult: bool = False
    ignore: bool = False
    id: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class QA:
    """A question about an image with its answer (VQA, LRS-VQA, RSVQA, VRSBench)."""

    question: str
    answer: str
    type: str | None = None
    id: int | str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Referring:
    """A referring expression (one or more sentences) that picks out one object.

    ``target`` indexes ``Sample.instances``; ``bbox`` repeats the target's box for formats that
    store the box with the expression (VRSBench grounding).
    """

    sentences: list[str]
    target: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    id: int | str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One image and its labels, as every reader yields it.

    Attributes:
        image: path of the image relative to the dataset root, POSIX separators.
        image_id: the id the format uses for the image (COCO int, DOTA file stem...), or None.
        width, height: image size in pixels when the annotation states it (readers never open images
            just to learn their size; use :meth:`open` for that).
        instances, captions, qas, refs, label: the labels.
        split: ``train``/``val``/``test`` where the format records it.
        meta: format-level extras that must survive a round trip (DOTA ``imagesource``/``gsd``...).
        root: the dataset root the image path is relative to (not part of equality).
    """

    image: str
    image_id: int | str | None = None
    width: int | None = None
    height: int | None = None
    instances: list[Instance] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    qas: list[QA] = field(default_factory=list)
    refs: list[Referring] = field(default_factory=list)
    label: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path | None = field(default=None, compare=False, repr=False)

    @property
    def image_path(self) -> Path:
        """Absolute path of the image (``root / image``); the root must be known."""
        if self.root is None:
            raise ValueError(f"sample {self.image!r} has no dataset root")
        return self.root / self.image

    def open(self) -> Any:
        """Open the image lazily as a :class:`rsvl.io.RasterSource` (windowed reads, nothing loaded)."""
        from rsvl.io import RasterSource

        return RasterSource(self.image_path)

"""Detection training batches from any dataset format: labels to tensors, random crops and flips.

Shared by the detectors' trainers (VLM4RSDet, Open-Det); a recipe's ``data`` section is a
:class:`DataConfig`.

The dataset is read once through :mod:`rsvl.datasets` (so every format's checks apply); boxes become
arrays in image pixels — HBB ``xyxy`` or le90 ``(cx, cy, w, h, theta)`` — with labels indexing the
recipe's class list. A name outside that list is an error naming the image, never a dropped box.

Batches are a pure function of ``(seed, step)``: each epoch is a seeded permutation and each crop
and flip is drawn from a generator seeded by the step, so a resumed run sees the same data as an
uninterrupted one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from rsvl.datasets import Dataset, Sample, get_format
from rsvl.datasets.base import derive_categories
from rsvl.errors import InputError
from rsvl.geometry.boxes import hbb_to_obb, normalize_le90, obb_to_hbb, poly_to_hbb, poly_to_obb
from rsvl.geometry.masks import to_bbox
from rsvl.io import RasterSource
from rsvl.utils.config import StrictModel

logger = logging.getLogger(__name__)

__all__ = [
    "DataConfig",
    "DetectionTrainSet",
    "ImageTargets",
    "read_rgb",
    "sample_targets",
    "scale_boxes",
    "scale_image",
]


class DataConfig(StrictModel):
    """Where the training (and validation) images and labels are, in a registered dataset format."""

    format: str = Field(description="dataset format name (`rsvl data formats`): dota, voc, visdrone, coco, aitod...")
    root: str = Field(description="training dataset root")
    val_root: str | None = Field(None, description="validation root (same format); None skips evaluation")
    categories: list[str] | None = Field(None, description="class names in order; None: all names in the training set")
    crop_size: int = Field(512, ge=32, description="training crop side; larger images are cropped at random")
    min_visible: float = Field(0.5, gt=0, le=1, description="keep a cropped box when this share of it is inside")
    hflip: bool = Field(True, description="random horizontal flips")
    vflip: bool = Field(False, description="random vertical flips (aerial images have no 'up')")
    skip_difficult: bool = Field(False, description="drop DOTA/VOC 'difficult' objects from training targets")


@dataclass
class ImageTargets:
    """One image's training labels: boxes in pixels and class indices."""

    boxes: np.ndarray  # (N, 4) xyxy or (N, 5) le90
    labels: np.ndarray  # (N,) int64


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file (PNG, JPEG, GeoTIFF of any dtype) as ``(H, W, 3)`` uint8 display RGB."""
    with RasterSource(path) as src:
        image, _valid = src.read_display(src.full_window)
    return image


def _instance_boxes(sample: Sample, box_type: str, index: dict[str, int], skip_difficult: bool) -> ImageTargets:
    width = 4 if box_type == "hbb" else 5
    boxes, labels = [], []
    for n, inst in enumerate(sample.instances):
        if inst.ignore or (skip_difficult and inst.difficult):
            continue
        if inst.category not in index:
            raise InputError(
                f"object {n} has category {inst.category!r}, which is not among the recipe's classes {sorted(index)}",
                sample.image_path if sample.root else sample.image,
            )
        if box_type == "obb" and inst.polygon is not None and len(inst.polygon) == 8:
            box = poly_to_obb(np.asarray(inst.polygon, dtype=np.float64))
        elif inst.bbox is not None:
            hbb = np.asarray(inst.bbox, dtype=np.float64)
            box = hbb if box_type == "hbb" else hbb_to_obb(hbb)
        elif inst.polygon is not None:
            hbb = poly_to_hbb(np.asarray(inst.polygon, dtype=np.float64))
            box = hbb if box_type == "hbb" else hbb_to_obb(hbb)
        elif inst.mask is not None and sample.width and sample.height:
            hbb = np.asarray(to_bbox(inst.mask, sample.height, sample.width), dtype=np.float64)
            box = hbb if box_type == "hbb" else hbb_to_obb(hbb)
        else:
            raise InputError(f"object {n} has no box, polygon or mask", sample.image_path if sample.root else None)
        boxes.append(np.asarray(box, dtype=np.float64).reshape(width))
        labels.append(index[inst.category])
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, width)
    if box_type == "hbb" and len(arr):
        keep = (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])
        arr, labels = arr[keep], [lab for lab, k in zip(labels, keep, strict=True) if k]
    return ImageTargets(arr, np.asarray(labels, dtype=np.int64))


def sample_targets(sample: Sample, box_type: str, classes: list[str], skip_difficult: bool = False) -> ImageTargets:
    """One sample's boxes and label indices (ignored regions left out)."""
    return _instance_boxes(sample, box_type, {c: i for i, c in enumerate(classes)}, skip_difficult)


def scale_image(image: Tensor, scale: float) -> Tensor:
    """``(3, H, W)`` resized by ``scale`` (bilinear; antialiased when shrinking); unchanged at 1."""
    if scale == 1:
        return image
    size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
    out = torch.nn.functional.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1
    )
    return out[0].clamp_(0, 1)


def scale_boxes(boxes: Tensor | np.ndarray, scale: float) -> Tensor | np.ndarray:
    """HBB ``xyxy`` or le90 boxes with every length multiplied by ``scale`` (angles unchanged)."""
    if scale == 1:
        return boxes
    out = boxes.clone() if isinstance(boxes, Tensor) else boxes.copy()
    out[:, :4] = out[:, :4] * scale
    return out


class _ImageCache:
    """Decoded images kept up to a byte budget (least recently used go first)."""

    def __init__(self, budget_mb: int) -> None:
        self.budget = budget_mb * 1024 * 1024
        self.items: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.size = 0

    def get(self, path: Path) -> np.ndarray:
        if path in self.items:
            self.items.move_to_end(path)
            return self.items[path]
        image = read_rgb(path)
        self.items[path] = image
        self.size += image.nbytes
        while self.size > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.size -= old.nbytes
        return image


class DetectionTrainSet:
    """The training images of a recipe and the batches drawn from them.

    Args:
        cfg: the recipe's ``data`` section.
        box_type: ``hbb`` or ``obb``.
        classes: class names in label order; None takes ``cfg.categories``, else the dataset's
            declared categories, else every name in the labels (sorted).
        root: read this root instead of ``cfg.root`` (the validation set).
        cache_mb: decoded-image cache.
    """

    def __init__(
        self,
        cfg: DataConfig,
        box_type: str,
        classes: list[str] | None = None,
        *,
        root: str | None = None,
        cache_mb: int = 2048,
    ) -> None:
        self.cfg = cfg
        self.box_type = box_type
        dataset: Dataset = get_format(cfg.format).open(root or cfg.root, strict=True)
        self.samples = dataset.load()
        if not self.samples:
            raise InputError("the dataset has no images", root or cfg.root)
        self.classes = list(
            classes or cfg.categories or dataset.category_names() or [c.name for c in derive_categories(self.samples)]
        )
        if not self.classes:
            raise InputError(
                "no object classes: the labels hold no objects and data.categories is not set", root or cfg.root
            )
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"class names repeat: {self.classes}", root or cfg.root)
        self.targets = [sample_targets(s, box_type, self.classes, cfg.skip_difficult) for s in self.samples]
        self._cache = _ImageCache(cache_mb)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(H, W, 3)`` uint8."""
        sample = self.samples[i]
        image = self._cache.get(sample.image_path)
        if sample.width and sample.height and image.shape[:2] != (sample.height, sample.width):
            raise InputError(
                f"image is {image.shape[1]}x{image.shape[0]} but the labels say {sample.width}x{sample.height}",
                sample.image_path,
            )
        return image

    def indices(self, step: int, batch_size: int, seed: int) -> list[int]:
        """The images of batch ``step``: consecutive slots of per-epoch seeded permutations."""
        n = len(self)
        out = []
        for k in range(step * batch_size, (step + 1) * batch_size):
            epoch, pos = divmod(k, n)
            out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[pos]))
        return out

    def batch(
        self, step: int, batch_size: int, seed: int, scale: float = 1.0, slots: Sequence[int] | None = None
    ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """Images (float 0..1) and targets of batch ``step`` (crops and flips seeded by step and slot).

        ``scale`` resizes each crop and its boxes after cropping (the detector's ``input_scale``).
        ``slots`` picks positions of the batch (a process's share under data parallelism); each
        position's crop depends only on ``(seed, step, slot)``, so the shares of N processes put
        together are exactly the batch one process draws.
        """
        order = self.indices(step, batch_size, seed)
        images, targets = [], []
        for slot in range(batch_size) if slots is None else slots:
            if not 0 <= slot < batch_size:
                raise ValueError(f"slot {slot} outside a batch of {batch_size}")
            image, tgt = self.crop(order[slot], np.random.default_rng([seed, step, 1, slot]))
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
            images.append(scale_image(tensor, scale))
            boxes = scale_boxes(torch.from_numpy(tgt.boxes).float(), scale)
            targets.append({"boxes": boxes, "labels": torch.from_numpy(tgt.labels).long()})
        return images, targets

    def crop(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, ImageTargets]:
        """A random ``crop_size`` window of image ``i`` (whole image when smaller), randomly flipped."""
        image = self.image(i)
        tgt = self.targets[i]
        h, w = image.shape[:2]
        size = self.cfg.crop_size
        x0 = int(rng.integers(0, w - size + 1)) if w > size else 0
        y0 = int(rng.integers(0, h - size + 1)) if h > size else 0
        cw, ch = min(w, size), min(h, size)
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        boxes, labels = _crop_boxes(tgt, x0, y0, cw, ch, self.cfg.min_visible)
        if self.cfg.hflip and rng.random() < 0.5:
            image, boxes = image[:, ::-1], _flip(boxes, cw, axis=0)
        if self.cfg.vflip and rng.random() < 0.5:
            image, boxes = image[::-1], _flip(boxes, ch, axis=1)
        return image, ImageTargets(boxes, labels)


def _crop_boxes(
    tgt: ImageTargets, x0: int, y0: int, cw: int, ch: int, min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes shifted into the crop; kept when ``min_visible`` of their HBB is inside (HBBs clipped)."""
    boxes = tgt.boxes.copy()
    if not len(boxes):
        return boxes, tgt.labels.copy()
    hbb = boxes if boxes.shape[1] == 4 else obb_to_hbb(boxes)
    hbb = hbb - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = np.stack(
        [hbb[:, 0].clip(0, cw), hbb[:, 1].clip(0, ch), hbb[:, 2].clip(0, cw), hbb[:, 3].clip(0, ch)], axis=1
    )
    area = (hbb[:, 2] - hbb[:, 0]) * (hbb[:, 3] - hbb[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside > 0) & (inside >= min_visible * np.maximum(area, 1e-9))
    if boxes.shape[1] == 4:
        out = clipped[keep]
        keep_size = (out[:, 2] - out[:, 0] >= 1) & (out[:, 3] - out[:, 1] >= 1)
        return out[keep_size], tgt.labels[keep][keep_size]
    out = boxes[keep]
    out[:, 0] -= x0
    out[:, 1] -= y0
    return out, tgt.labels[keep]


def _flip(boxes: np.ndarray, extent: int, axis: int) -> np.ndarray:
    """Mirror boxes across the image's vertical (axis 0: x) or horizontal (axis 1: y) centre line."""
    out = boxes.copy()
    if not len(out):
        return out
    if out.shape[1] == 4:
        lo, hi = (0, 2) if axis == 0 else (1, 3)
        out[:, lo], out[:, hi] = extent - boxes[:, hi], extent - boxes[:, lo]
        return out
    out[:, axis] = extent - boxes[:, axis]
    out[:, 4] = -boxes[:, 4]
    return np.asarray(normalize_le90(out), dtype=np.float64)

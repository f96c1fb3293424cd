"""Instance masks in the COCO encodings: RLE (compressed or uncompressed) and polygons.

Thin, checked wrappers over ``pycocotools.mask`` (the reference implementation every COCO-style
dataset and metric uses), so that masks written by rsvl decode identically in pycocotools and the
other way round. Masks are ``(H, W)`` bool arrays; RLE dicts carry ``counts`` as ``str``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as _coco_mask

from rsvl.errors import GeometryError


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an ``(H, W)`` bool/0-1 mask: ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise GeometryError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = _coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as one compressed RLE."""
    if isinstance(segmentation, list):
        polys = [list(map(float, p)) for p in segmentation]
        if not polys or any(len(p) < 6 or len(p) % 2 for p in polys):
            raise GeometryError("polygon segmentation needs lists of at least 3 (x, y) pairs")
        return _coco_mask.merge(_coco_mask.frPyObjects(polys, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise GeometryError(f"RLE size must be [h, w] integers, got {size!r}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != size[0] * size[1] or any((not isinstance(c, int)) or c < 0 for c in counts):
                raise GeometryError("uncompressed RLE counts must be non-negative and sum to h * w")
            return _coco_mask.frPyObjects(segmentation, size[0], size[1])
        if isinstance(counts, str):
            counts = counts.encode("ascii", errors="strict")
        if not isinstance(counts, bytes):
            raise GeometryError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
        rle = {"size": list(size), "counts": counts}
        if int(_coco_mask.area(rle)) > size[0] * size[1]:
            raise GeometryError("RLE counts decode to more pixels than the mask has")
        return rle
    raise GeometryError("segmentation must be a list of polygons or an RLE dict with 'size' and 'counts'")


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterise a COCO segmentation to an ``(height, width)`` bool mask (pycocotools rules)."""
    rle = _to_rle(segmentation, height, width)
    if list(rle["size"]) != [height, width]:
        raise GeometryError(f"RLE size {list(rle['size'])} does not match the image size [{height}, {width}]")
    return _coco_mask.decode(rle).astype(bool)


def area(segmentation: Any, height: int, width: int) -> int:
    """Pixel count of a segmentation, as pycocotools computes it."""
    return int(_coco_mask.area(_to_rle(segmentation, height, width)))


def to_bbox(segmentation: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """Tight HBB ``xyxy`` (pixel edges) around a segmentation; all zeros for an empty mask."""
    x, y, w, h = (float(v) for v in _coco_mask.toBbox(_to_rle(segmentation, height, width)))
    return (x, y, x + w, y + h)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two equal-sized bool masks (0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise GeometryError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0

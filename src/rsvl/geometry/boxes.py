"""Horizontal (HBB) and oriented (OBB) boxes: types and converters, numpy or torch, batched.

One internal convention, documented once and used everywhere in rsvl:

* HBB: ``xyxy`` float pixels on pixel edges, so a box covering the whole W x H image is
  ``(0, 0, W, H)``.
* OBB: ``(cx, cy, w, h, angle)``, angle in radians, **le90** as in mmrotate: ``w`` is the long
  side (``w >= h``) and ``angle`` lies in ``[-pi/2, pi/2)``; image coordinates (y down), so a
  positive angle turns the box clockwise on screen.
* Polygons: 8 numbers ``(x1, y1, ..., x4, y4)``, clockwise on screen, starting from the vertex
  DOTA_devkit's ``get_best_begin_point`` would pick (the cyclic order whose vertices lie
  closest to the enclosing box's TL, TR, BR, BL corners).

Every function accepts a numpy array or a torch tensor whose last dimension holds the box and
returns the same kind, with any number of leading (batch) dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rsvl.errors import GeometryError

Array = np.ndarray | torch.Tensor

_HALF_PI = math.pi / 2


def _xp(x: Array):
    """The array module (numpy or torch) that owns ``x``."""
    return torch if isinstance(x, torch.Tensor) else np


def _as_float(x: Array | list | tuple) -> Array:
    """Numpy float64 for lists/ints, floating tensors/arrays as they are."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    arr = np.asarray(x)
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


def _check_last_dim(x: Array, size: int, what: str) -> None:
    if x.ndim == 0 or x.shape[-1] != size:
        raise GeometryError(f"{what} must have shape (..., {size}); got {tuple(x.shape)}")


def _take_along(x: Array, idx: Array, axis: int) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.take_along_dim(x, idx, dim=axis)
    return np.take_along_axis(x, idx, axis=axis)


# --------------------------------------------------------------------------- HBB converters


def xyxy_to_xywh(b: Array) -> Array:
    """``(x1, y1, x2, y2)`` -> ``(x, y, w, h)`` (COCO's box layout)."""
    b = _as_float(b)
    _check_last_dim(b, 4, "HBB")
    xp = _xp(b)
    return xp.stack([b[..., 0], b[..., 1], b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], -1)


def xywh_to_xyxy(b: Array) -> Array:
    """``(x, y, w, h)`` -> ``(x1, y1, x2, y2)``."""
    b = _as_float(b)
    _check_last_dim(b, 4, "HBB")
    xp = _xp(b)
    return xp.stack([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]], -1)


def xyxy_to_cxcywh(b: Array) -> Array:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)`` (DETR's box layout)."""
    b = _as_float(b)
    _check_last_dim(b, 4, "HBB")
    xp = _xp(b)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return xp.stack([b[..., 0] + w / 2, b[..., 1] + h / 2, w, h], -1)


def cxcywh_to_xyxy(b: Array) -> Array:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    b = _as_float(b)
    _check_last_dim(b, 4, "HBB")
    xp = _xp(b)
    hw, hh = b[..., 2] / 2, b[..., 3] / 2
    return xp.stack([b[..., 0] - hw, b[..., 1] - hh, b[..., 0] + hw, b[..., 1] + hh], -1)


def hbb_area(b: Array) -> Array:
    """Area of ``xyxy`` boxes (negative widths count as zero)."""
    b = _as_float(b)
    _check_last_dim(b, 4, "HBB")
    xp = _xp(b)
    zero = b[..., 0] * 0
    return xp.maximum(b[..., 2] - b[..., 0], zero) * xp.maximum(b[..., 3] - b[..., 1], zero)


def hbb_to_poly(b: Array) -> Array:
    """``xyxy`` -> 8-point polygon TL, TR, BR, BL (clockwise on screen)."""
    b = _as_float(b)
    _check_last_dim(b, 4, "HBB")
    xp = _xp(b)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([x1, y1, x2, y1, x2, y2, x1, y2], -1)


def hbb_to_obb(b: Array) -> Array:
    """``xyxy`` -> le90 OBB (angle 0, or ``-pi/2`` for boxes taller than wide)."""
    c = xyxy_to_cxcywh(b)
    xp = _xp(c)
    w, h = c[..., 2], c[..., 3]
    tall = h > w
    angle = xp.where(tall, w * 0 - _HALF_PI, w * 0)
    return xp.stack([c[..., 0], c[..., 1], xp.where(tall, h, w), xp.where(tall, w, h), angle], -1)


# --------------------------------------------------------------------------- OBB converters


def normalize_le90(b: Array) -> Array:
    """Bring any ``(cx, cy, w, h, angle)`` box to le90: ``w >= h``, angle in ``[-pi/2, pi/2)``.

    The same rectangle is described, only its parameters change (swap w/h and add pi/2 when
    the box is taller than wide, then wrap the angle by pi). Squares keep their angle modulo pi.
    """
    b = _as_float(b)
    _check_last_dim(b, 5, "OBB")
    xp = _xp(b)
    w, h, a = b[..., 2], b[..., 3], b[..., 4]
    swap = h > w
    w2, h2 = xp.where(swap, h, w), xp.where(swap, w, h)
    a = xp.where(swap, a + _HALF_PI, a)
    a = (a + _HALF_PI) % math.pi - _HALF_PI
    return xp.stack([b[..., 0], b[..., 1], w2, h2, a], -1)


def obb_area(b: Array) -> Array:
    """Area ``w * h`` of OBBs."""
    b = _as_float(b)
    _check_last_dim(b, 5, "OBB")
    return b[..., 2] * b[..., 3]


def obb_corners(b: Array) -> Array:
    """OBB -> its 4 corners ``(..., 4, 2)`` in the fixed order of the unrotated TL, TR, BR, BL.

    This order is clockwise on screen for any angle, and is what the rotated-IoU kernel uses.
    """
    b = _as_float(b)
    _check_last_dim(b, 5, "OBB")
    xp = _xp(b)
    cx, cy, w, h, a = (b[..., i] for i in range(5))
    cos, sin = xp.cos(a), xp.sin(a)
    dx = xp.stack([-w, w, w, -w], -1) / 2
    dy = xp.stack([-h, -h, h, h], -1) / 2
    xs = cx[..., None] + dx * cos[..., None] - dy * sin[..., None]
    ys = cy[..., None] + dx * sin[..., None] + dy * cos[..., None]
    return xp.stack([xs, ys], -1)


def best_begin_poly(p: Array) -> Array:
    """Rotate each polygon's vertex cycle to DOTA_devkit's best starting point.

    DOTA_devkit (``get_best_begin_point_single``) tries the 4 cyclic orders and keeps the one whose
    vertices are closest, summed, to the enclosing box's TL, TR, BR, BL corners (first on ties).
    """
    p = _as_float(p)
    _check_last_dim(p, 8, "polygon")
    xp = _xp(p)
    pts = p.reshape(*p.shape[:-1], 4, 2)
    lo, hi = xp.amin(pts, -2), xp.amax(pts, -2)
    target = xp.stack(
        [
            xp.stack([lo[..., 0], lo[..., 1]], -1),
            xp.stack([hi[..., 0], lo[..., 1]], -1),
            xp.stack([hi[..., 0], hi[..., 1]], -1),
            xp.stack([lo[..., 0], hi[..., 1]], -1),
        ],
        -2,
    )
    costs = []
    orders = []
    for shift in range(4):
        order = [(shift + k) % 4 for k in range(4)]
        rolled = pts[..., order, :]
        d = rolled - target
        costs.append(xp.sqrt((d**2).sum(-1)).sum(-1))
        orders.append(rolled)
    best = xp.argmin(xp.stack(costs, -1), -1)
    stacked = xp.stack(orders, -3)  # (..., 4 shifts, 4, 2)
    idx = best[..., None, None, None]
    if isinstance(stacked, torch.Tensor):
        idx = idx.expand(*best.shape, 1, 4, 2)
    else:
        idx = np.broadcast_to(idx, (*best.shape, 1, 4, 2))
    chosen = _take_along(stacked, idx, -3)[..., 0, :, :]
    return chosen.reshape(*p.shape[:-1], 8)


def obb_to_poly(b: Array) -> Array:
    """le90 OBB ``(..., 5)`` -> 8-point polygon ``(..., 8)``, clockwise, DOTA start vertex."""
    corners = obb_corners(b)
    return best_begin_poly(corners.reshape(*corners.shape[:-2], 8))


def min_area_rect(points: Array) -> Array:
    """Minimum-area enclosing rectangle of point sets ``(..., K, 2)`` -> le90 OBB ``(..., 5)``.

    The optimal rectangle has a side parallel to a convex-hull edge, and every hull edge joins two
    of the points, so trying the direction of every point pair (K(K-1)/2 candidates) is exact.
    Vectorised over the batch; replaces OpenCV's ``minAreaRect`` with no OpenCV dependency.
    """
    pts = _as_float(points)
    if pts.ndim < 2 or pts.shape[-1] != 2 or pts.shape[-2] < 1:
        raise GeometryError(f"points must have shape (..., K, 2) with K >= 1; got {tuple(pts.shape)}")
    xp = _xp(pts)
    k = pts.shape[-2]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)] or [(0, 0)]
    ii = [i for i, _ in pairs]
    jj = [j for _, j in pairs]
    d = pts[..., jj, :] - pts[..., ii, :]  # (..., P, 2)
    theta = xp.arctan2(d[..., 1], d[..., 0])  # (..., P)
    cos, sin = xp.cos(theta), xp.sin(theta)
    px, py = pts[..., None, :, 0], pts[..., None, :, 1]  # (..., 1, K)
    u = px * cos[..., None] + py * sin[..., None]  # (..., P, K)
    v = -px * sin[..., None] + py * cos[..., None]
    umin, umax = xp.amin(u, -1), xp.amax(u, -1)
    vmin, vmax = xp.amin(v, -1), xp.amax(v, -1)
    area = (umax - umin) * (vmax - vmin)
    best = xp.argmin(area, -1)[..., None]

    def pick(x: Array) -> Array:
        return _take_along(x, best, -1)[..., 0]

    uc, vc = pick((umin + umax) / 2), pick((vmin + vmax) / 2)
    c, s = pick(cos), pick(sin)
    cx, cy = uc * c - vc * s, uc * s + vc * c
    w, h = pick(umax - umin), pick(vmax - vmin)
    return normalize_le90(xp.stack([cx, cy, w, h, pick(theta)], -1))


def poly_to_obb(p: Array) -> Array:
    """8-point polygons ``(..., 8)`` -> le90 OBB: their minimum-area enclosing rectangle."""
    p = _as_float(p)
    _check_last_dim(p, 8, "polygon")
    return min_area_rect(p.reshape(*p.shape[:-1], 4, 2))


def poly_to_hbb(p: Array) -> Array:
    """Polygons ``(..., 2K)`` -> enclosing ``xyxy``."""
    p = _as_float(p)
    if p.ndim == 0 or p.shape[-1] % 2 or p.shape[-1] < 2:
        raise GeometryError(f"polygon must have shape (..., 2K); got {tuple(p.shape)}")
    xp = _xp(p)
    pts = p.reshape(*p.shape[:-1], p.shape[-1] // 2, 2)
    lo, hi = xp.amin(pts, -2), xp.amax(pts, -2)
    return xp.concatenate([lo, hi], -1)


def obb_to_hbb(b: Array) -> Array:
    """le90 OBB -> the ``xyxy`` box enclosing it."""
    corners = obb_corners(b)
    return poly_to_hbb(corners.reshape(*corners.shape[:-2], 8))


def poly_area(p: Array) -> Array:
    """Signed shoelace area of polygons ``(..., 2K)``: positive when clockwise on screen."""
    p = _as_float(p)
    if p.ndim == 0 or p.shape[-1] % 2 or p.shape[-1] < 6:
        raise GeometryError(f"polygon must have shape (..., 2K) with K >= 3; got {tuple(p.shape)}")
    pts = p.reshape(*p.shape[:-1], p.shape[-1] // 2, 2)
    x, y = pts[..., 0], pts[..., 1]
    if isinstance(p, torch.Tensor):
        xn, yn = torch.roll(x, -1, -1), torch.roll(y, -1, -1)
    else:
        xn, yn = np.roll(x, -1, -1), np.roll(y, -1, -1)
    return (x * yn - xn * y).sum(-1) / 2


# --------------------------------------------------------------------------- box containers


def _validated(data: Array | list | tuple, width: int, kind: str) -> Array:
    arr = _as_float(data)
    if arr.ndim == 1 and arr.shape[0] == 0:
        arr = arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise GeometryError(f"{kind} must have shape (N, {width}); got {tuple(arr.shape)}")
    finite = torch.isfinite(arr).all() if isinstance(arr, torch.Tensor) else np.isfinite(arr).all()
    if not bool(finite):
        raise GeometryError(f"{kind} contain NaN or inf")
    return arr


@dataclass(frozen=True)
class HBoxes:
    """N horizontal boxes, stored as ``xyxy`` (numpy or torch, validated finite, shape (N, 4))."""

    xyxy: Array

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", _validated(self.xyxy, 4, "HBoxes"))

    @classmethod
    def from_xywh(cls, b: Array) -> HBoxes:
        return cls(xywh_to_xyxy(_validated(b, 4, "HBoxes")))

    @classmethod
    def from_cxcywh(cls, b: Array) -> HBoxes:
        return cls(cxcywh_to_xyxy(_validated(b, 4, "HBoxes")))

    @classmethod
    def from_poly(cls, p: Array) -> HBoxes:
        return cls(poly_to_hbb(_validated(p, 8, "polygons")))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, idx) -> HBoxes:
        sel = self.xyxy[idx]
        return HBoxes(sel.reshape(-1, 4))

    def xywh(self) -> Array:
        return xyxy_to_xywh(self.xyxy)

    def cxcywh(self) -> Array:
        return xyxy_to_cxcywh(self.xyxy)

    def poly(self) -> Array:
        return hbb_to_poly(self.xyxy)

    def to_obb(self) -> OBoxes:
        return OBoxes(hbb_to_obb(self.xyxy))

    def area(self) -> Array:
        return hbb_area(self.xyxy)


@dataclass(frozen=True)
class OBoxes:
    """N oriented boxes, stored le90 ``(cx, cy, w, h, angle)``; normalised on construction."""

    le90: Array

    def __post_init__(self) -> None:
        object.__setattr__(self, "le90", normalize_le90(_validated(self.le90, 5, "OBoxes")))

    @classmethod
    def from_poly(cls, p: Array) -> OBoxes:
        return cls(poly_to_obb(_validated(p, 8, "polygons")))

    def __len__(self) -> int:
        return int(self.le90.shape[0])

    def __getitem__(self, idx) -> OBoxes:
        return OBoxes(self.le90[idx].reshape(-1, 5))

    def poly(self) -> Array:
        return obb_to_poly(self.le90)

    def to_hbb(self) -> HBoxes:
        return HBoxes(obb_to_hbb(self.le90))

    def area(self) -> Array:
        return obb_area(self.le90)

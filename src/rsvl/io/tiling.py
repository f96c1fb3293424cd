"""Tiling as pure functions over pixel windows (SAHI-style slicing, one config object).

A :class:`Window` is ``(col_off, row_off, width, height)`` in pixels of one image; a
:class:`TileSpec` says how big the tiles are, how much neighbours overlap and what happens at the
right/bottom edge where the image does not divide evenly:

* ``"shift"``: the last tile is moved back so it ends exactly at the image edge (it overlaps its
  neighbour more than ``overlap``); every window lies inside the image. An image smaller than a
  tile gives one window clipped to the image.
* ``"pad"``: the last tile keeps its full size and runs past the edge; it is read boundless
  (zero-padded, masked). Every window has exactly the tile size.
* ``"drop"``: partial tiles are dropped, so a strip at the right/bottom may stay uncovered (and an
  image smaller than a tile gives no window at all).

Nothing here reads pixels; :mod:`rsvl.io.raster` reads windows, :mod:`rsvl.io.sliced` drives a
predictor over them and :mod:`rsvl.io.merge` merges the per-tile detections. ``Detections``,
``MergeConfig`` and ``merge_detections`` are re-exported here for convenience.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.io.merge import MergeConfig, merge_detections

if TYPE_CHECKING:
    import rasterio.windows

__all__ = [
    "Detections",
    "EdgePolicy",
    "MergeConfig",
    "TileSpec",
    "Window",
    "axis_starts",
    "count_windows",
    "iter_windows",
    "merge_detections",
    "tile_grid",
]

EdgePolicy = Literal["shift", "pad", "drop"]


class Window(NamedTuple):
    """A pixel window ``(col_off, row_off, width, height)``; a plain tuple, so it unpacks."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        """One past the last column (exclusive right edge)."""
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        """One past the last row (exclusive bottom edge)."""
        return self.row_off + self.height

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """Pixel-edge bounds ``(x0, y0, x1, y1)``, the window as an ``xyxy`` box."""
        return self.col_off, self.row_off, self.col_end, self.row_end

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices selecting this window from an in-memory ``(H, W)`` array."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    def clip(self, width: int, height: int) -> Window:
        """The part of this window inside a ``width`` x ``height`` image (may be empty)."""
        c0, r0 = max(self.col_off, 0), max(self.row_off, 0)
        c1, r1 = min(self.col_end, width), min(self.row_end, height)
        return Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))

    def is_inside(self, width: int, height: int) -> bool:
        """True when the window lies entirely within a ``width`` x ``height`` image."""
        return self.col_off >= 0 and self.row_off >= 0 and self.col_end <= width and self.row_end <= height

    def to_rasterio(self) -> rasterio.windows.Window:
        """The equivalent :class:`rasterio.windows.Window`."""
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True)
class TileSpec:
    """How to cut an image into tiles.

    Args:
        size: tile size in pixels, ``int`` for square tiles or ``(width, height)``.
        overlap: overlap between neighbouring tiles: an ``int`` number of pixels in
            ``[0, size)``, or a ``float`` ratio of the tile size in ``[0, 1)`` (SAHI's
            ``overlap_*_ratio``), rounded to whole pixels.
        edge: what to do with the leftover strip at the right/bottom edge: ``"shift"``,
            ``"pad"`` or ``"drop"`` (see the module docstring).
    """

    size: int | tuple[int, int]
    overlap: int | float = 0
    edge: EdgePolicy = "shift"

    def __post_init__(self) -> None:
        # plain ints / tuples, so specs hash and compare equal whatever the caller passed
        if isinstance(self.size, numbers.Integral):
            object.__setattr__(self, "size", int(self.size))
        elif not isinstance(self.size, str):
            object.__setattr__(self, "size", tuple(int(s) if isinstance(s, numbers.Integral) else s for s in self.size))
        if isinstance(self.overlap, numbers.Integral) and not isinstance(self.overlap, bool):
            object.__setattr__(self, "overlap", int(self.overlap))
        sizes = (self.size, self.size) if isinstance(self.size, int) else self.size
        if len(sizes) != 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise InputError(f"tile size must be a positive int or (width, height) of ints, got {self.size!r}")
        if self.edge not in ("shift", "pad", "drop"):
            raise InputError(f"tile edge policy must be 'shift', 'pad' or 'drop', got {self.edge!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)):
            raise InputError(f"tile overlap must be pixels (int) or a ratio (float), got {self.overlap!r}")
        if isinstance(self.overlap, float) and not 0.0 <= self.overlap < 1.0:
            raise InputError(f"tile overlap ratio must lie in [0, 1), got {self.overlap}")
        for s, o in zip(sizes, self.overlap_px, strict=True):
            if not 0 <= o < s:
                raise InputError(f"tile overlap must lie in [0, tile size {s}), got {o} pixels")

    @property
    def tile_size(self) -> tuple[int, int]:
        """``(width, height)`` of a tile in pixels."""
        return (self.size, self.size) if isinstance(self.size, int) else (int(self.size[0]), int(self.size[1]))

    @property
    def overlap_px(self) -> tuple[int, int]:
        """Overlap ``(x, y)`` in whole pixels."""
        tw, th = self.tile_size
        if isinstance(self.overlap, float):
            return round(tw * self.overlap), round(th * self.overlap)
        return int(self.overlap), int(self.overlap)

    @property
    def stride(self) -> tuple[int, int]:
        """Step ``(x, y)`` between the origins of neighbouring tiles."""
        (tw, th), (ox, oy) = self.tile_size, self.overlap_px
        return tw - ox, th - oy


def axis_starts(length: int, size: int, stride: int, edge: EdgePolicy) -> list[int]:
    """Tile origins along one axis of ``length`` pixels.

    Full tiles start at ``0, stride, 2*stride, ...`` while they fit; the leftover strip gets a
    shifted-back tile (``"shift"``), an overhanging one (``"pad"``) or nothing (``"drop"``).
    """
    if length <= 0:
        return []
    if size >= length:
        return [] if edge == "drop" and size > length else [0]
    starts = list(range(0, length - size + 1, stride))
    last_end = starts[-1] + size
    if last_end < length:
        if edge == "shift":
            starts.append(length - size)
        elif edge == "pad":
            starts.append(starts[-1] + stride)
    return starts


def _axis_extent(start: int, size: int, length: int, edge: EdgePolicy) -> int:
    """Width of a window starting at ``start``: full size, except a clipped tile in "shift"."""
    return size if edge == "pad" else min(size, length - start)


def tile_grid(width: int, height: int, spec: TileSpec) -> tuple[list[int], list[int]]:
    """Column and row origins ``(xs, ys)`` of the tiles; the windows are their product."""
    _check_image_size(width, height)
    (tw, th), (sx, sy) = spec.tile_size, spec.stride
    return axis_starts(width, tw, sx, spec.edge), axis_starts(height, th, sy, spec.edge)


def iter_windows(width: int, height: int, spec: TileSpec) -> Iterator[Window]:
    """Yield the tile windows of a ``width`` x ``height`` image, row by row (row-major).

    Lazy: a 100k x 100k image with small tiles costs nothing until iterated.
    """
    xs, ys = tile_grid(width, height, spec)
    tw, th = spec.tile_size
    for y in ys:
        h = _axis_extent(y, th, height, spec.edge)
        for x in xs:
            yield Window(x, y, _axis_extent(x, tw, width, spec.edge), h)


def count_windows(width: int, height: int, spec: TileSpec) -> int:
    """Number of windows :func:`iter_windows` yields, without iterating."""
    xs, ys = tile_grid(width, height, spec)
    return len(xs) * len(ys)


def _check_image_size(width: int, height: int) -> None:
    if width < 0 or height < 0:
        raise InputError(f"image size must be non-negative, got {width} x {height}")

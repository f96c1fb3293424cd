"""Image pyramid over a large raster: levels, tile grids and decimated tile reads.

Level 0 is the native resolution; level ``k`` is ``factor**k`` times coarser, and the last level
is the first one that fits in a single tile. Each level has a grid of non-overlapping
``tile_size`` windows in its own pixel space (the last row/column may be smaller); every tile
also knows its window in native pixels. Reading a tile is one decimated windowed read of the
native image (GDAL uses internal overviews when the file has them), so no level is ever held in
memory. With an integer ``factor`` the grids nest: tile ``(r, c)`` of level ``k`` covers exactly
the tiles ``(r*f .. r*f+f-1, c*f .. c*f+f-1)`` of level ``k-1`` (clipped at the edges), which is
what :meth:`ImagePyramid.children` returns; coarse-to-fine search (large-image VQA) walks down
that tree.

Level sizes use ``ceil(native / factor**k)``, so the last pixel of a level may stand for a
partial block of native pixels; tiles on the right/bottom edge are resampled accordingly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rsvl.errors import InputError
from rsvl.io.display import DisplayConfig, DisplayStretch
from rsvl.io.raster import RasterSource, open_raster
from rsvl.io.tiling import Window

__all__ = ["ImagePyramid", "PyramidLevel", "PyramidTile", "pyramid_levels"]


@dataclass(frozen=True)
class PyramidTile:
    """One tile: its level and grid position, its window in level pixels and in native pixels."""

    level: int
    row: int
    col: int
    window: Window
    native: Window


@dataclass(frozen=True)
class PyramidLevel:
    """One level: ``downsample`` native pixels per level pixel, its size and its tile grid."""

    index: int
    downsample: int
    width: int
    height: int
    tile_size: int
    native_width: int
    native_height: int

    @property
    def scale(self) -> float:
        """Level pixels per native pixel (``1 / downsample``)."""
        return 1.0 / self.downsample

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in level pixels."""
        return self.width, self.height

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.tile_size)

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.tile_size)

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the tile grid."""
        return self.rows, self.cols

    def __len__(self) -> int:
        return self.rows * self.cols

    def tile(self, row: int, col: int) -> PyramidTile:
        """The tile at grid position ``(row, col)``."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"tile ({row}, {col}) outside level {self.index}'s {self.rows} x {self.cols} grid")
        t, d = self.tile_size, self.downsample
        x0, y0 = col * t, row * t
        x1, y1 = min(x0 + t, self.width), min(y0 + t, self.height)
        nx0, ny0 = x0 * d, y0 * d
        nx1, ny1 = min(x1 * d, self.native_width), min(y1 * d, self.native_height)
        return PyramidTile(
            self.index, row, col, Window(x0, y0, x1 - x0, y1 - y0), Window(nx0, ny0, nx1 - nx0, ny1 - ny0)
        )

    def tiles(self) -> Iterator[PyramidTile]:
        """All tiles of the level, row-major."""
        for r in range(self.rows):
            for c in range(self.cols):
                yield self.tile(r, c)


def pyramid_levels(width: int, height: int, tile_size: int, factor: int) -> list[PyramidLevel]:
    """Levels from native (index 0) down to the first one that fits in one tile."""
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width} x {height}")
    if tile_size < 1 or factor < 2 or int(factor) != factor:
        raise InputError(f"need tile_size >= 1 and an integer factor >= 2, got {tile_size}, {factor}")
    levels = []
    k = 0
    while True:
        d = factor**k
        w, h = math.ceil(width / d), math.ceil(height / d)
        levels.append(PyramidLevel(k, d, w, h, tile_size, width, height))
        if w <= tile_size and h <= tile_size:
            return levels
        k += 1


class ImagePyramid:
    """A tile pyramid over a :class:`RasterSource` (or a path, opened and owned here).

    Args:
        source: the native image.
        tile_size: tile side in level pixels (336 = a CLIP ViT-L/14-336 input).
        factor: integer downsampling between consecutive levels.
        display: band choice / stretch for :meth:`read_tile` (one stretch for every level).
        resampling: GDAL resampling for the decimated reads (``"average"`` avoids aliasing).
    """

    def __init__(
        self,
        source: RasterSource | str | os.PathLike[str],
        tile_size: int = 336,
        factor: int = 2,
        *,
        display: DisplayConfig | DisplayStretch | None = None,
        resampling: str = "average",
    ) -> None:
        self.source, self._owns_source = open_raster(source)
        self.tile_size = int(tile_size)
        self.factor = int(factor)
        self.resampling = resampling
        self._display = display
        self.levels: list[PyramidLevel] = pyramid_levels(self.source.width, self.source.height, self.tile_size, factor)

    def __enter__(self) -> ImagePyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the source if this pyramid opened it."""
        if self._owns_source:
            self.source.close()

    def __len__(self) -> int:
        return len(self.levels)

    @property
    def coarsest(self) -> PyramidLevel:
        """The single-tile level at the top of the pyramid."""
        return self.levels[-1]

    def level(self, index: int) -> PyramidLevel:
        if not 0 <= index < len(self.levels):
            raise IndexError(f"level {index} outside 0..{len(self.levels) - 1}")
        return self.levels[index]

    def tile(self, level: int, row: int, col: int) -> PyramidTile:
        return self.level(level).tile(row, col)

    def children(self, level: int, row: int, col: int) -> list[PyramidTile]:
        """Tiles of the next finer level (``level - 1``) covering the same area; [] at level 0."""
        self.tile(level, row, col)  # validates
        if level == 0:
            return []
        finer = self.levels[level - 1]
        f = self.factor
        rows = range(row * f, min((row + 1) * f, finer.rows))
        cols = range(col * f, min((col + 1) * f, finer.cols))
        return [finer.tile(r, c) for r in rows for c in cols]

    def parent(self, level: int, row: int, col: int) -> PyramidTile | None:
        """The tile of the next coarser level containing this one; ``None`` at the top."""
        self.tile(level, row, col)
        if level == len(self.levels) - 1:
            return None
        return self.levels[level + 1].tile(row // self.factor, col // self.factor)

    def read_tile(self, level: int, row: int, col: int, pad: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Display RGB of a tile: ``(h, w, 3)`` uint8 and the ``(h, w)`` valid mask.

        One decimated windowed read of the native image. ``pad=True`` pads edge tiles to the full
        ``tile_size`` square (black, masked out).
        """
        tile = self.tile(level, row, col)
        image, valid = self.source.read_display(
            tile.native,
            out_shape=(tile.window.height, tile.window.width),
            stretch=self._stretch(),
            resampling=self.resampling if level else "nearest",
        )
        if pad:
            ph, pw = self.tile_size - image.shape[0], self.tile_size - image.shape[1]
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
            valid = np.pad(valid, ((0, ph), (0, pw)))
        return image, valid

    def read_tile_raw(self, level: int, row: int, col: int, bands: list[int] | None = None) -> np.ndarray:
        """A tile in the file's dtype, ``(C, h, w)``, no display stretch."""
        tile = self.tile(level, row, col)
        return self.source.read(
            tile.native,
            bands,
            out_shape=(tile.window.height, tile.window.width),
            resampling=self.resampling if level else "nearest",
        )

    def _stretch(self) -> DisplayStretch:
        if isinstance(self._display, DisplayStretch):
            return self._display
        return self.source.display_stretch(self._display)

"""The Dynamic Image Pyramid: which levels LRS-VQA looks at, and where a vision token leads next.

Built on :class:`rsvl.io.pyramid.ImagePyramid` (integer factor, nested tile grids, one decimated
windowed read per tile), so a 27,000 px image is never held whole. Three levels matter:

* the **global view**: the coarsest level, one tile whose long side is at most ``tile_size``,
  padded bottom/right to the square (the authors paste it top-left on the canvas too);
* the **base level**: the finest level whose tile grid has at most ``max_block_num`` tiles (9 = the
  authors' 3 x 3 tiles of a 1,008 px start); every base tile is encoded;
* the finer levels down to native resolution, visited only under the tiles the question points at.

The authors' release builds one extra level of exactly 1,008 px, which breaks the nesting of tile
grids; here every level is ``factor`` times the next, so a tile's children are exact.

A vision token is a cell of a tile's ``g x g`` token grid. :meth:`DynamicPyramid.token_child` maps
its centre to the tile of the next finer level that contains it; tokens whose centre falls in a
tile's padding are not image content and :meth:`DynamicPyramid.token_valid` says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from rsvl.errors import InputError
from rsvl.io.pyramid import ImagePyramid, PyramidLevel, PyramidTile
from rsvl.io.raster import RasterSource

__all__ = ["DynamicPyramid"]


class DynamicPyramid:
    """Levels, tiles and token-to-tile mapping of one large image (see the module docstring).

    Args:
        source: the image (path or open :class:`RasterSource`; a path is opened and owned here).
        tile_size: tile side in level pixels (the vision tower's input size).
        factor: integer scale between levels.
        max_block_num: the most tiles at the base level.
    """

    def __init__(
        self,
        source: RasterSource | str | os.PathLike[str],
        tile_size: int = 336,
        factor: int = 2,
        max_block_num: int = 9,
    ) -> None:
        if max_block_num < 1:
            raise InputError(f"max_block_num must be at least 1, got {max_block_num}")
        self.pyramid = ImagePyramid(source, tile_size, factor)
        self.tile_size = self.pyramid.tile_size
        self.factor = self.pyramid.factor
        self.max_block_num = max_block_num
        levels = self.pyramid.levels
        self.global_level = len(levels) - 1
        self.base_level = next(lvl.index for lvl in levels if len(lvl) <= max_block_num)

    def __enter__(self) -> DynamicPyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pyramid.close()

    @property
    def source(self) -> RasterSource:
        return self.pyramid.source

    def level(self, index: int) -> PyramidLevel:
        return self.pyramid.level(index)

    def base_tiles(self) -> list[PyramidTile]:
        """Every tile of the base level, row-major."""
        return list(self.level(self.base_level).tiles())

    def read(self, tiles: Sequence[PyramidTile]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S, S, 3)`` uint8 tiles padded to the square, and their ``(N, S, S)`` valid masks."""
        images, valids = [], []
        for tile in tiles:
            image, valid = self.pyramid.read_tile(tile.level, tile.row, tile.col, pad=True)
            images.append(image)
            valids.append(valid)
        s = self.tile_size
        if not images:
            return np.zeros((0, s, s, 3), np.uint8), np.zeros((0, s, s), bool)
        return np.stack(images), np.stack(valids)

    def global_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole image in one padded tile, and its valid mask."""
        images, valids = self.read([self.level(self.global_level).tile(0, 0)])
        return images[0], valids[0]

    def token_centres(self, tile: PyramidTile, grid: int) -> np.ndarray:
        """``(grid, grid, 2)`` level-pixel ``(x, y)`` centres of a tile's token cells (padding included)."""
        step = self.tile_size / grid
        centres = (np.arange(grid) + 0.5) * step
        xs = tile.window.col_off + centres
        ys = tile.window.row_off + centres
        return np.stack(np.meshgrid(xs, ys), axis=-1)

    def token_valid(self, tile: PyramidTile, grid: int, valid: np.ndarray | None = None) -> np.ndarray:
        """``(grid, grid)`` bool: the token's cell overlaps the tile's image content (not only padding).

        With ``valid`` (the tile's ``(S, S)`` pixel mask from :meth:`read`), a cell also needs at
        least one valid pixel: cells entirely on nodata are not image content either.
        """
        step = self.tile_size / grid
        starts = np.arange(grid) * step
        inside = (starts < tile.window.height)[:, None] & (starts < tile.window.width)[None, :]
        if valid is None:
            return inside
        edges = np.round(np.arange(grid + 1) * step).astype(int)
        any_valid = np.logical_or.reduceat(np.logical_or.reduceat(valid, edges[:-1], axis=0), edges[:-1], axis=1)
        return inside & any_valid

    def token_child(self, tile: PyramidTile, grid: int) -> np.ndarray:
        """``(grid, grid, 2)`` ``(row, col)`` of the next finer level's tile under each token's centre.

        Only meaningful above level 0 and for valid tokens; indices are clipped to the finer grid
        (a cell on the content's edge may have its centre in the padding). ``grid`` must be a
        multiple of ``factor`` so that every cell lies in exactly one child tile.
        """
        if tile.level == 0:
            raise InputError("level 0 (native resolution) has no finer level")
        if grid % self.factor:
            raise InputError(
                f"a {grid} x {grid} token grid does not split into the {self.factor} x {self.factor} child tiles; "
                f"choose model.pool (or a tile size) whose token grid is a multiple of {self.factor}"
            )
        finer = self.level(tile.level - 1)
        centres = self.token_centres(tile, grid)
        # a level-k pixel x covers finer pixels [x*f, (x+1)*f): the centre maps to x * f
        col = np.floor(centres[..., 0] * self.factor / self.tile_size).astype(int)
        row = np.floor(centres[..., 1] * self.factor / self.tile_size).astype(int)
        return np.stack([np.clip(row, 0, finer.rows - 1), np.clip(col, 0, finer.cols - 1)], axis=-1)

    def native_box(self, tile: PyramidTile) -> tuple[int, int, int, int]:
        """The tile's ``xyxy`` box in native pixels."""
        w = tile.native
        return w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height

"""Benchmark inputs: large RGB GeoTIFFs written block by block (never held whole in memory)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

BlockPixels = Callable[[int, int, int, int], np.ndarray]


def write_blocked_geotiff(path: Path, size: int, block: int, pixels: BlockPixels, x0: float = 500_000.0) -> Path:
    """Write an S x S 3-band uint8 tiled GeoTIFF (UTM 16N, 0.3 m), atomically.

    ``pixels(row, col, h, w)`` returns the ``(3, h, w)`` block at ``(row, col)``; the map origin
    is ``(x0, 4,000,000)``.
    """
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from rsvl.utils.atomic import atomic_path

    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32616",
        "transform": Affine(0.3, 0, x0, 0, -0.3, 4_000_000),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "zlevel": 1,
        "photometric": "RGB",
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                dst.write(pixels(row, col, h, w), window=Window(col, row, w, h))
    return path

"""Pixel <-> map coordinates through an image's affine transform, vectorised, CRS carried along.

Pixel coordinates follow the project convention: ``(x, y) = (column, row)`` on pixel *edges*, so
``(0, 0)`` is the outer corner of the top-left pixel and ``transform * (0, 0)`` is the image's
corner in map units (GDAL's "area" convention; no half-pixel shift). Every function takes arrays
of any shape ``(..., 2)``: single points, point lists or stacks of polygons ``(N, K, 2)``.

:class:`GeoRef` is the picklable, file-free part of a raster that outputs need (CRS, transform,
size, path), so detections can be written after the raster is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine

from rsvl.errors import RasterError

if TYPE_CHECKING:
    from rasterio.crs import CRS

__all__ = ["GeoRef", "apply_affine", "map_to_pixel", "pixel_to_map"]


def apply_affine(transform: Affine, xy: Any) -> np.ndarray:
    """Apply ``transform`` to points ``(..., 2)``; returns float64 of the same shape."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim == 0 or pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    x, y = pts[..., 0], pts[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def pixel_to_map(transform: Affine, xy: Any) -> np.ndarray:
    """Pixel ``(col, row)`` points ``(..., 2)`` -> map ``(x, y)``."""
    return apply_affine(transform, xy)


def map_to_pixel(transform: Affine, xy: Any) -> np.ndarray:
    """Map ``(x, y)`` points ``(..., 2)`` -> fractional pixel ``(col, row)``."""
    return apply_affine(~transform, xy)


@dataclass(frozen=True)
class GeoRef:
    """Where an image sits on Earth: CRS, affine transform and pixel size (plus its file, for errors).

    ``is_georeferenced`` needs both a CRS and a non-identity transform: GDAL reports an identity
    transform for plain PNG/JPEG files, which means "no georeferencing", not "1 m pixels at 0, 0".
    """

    crs: CRS | None
    transform: Affine
    width: int
    height: int
    path: str | None = None

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None and bool(self.crs) and not self.transform.is_identity

    def require_georeferenced(self) -> None:
        """Raise :class:`RasterError` naming the file when there is no CRS or transform."""
        if not self.is_georeferenced:
            missing = "CRS" if self.crs is None or not self.crs else "geotransform"
            raise RasterError(
                f"image has no {missing}, so map coordinates are undefined (use pixel coordinates)",
                self.path,
            )

    def pixel_to_map(self, xy: Any) -> np.ndarray:
        """Pixel points ``(..., 2)`` -> map coordinates in :attr:`crs`."""
        self.require_georeferenced()
        return pixel_to_map(self.transform, xy)

    def map_to_pixel(self, xy: Any) -> np.ndarray:
        """Map points ``(..., 2)`` in :attr:`crs` -> fractional pixel coordinates."""
        self.require_georeferenced()
        return map_to_pixel(self.transform, xy)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Map bounds ``(left, bottom, right, top)`` of the whole image."""
        self.require_georeferenced()
        corners = self.pixel_to_map([[0, 0], [self.width, 0], [self.width, self.height], [0, self.height]])
        return (
            float(corners[:, 0].min()),
            float(corners[:, 1].min()),
            float(corners[:, 0].max()),
            float(corners[:, 1].max()),
        )

    @property
    def crs_name(self) -> str | None:
        """``"EPSG:<code>"`` when the CRS has one, else its WKT; ``None`` without a CRS."""
        if self.crs is None or not self.crs:
            return None
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg is not None else self.crs.to_wkt()

"""Fixtures for rsvl.io tests: tiny rasters written with rasterio / Pillow into ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

#: A UTM 16N affine with 0.5 m pixels (the solaris sample's grid, shifted).
UTM_TRANSFORM = Affine(0.5, 0.0, 733600.0, 0.0, -0.5, 3725000.0)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32616",
    transform: Affine | None = UTM_TRANSFORM,
    nodata: float | None = None,
    block: int = 64,
    **extra: object,
) -> Path:
    """Write ``(C, H, W)`` data as a tiled, deflate-compressed (Geo)TIFF."""
    c, h, w = data.shape
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": c,
        "dtype": data.dtype.name,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def make_tif(tmp_path: Path) -> Callable[..., Path]:
    """``make_tif(name, data, **kw)``: write a GeoTIFF under ``tmp_path`` and return its path."""

    def make(name: str, data: np.ndarray, **kw: object) -> Path:
        return write_tif(tmp_path / name, data, **kw)

    return make


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def uint16_tif(make_tif: Callable[..., Path], rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """5-band uint16 GeoTIFF, 150 x 200, nodata 0 in the top-left 20 x 30 corner (all bands)."""
    data = rng.integers(100, 4000, size=(5, 150, 200), dtype=np.uint16)
    data[:, :20, :30] = 0
    return make_tif("multi16.tif", data, nodata=0), data


@pytest.fixture
def rgb8_tif(make_tif: Callable[..., Path], rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """3-band uint8 GeoTIFF, 130 x 170, no nodata."""
    data = rng.integers(0, 256, size=(3, 130, 170), dtype=np.uint8)
    return make_tif("rgb8.tif", data), data


@pytest.fixture
def rgb_png(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """Plain RGB PNG (no georeferencing), 60 x 80; returns ``(path, (H, W, 3) array)``."""
    arr = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    path = tmp_path / "plain.png"
    Image.fromarray(arr).save(path)
    return path, arr


@pytest.fixture
def rgb_jpeg(tmp_path: Path) -> Path:
    """Plain JPEG (no georeferencing), 48 x 64, smooth content."""
    y, x = np.mgrid[0:48, 0:64]
    arr = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)
    path = tmp_path / "plain.jpg"
    Image.fromarray(arr).save(path, quality=95)
    return path


@pytest.fixture
def huge_sparse_tif(tmp_path: Path) -> Path:
    """A 30,000 x 30,000 uint16 GeoTIFF that is tiny on disk (sparse + deflate).

    Only two 512-px blocks hold data; the rest are sparse (absent) blocks that read as nodata.
    Loading it whole would take 1.8 GB.
    """
    path = tmp_path / "huge.tif"
    profile = {
        "driver": "GTiff",
        "width": 30_000,
        "height": 30_000,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32616",
        "transform": UTM_TRANSFORM,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "sparse_ok": True,
    }
    block = np.arange(512 * 512, dtype=np.uint16).reshape(1, 512, 512) % 3000 + 1
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(block, window=rasterio.windows.Window(0, 0, 512, 512))
        dst.write(block, window=rasterio.windows.Window(15_360, 15_360, 512, 512))
    assert path.stat().st_size < 2_000_000
    return path

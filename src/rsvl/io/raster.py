"""Lazy, windowed raster reading (PNG, JPEG, TIFF, GeoTIFF, anything GDAL opens) via rasterio.

:class:`RasterSource` opens a file and reads *windows* of it; nothing ever loads a whole large
image. A 30,000 x 30,000 GeoTIFF is fine: tiles come from windowed reads, display statistics and
overviews from one decimated read capped at ``DisplayConfig.max_size`` pixels on the long side,
and a read larger than :attr:`RasterSource.max_read_pixels` is refused with a clear error instead
of exhausting memory.

GDAL's block cache is the only other memory in play; it is bounded per read by ``gdal_cache_mb``
(default 256 MB instead of GDAL's 5 % of RAM), which is plenty for streaming tiles row by row.

Every failure caused by the file (missing, unreadable, corrupt, empty, wrong band, no CRS) is a
:class:`~rsvl.errors.RasterError` whose message starts with the file's path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from rsvl.errors import InputError, RasterError
from rsvl.io.display import DisplayConfig, DisplayStretch, default_bands, fit_stretch
from rsvl.io.georef import GeoRef
from rsvl.io.tiling import Window

__all__ = ["RasterSource", "WindowLike", "as_window", "open_raster"]

logger = logging.getLogger(__name__)

WindowLike = Window | tuple[int, int, int, int] | Any  # Any: rasterio.windows.Window


def as_window(window: WindowLike) -> Window:
    """Normalise a :class:`Window`, a rasterio ``Window`` or a 4-tuple to integer :class:`Window`."""
    if hasattr(window, "col_off") and hasattr(window, "width"):
        vals = (window.col_off, window.row_off, window.width, window.height)
    else:
        vals = tuple(window)
        if len(vals) != 4:
            raise ValueError(f"a window is (col_off, row_off, width, height), got {window!r}")
    c, r, w, h = (round(float(v)) for v in vals)
    return Window(c, r, w, h)


@contextlib.contextmanager
def _quiet_georef() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning: a plain PNG/JPEG is not an error here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _is_virtual(path: str) -> bool:
    return path.startswith("/vsi") or "://" in path


class RasterSource:
    """One open raster, read lazily by windows.

    Use as a context manager (or call :meth:`close`)::

        with RasterSource("scene.tif") as src:
            tile = src.read(Window(0, 0, 512, 512))          # (C, 512, 512), native dtype
            rgb, valid = src.read_display(Window(0, 0, 512, 512))  # (512, 512, 3) uint8 + mask

    Args:
        path: file path (or a GDAL virtual path such as ``/vsizip/...``).
        gdal_cache_mb: GDAL block-cache limit applied around every read; ``None`` leaves
            GDAL's own setting (``GDAL_CACHEMAX``, 5 % of RAM by default) alone.

    Not thread-safe (neither is a GDAL dataset): open one source per thread or process.
    """

    #: Largest read (bands x output pixels) allowed; guards against loading a huge image whole.
    max_read_pixels: int = 1 << 27

    def __init__(self, path: str | os.PathLike[str], *, gdal_cache_mb: int | None = 256) -> None:
        self.path = os.fspath(path)
        self.gdal_cache_mb = gdal_cache_mb
        self._stretches: dict[DisplayConfig, DisplayStretch] = {}
        if not _is_virtual(self.path):
            p = Path(self.path)
            if not p.exists():
                raise RasterError("file not found", self.path)
            if p.is_dir():
                raise RasterError("is a directory, not an image file", self.path)
            if p.stat().st_size == 0:
                raise RasterError("file is empty (0 bytes)", self.path)
        try:
            with _quiet_georef(), self._env():
                self._ds = rasterio.open(self.path)
        except (RasterioError, OSError) as exc:
            raise RasterError(f"cannot open as a raster image: {exc}", self.path) from exc
        with _quiet_georef():
            self._transform: Affine = self._ds.transform
        if self._ds.width == 0 or self._ds.height == 0 or self._ds.count == 0:
            shape = f"{self._ds.width} x {self._ds.height} x {self._ds.count} bands"
            self.close()
            raise RasterError(f"image is empty ({shape})", self.path)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying dataset (idempotent)."""
        ds = getattr(self, "_ds", None)
        if ds is not None and not ds.closed:
            ds.close()

    @property
    def closed(self) -> bool:
        return self._ds.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.width}x{self.height}x{self.count} {self.dtypes[0]}"
        return f"RasterSource({self.path!r}, {state})"

    def _env(self) -> contextlib.AbstractContextManager[Any]:
        if self.gdal_cache_mb is None:
            return contextlib.nullcontext()
        # rasterio hands the value to GDALSetCacheMax64, in bytes (not GDAL's "small means MB" rule)
        return rasterio.Env(GDAL_CACHEMAX=int(self.gdal_cache_mb) * 2**20)

    # ------------------------------------------------------------------ metadata
    @property
    def width(self) -> int:
        return int(self._ds.width)

    @property
    def height(self) -> int:
        return int(self._ds.height)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def count(self) -> int:
        """Number of bands."""
        return int(self._ds.count)

    @property
    def dtypes(self) -> tuple[str, ...]:
        """Data type name of each band (``"uint8"``, ``"uint16"``, ...)."""
        return tuple(self._ds.dtypes)

    @property
    def crs(self) -> rasterio.crs.CRS | None:
        """The CRS, or ``None`` (plain PNG/JPEG, or a TIFF without one)."""
        crs = self._ds.crs
        return crs if crs else None

    @property
    def transform(self) -> Affine:
        """Pixel -> map affine transform (identity when the file has none)."""
        return self._transform

    @property
    def nodata(self) -> float | None:
        """The nodata value of the dataset (first band's), or ``None``."""
        return self._ds.nodata

    @property
    def nodatavals(self) -> tuple[float | None, ...]:
        """Nodata value of each band."""
        return tuple(self._ds.nodatavals)

    @property
    def colorinterp(self) -> tuple[str, ...]:
        """Colour interpretation of each band (``"red"``, ``"gray"``, ``"undefined"``, ...)."""
        return tuple(c.name for c in self._ds.colorinterp)

    @property
    def georef(self) -> GeoRef:
        """CRS + transform + size, detached from the open file (for writers)."""
        return GeoRef(self.crs, self.transform, self.width, self.height, self.path)

    @property
    def is_georeferenced(self) -> bool:
        """True when the image has a CRS and a non-identity transform."""
        return self.georef.is_georeferenced

    @property
    def full_window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def pixel_to_map(self, xy: Any) -> np.ndarray:
        """Pixel ``(col, row)`` points ``(..., 2)`` -> map coordinates; RasterError without CRS."""
        return self.georef.pixel_to_map(xy)

    def map_to_pixel(self, xy: Any) -> np.ndarray:
        """Map points ``(..., 2)`` -> fractional pixel ``(col, row)``; RasterError without CRS."""
        return self.georef.map_to_pixel(xy)

    # ------------------------------------------------------------------ reading
    def _bands(self, bands: Sequence[int] | int | None) -> list[int]:
        if bands is None:
            return list(range(1, self.count + 1))
        seq = [bands] if isinstance(bands, (int, np.integer)) else list(bands)
        if not seq:
            raise RasterError("no bands requested", self.path)
        bad = [b for b in seq if not (isinstance(b, (int, np.integer)) and 1 <= b <= self.count)]
        if bad:
            raise RasterError(f"band index {bad[0]!r} out of range: bands are 1..{self.count} (1-based)", self.path)
        return [int(b) for b in seq]

    def read(
        self,
        window: WindowLike,
        bands: Sequence[int] | int | None = None,
        out_shape: tuple[int, int] | None = None,
        boundless: bool = False,
        resampling: str = "nearest",
    ) -> np.ndarray:
        """Read a window as ``(C, H, W)`` in the file's dtype.

        Args:
            window: ``(col_off, row_off, width, height)`` in native pixels.
            bands: 1-based band numbers (default: all).
            out_shape: ``(height, width)`` to resample the window to (a decimated read: GDAL
                uses overviews when the file has them and never materialises the full window).
            boundless: allow a window that runs past the image; the outside is filled with the
                nodata value (or 0). Without it such a window is an error.
            resampling: a :class:`rasterio.enums.Resampling` name (``"nearest"``, ``"average"``...).
        """
        return self._read(window, bands, out_shape, boundless, resampling)[0]

    def read_valid(
        self,
        window: WindowLike,
        bands: Sequence[int] | int | None = None,
        out_shape: tuple[int, int] | None = None,
        boundless: bool = False,
        resampling: str = "nearest",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`read`, plus an ``(H, W)`` bool mask: False at nodata and outside the image."""
        data, valid = self._read(window, bands, out_shape, boundless, resampling, want_mask=True)
        assert valid is not None
        return data, valid

    def _read(
        self,
        window: WindowLike,
        bands: Sequence[int] | int | None,
        out_shape: tuple[int, int] | None,
        boundless: bool,
        resampling: str,
        want_mask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.closed:
            raise RasterError("raster is closed", self.path)
        win = as_window(window)
        idx = self._bands(bands)
        if win.width <= 0 or win.height <= 0:
            raise RasterError(f"empty window {tuple(win)}", self.path)
        oh, ow = (win.height, win.width) if out_shape is None else (int(out_shape[0]), int(out_shape[1]))
        if oh <= 0 or ow <= 0:
            raise RasterError(f"out_shape must be positive, got {out_shape}", self.path)
        if len(idx) * oh * ow > self.max_read_pixels:
            raise RasterError(
                f"refusing to read {len(idx)} x {oh} x {ow} values at once (max_read_pixels="
                f"{self.max_read_pixels}); read smaller windows or pass a smaller out_shape",
                self.path,
            )
        try:
            rs = Resampling[resampling]
        except KeyError:
            raise InputError(f"unknown resampling {resampling!r}", self.path) from None
        inside = win.is_inside(self.width, self.height)
        if not inside and not boundless:
            raise RasterError(
                f"window {tuple(win)} runs outside the {self.width} x {self.height} image (pass boundless=True)",
                self.path,
            )
        fill = self._fill_value(idx)
        if inside:
            data = self._raw(win, idx, (oh, ow), rs)
            valid = self._valid(data, win, idx, (oh, ow), rs) if want_mask else None
            return data, valid
        # Boundless: read the part inside the image and paste it into a filled canvas.
        data = np.full((len(idx), oh, ow), fill, dtype=np.result_type(*(self.dtypes[i - 1] for i in idx)))
        valid = np.zeros((oh, ow), dtype=bool) if want_mask else None
        part = win.clip(self.width, self.height)
        sx, sy = ow / win.width, oh / win.height
        x0, x1 = round((part.col_off - win.col_off) * sx), round((part.col_end - win.col_off) * sx)
        y0, y1 = round((part.row_off - win.row_off) * sy), round((part.row_end - win.row_off) * sy)
        if part.width > 0 and part.height > 0 and x1 > x0 and y1 > y0:
            sub = self._raw(part, idx, (y1 - y0, x1 - x0), rs)
            data[:, y0:y1, x0:x1] = sub
            if valid is not None:
                valid[y0:y1, x0:x1] = self._valid(sub, part, idx, (y1 - y0, x1 - x0), rs)
        return data, valid

    def _fill_value(self, idx: list[int]) -> float:
        """What boundless reads put outside the image: the nodata value when it fits, else 0."""
        nd = self.nodatavals[idx[0] - 1]
        if nd is None:
            return 0
        dtype = np.result_type(*(self.dtypes[i - 1] for i in idx))
        if dtype.kind == "f":
            return nd
        if np.isnan(nd) or float(nd) != int(nd) or not np.iinfo(dtype).min <= nd <= np.iinfo(dtype).max:
            return 0
        return nd

    def _raw(self, win: Window, idx: list[int], out_hw: tuple[int, int], rs: Resampling) -> np.ndarray:
        out_shape = None if out_hw == (win.height, win.width) else (len(idx), *out_hw)
        try:
            with _quiet_georef(), self._env():
                return self._ds.read(idx, window=win.to_rasterio(), out_shape=out_shape, resampling=rs)
        except RasterioError as exc:
            raise RasterError(f"failed to read window {tuple(win)}: {exc}", self.path) from exc

    def _valid(
        self, data: np.ndarray, win: Window, idx: list[int], out_hw: tuple[int, int], rs: Resampling
    ) -> np.ndarray:
        """Valid-pixel mask of a read: GDAL's rule (a pixel is nodata when all bands are)."""
        flags = [self._ds.mask_flag_enums[i - 1] for i in idx]
        if all(MaskFlags.all_valid in f for f in flags):
            return np.ones(data.shape[1:], dtype=bool)
        if all(MaskFlags.nodata in f for f in flags):
            invalid = np.ones(data.shape[1:], dtype=bool)
            for k, i in enumerate(idx):
                nd = self.nodatavals[i - 1]
                band = data[k]
                invalid &= np.isnan(band) if nd is not None and np.isnan(nd) else band == nd
            return ~invalid
        # Alpha band or internal mask: ask GDAL for the dataset mask of the same window.
        try:
            with _quiet_georef(), self._env():
                mask = self._ds.dataset_mask(window=win.to_rasterio(), out_shape=out_hw, resampling=rs)
        except RasterioError as exc:
            raise RasterError(f"failed to read the mask of window {tuple(win)}: {exc}", self.path) from exc
        return mask > 0

    # ------------------------------------------------------------------ decimated whole-image views
    def overview_shape(self, max_size: int) -> tuple[int, int]:
        """``(height, width)`` of the whole image shrunk so its long side is at most ``max_size``."""
        scale = max(self.width, self.height) / max_size
        if scale <= 1:
            return self.height, self.width
        return max(1, round(self.height / scale)), max(1, round(self.width / scale))

    def read_overview(
        self, max_size: int = 1024, bands: Sequence[int] | int | None = None, resampling: str = "nearest"
    ) -> tuple[np.ndarray, np.ndarray]:
        """The whole image, decimated to at most ``max_size`` px on the long side, plus its mask."""
        return self.read_valid(self.full_window, bands, self.overview_shape(max_size), resampling=resampling)

    # ------------------------------------------------------------------ display RGB
    def display_stretch(self, config: DisplayConfig | None = None) -> DisplayStretch:
        """The image's display stretch, computed once per config from a decimated read."""
        config = config or DisplayConfig()
        cached = self._stretches.get(config)
        if cached is not None:
            return cached
        bands = tuple(self._bands(config.bands)) if config.bands else default_bands(self.count, self.colorinterp)
        dtype = str(np.result_type(*(self.dtypes[b - 1] for b in bands)))
        if dtype == "uint8" and not config.stretch_uint8:
            stretch = DisplayStretch.identity(bands)  # no statistics needed, no read
        else:
            sample, valid = self.read_overview(config.max_size, bands)
            stretch = fit_stretch(sample, valid, bands, dtype, config)
            logger.debug("%s: display stretch %s", self.path, stretch)
        self._stretches[config] = stretch
        return stretch

    def read_display(
        self,
        window: WindowLike,
        out_shape: tuple[int, int] | None = None,
        boundless: bool = False,
        stretch: DisplayStretch | DisplayConfig | None = None,
        resampling: str = "nearest",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read a window as display RGB: ``(H, W, 3)`` uint8 and an ``(H, W)`` valid mask.

        All windows of one image share the stretch of :meth:`display_stretch` (or ``stretch``).
        Invalid pixels (nodata, outside the image) are black in the image and False in the mask.
        """
        if not isinstance(stretch, DisplayStretch):
            stretch = self.display_stretch(stretch)
        data, valid = self.read_valid(window, stretch.bands, out_shape, boundless, resampling)
        return stretch.apply(data, valid), valid


def open_raster(source: RasterSource | str | os.PathLike[str]) -> tuple[RasterSource, bool]:
    """``(source, opened_here)``: open a path, or pass an open :class:`RasterSource` through."""
    if isinstance(source, RasterSource):
        return source, False
    return RasterSource(source), True

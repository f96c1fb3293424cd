"""Display conversion: any raster (16-bit, multiband, single band) -> RGB uint8 plus a valid mask.

Vision-language models and detectors want 8-bit RGB. Satellite imagery is often 11-16 bit with a
handful of bands and nodata borders, so each image gets one :class:`DisplayStretch`: which bands
(1-based, as in rasterio) make R, G, B, and a per-band linear stretch from the ``low``/``high``
percentiles (default 2-98) of the *valid* pixels. The percentiles come from one decimated read of
the whole image (at most ``max_size`` pixels on the long side), computed once, so every tile of
that image is stretched identically and no tile boundary shows. Nodata never enters the
statistics and is never painted as data: it comes back as ``False`` in the mask (and black in the
image). 8-bit imagery is passed through unchanged unless asked otherwise, since natural-colour
photos are already display-ready.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rsvl.errors import InputError

__all__ = ["DisplayConfig", "DisplayStretch", "default_bands", "fit_stretch", "to_display"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DisplayConfig:
    """How to turn an image into display RGB.

    Args:
        bands: 1-based band numbers: 3 for RGB, 1 for grey. ``None`` picks the bands labelled
            red/green/blue, else 1-2-3, else band 1 as grey.
        percentiles: ``(low, high)`` percentiles mapped to 0 and 255.
        stretch_uint8: also stretch 8-bit data (default: 8-bit passes through as 0-255).
        max_size: long side, in pixels, of the decimated read that the statistics come from.
    """

    bands: tuple[int, ...] | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    stretch_uint8: bool = False
    max_size: int = 1024

    def __post_init__(self) -> None:
        # tuples, so configs hash (a source caches one stretch per config)
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        if len(self.percentiles) != 2:
            raise InputError(f"percentiles must be (low, high), got {self.percentiles}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.bands is not None and len(self.bands) not in (1, 3):
            raise InputError(f"display needs 1 (grey) or 3 (RGB) bands, got {self.bands}")
        if self.max_size < 1:
            raise InputError(f"max_size must be positive, got {self.max_size}")


@dataclass(frozen=True)
class DisplayStretch:
    """A fixed linear stretch: band ``bands[k]`` maps ``low[k]..high[k]`` onto ``0..255``."""

    bands: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def identity(cls, bands: tuple[int, ...]) -> DisplayStretch:
        """8-bit pass-through: 0..255 stays 0..255."""
        return cls(bands, (0.0,) * len(bands), (255.0,) * len(bands))

    def apply(self, data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``(C, H, W)`` data of :attr:`bands` -> ``(H, W, 3)`` uint8; invalid pixels are 0."""
        if data.shape[0] != len(self.bands):
            raise ValueError(f"stretch expects {len(self.bands)} bands, got data with {data.shape[0]}")
        return to_display(data, self.low, self.high, valid)


def default_bands(count: int, colorinterp: Sequence[str] = ()) -> tuple[int, ...]:
    """Bands to show: those labelled red/green/blue, else 1-2-3, else band 1 as grey."""
    names = [str(c).lower().rsplit(".", 1)[-1] for c in colorinterp]
    if all(c in names for c in ("red", "green", "blue")):
        return tuple(names.index(c) + 1 for c in ("red", "green", "blue"))
    return (1, 2, 3) if count >= 3 else (1,)


def fit_stretch(
    sample: np.ndarray,
    valid: np.ndarray,
    bands: tuple[int, ...],
    dtype: str,
    config: DisplayConfig,
) -> DisplayStretch:
    """Percentile stretch from a decimated ``(C, h, w)`` sample of ``bands`` and its valid mask."""
    if np.dtype(dtype) == np.uint8 and not config.stretch_uint8:
        return DisplayStretch.identity(bands)
    lows, highs = [], []
    for k in range(len(bands)):
        values = sample[k][valid]
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size == 0:
            logger.warning("band %d has no valid pixels in the statistics sample; using 0..1", bands[k])
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(v) for v in np.percentile(values, config.percentiles))
        if hi <= lo:  # a constant band: map it to mid-grey rather than dividing by zero
            hi = lo + 1.0
        lows.append(lo)
        highs.append(hi)
    return DisplayStretch(bands, tuple(lows), tuple(highs))


def to_display(
    data: np.ndarray, low: Sequence[float], high: Sequence[float], valid: np.ndarray | None = None
) -> np.ndarray:
    """Linear stretch of ``(C, H, W)`` (C = 1 or 3) to ``(H, W, 3)`` uint8; grey repeats one band."""
    c, h, w = data.shape
    out = np.empty((h, w, 3), dtype=np.uint8)
    if data.dtype == np.uint8 and all(lo == 0 and hi == 255 for lo, hi in zip(low, high, strict=True)):
        out[...] = data.transpose(1, 2, 0)  # pass-through: broadcasts a grey band to 3 channels
        if valid is not None:
            out[~valid] = 0
        return out
    for k in range(c):
        lo, hi = float(low[k]), float(high[k])
        band = data[k].astype(np.float32)
        band -= lo
        band *= 255.0 / (hi - lo)
        np.clip(band, 0.0, 255.0, out=band)
        np.nan_to_num(band, copy=False, nan=0.0)
        np.rint(band, out=band)
        targets = range(3) if c == 1 else (k,)
        for t in targets:
            out[..., t] = band
    if valid is not None:
        out[~valid] = 0
    return out

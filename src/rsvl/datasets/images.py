"""Image facts readers do not parse: the size from an image file's header, without decoding pixels.

Some formats (VisDrone, DOTA) do not record image sizes in their annotations; rules such as
VisDrone's ignored-region handling need them, and ``rsvl data check`` compares them with what an
annotation states.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rsvl.datasets.sample import Sample


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header; None if the file is missing or not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        pass  # PIL refuses huge images outright; rasterio reads their headers below
    try:
        import rasterio

        with rasterio.open(path) as src:
            return src.width, src.height
    except Exception:  # rasterio raises many types for unreadable files; all mean "not an image"
        return None


def with_image_sizes(samples: Iterable[Sample]) -> list[Sample]:
    """Samples with ``width``/``height`` filled from their image files where the annotation lacks them."""
    out = []
    for sample in samples:
        if (sample.width is None or sample.height is None) and sample.root is not None:
            size = image_size(sample.image_path)
            if size is not None:
                sample = dataclasses.replace(sample, width=size[0], height=size[1])
        out.append(sample)
    return out

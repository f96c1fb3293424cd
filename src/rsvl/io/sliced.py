"""Sliced inference: run a tile predictor over a large raster, stream by stream, then merge.

The driver reads one window at a time (display RGB through the image's single shared stretch),
hands it to the predictor, shifts the tile-local detections to global pixel coordinates and
keeps only those; pixels are dropped as soon as the predictor returns. Memory therefore stays at
one tile plus the detections, whatever the image size. Duplicates from overlapping tiles are
merged at the end with :func:`rsvl.io.merge.merge_detections`.

A predictor is any callable ``predictor(image) -> Detections`` taking an ``(H, W, 3)`` uint8 RGB
tile (``H``/``W`` = tile size, or smaller at the edge with ``edge="shift"`` on an image smaller
than a tile) and returning boxes in that tile's pixel coordinates (``None`` means nothing found).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rsvl.io.detections import Detections
from rsvl.io.display import DisplayConfig, DisplayStretch
from rsvl.io.merge import MergeConfig, merge_detections
from rsvl.io.raster import RasterSource, open_raster
from rsvl.io.tiling import TileSpec, Window, count_windows, iter_windows

__all__ = ["FilePrediction", "Predictor", "Tile", "iter_tiles", "predict_file", "sliced_predict"]

logger = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], "Detections | None"]


class Tile(NamedTuple):
    """One tile of an image: its window (native pixels), display RGB and valid-pixel mask."""

    window: Window
    image: np.ndarray
    valid: np.ndarray


def iter_tiles(
    source: RasterSource,
    spec: TileSpec,
    stretch: DisplayStretch | DisplayConfig | None = None,
    *,
    skip_empty: bool = False,
) -> Iterator[Tile]:
    """Stream the display tiles of an open source, one windowed read at a time.

    All tiles share one stretch (``source.display_stretch`` unless given). ``edge="pad"`` tiles
    are read boundless. ``skip_empty`` leaves out tiles with no valid pixel.
    """
    if not isinstance(stretch, DisplayStretch):
        stretch = source.display_stretch(stretch)
    boundless = spec.edge == "pad"
    for win in iter_windows(source.width, source.height, spec):
        image, valid = source.read_display(win, boundless=boundless, stretch=stretch)
        if skip_empty and not valid.any():
            continue
        yield Tile(win, image, valid)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool, description: str) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback backed by a Rich bar on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    from rsvl.utils.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def sliced_predict(
    source: RasterSource | str | os.PathLike[str],
    predictor: Predictor,
    spec: TileSpec | None = None,
    merge: MergeConfig | None = None,
    *,
    display: DisplayConfig | DisplayStretch | None = None,
    skip_empty: bool = True,
    progress: bool = True,
) -> Detections:
    """Predict over every tile of ``source`` and merge the results into global pixel coordinates.

    Args:
        source: an open :class:`RasterSource` (left open) or a path (opened and closed here).
        predictor: ``predictor(rgb_tile) -> Detections`` in tile pixel coordinates.
        spec: tiling (default ``TileSpec(512, 64, "shift")``).
        merge: duplicate merging (default per-class NMS at IoU 0.5); ``MergeConfig("none")``
            keeps every tile's detections.
        display: band choice / stretch for the tiles; one stretch serves the whole image.
        skip_empty: do not call the predictor on tiles that hold no valid pixel (all nodata).
        progress: show a Rich progress bar on stderr (``False`` for quiet runs).

    Returns:
        The merged :class:`Detections`, HBBs clipped to the image, sorted by decreasing score.
    """
    spec = spec or TileSpec(512, 64, "shift")
    merge = merge or MergeConfig()
    src, opened_here = open_raster(source)
    try:
        total = count_windows(src.width, src.height, spec)
        parts: list[Detections] = []
        skipped = 0
        start = time.perf_counter()
        with _progress_bar(total, progress, f"tiles of {os.path.basename(src.path)}") as advance:
            for tile in iter_tiles(src, spec, display):
                if skip_empty and not tile.valid.any():
                    skipped += 1
                else:
                    dets = predictor(tile.image)
                    if dets is not None and not isinstance(dets, Detections):
                        raise TypeError(f"predictor must return Detections or None, got {type(dets).__name__}")
                    if dets is not None and len(dets):
                        parts.append(dets.translate(tile.window.col_off, tile.window.row_off))
                del tile
                advance()
        kind = parts[0].kind if parts else "hbb"
        raw = Detections.concat(parts, kind=kind).clip(src.width, src.height)
        merged = merge_detections(raw, merge)
        logger.info(
            "%s: %d tiles (%d empty skipped) in %.2f s, %d detections -> %d after %s",
            src.path,
            total,
            skipped,
            time.perf_counter() - start,
            len(raw),
            len(merged),
            merge.method,
        )
        return merged
    finally:
        if opened_here:
            src.close()


class FilePrediction(NamedTuple):
    """:func:`predict_file`'s result: the detections, the image size and its georeferencing (or None)."""

    detections: Detections
    width: int
    height: int
    georef: Any


def predict_file(
    path: str | os.PathLike[str],
    predictor: Predictor,
    tile: int = 512,
    overlap: int = 64,
    merge: MergeConfig | None = None,
    *,
    progress: bool = True,
) -> FilePrediction:
    """Detections of one image file: in one pass when it fits a ``tile``, else by :func:`sliced_predict`.

    Raises:
        RasterError: an unreadable file; InputError: an empty image.
    """
    from rsvl.errors import InputError

    with RasterSource(path) as src:
        width, height = src.width, src.height
        georef = src.georef if src.is_georeferenced else None
        if width == 0 or height == 0:
            raise InputError("the image is empty", Path(path))
        if width <= tile and height <= tile:
            rgb, _ = src.read_display(src.full_window)
            dets = predictor(rgb)
            if dets is None:
                dets = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
        else:
            dets = sliced_predict(src, predictor, TileSpec(tile, overlap, "shift"), merge, progress=progress)
    return FilePrediction(dets, width, height, georef)

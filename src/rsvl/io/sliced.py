"""Sliced inference: run a tile predictor over a large raster, stream by stream, then merge.

The driver reads one window at a time (display RGB through the image's single shared stretch),
hands it to the predictor, shifts the tile-local detections to global pixel coordinates and
keeps only those; pixels are dropped as soon as the predictor returns. Memory therefore stays at
one tile plus the detections, whatever the image size. Duplicates from overlapping tiles are
merged at the end with :func:`rsvl.io.merge.merge_detections`.

Given a ``state`` file, every finished tile's detections are appended to it as a JSON line, and
tiles already there are neither read nor predicted again: a run over a huge raster that was
interrupted resumes inside the image, and merges exactly what an uninterrupted run merges.

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
def _progress_bar(total: int, enabled: bool, description: str, bar: Any = None) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback backed by a Rich bar on stderr (a no-op when disabled).

    ``bar``: an open :func:`~rsvl.utils.progress.progress_bar` to show the tiles in (a task added
    for this image and removed when it is done), e.g. under a bar counting the images of a batch.
    """
    if bar is not None:
        task = bar.add_task(description, total=total)
        try:
            yield lambda: bar.advance(task)
        finally:
            bar.remove_task(task)
        return
    if not enabled:
        yield lambda: None
        return
    from rsvl.utils.progress import progress_bar

    with progress_bar() as own:
        task = own.add_task(description, total=total)
        yield lambda: own.advance(task)


def _tile_key(win: Window) -> str:
    return f"c{win.col_off}_r{win.row_off}_w{win.width}_h{win.height}"


def _tile_record(key: str, empty: bool, dets: Detections | None) -> dict[str, Any]:
    """A finished tile as a JSON line: skipped as empty, nothing found, or its global detections."""
    if empty:
        return {"id": key, "empty": True}
    return {"id": key} if dets is None else {"id": key, "detections": dets.to_record()}


@contextlib.contextmanager
def _tile_log(state: Path | None) -> Iterator[Callable[[str, bool, Detections | None], None]]:
    """Yield ``log(key, empty, dets)``, appending a finished tile to ``state`` (a no-op without one).

    Lines are flushed, not fsynced (a tile is cheap to redo): a killed process loses nothing, a
    power cut at most the last tiles, and :func:`~rsvl.utils.resume.read_done` drops a torn line.
    """
    if state is None:
        yield lambda key, empty, dets: None
        return
    import json

    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state, "a", encoding="utf-8") as fh:

        def log(key: str, empty: bool, dets: Detections | None) -> None:
            fh.write(json.dumps(_tile_record(key, empty, dets), allow_nan=False) + "\n")
            fh.flush()

        yield log


def sliced_predict(
    source: RasterSource | str | os.PathLike[str],
    predictor: Predictor,
    spec: TileSpec | None = None,
    merge: MergeConfig | None = None,
    *,
    display: DisplayConfig | DisplayStretch | None = None,
    skip_empty: bool = True,
    progress: bool = True,
    state: str | os.PathLike[str] | None = None,
    bar: Any = None,
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
        state: a JSON Lines file of finished tiles (created, appended to): tiles recorded there
            are taken from it instead of being read and predicted, so a rerun after an interruption
            continues where it stopped. The caller keeps it to one image, tiling and predictor.
        bar: an open progress bar to add this image's tile task to (instead of a bar of its own).

    Returns:
        The merged :class:`Detections`, HBBs clipped to the image, sorted by decreasing score.
    """
    from rsvl.utils.resume import read_done

    spec = spec or TileSpec(512, 64, "shift")
    merge = merge or MergeConfig()
    state_path = Path(state) if state is not None else None
    done = read_done(state_path) if state_path is not None else {}
    src, opened_here = open_raster(source)
    try:
        total = count_windows(src.width, src.height, spec)
        stretch = display if isinstance(display, DisplayStretch) else src.display_stretch(display)
        boundless = spec.edge == "pad"
        parts: list[Detections] = []
        skipped = resumed = 0
        start = time.perf_counter()
        description = f"tiles of {os.path.basename(src.path)}"
        with _progress_bar(total, progress, description, bar) as advance, _tile_log(state_path) as log:
            for win in iter_windows(src.width, src.height, spec):
                key = _tile_key(win)
                if key in done:
                    resumed += 1
                    empty = bool(done[key].get("empty"))
                    found = done[key].get("detections")
                    dets = Detections.from_record(found) if found is not None else None
                else:
                    empty, dets = _predict_tile(src, win, predictor, boundless, stretch, skip_empty)
                    log(key, empty, dets)
                skipped += empty
                if dets is not None:
                    parts.append(dets)
                advance()
        kind = parts[0].kind if parts else "hbb"
        raw = Detections.concat(parts, kind=kind).clip(src.width, src.height)
        merged = merge_detections(raw, merge)
        logger.info(
            "%s: %d tiles (%d empty skipped, %d done earlier) in %.2f s, %d detections -> %d after %s",
            src.path,
            total,
            skipped,
            resumed,
            time.perf_counter() - start,
            len(raw),
            len(merged),
            merge.method,
        )
        return merged
    finally:
        if opened_here:
            src.close()


def _predict_tile(
    src: RasterSource, win: Window, predictor: Predictor, boundless: bool, stretch: DisplayStretch, skip_empty: bool
) -> tuple[bool, Detections | None]:
    """Read and predict one window: (skipped as empty, its detections in global pixels or None)."""
    image, valid = src.read_display(win, boundless=boundless, stretch=stretch)
    if skip_empty and not valid.any():
        return True, None
    dets = predictor(image)
    del image, valid  # the pixels go before the next window is read
    if dets is not None and not isinstance(dets, Detections):
        raise TypeError(f"predictor must return Detections or None, got {type(dets).__name__}")
    if dets is None or not len(dets):
        return False, None
    return False, dets.translate(win.col_off, win.row_off)


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
    state: str | os.PathLike[str] | None = None,
    bar: Any = None,
) -> FilePrediction:
    """Detections of one image file: in one pass when it fits a ``tile``, else by :func:`sliced_predict`.

    ``state`` and ``bar`` go to :func:`sliced_predict` (a one-tile image needs no tile state).

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
            dets = sliced_predict(
                src, predictor, TileSpec(tile, overlap, "shift"), merge, progress=progress, state=state, bar=bar
            )
    return FilePrediction(dets, width, height, georef)

"""Cut a raster into tile files (PNG quick-looks or georeferenced GeoTIFFs) with a JSON index.

Used by ``rsvl tiles``. Tiles are read window by window, so the image is never loaded whole;
every file, the index included, is written atomically, so an interrupted run leaves only
complete tiles, and a rerun skips the tiles whose files already exist (resume). ``run.json``
records, per image stem, the image and settings its tiles were cut with: a rerun into the same
folder with another tiling, format or display (whose tiles would share the old names) is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import transform as window_transform

from rsvl.errors import InputError
from rsvl.io.display import DisplayConfig
from rsvl.io.raster import RasterSource
from rsvl.io.tiling import TileSpec, count_windows, iter_windows
from rsvl.utils.atomic import atomic_path, write_json

logger = logging.getLogger(__name__)

TileFormat = Literal["png", "tif"]


@dataclass(frozen=True)
class TileExport:
    """What :func:`export_tiles` wrote."""

    out_dir: Path
    index_path: Path
    written: int
    skipped_existing: int
    total: int


def export_tiles(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spec: TileSpec,
    fmt: TileFormat = "png",
    display: DisplayConfig | None = None,
    on_tile: Callable[[], None] | None = None,
) -> TileExport:
    """Write every tile of ``path`` to ``out_dir`` and an ``index.json`` describing them.

    ``png`` tiles are display RGB (one stretch for the whole image); ``tif`` tiles keep the
    original bands, dtype and nodata, and carry the CRS and the tile's own affine transform, so
    each opens in place in a GIS. The index lists each tile's file, pixel window and (when the
    image is georeferenced) map bounds.
    """
    if fmt not in ("png", "tif"):
        raise InputError(f"tile format must be 'png' or 'tif', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    _check_settings(out, stem, _settings(path, spec, fmt, display))
    written = skipped = 0
    entries = []
    with RasterSource(path) as src:
        stretch = src.display_stretch(display) if fmt == "png" else None
        total = count_windows(src.width, src.height, spec)
        for win in iter_windows(src.width, src.height, spec):
            name = f"{stem}_r{win.row_off}_c{win.col_off}.{fmt}"
            target = out / name
            if target.exists():
                skipped += 1
            else:
                if fmt == "png":
                    rgb, _ = src.read_display(win, boundless=spec.edge == "pad", stretch=stretch)
                    with atomic_path(target) as tmp:
                        Image.fromarray(rgb).save(tmp, format="PNG")
                else:
                    _write_geotiff_tile(src, win, target, boundless=spec.edge == "pad")
                written += 1
            entry = {"file": name, "window": [win.col_off, win.row_off, win.width, win.height]}
            if src.is_georeferenced:
                corners = src.pixel_to_map(
                    np.array([[win.col_off, win.row_off], [win.col_off + win.width, win.row_off + win.height]])
                )
                entry["map_bounds"] = [
                    float(corners[:, 0].min()),
                    float(corners[:, 1].min()),
                    float(corners[:, 0].max()),
                    float(corners[:, 1].max()),
                ]
            entries.append(entry)
            if on_tile is not None:
                on_tile()
        index = {
            "image": str(Path(path).resolve()),
            "size": [src.width, src.height],
            "crs": src.crs.to_string() if src.crs else None,
            "tile": {"size": list(spec.tile_size), "overlap": list(spec.overlap_px), "edge": spec.edge},
            "format": fmt,
            "tiles": entries,
        }
    index_path = write_json(out / "index.json", index)
    logger.info("%s: %d tiles written, %d already present", path, written, skipped)
    return TileExport(out, index_path, written, skipped, total)


RUN_FILE = "run.json"


def _settings(path: str | os.PathLike[str], spec: TileSpec, fmt: str, display: DisplayConfig | None) -> dict:
    """What decides the content of a tile file: the image, the tiling, the format and the display."""
    shown = dataclasses.asdict(display) if display is not None and fmt == "png" else None
    tile = {"size": list(spec.tile_size), "overlap": list(spec.overlap_px), "edge": spec.edge}
    return {"image": str(Path(path).resolve()), "tile": tile, "format": fmt, "display": shown}


def _check_settings(out: Path, stem: str, settings: dict) -> None:
    """Refuse to resume tiles of ``stem`` cut with other settings (same names, other content); record these."""
    path = out / RUN_FILE
    runs: dict = {}
    if path.exists():
        try:
            runs = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("not a JSON record of tile settings; use another output folder", path) from None
        if not isinstance(runs, dict):
            raise InputError("not a JSON record of tile settings; use another output folder", path)
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they read back
    earlier = runs.get(stem)
    if earlier is not None and earlier != settings:
        keys = sorted(k for k in settings if earlier.get(k) != settings[k])
        raise InputError(
            f"the {stem} tiles in this folder were cut with another {', '.join(keys)}; use another output folder",
            path,
        )
    if earlier is None:
        write_json(path, {**runs, stem: settings})


def _write_geotiff_tile(src, win, target: Path, boundless: bool) -> None:
    data = src.read(win, boundless=boundless)
    profile = {
        "driver": "GTiff",
        "width": win.width,
        "height": win.height,
        "count": src.count,
        "dtype": data.dtype.name,
        "nodata": src.nodata,
        "compress": "deflate",
    }
    if src.is_georeferenced:
        profile["crs"] = src.crs
        profile["transform"] = window_transform(win.to_rasterio(), src.transform)
    with atomic_path(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)

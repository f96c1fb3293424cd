"""Tile jobs for distributed detection: plan the tiles of many images, predict one, reassemble each image.

Pure Python (no Ray): :mod:`rsvl.engines.ray_detect` moves these pieces between processes, and the
tests run them in one process. The three steps, and what each keeps equal to the in-process engine
(:func:`rsvl.io.sliced.predict_file`):

* **Plan** (:func:`plan_archive`, driver): open each image's header once, compute its single shared
  display stretch once (``RasterSource.display_stretch``, the one ``sliced_predict`` uses) and
  count its windows (``iter_windows``, ``TileSpec(tile, overlap, "shift")``). Tiles get global ids
  ``0..total-1``, image by image in row-major window order; :meth:`ArchivePlan.tile` turns an id
  back into its :class:`TileJob` row (path, window, stretch), so a plan holds O(images), not
  O(tiles), and a distributed dataset only needs to carry the ids. An image that fits one tile
  is one job reading the full image, as ``predict_file`` does.
* **Predict** (:func:`predict_tile`, worker): read the job's window from the file (never the
  whole image), skip all-nodata tiles like ``sliced_predict(skip_empty=True)``, call the
  predictor, and retry a failing read/predict up to ``retries`` times before reporting the tile
  as failed with its error text. :func:`results_to_batch` / :func:`batch_to_results` pack results
  into flat columns (raw float64/int64 bytes, so nothing is rounded on the way).
* **Assemble** (:class:`ArchiveAssembler`, driver): collect results per image, notice when an
  image is complete, shift tile boxes to global pixels, clip and merge exactly as
  ``sliced_predict`` does (same tile order, same ``MergeConfig``), and write ``<stem>.geojson``
  (the same file the in-process engine writes) and optionally ``<stem>.parquet`` (GeoParquet),
  atomically, as soon as the image's last tile is in. A failed tile does not hold its image back:
  the image is written from its other tiles and the failure is listed in ``failed_tiles.json``.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.io.display import DisplayStretch
from rsvl.io.georef import GeoRef
from rsvl.io.merge import MergeConfig, merge_detections
from rsvl.io.raster import RasterSource
from rsvl.io.tiling import TileSpec, Window, count_windows, iter_windows

__all__ = [
    "ARCHIVE_FORMATS",
    "ArchiveAssembler",
    "ArchivePlan",
    "FailedTile",
    "ImageJob",
    "SourceCache",
    "TileJob",
    "TileResult",
    "TileStatus",
    "assemble_image",
    "batch_to_results",
    "check_formats",
    "plan_archive",
    "predict_tile",
    "results_to_batch",
    "write_geoparquet",
]

logger = logging.getLogger(__name__)

#: Per-image output formats: GeoJSON (what the in-process engine writes) and GeoParquet.
ARCHIVE_FORMATS = ("geojson", "parquet")

TileStatus = Literal["ok", "empty", "failed"]

TilePredictor = Callable[[np.ndarray], "Detections | None"]


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ImageJob:
    """One image of an archive: where its tiles sit among the global tile ids, and how to read them."""

    index: int
    path: str
    width: int
    height: int
    first_tile: int
    n_tiles: int
    single: bool  # fits one tile: one full-image read, no translation, clipping or merging
    stretch: DisplayStretch
    georef: GeoRef | None  # None: the image is not georeferenced (outputs in pixels)

    @property
    def stem(self) -> str:
        return Path(self.path).stem


@dataclass(frozen=True)
class TileJob:
    """One tile row: the image file, the window to read and the image's shared display stretch."""

    tile_id: int
    image: int
    index: int  # position among the image's tiles (row-major window order)
    path: str
    window: Window
    stretch: DisplayStretch
    single: bool


@dataclass
class ArchivePlan:
    """The tiles of many images, numbered ``0..total_tiles-1``; rows are derived from ids on demand."""

    images: list[ImageJob]
    spec: TileSpec
    _windows: OrderedDict[int, list[Window]] = field(default_factory=OrderedDict, repr=False, compare=False)
    _firsts: list[int] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._firsts = [im.first_tile for im in self.images]

    @property
    def total_tiles(self) -> int:
        return self.images[-1].first_tile + self.images[-1].n_tiles if self.images else 0

    def __getstate__(self) -> dict[str, Any]:
        return {"images": self.images, "spec": self.spec}  # the window cache is rebuilt where needed

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.images, self.spec, self._windows = state["images"], state["spec"], OrderedDict()
        self.__post_init__()

    def image_of(self, tile_id: int) -> int:
        """Index of the image that global tile ``tile_id`` belongs to."""
        if not 0 <= tile_id < self.total_tiles:
            raise IndexError(f"tile id {tile_id} outside 0..{self.total_tiles - 1}")
        return bisect.bisect_right(self._firsts, tile_id) - 1

    def windows(self, image: int) -> list[Window]:
        """The windows of one image in tile order (cached for the few most recent images)."""
        cached = self._windows.get(image)
        if cached is None:
            job = self.images[image]
            cached = [job_window(job)] if job.single else list(iter_windows(job.width, job.height, self.spec))
            self._windows[image] = cached
            if len(self._windows) > 8:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(image)
        return cached

    def tile(self, tile_id: int) -> TileJob:
        """The row of global tile ``tile_id``."""
        image = self.image_of(tile_id)
        job = self.images[image]
        index = tile_id - job.first_tile
        return TileJob(tile_id, image, index, job.path, self.windows(image)[index], job.stretch, job.single)

    def rows(self) -> Iterable[TileJob]:
        """Every tile row, image by image, in tile-id order."""
        for job in self.images:
            for index, window in enumerate(self.windows(job.index)):
                yield TileJob(job.first_tile + index, job.index, index, job.path, window, job.stretch, job.single)


def job_window(job: ImageJob) -> Window:
    """The full-image window of a single-tile image."""
    return Window(0, 0, job.width, job.height)


def _image_header(path: Path, tile: int, spec: TileSpec) -> tuple[int, int, bool, int, DisplayStretch, GeoRef | None]:
    """Size, single-tile flag, tile count, display stretch and georeferencing of one image."""
    with RasterSource(path) as src:  # RasterError (an InputError) names the file
        width, height = src.width, src.height
        if width == 0 or height == 0:
            raise InputError("the image is empty", path)
        single = width <= tile and height <= tile
        n_tiles = 1 if single else count_windows(width, height, spec)
        georef = src.georef if src.is_georeferenced else None
        return width, height, single, n_tiles, src.display_stretch(), georef


def plan_archive(
    paths: Sequence[str | os.PathLike[str]], tile: int = 512, overlap: int = 64, *, threads: int = 8
) -> ArchivePlan:
    """Plan the tiles of ``paths``: one header read and one display stretch per image.

    ``threads`` images are opened at a time (GDAL reads release the GIL): for 8-bit images the
    stretch needs no read, for others it is one decimated read (cheap with overviews, a pass
    over the file without), so planning a large archive is I/O-latency bound.

    Raises:
        InputError: no image, a missing or unreadable file, an empty image (each names the file),
            two images sharing a stem (outputs are named by stem), or a bad tile/overlap.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rsvl.io.inputs import image_files

    if not paths:
        raise InputError("no input images")
    spec = TileSpec(tile, overlap, "shift")
    files = image_files(paths)
    pool = ThreadPoolExecutor(max_workers=max(1, min(threads, len(files))), thread_name_prefix="rsvl-plan")
    try:
        headers = list(pool.map(lambda f: _image_header(f, tile, spec), files))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on the first bad file, do not plan the rest
    images: list[ImageJob] = []
    first = 0
    for index, (f, (width, height, single, n_tiles, stretch, georef)) in enumerate(zip(files, headers, strict=True)):
        images.append(ImageJob(index, str(f), width, height, first, n_tiles, single, stretch, georef))
        first += n_tiles
    return ArchivePlan(images, spec)


# --------------------------------------------------------------------------- predict (worker side)


@dataclass(frozen=True)
class TileResult:
    """What a worker returns for one tile: detections in tile pixels, or why there are none."""

    tile_id: int
    status: TileStatus
    detections: Detections | None = None
    error: str = ""
    attempts: int = 1


class SourceCache:
    """A few open :class:`RasterSource` per worker, so neighbouring tiles do not reopen the file."""

    def __init__(self, size: int = 4, gdal_cache_mb: int | None = 256) -> None:
        self.size = size
        self.gdal_cache_mb = gdal_cache_mb
        self._open: OrderedDict[str, RasterSource] = OrderedDict()

    def get(self, path: str) -> RasterSource:
        src = self._open.get(path)
        if src is None:
            src = RasterSource(path, gdal_cache_mb=self.gdal_cache_mb)
            self._open[path] = src
            while len(self._open) > self.size:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(path)
        return src

    def drop(self, path: str) -> None:
        """Close a source (after an error, so a retry starts from a freshly opened file)."""
        src = self._open.pop(path, None)
        if src is not None:
            src.close()

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


def predict_tile(
    job: TileJob,
    predictor: TilePredictor,
    sources: SourceCache,
    retries: int = 2,
    *,
    skip_empty: bool = True,
) -> TileResult:
    """Read one tile's window and predict it, retrying a failing read or predict ``retries`` times.

    Mirrors the in-process engine: a single-tile image is read whole and always predicted; a tile
    of a larger image with no valid pixel is skipped (``"empty"``) when ``skip_empty``. After
    ``1 + retries`` failed attempts the result is ``"failed"`` with the last error's text.
    """
    error = ""
    for attempt in range(1, retries + 2):
        try:
            src = sources.get(job.path)
            rgb, valid = src.read_display(job.window, stretch=job.stretch)
            if skip_empty and not job.single and not valid.any():
                return TileResult(job.tile_id, "empty", attempts=attempt)
            dets = predictor(rgb)
            if dets is not None and not isinstance(dets, Detections):
                raise TypeError(f"predictor must return Detections or None, got {type(dets).__name__}")
            return TileResult(job.tile_id, "ok", dets, attempts=attempt)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            sources.drop(job.path)
            logger.warning("%s tile %s: attempt %d failed: %s", job.path, tuple(job.window), attempt, error)
    return TileResult(job.tile_id, "failed", error=error, attempts=retries + 1)


_COLUMNS = ("tile_id", "status", "attempts", "error", "box_width", "boxes", "scores", "labels", "names")


def results_to_batch(results: Sequence[TileResult]) -> dict[str, np.ndarray]:
    """Flat columns for a dataframe/Arrow batch: raw float64/int64 bytes, names as JSON text."""
    cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    for r in results:
        d = r.detections
        cols["tile_id"].append(r.tile_id)
        cols["status"].append(r.status)
        cols["attempts"].append(r.attempts)
        cols["error"].append(r.error)
        cols["box_width"].append(-1 if d is None else d.boxes.shape[1])
        cols["boxes"].append(b"" if d is None else d.boxes.tobytes())
        cols["scores"].append(b"" if d is None else d.scores.tobytes())
        cols["labels"].append(b"" if d is None else d.labels.tobytes())
        cols["names"].append("null" if d is None or d.names is None else json.dumps(list(d.names)))
    return {
        "tile_id": np.asarray(cols["tile_id"], dtype=np.int64),
        "status": np.asarray(cols["status"], dtype=object),
        "attempts": np.asarray(cols["attempts"], dtype=np.int64),
        "error": np.asarray(cols["error"], dtype=object),
        "box_width": np.asarray(cols["box_width"], dtype=np.int64),
        "boxes": np.asarray(cols["boxes"], dtype=object),
        "scores": np.asarray(cols["scores"], dtype=object),
        "labels": np.asarray(cols["labels"], dtype=object),
        "names": np.asarray(cols["names"], dtype=object),
    }


def batch_to_results(batch: Mapping[str, Any]) -> list[TileResult]:
    """Inverse of :func:`results_to_batch` (exact: the arrays come back bit for bit)."""
    out = []
    for i in range(len(batch["tile_id"])):
        width = int(batch["box_width"][i])
        dets = None
        if width > 0:
            names = json.loads(batch["names"][i])
            dets = Detections(
                np.frombuffer(batch["boxes"][i], dtype=np.float64).reshape(-1, width),
                np.frombuffer(batch["scores"][i], dtype=np.float64),
                np.frombuffer(batch["labels"][i], dtype=np.int64),
                None if names is None else tuple(names),
            )
        out.append(
            TileResult(
                int(batch["tile_id"][i]),
                str(batch["status"][i]),  # type: ignore[arg-type]
                dets,
                str(batch["error"][i]),
                int(batch["attempts"][i]),
            )
        )
    return out


# --------------------------------------------------------------------------- assemble (driver side)


def assemble_image(
    job: ImageJob, windows: Sequence[Window], tile_dets: Sequence[Detections | None], merge: MergeConfig
) -> Detections:
    """One image's detections from its tiles' (in tile order), exactly as the in-process engine makes them.

    Single-tile image: the predictor's output as is (``predict_file``). Otherwise: boxes shifted
    to global pixels, concatenated in tile order, clipped to the image and merged
    (``sliced_predict``). ``None`` stands for a skipped, failed or empty tile.
    """
    if job.single:
        dets = tile_dets[0] if tile_dets else None
        return dets if dets is not None else Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    parts = [
        d.translate(w.col_off, w.row_off) for d, w in zip(tile_dets, windows, strict=True) if d is not None and len(d)
    ]
    kind = parts[0].kind if parts else "hbb"
    raw = Detections.concat(parts, kind=kind).clip(job.width, job.height)
    return merge_detections(raw, merge)


def write_geoparquet(path: str | os.PathLike[str], dets: Detections, georef: GeoRef | None) -> Path:
    """Write the detections as GeoParquet (geopandas + pyarrow), atomically.

    Same rows and attributes as the GeoJSON (``label``, ``name``, ``score``, ``coordinate_space``),
    polygons in map coordinates with the image's CRS, or in pixels with the pixel CRS.
    """
    try:
        import geopandas as gpd
        import shapely
    except ImportError as exc:
        raise InputError(
            f"writing GeoParquet needs geopandas and pyarrow ({exc.name} is missing): pip install 'rsvl[geo]'",
            path,
        ) from exc
    from rsvl.io.vector import PIXEL_CRS_WKT, detection_rings, detections_to_geojson
    from rsvl.utils.atomic import atomic_path

    rings, on_map = detection_rings(dets, georef)
    props = [f["properties"] for f in detections_to_geojson(dets, georef)["features"]]
    columns = {key: [p[key] for p in props] for key in ("label", "name", "score", "coordinate_space")}
    frame = gpd.GeoDataFrame(
        columns,
        geometry=shapely.polygons(rings) if len(dets) else [],
        crs=georef.crs_name if on_map and georef is not None else PIXEL_CRS_WKT,
    )
    frame["label"] = frame["label"].astype("int64")
    frame["score"] = frame["score"].astype("float64")
    for key in ("name", "coordinate_space"):
        frame[key] = frame[key].astype("string")
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


@dataclass(frozen=True)
class FailedTile:
    """A tile that kept failing: its image, window and the last error."""

    image: str
    tile: int
    window: tuple[int, int, int, int]
    attempts: int
    error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "tile": self.tile,
            "window": list(self.window),
            "attempts": self.attempts,
            "error": self.error,
        }


def check_formats(formats: Sequence[str]) -> None:
    """Refuse an empty or unknown output format list (before anything is read or written)."""
    unknown = sorted(set(formats) - set(ARCHIVE_FORMATS))
    if unknown or not formats:
        raise InputError(f"unknown or no output format(s) {unknown}; choose from {', '.join(ARCHIVE_FORMATS)}")


class ArchiveAssembler:
    """Collect tile results in any order; write each image the moment its last tile arrives.

    Only images with tiles still outstanding are held in memory (their tile detections, not
    pixels). :meth:`add` returns the image's written paths when it completes the image, after
    calling ``on_image(job, detections)`` (e.g. to record the image as done for a resumed run).
    """

    def __init__(
        self,
        plan: ArchivePlan,
        merge: MergeConfig,
        class_names: Sequence[str] | None,
        out_dir: str | os.PathLike[str],
        formats: Sequence[str] = ("geojson",),
        on_image: Callable[[ImageJob, Detections], None] | None = None,
    ) -> None:
        check_formats(formats)
        self.on_image = on_image
        self.plan = plan
        self.merge = merge
        self.class_names = list(class_names) if class_names is not None else None
        self.out = Path(out_dir)
        self.formats = tuple(dict.fromkeys(formats))
        self._pending: dict[int, dict[int, Detections | None]] = {}
        self._complete: set[int] = set()
        self.written: dict[Path, list[Path]] = {}
        self.failed: list[FailedTile] = []
        self.tiles_ok = 0
        self.tiles_empty = 0
        self.tiles_retried = 0  # finished (ok or empty) only after a failed attempt

    @property
    def images_done(self) -> int:
        return len(self._complete)

    @property
    def missing_images(self) -> list[str]:
        return [im.path for im in self.plan.images if im.index not in self._complete]

    def add(self, result: TileResult) -> list[Path] | None:
        """Record one tile result; when it completes an image, write that image and return its paths."""
        image = self.plan.image_of(result.tile_id)
        job = self.plan.images[image]
        if image in self._complete:
            logger.debug("tile %d of %s arrived twice; ignored", result.tile_id, job.path)
            return None
        tiles = self._pending.setdefault(image, {})
        index = result.tile_id - job.first_tile
        if index in tiles:
            logger.debug("tile %d of %s arrived twice; ignored", result.tile_id, job.path)
            return None
        tiles[index] = result.detections if result.status == "ok" else None
        if result.status != "failed" and result.attempts > 1:
            self.tiles_retried += 1
        if result.status == "ok":
            self.tiles_ok += 1
        elif result.status == "empty":
            self.tiles_empty += 1
        else:
            window = tuple(self.plan.windows(image)[index])
            self.failed.append(FailedTile(job.path, index, window, result.attempts, result.error))  # type: ignore[arg-type]
        if len(tiles) < job.n_tiles:
            return None
        del self._pending[image]
        self._complete.add(image)
        return self._write(job, [tiles[i] for i in range(job.n_tiles)])

    def _write(self, job: ImageJob, tile_dets: list[Detections | None]) -> list[Path]:
        dets = assemble_image(job, self.plan.windows(job.index), tile_dets, self.merge)
        named = dets.with_class_names(self.class_names) if self.class_names is not None else dets
        logger.info("%s: %d tiles -> %d detections", job.path, job.n_tiles, len(dets))
        paths = []
        if "geojson" in self.formats:
            from rsvl.io.vector import write_detections

            paths.append(write_detections(self.out / f"{job.stem}.geojson", named, job.georef))
        if "parquet" in self.formats:
            paths.append(write_geoparquet(self.out / f"{job.stem}.parquet", named, job.georef))
        self.written[Path(job.path)] = paths
        if self.on_image is not None:
            self.on_image(job, dets)
        return paths

    def write_failures(self) -> Path:
        """Write ``failed_tiles.json`` (every failed tile, or an empty list) and return its path."""
        from rsvl.utils.atomic import write_json

        records = sorted((f.to_json() for f in self.failed), key=lambda r: (r["image"], r["tile"]))
        return write_json(self.out / "failed_tiles.json", {"failed_tiles": records})

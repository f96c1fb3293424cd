"""Archive-scale detection on Ray Data: the tiles of many GeoTIFFs streamed over a pool of model workers.

``rsvl detect --engine ray`` runs :func:`detect_archive`; the default engine stays in-process
(:func:`rsvl.io.sliced.predict_file`). The pipeline, with what bounds memory at each stage:

1. **Plan** (driver, :func:`rsvl.engines.tile_jobs.plan_archive`): one header read and one
   display stretch per image; the plan holds O(images), not O(tiles).
2. **Tile ids** (``ray.data.range``): the dataset carries only global tile ids, in small blocks
   (at most ``MAX_BATCH_ROWS`` ids, or ``total / MAX_BLOCKS`` for huge archives); each worker turns
   an id into its row (path, window, stretch) from its copy of the plan.
3. **Predict** (``map_batches`` with :class:`TileWorker`, an actor pool of ``workers`` actors, one
   CPU each, or one GPU each for a ``cuda`` spec): the model is loaded once per actor; each tile's
   window is read from the file just before it is predicted (never the whole image), so an actor
   holds the model, one tile of pixels, GDAL's block cache (``gdal_cache_mb``, 256 MB) and the
   results of its current block. Each actor has at most ``max_tasks_in_flight_per_actor=2``
   blocks of tile ids queued, and Ray Data's streaming executor stops launching tasks when
   finished results wait in the object store (backpressure), so results do not pile up faster
   than the driver consumes them.
4. **Assemble** (driver, ``iter_batches``): results arrive in any order;
   :class:`~rsvl.engines.tile_jobs.ArchiveAssembler` keeps the detections (not pixels) of images
   still missing tiles and writes each image (merged exactly as the in-process engine merges) the
   moment its last tile is in. Tile ids are issued image by image, so only the images in flight
   are held.

Resume: each image written without a failed tile is recorded in ``predictions.jsonl``
(:mod:`rsvl.io.detect_run`; ``run.json`` holds the model and tiling); a rerun after an interruption
plans only the images not recorded there (or whose output files are gone). An image in progress
is predicted again from its first tile.

Failures: a tile whose read or predict raises is retried ``retries`` times inside its worker,
then reported (``ArchiveResult.failed`` and ``failed_tiles.json``) while its image is still
written from the other tiles. A crashed worker process is restarted by Ray and its batch re-run
(``max_restarts`` / ``max_task_retries`` = ``retries``); past that the run stops with Ray's error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsvl.engines.predictors import PredictorSpec
from rsvl.engines.tile_jobs import (
    ArchiveAssembler,
    ArchivePlan,
    FailedTile,
    ImageJob,
    SourceCache,
    batch_to_results,
    check_formats,
    plan_archive,
    predict_tile,
    results_to_batch,
)
from rsvl.errors import InputError
from rsvl.io.detections import Detections

__all__ = ["ArchiveResult", "TileWorker", "detect_archive"]

logger = logging.getLogger(__name__)

#: Largest number of tile ids one worker task takes (smaller when there are few tiles per worker).
MAX_BATCH_ROWS = 16
#: Batches queued per actor beyond the one running: bounds in-flight work per worker.
TASKS_IN_FLIGHT_PER_ACTOR = 2
#: Most blocks of tile ids: Ray Data creates one read task per block on the driver, so a
#: 10^8-tile archive gets blocks of 1,000+ ids rather than millions of read tasks.
MAX_BLOCKS = 100_000


@dataclass
class ArchiveResult:
    """What :func:`detect_archive` did.

    ``written`` maps each input image to its output files; ``failed`` lists the tiles that still
    failed after their retries (also in ``failed_tiles_path``); ``tiles_retried`` counts tiles that
    succeeded only on a retry. ``seconds`` is the pipeline's wall
    time from the first tile id to the last write (workers' model loading included, cluster
    start-up and planning in ``setup_seconds``). Per worker process id, measured inside the
    worker: ``worker_peak_rss_mb`` (peak resident set size), ``worker_tiles`` and ``worker_busy_s``
    (seconds spent reading and predicting tiles, model loading excluded). ``assemble_seconds`` is
    the driver's time merging and writing images (it must stay below ``seconds`` to keep up).
    ``images_resumed``: images an earlier run finished (in ``written``, not predicted again).
    """

    written: dict[Path, list[Path]]
    tiles_total: int
    tiles_done: int
    tiles_empty: int
    tiles_retried: int
    failed: list[FailedTile]
    failed_tiles_path: Path
    seconds: float
    setup_seconds: float
    workers: int
    worker_peak_rss_mb: dict[int, float] = field(default_factory=dict)
    worker_tiles: dict[int, int] = field(default_factory=dict)
    worker_busy_s: dict[int, float] = field(default_factory=dict)
    assemble_seconds: float = 0.0
    images_resumed: int = 0

    @property
    def tiles_failed(self) -> int:
        return len(self.failed)

    @property
    def tiles_per_s(self) -> float:
        """Tiles finished (predicted, skipped empty or failed) per second of pipeline time."""
        return (self.tiles_done + self.tiles_failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def busy_tiles_per_s(self) -> float:
        """Tiles per second of the busiest worker's tile time: throughput without start-up and model loading."""
        busiest = max(self.worker_busy_s.values(), default=0.0)
        return (self.tiles_done + self.tiles_failed) / busiest if busiest > 0 else 0.0


def _peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class TileWorker:
    """Ray Data callable class: loads the model once per actor, then reads and predicts tile ids."""

    def __init__(self, plan: ArchivePlan, spec: PredictorSpec, retries: int, gdal_cache_mb: int | None = 256) -> None:
        self.plan = plan
        self.retries = retries
        self.predictor = spec.build()
        self.sources = SourceCache(gdal_cache_mb=gdal_cache_mb)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, busy = [], []
        for tile_id in batch["id"]:
            t0 = time.perf_counter()
            results.append(
                predict_tile(self.plan.tile(int(tile_id)), self.predictor.predict, self.sources, self.retries)
            )
            busy.append(time.perf_counter() - t0)
        out = results_to_batch(results)
        out["pid"] = np.full(len(results), os.getpid(), dtype=np.int64)
        out["busy_s"] = np.asarray(busy, dtype=np.float64)
        out["peak_rss_mb"] = np.full(len(results), _peak_rss_mb(), dtype=np.float64)
        return out


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # Ray Data ships in the ray[data] extra
    except ImportError as exc:
        raise InputError(f"--engine ray needs Ray Data ({exc.name} is missing): pip install 'rsvl[scale]'") from None
    return ray


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None, workers: int) -> Iterator[None]:
    """Connect to ``address``, reuse an already initialised Ray, or start a local cluster (stopped after)."""
    started = False
    if not ray.is_initialized():
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if address is None:
            # one CPU per worker actor plus one for Ray Data's small tile-id read tasks
            ray.init(num_cpus=workers + 1, **opts)
        else:
            ray.init(address=address, **opts)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _ray_run(ray: Any, address: str | None, workers: int) -> Iterator[None]:
    """A Ray session with Ray Data quiet, and Ray's deprecation notices (not ours to act on) hidden."""
    with warnings.catch_warnings():
        # Ray Data's context sets deprecated fields of its own; actor restart/retry limits still go
        # through ``ray_remote_args``, deprecated with no successor yet
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
        warnings.filterwarnings("ignore", message=r".*ray_remote_args.*is deprecated")
        with _ray_session(ray, address, workers), _quiet_ray_data(ray):
            yield


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """No Ray Data progress bars or execution banners for this run (restored afterwards)."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        data_logger.setLevel(level)


def detect_archive(
    images: Sequence[str | os.PathLike[str]],
    spec: PredictorSpec,
    out: str | os.PathLike[str],
    *,
    tile: int = 512,
    overlap: int = 64,
    workers: int = 2,
    formats: Sequence[str] = ("geojson",),
    retries: int = 2,
    address: str | None = None,
    progress: bool = True,
    resume: bool = True,
) -> ArchiveResult:
    """Detect objects in many (large) images with a pool of Ray workers; one output set per image.

    Args:
        images: image files (GeoTIFF or anything rasterio reads); stems must be distinct.
        spec: which model each worker loads (:class:`~rsvl.engines.predictors.PredictorSpec`).
        out: output folder (created): ``<stem>.geojson`` (identical to the in-process engine's),
            ``<stem>.parquet`` (GeoParquet) when ``"parquet"`` is in ``formats``, and
            ``failed_tiles.json``.
        tile, overlap: tiling, as ``rsvl detect --tile/--overlap``.
        workers: model workers (Ray actors, one CPU or GPU each).
        formats: any of ``"geojson"``, ``"parquet"``.
        retries: extra attempts for a tile whose read or predict raises; also Ray's actor
            restarts and task retries after a worker process dies.
        address: an existing Ray cluster (``"auto"``, ``"ray://host:10001"``); ``None`` starts a
            local one (or reuses one this process already started) and stops what it started.
            Workers on other nodes must see the same image and output paths.
        progress: a tile progress bar on stderr.
        resume: skip the images an earlier run in ``out`` finished (``predictions.jsonl``); False
            predicts every image again.

    Raises:
        InputError: Ray missing, ``workers < 1``, ``retries < 0``, a bad format, tile or model
            file, or an unreadable/empty image (named) — all before any worker starts.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if retries < 0:
        raise InputError(f"retries must be at least 0, got {retries}")
    check_formats(formats)
    ray = _import_ray()
    start = time.perf_counter()
    from rsvl.io.detect_run import DetectRun
    from rsvl.io.inputs import image_files, output_folder

    if not images:
        raise InputError("no input images")
    files = image_files(images)
    out_dir = output_folder(out)
    state = DetectRun(out_dir, _run_fingerprint(spec, tile, overlap), resume)
    earlier: dict[Path, list[Path]] = {}
    for f in files:
        paths = [out_dir / f"{f.stem}.{fmt}" for fmt in dict.fromkeys(formats)]
        if state.finished(f) is not None and all(p.exists() for p in paths):
            earlier[f] = paths
    todo = [f for f in files if f not in earlier]
    if earlier:
        logger.info("%d of %d images done by an earlier run in %s", len(earlier), len(files), out_dir)
    if not todo:
        return ArchiveResult(
            earlier, 0, 0, 0, 0, [], _write_no_failures(out_dir), 0.0, time.perf_counter() - start, workers,
            images_resumed=len(earlier),
        )  # fmt: skip
    plan = plan_archive(todo, tile, overlap)
    merge, class_names = spec.describe()

    def record(job: ImageJob, dets: Detections) -> None:
        if not any(f.image == job.path for f in assembler.failed):  # an image with failed tiles is redone
            state.add(Path(job.path), dets, job.width, job.height)

    assembler = ArchiveAssembler(plan, merge, class_names, out_dir, formats, on_image=record)
    total = plan.total_tiles
    batch_rows = max(1, min(MAX_BATCH_ROWS, total // (4 * workers)))
    peak_rss: dict[int, float] = {}
    tiles_by: dict[int, int] = {}
    busy_by: dict[int, float] = {}
    driver_s = 0.0
    with _ray_run(ray, address, workers):
        setup = time.perf_counter() - start
        t0 = time.perf_counter()
        block_rows = max(batch_rows, math.ceil(total / MAX_BLOCKS))
        ids = ray.data.range(total, override_num_blocks=math.ceil(total / block_rows))
        resources = {"num_gpus": 1} if spec.uses_gpu else {"num_cpus": 1}
        results = ids.map_batches(
            TileWorker,
            fn_constructor_kwargs={"plan": plan, "spec": spec, "retries": retries},
            batch_size=batch_rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT_PER_ACTOR),
            # Ray's own fault tolerance for a crashed worker process: restart it, re-run its batch
            max_restarts=retries,
            max_task_retries=retries,
            **resources,
        )
        from rsvl.utils.progress import progress_bar

        with state, progress_bar(progress) as bar:
            task = bar.add_task(f"tiles of {len(plan.images)} images on {workers} workers", total=total)
            for batch in results.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                stats = zip(batch["pid"].tolist(), batch["peak_rss_mb"].tolist(), batch["busy_s"].tolist(), strict=True)
                for pid, rss, busy in stats:
                    peak_rss[pid] = max(rss, peak_rss.get(pid, 0.0))
                    tiles_by[pid] = tiles_by.get(pid, 0) + 1
                    busy_by[pid] = busy_by.get(pid, 0.0) + busy
                t1 = time.perf_counter()
                for result in batch_to_results(batch):
                    assembler.add(result)
                    bar.advance(task)
                driver_s += time.perf_counter() - t1
        seconds = time.perf_counter() - t0
    missing = assembler.missing_images
    if missing:  # every tile id yields one result; this would be a bug, not bad input
        raise RuntimeError(f"{len(missing)} images never completed, e.g. {missing[0]}")
    failures = assembler.write_failures()
    if assembler.failed:
        logger.warning("%d tiles failed after %d retries; see %s", len(assembler.failed), retries, failures)
    return ArchiveResult(
        written={**earlier, **assembler.written},
        tiles_total=total,
        tiles_done=assembler.tiles_ok + assembler.tiles_empty,
        tiles_empty=assembler.tiles_empty,
        tiles_retried=assembler.tiles_retried,
        failed=assembler.failed,
        failed_tiles_path=failures,
        seconds=seconds,
        setup_seconds=setup,
        workers=workers,
        worker_peak_rss_mb=peak_rss,
        worker_tiles=tiles_by,
        worker_busy_s=busy_by,
        assemble_seconds=driver_s,
        images_resumed=len(earlier),
    )


def _run_fingerprint(spec: PredictorSpec, tile: int, overlap: int) -> dict[str, Any]:
    """What decides every prediction of an archive run (``run.json``): the model and the tiling."""
    from rsvl.io.detect_run import file_fingerprint

    if spec.factory is not None:
        model: dict[str, Any] = {"factory": _describe_callable(spec.factory)}
    else:
        assert spec.model_path is not None
        model = file_fingerprint(spec.model_path)
    return {
        "engine": "ray",
        "method": spec.method if spec.factory is None else None,
        "model": model,
        "score_threshold": spec.score_threshold,
        "tile": tile,
        "overlap": overlap,
    }


def _describe_callable(fn: Any) -> str:
    """``module.name`` of a predictor factory, with the arguments a ``functools.partial`` binds."""
    if isinstance(fn, functools.partial):
        bound = [*map(repr, fn.args), *(f"{k}={v!r}" for k, v in fn.keywords.items())]
        return f"{_describe_callable(fn.func)}({', '.join(bound)})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _write_no_failures(out: Path) -> Path:
    from rsvl.utils.atomic import write_json

    return write_json(out / "failed_tiles.json", {"failed_tiles": []})

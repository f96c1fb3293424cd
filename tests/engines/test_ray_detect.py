"""`detect_archive` on a local Ray cluster (2 workers) against the in-process engine, with failing tiles.

Slow (a Ray cluster and two model workers start): run with ``pytest -m slow tests/engines``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

ray = pytest.importorskip("ray")

from rsvl.engines.predictors import BuiltPredictor, PredictorSpec  # noqa: E402
from rsvl.engines.ray_detect import detect_archive  # noqa: E402
from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig  # noqa: E402
from rsvl.methods.vlm4rsdet.infer import detect_files, load_detector  # noqa: E402
from rsvl.methods.vlm4rsdet.train import build_model, save_detector  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# workers import rsvl, not this test module: ship its predictor factories by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TILE, OVERLAP = 128, 16
MARKER = 250  # an 8 x 8 patch of this grey lies in the first tile of a.tif only


def _has_marker(rgb: np.ndarray) -> bool:
    return int((rgb == MARKER).all(axis=-1).sum()) >= 64


def flaky_factory(model_path: str) -> BuiltPredictor:
    """The real detector, except that the first call on every tile raises."""
    built = PredictorSpec("vlm4rsdet", model_path).build()
    seen: set[str] = set()

    def predict(rgb: np.ndarray):
        key = hashlib.sha1(rgb.tobytes()).hexdigest()
        if key not in seen:
            seen.add(key)
            raise RuntimeError("flaky: first call on this tile")
        return built.predict(rgb)

    return BuiltPredictor(predict, built.merge, built.class_names)


def marker_fails_factory(model_path: str) -> BuiltPredictor:
    """The real detector, except that the tile holding the marker always raises."""
    built = PredictorSpec("vlm4rsdet", model_path).build()

    def predict(rgb: np.ndarray):
        if _has_marker(rgb):
            raise ValueError("marker tile")
        return built.predict(rgb)

    return BuiltPredictor(predict, built.merge, built.class_names)


def crash_once_factory(model_path: str, flag: str) -> BuiltPredictor:
    """The real detector, except that the first call in the whole cluster kills its worker process."""
    built = PredictorSpec("vlm4rsdet", model_path).build()

    def predict(rgb: np.ndarray):
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return built.predict(rgb)
        os._exit(1)  # a hard crash (no exception to catch), as a segfault or the OOM killer would

    return BuiltPredictor(predict, built.merge, built.class_names)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    """Three GeoTIFFs (9, 4 and 1 tiles; two georeferenced), a random tiny detector, the in-process output."""
    root = tmp_path_factory.mktemp("ray_archive")
    cfg = VLM4RSDetConfig.model_validate(
        {
            "data": {"format": "aitod", "root": "unused", "crop_size": 96},
            "detector": {"backbone_weights": False, "score_thresh": 0.0, "detections_per_img": 20},
            "vlm": {"enabled": False},
        }
    )
    classes = ["airplane", "ship"]
    torch.manual_seed(0)
    model_path = save_detector(root / "detector.pt", build_model(cfg, classes, pretrained=False).detector, cfg, classes)
    rng = np.random.default_rng(0)
    paths = []
    for name, (w, h), georeferenced in [("a", (300, 260), True), ("b", (200, 150), False), ("c", (100, 90), True)]:
        pixels = rng.integers(0, 200, (3, h, w), dtype=np.uint8)
        if name == "a":
            pixels[:, 40:48, 40:48] = MARKER
        profile = {"driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8"}
        if georeferenced:
            profile |= {"crs": "EPSG:32616", "transform": Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(root / f"{name}.tif", "w", **profile) as dst:
                dst.write(pixels)
        paths.append(root / f"{name}.tif")
    reference = root / "in_process"
    detector = load_detector(model_path)
    detect_files(paths, detector, reference, formats=["geojson"], tile=TILE, overlap=OVERLAP, progress=False)
    return paths, model_path, reference


def _same_geojson(paths: list[Path], out: Path, reference: Path, stems: set[str]) -> None:
    for p in paths:
        if p.stem in stems:
            assert (out / f"{p.stem}.geojson").read_bytes() == (reference / f"{p.stem}.geojson").read_bytes(), p.stem


def test_local_cluster_writes_what_the_in_process_engine_writes(archive, tmp_path: Path) -> None:
    paths, model_path, reference = archive
    assert not ray.is_initialized()
    spec = PredictorSpec("vlm4rsdet", model_path)
    res = detect_archive(
        paths, spec, tmp_path, tile=TILE, overlap=OVERLAP, workers=2, formats=("geojson", "parquet"), progress=False
    )
    assert not ray.is_initialized()  # the cluster it started is gone
    assert (res.tiles_total, res.tiles_done, res.tiles_retried, res.failed) == (14, 14, 0, [])
    assert sum(res.worker_tiles.values()) == 14 and 1 <= len(res.worker_tiles) <= 2
    assert all(rss > 50 for rss in res.worker_peak_rss_mb.values())
    assert res.tiles_per_s > 0 and res.seconds > 0
    _same_geojson(paths, tmp_path, reference, {"a", "b", "c"})
    assert res.written[paths[0]] == [tmp_path / "a.geojson", tmp_path / "a.parquet"]
    gpd = pytest.importorskip("geopandas")
    features = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert len(gpd.read_parquet(tmp_path / "a.parquet")) == len(features) > 0
    assert json.loads(res.failed_tiles_path.read_text()) == {"failed_tiles": []}


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the failure tests (detect_archive reuses it and leaves it running)."""
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.usefixtures("cluster")
def test_flaky_tiles_are_retried_and_the_output_is_unchanged(archive, tmp_path: Path) -> None:
    paths, model_path, reference = archive
    spec = PredictorSpec(factory=functools.partial(flaky_factory, str(model_path)))
    res = detect_archive(paths, spec, tmp_path, tile=TILE, overlap=OVERLAP, workers=2, retries=1, progress=False)
    assert ray.is_initialized()  # not ours to stop
    assert (res.tiles_done, res.tiles_retried, res.failed) == (14, 14, [])
    _same_geojson(paths, tmp_path, reference, {"a", "b", "c"})


@pytest.mark.usefixtures("cluster")
def test_an_always_failing_tile_is_reported_and_its_image_still_written(archive, tmp_path: Path) -> None:
    paths, model_path, reference = archive
    spec = PredictorSpec(factory=functools.partial(marker_fails_factory, str(model_path)))
    res = detect_archive(paths, spec, tmp_path, tile=TILE, overlap=OVERLAP, workers=2, retries=2, progress=False)
    assert res.tiles_done == 13 and len(res.failed) == 1
    failed = res.failed[0]
    assert (failed.image, failed.tile, failed.window, failed.attempts) == (str(paths[0]), 0, (0, 0, 128, 128), 3)
    assert failed.error == "ValueError: marker tile"
    listed = json.loads(res.failed_tiles_path.read_text())["failed_tiles"]
    assert listed == [failed.to_json()]
    _same_geojson(paths, tmp_path, reference, {"b", "c"})  # the other images are untouched
    written = json.loads((tmp_path / "a.geojson").read_text())["features"]
    expected = json.loads((reference / "a.geojson").read_text())["features"]
    assert len(written) > 0 and written != expected  # a.tif written from its 8 other tiles


@pytest.mark.usefixtures("cluster")
def test_a_crashed_worker_is_restarted_and_its_tiles_rerun(archive, tmp_path: Path) -> None:
    paths, model_path, reference = archive
    flag = tmp_path / "crashed"
    spec = PredictorSpec(factory=functools.partial(crash_once_factory, str(model_path), str(flag)))
    res = detect_archive(
        paths, spec, tmp_path / "out", tile=TILE, overlap=OVERLAP, workers=2, retries=1, progress=False
    )
    assert flag.exists()  # a worker did die
    assert (res.tiles_done, res.failed) == (14, [])
    _same_geojson(paths, tmp_path / "out", reference, {"a", "b", "c"})

"""Tile jobs without Ray: planning, per-tile prediction with retries, and per-image assembly.

The reference is the in-process engine (``predict_file`` + ``write_detections``): the same
predictor run through plan -> predict_tile (in a shuffled order, results packed into flat columns
and back) -> ArchiveAssembler must write byte-identical GeoJSON.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage

from rsvl.engines.predictors import BuiltPredictor, PredictorSpec
from rsvl.engines.ray_detect import TileWorker, detect_archive
from rsvl.engines.tile_jobs import (
    ArchiveAssembler,
    SourceCache,
    TileResult,
    batch_to_results,
    plan_archive,
    predict_tile,
    results_to_batch,
)
from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.io.merge import MergeConfig
from rsvl.io.raster import RasterSource
from rsvl.io.sliced import predict_file
from rsvl.io.tiling import TileSpec, iter_windows
from rsvl.io.vector import write_detections

pytestmark = pytest.mark.usefixtures("one_thread")

TILE, OVERLAP = 128, 16
CLASSES = ["car", "roof"]
MERGE = MergeConfig(threshold=0.3)


def blob_predictor(rgb: np.ndarray, kind: str = "hbb") -> Detections | None:
    """Stand-in detector: one box per bright blob of the red channel, labels alternating."""
    labelled, n = ndimage.label(rgb[..., 0] > 200)
    if n == 0:
        return None
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labelled)], float)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if kind == "obb":
        centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
        boxes = np.column_stack([centre, size, np.full(len(boxes), 0.2)])
    return Detections(boxes, np.minimum(area / 1600.0, 1.0), np.arange(len(boxes)) % 2)


def _blob_factory() -> BuiltPredictor:
    return BuiltPredictor(blob_predictor, MERGE, CLASSES)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 400 x 300 uint16 GeoTIFF (nodata corner, blobs across tile edges) and a 100 x 80 uint8 PNG-like TIFF."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    h, w = 300, 400
    data = np.empty((3, h, w), np.uint16)
    data[:] = (1000 + 4 * np.arange(w))[None, None, :] + rng.integers(0, 50, (3, h, w))
    for y, x in [(10, 100), (60, 20), (100, 200), (150, 100), (200, 230), (40, 300), (230, 20), (120, 330)]:
        data[0, y : y + 40, x : x + 40] = 5000  # (10, 100) and (150, 100) straddle the tile seam at x = 112..128
    data[:, 172:, 272:] = 0  # nodata: the bottom-right tile holds no valid pixel
    big = root / "big.tif"
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint16", "nodata": 0}
    profile |= {"crs": "EPSG:32616", "transform": Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)}
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(data)
    small = root / "small.tif"
    pixels = rng.integers(0, 150, (3, 80, 100), dtype=np.uint8)
    pixels[0, 20:40, 30:60] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # on purpose: outputs stay in pixels
        with rasterio.open(small, "w", driver="GTiff", width=100, height=80, count=3, dtype="uint8") as dst:
            dst.write(pixels)
    return [big, small]


def _reference(images: list[Path], out: Path, predictor=blob_predictor) -> None:
    """What the in-process engine writes for these images."""
    for path in images:
        fp = predict_file(path, predictor, TILE, OVERLAP, MERGE, progress=False)
        write_detections(out / f"{path.stem}.geojson", fp.detections.with_class_names(CLASSES), fp.georef)


def _run_jobs(plan, predictor, retries: int = 0, seed: int = 1) -> list[TileResult]:
    """Every tile through predict_tile in a shuffled order, packed into columns and back."""
    rows = list(plan.rows())
    random.Random(seed).shuffle(rows)
    sources = SourceCache()
    try:
        results = [predict_tile(row, predictor, sources, retries) for row in rows]
    finally:
        sources.close()
    return batch_to_results(results_to_batch(results))


def test_plan_covers_every_window_once_with_one_stretch_per_image(images: list[Path]) -> None:
    plan = plan_archive(images, TILE, OVERLAP)
    big, small = plan.images
    spec = TileSpec(TILE, OVERLAP, "shift")
    assert not big.single and big.n_tiles == len(list(iter_windows(400, 300, spec))) == 12
    assert small.single and small.n_tiles == 1 and small.first_tile == 12 and plan.total_tiles == 13
    rows = list(plan.rows())
    assert [r.tile_id for r in rows] == list(range(13))
    assert all(plan.tile(r.tile_id) == r for r in rows)
    big_windows = [r.window for r in rows if r.image == 0]
    assert big_windows == list(iter_windows(400, 300, spec))  # each window exactly once, in order
    covered = np.zeros((300, 400), int)
    for win in big_windows:
        covered[win.slices] += 1
    assert covered.min() >= 1
    assert rows[-1].window == (0, 0, 100, 80)  # the small image: one full-image read
    with RasterSource(images[0]) as src:
        assert big.stretch == src.display_stretch() and big.stretch.high[0] > 255  # uint16: a real stretch
    assert {r.stretch for r in rows if r.image == 0} == {big.stretch}
    assert big.georef is not None and big.georef.crs_name == "EPSG:32616" and small.georef is None
    again = pickle.loads(pickle.dumps(plan))  # what workers receive
    assert [again.tile(i) for i in range(13)] == rows
    with pytest.raises(IndexError):
        plan.tile(13)


@pytest.mark.parametrize("kind", ["hbb", "obb"])
def test_assembly_writes_what_the_in_process_engine_writes(images: list[Path], tmp_path: Path, kind: str) -> None:
    def predictor(rgb):
        return blob_predictor(rgb, kind)

    _reference(images, tmp_path / "ref", predictor)
    plan = plan_archive(images, TILE, OVERLAP)
    assembler = ArchiveAssembler(plan, MERGE, CLASSES, tmp_path / "out", ("geojson",))
    results = _run_jobs(plan, predictor)
    completed_at = {}
    for n, result in enumerate(results):
        image = plan.image_of(result.tile_id)
        target = tmp_path / "out" / f"{plan.images[image].stem}.geojson"
        assert not target.exists()  # nothing is written before the image's last tile
        if assembler.add(result) is not None:
            completed_at[image] = n
            assert target.exists()
    last = {plan.image_of(r.tile_id): n for n, r in enumerate(results)}
    assert completed_at == last  # each image written exactly when its last tile arrived
    assert [r.status for r in results].count("empty") == 1 and assembler.tiles_empty == 1
    raw = sum(len(r.detections) for r in results if r.detections is not None)
    for path in images:
        expected = (tmp_path / "ref" / f"{path.stem}.geojson").read_bytes()
        assert (tmp_path / "out" / f"{path.stem}.geojson").read_bytes() == expected
    n_final = sum(len(json.loads((tmp_path / "out" / f"{p.stem}.geojson").read_text())["features"]) for p in images)
    assert 0 < n_final < raw  # the seam blobs were seen twice and merged
    assert json.loads(assembler.write_failures().read_text()) == {"failed_tiles": []}
    assert assembler.missing_images == []


def test_retries_recover_a_flaky_tile_and_a_failing_tile_is_reported(images: list[Path], tmp_path: Path) -> None:
    plan = plan_archive(images, TILE, OVERLAP)
    rows = list(plan.rows())
    calls = {"n": 0}

    def flaky(rgb):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return blob_predictor(rgb)

    sources = SourceCache()
    clean = predict_tile(rows[1], blob_predictor, sources)
    retried = predict_tile(rows[1], flaky, sources, retries=2)
    assert (retried.status, retried.attempts) == ("ok", 2)
    assert np.array_equal(retried.detections.boxes, clean.detections.boxes)

    def broken(rgb):
        raise ValueError("bad tile")

    failed = predict_tile(rows[1], broken, sources, retries=2)
    assert (failed.status, failed.attempts, failed.detections) == ("failed", 3, None)
    assert failed.error == "ValueError: bad tile"
    wrong = predict_tile(rows[1], lambda rgb: [1, 2], sources, retries=0)
    assert wrong.status == "failed" and "must return Detections" in wrong.error
    sources.close()

    # the image is still written from its other tiles, and the failure is listed, not lost
    assembler = ArchiveAssembler(plan, MERGE, CLASSES, tmp_path, ("geojson",))
    calls["n"] = 0
    with_retry = predict_tile(rows[2], flaky, SourceCache(), retries=1)
    for result in _run_jobs(plan, blob_predictor):
        assembler.add({1: failed, 2: with_retry}.get(result.tile_id, result))
    assert (assembler.tiles_retried, assembler.tiles_ok, len(assembler.failed)) == (1, 11, 1)
    assert sorted(assembler.written) == sorted(images)
    report = json.loads(assembler.write_failures().read_text())["failed_tiles"]
    assert report == [
        {"image": str(images[0]), "tile": 1, "window": list(rows[1].window), "attempts": 3, "error": failed.error}
    ]
    assert json.loads((tmp_path / "big.geojson").read_text())["features"]


def test_geoparquet_has_the_geojson_rows_and_crs(images: list[Path], tmp_path: Path) -> None:
    gpd = pytest.importorskip("geopandas")
    plan = plan_archive(images, TILE, OVERLAP)
    assembler = ArchiveAssembler(plan, MERGE, CLASSES, tmp_path, ("geojson", "parquet"))
    for result in _run_jobs(plan, blob_predictor):
        assembler.add(result)
    assert assembler.written[images[0]] == [tmp_path / "big.geojson", tmp_path / "big.parquet"]
    for stem, crs in [("big", "EPSG:32616"), ("small", None)]:
        frame = gpd.read_parquet(tmp_path / f"{stem}.parquet")
        features = json.loads((tmp_path / f"{stem}.geojson").read_text())["features"]
        assert len(frame) == len(features) > 0
        assert frame["score"].tolist() == [f["properties"]["score"] for f in features]
        assert frame["name"].tolist() == [f["properties"]["name"] for f in features]
        ring = np.asarray(features[0]["geometry"]["coordinates"][0])
        assert np.allclose(np.asarray(frame.geometry.iloc[0].exterior.coords), ring)
        if crs:
            assert frame.crs.to_string() == crs and set(frame["coordinate_space"]) == {"map"}
        else:
            assert "pixel" in frame.crs.to_wkt() and set(frame["coordinate_space"]) == {"pixel"}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_worker_class_loads_once_and_predicts_ids_without_ray(images: list[Path]) -> None:
    plan = plan_archive(images, TILE, OVERLAP)
    built = []

    def factory() -> BuiltPredictor:
        built.append(1)
        return _blob_factory()

    worker = TileWorker(pickle.loads(pickle.dumps(plan)), PredictorSpec(factory=factory), retries=0)
    first = batch_to_results(worker({"id": np.arange(0, 7)}))
    second = worker({"id": np.arange(7, 13)})
    assert len(built) == 1 and len(set(second["pid"])) == 1
    assert second["peak_rss_mb"][0] > 10
    direct = _run_jobs(plan, blob_predictor)
    by_id = {r.tile_id: r for r in direct}
    for r in first + batch_to_results(second):
        assert r.status == by_id[r.tile_id].status
        if r.detections is not None:
            assert np.array_equal(r.detections.boxes, by_id[r.tile_id].detections.boxes)


def test_bad_inputs_are_input_errors_naming_the_file(images: list[Path], tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(InputError, match="no input images"):
        plan_archive([])
    with pytest.raises(InputError, match=r"missing\.tif"):
        plan_archive([images[0], tmp_path / "missing.tif"])
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.tif"):
        plan_archive([empty])
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.tif"):
        plan_archive([text])
    twin = tmp_path / "big.tif"
    twin.write_bytes(images[0].read_bytes())
    with pytest.raises(InputError, match="stem"):
        plan_archive([images[0], twin])
    with pytest.raises(InputError, match="overlap"):
        plan_archive(images, 128, 128)
    plan = plan_archive(images, TILE, OVERLAP)
    with pytest.raises(InputError, match="format"):
        ArchiveAssembler(plan, MERGE, CLASSES, tmp_path, ("gpkg",))
    with pytest.raises(InputError, match="unknown method"):
        PredictorSpec("yolo", images[0])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="model file not found"):
        PredictorSpec("vlm4rsdet", tmp_path / "detector.pt")
    spec = PredictorSpec(factory=_blob_factory)
    with pytest.raises(InputError, match="workers must be at least 1"):
        detect_archive(images, spec, tmp_path / "o", workers=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"pip install 'rsvl\[scale\]'"):
        detect_archive(images, spec, tmp_path / "o")

"""sliced_predict: streaming tile inference, global coordinates, merging, progress, memory."""

from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest

from rsvl.geometry import hbb_to_obb
from rsvl.io import (
    Detections,
    DisplayConfig,
    MergeConfig,
    RasterSource,
    TileSpec,
    count_windows,
    iter_tiles,
    iter_windows,
    sliced_predict,
)

SQUARES = [(40, 50, 30), (150, 90, 24), (230, 230, 40), (300, 10, 20)]  # (x, y, size), disjoint


def _scene(width=360, height=300, value=3000) -> np.ndarray:
    """uint16 scene: dim noise-free background, bright squares at known places."""
    data = np.full((3, height, width), 500, np.uint16)
    for x, y, s in SQUARES:
        data[:, y : y + s, x : x + s] = value
    return data


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def bright_box(image: np.ndarray) -> Detections | None:
    """Stand-in detector: one box per run of bright columns (the squares never share columns)."""
    bright = image[..., 0] > 200
    boxes = []
    for x0, x1 in _runs(bright.any(axis=0)):
        rows = np.flatnonzero(bright[:, x0:x1].any(axis=1))
        boxes.append([x0, rows.min(), x1, rows.max() + 1])
    if not boxes:
        return None
    area = np.array([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes], float)
    return Detections(np.array(boxes, float), np.minimum(1.0, area / 1600), np.zeros(len(boxes), int))


def _expected_boxes():
    return sorted((x, y, x + s, y + s) for x, y, s in SQUARES)


@pytest.mark.parametrize("edge", ["shift", "pad"])
def test_squares_are_found_once_in_global_coordinates(make_tif, edge):
    path = make_tif("scene.tif", _scene())
    # 100-px tiles with 45-px overlap: every square lies whole inside some tile, others see parts
    spec = TileSpec(100, 45, edge)
    out = sliced_predict(path, bright_box, spec, MergeConfig("nmm", 0.5, "ios"), progress=False)
    assert sorted(tuple(b) for b in out.boxes.astype(int).tolist()) == _expected_boxes()
    raw = sliced_predict(path, bright_box, spec, MergeConfig("none"), progress=False)
    assert len(raw) > len(SQUARES)


def test_predictor_sees_display_tiles_of_the_spec_size(make_tif):
    path = make_tif("scene.tif", _scene(250, 130))
    shapes = []

    def spy(image):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        shapes.append(image.shape[:2])

    sliced_predict(path, spy, TileSpec(64, 0, "pad"), progress=False)
    assert len(shapes) == count_windows(250, 130, TileSpec(64, 0, "pad")) == 12
    assert set(shapes) == {(64, 64)}
    shapes.clear()
    sliced_predict(path, spy, TileSpec(64, 0, "shift"), progress=False)
    assert set(shapes) == {(64, 64)}


def test_nodata_tiles_are_skipped_and_open_sources_stay_open(make_tif):
    data = _scene()
    data[:, :, 200:] = 0
    path = make_tif("nd.tif", data, nodata=0)
    calls = []
    with RasterSource(path) as src:
        out = sliced_predict(src, lambda im: calls.append(1), TileSpec(100, 0, "shift"), progress=False)
        assert not src.closed
    assert len(out) == 0 and len(calls) == 2 * 3  # columns 0..199 in 3 rows of tiles
    calls.clear()
    sliced_predict(path, lambda im: calls.append(1), TileSpec(100, 0, "shift"), progress=False, skip_empty=False)
    assert len(calls) == 4 * 3


def test_obb_predictions_are_offset_and_merged(make_tif):
    path = make_tif("scene.tif", _scene())

    def one_obb(image):
        found = bright_box(image)
        return None if found is None else Detections(hbb_to_obb(found.boxes), found.scores, found.labels)

    out = sliced_predict(path, one_obb, TileSpec(100, 45, "shift"), MergeConfig("nmm", 0.5, "ios"), progress=False)
    centres = sorted((round(b[0], 1), round(b[1], 1)) for b in out.boxes)
    assert centres == sorted((x + s / 2, y + s / 2) for x, y, s in SQUARES)


def test_bad_predictor_output_is_a_type_error(make_tif):
    path = make_tif("scene.tif", _scene(64, 64))
    with pytest.raises(TypeError, match="Detections"):
        sliced_predict(path, lambda im: [[0, 0, 1, 1]], TileSpec(64), progress=False)


def test_progress_bar_and_quiet_mode(make_tif, monkeypatch, caplog):
    import rich.progress

    made = []

    class SpyProgress(rich.progress.Progress):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("console"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(rich.progress, "Progress", SpyProgress)
    path = make_tif("scene.tif", _scene(128, 128))
    with caplog.at_level(logging.INFO, logger="rsvl.io.sliced"):
        sliced_predict(path, bright_box, TileSpec(64), progress=False)
    assert made == []  # quiet: no bar is even built
    assert any("4 tiles" in r.getMessage() for r in caplog.records)  # logging, not print
    sliced_predict(path, bright_box, TileSpec(64), progress=True)
    assert len(made) == 1 and made[0].stderr  # the bar draws on stderr, never stdout


def test_memory_holds_one_tile_not_the_image(make_tif):
    """A 2000 x 2000 x 3 uint16 image is 24 MB; streaming 128-px tiles must peak far below it."""
    data = np.full((3, 2000, 2000), 700, np.uint16)
    data[:, ::250, :] = 4000
    path = make_tif("big.tif", data, block=256)
    del data
    tracemalloc.start()
    try:
        out = sliced_predict(path, bright_box, TileSpec(128, 16), progress=False, display=DisplayConfig(max_size=256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) > 0
    assert peak < 4 * 2**20, f"peak traced allocation {peak / 2**20:.1f} MiB"


def test_iter_tiles_streams_display_tiles_with_one_stretch(make_tif):
    path = make_tif("scene.tif", _scene(200, 150))
    spec = TileSpec(64, 8, "pad")
    with RasterSource(path) as src:
        tiles = list(iter_tiles(src, spec))
        assert [t.window for t in tiles] == list(iter_windows(200, 150, spec))
        for t in tiles[:3] + tiles[-2:]:
            image, valid = src.read_display(t.window, boundless=True)
            np.testing.assert_array_equal(t.image, image)
            np.testing.assert_array_equal(t.valid, valid)
        assert not tiles[-1].valid[:, -10:].any()  # padding beyond the right edge is masked


def test_state_file_resumes_an_interrupted_run_inside_the_image(make_tif, tmp_path):
    """Killed after 5 predicted tiles, the rerun predicts only the rest and merges the same result."""
    data = _scene()
    data[:, :, 255:] = 0  # an all-nodata strip: tiles skipped as empty are recorded too
    path = make_tif("nd.tif", data, nodata=0)
    spec, merge = TileSpec(100, 45, "shift"), MergeConfig("nmm", 0.5, "ios")
    assert _empty_tiles(path, spec) > 0
    reference = sliced_predict(path, bright_box, spec, merge, progress=False)
    calls = []

    def dies_after_five(image):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return bright_box(image)

    state = tmp_path / "state" / "nd.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sliced_predict(path, dies_after_five, spec, merge, progress=False, state=state)
    recorded = state.read_text().splitlines()
    assert len(recorded) >= 5  # the 5 predicted tiles (and any empty ones met before the 6th)
    calls.clear()
    counted = []
    resumed = sliced_predict(
        path, lambda im: counted.append(1) or bright_box(im), spec, merge, progress=False, state=state
    )
    predicted_first = len(recorded) - sum('"empty": true' in line for line in recorded)
    total_predicted = predicted_first + len(counted)
    assert predicted_first == 5 and total_predicted == count_windows(360, 300, spec) - _empty_tiles(path, spec)
    np.testing.assert_array_equal(resumed.boxes, reference.boxes)
    np.testing.assert_array_equal(resumed.scores, reference.scores)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    counted.clear()  # a finished state file: nothing is read or predicted again
    again = sliced_predict(path, lambda im: counted.append(1), spec, merge, progress=False, state=state)
    assert counted == [] and np.array_equal(again.boxes, reference.boxes)


def _empty_tiles(path, spec) -> int:
    with RasterSource(path) as src:
        return sum(not src.read_display(w)[1].any() for w in iter_windows(src.width, src.height, spec))

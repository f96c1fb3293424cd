"""Tiling: windows cover the image, respect overlap and the edge policy; known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rsvl.errors import InputError
from rsvl.io import TileSpec, Window, count_windows, iter_windows
from rsvl.io.tiling import axis_starts


def test_known_windows_shift():
    spec = TileSpec(100, 20, "shift")
    assert axis_starts(250, 100, 80, "shift") == [0, 80, 150]
    wins = list(iter_windows(250, 100, spec))
    assert wins == [Window(0, 0, 100, 100), Window(80, 0, 100, 100), Window(150, 0, 100, 100)]


def test_known_windows_pad_and_drop():
    assert axis_starts(250, 100, 80, "pad") == [0, 80, 160]
    assert axis_starts(250, 100, 80, "drop") == [0, 80]
    assert list(iter_windows(250, 90, TileSpec(100, 20, "pad"))) == [
        Window(0, 0, 100, 100),
        Window(80, 0, 100, 100),
        Window(160, 0, 100, 100),
    ]
    assert list(iter_windows(250, 90, TileSpec(100, 20, "drop"))) == []
    assert list(iter_windows(250, 100, TileSpec(100, 20, "drop"))) == [Window(0, 0, 100, 100), Window(80, 0, 100, 100)]


def test_image_smaller_than_tile():
    assert list(iter_windows(30, 20, TileSpec(64, 8, "shift"))) == [Window(0, 0, 30, 20)]
    assert list(iter_windows(30, 20, TileSpec(64, 8, "pad"))) == [Window(0, 0, 64, 64)]
    assert count_windows(30, 20, TileSpec(64, 8, "drop")) == 0
    assert list(iter_windows(64, 64, TileSpec(64, 8, "drop"))) == [Window(0, 0, 64, 64)]
    assert count_windows(0, 10, TileSpec(64)) == 0


def test_rectangular_tiles_and_overlap_ratio():
    assert hash(TileSpec([100, 50])) == hash(TileSpec((100, 50)))
    assert TileSpec(np.int64(64), np.int64(8)) == TileSpec(64, 8)
    spec = TileSpec((100, 50), 0.2)
    assert spec.tile_size == (100, 50) and spec.overlap_px == (20, 10) and spec.stride == (80, 40)
    wins = list(iter_windows(180, 90, spec))
    assert {(w.width, w.height) for w in wins} == {(100, 50)}
    assert wins[-1] == Window(80, 40, 100, 50)


def test_row_major_order_and_window_helpers():
    wins = list(iter_windows(300, 200, TileSpec(100)))
    assert [w[:2] for w in wins[:4]] == [(0, 0), (100, 0), (200, 0), (0, 100)]
    w = Window(90, 80, 30, 40)
    assert w.bounds == (90, 80, 120, 120) and w.clip(100, 100) == Window(90, 80, 10, 20)
    assert not w.is_inside(100, 100) and w.is_inside(120, 120)
    assert w.to_rasterio().col_off == 90
    arr = np.arange(200 * 200).reshape(200, 200)
    assert arr[w.slices].shape == (40, 30)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"size": 64, "overlap": 64},
        {"size": 64, "overlap": -1},
        {"size": 64, "overlap": 1.0},
        {"size": 64, "edge": "wrap"},
        {"size": (64, 0)},
        {"size": 64, "overlap": True},
    ],
)
def test_tilespec_rejects_bad_values(kwargs):
    with pytest.raises(InputError):
        TileSpec(**kwargs)


sizes = st.integers(min_value=1, max_value=700)
specs = st.builds(
    lambda t, frac, edge: TileSpec(t, int(t * frac), edge),
    st.integers(min_value=1, max_value=256),
    st.floats(min_value=0.0, max_value=0.9),
    st.sampled_from(["shift", "pad", "drop"]),
)


def _coverage(width: int, height: int, wins: list[Window]) -> np.ndarray:
    cover = np.zeros((height, width), dtype=np.int32)
    for w in wins:
        r, c = w.clip(width, height).slices
        cover[r, c] += 1
    return cover


@settings(max_examples=150, deadline=None)
@given(width=sizes, height=sizes, spec=specs)
def test_windows_cover_the_image_and_respect_the_edge_policy(width, height, spec):
    assume(count_windows(width, height, spec) <= 2_000)  # keep the pixel-coverage check fast
    wins = list(iter_windows(width, height, spec))
    assert len(wins) == count_windows(width, height, spec)
    assert len(set(wins)) == len(wins)
    (tw, th), (sx, sy) = spec.tile_size, spec.stride
    cover = _coverage(width, height, wins)
    if spec.edge == "drop":
        assert all(w.is_inside(width, height) and (w.width, w.height) == (tw, th) for w in wins)
        # everything up to the last full tile is covered; only the leftover strip may not be
        covered_w = 0 if width < tw else (width - tw) // sx * sx + tw
        covered_h = 0 if height < th else (height - th) // sy * sy + th
        assert (cover[:covered_h, :covered_w] > 0).all()
        assert (cover[covered_h:, :] == 0).all() and (cover[:, covered_w:] == 0).all()
        assert width - covered_w < tw or covered_w == width
    else:
        assert (cover > 0).all()
        if spec.edge == "pad":
            assert all((w.width, w.height) == (tw, th) for w in wins)
        else:
            assert all(w.is_inside(width, height) for w in wins)
            assert all((w.width, w.height) == (min(tw, width), min(th, height)) for w in wins)
    # neighbours overlap by at least the requested overlap (exactly, except a shifted last tile)
    xs = sorted({w.col_off for w in wins})
    for a, b in itertools.pairwise(xs):
        overlap = a + tw - b
        assert overlap >= spec.overlap_px[0]
        if spec.edge != "shift":
            assert overlap == spec.overlap_px[0]

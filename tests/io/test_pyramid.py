"""ImagePyramid: level sizes, tile grids, parent/children, decimated tile reads."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rsvl.errors import InputError
from rsvl.io import ImagePyramid, RasterSource, Window
from rsvl.io.pyramid import pyramid_levels


def test_level_sizes_known_answer():
    levels = pyramid_levels(1000, 700, 336, 2)
    assert [(lv.width, lv.height) for lv in levels] == [(1000, 700), (500, 350), (250, 175)]
    assert [lv.grid for lv in levels] == [(3, 3), (2, 2), (1, 1)]
    assert [lv.downsample for lv in levels] == [1, 2, 4]
    assert [lv.scale for lv in levels] == [1.0, 0.5, 0.25]
    assert [(lv.width, lv.height) for lv in pyramid_levels(30_000, 30_000, 336, 2)][-2:] == [(469, 469), (235, 235)]
    assert len(pyramid_levels(30_000, 30_000, 336, 2)) == 8
    assert len(pyramid_levels(300, 200, 336, 2)) == 1
    assert [lv.width for lv in pyramid_levels(2000, 100, 256, 3)] == [2000, 667, 223]
    with pytest.raises(InputError):
        pyramid_levels(100, 100, 336, 1)


def test_tiles_and_native_windows_known_answer():
    level = pyramid_levels(1000, 700, 336, 2)[1]  # 500 x 350 at downsample 2
    t = level.tile(1, 1)
    assert t.window == Window(336, 336, 164, 14)
    assert t.native == Window(672, 672, 328, 28)
    assert len(level) == 4 and next(level.tiles()).native == Window(0, 0, 672, 672)
    odd = pyramid_levels(1001, 701, 336, 2)[1]  # 501 x 351: last level pixel is half outside
    assert odd.tile(1, 1).native == Window(672, 672, 329, 29)
    with pytest.raises(IndexError):
        level.tile(2, 0)


def test_children_and_parent_known_answer(make_tif, rng):
    path = make_tif("p.tif", rng.integers(0, 255, (3, 700, 1000), dtype=np.uint8))
    with ImagePyramid(path, tile_size=336, factor=2) as pyr:
        assert len(pyr) == 3 and pyr.coarsest.grid == (1, 1)
        kids = pyr.children(2, 0, 0)
        assert [(k.level, k.row, k.col) for k in kids] == [(1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
        assert [(k.row, k.col) for k in pyr.children(1, 1, 1)] == [(2, 2)]
        assert [(k.row, k.col) for k in pyr.children(1, 0, 1)] == [(0, 2), (1, 2)]
        assert pyr.children(0, 1, 1) == []
        assert pyr.parent(0, 2, 2).level == 1 and (pyr.parent(0, 2, 2).row, pyr.parent(0, 2, 2).col) == (1, 1)
        assert pyr.parent(2, 0, 0) is None
        # children exactly tile the parent's native window
        for level in (1, 2):
            for parent in pyr.level(level).tiles():
                area = sum(k.native.width * k.native.height for k in pyr.children(level, parent.row, parent.col))
                assert area == parent.native.width * parent.native.height
    assert pyr.source.closed


def test_read_tile_level0_equals_window_and_coarse_levels_average(make_tif, rng):
    data = rng.integers(0, 255, (3, 700, 1000), dtype=np.uint8)
    path = make_tif("p.tif", data)
    with RasterSource(path) as src:
        pyr = ImagePyramid(src, tile_size=336)
        img, valid = pyr.read_tile(0, 1, 2)
        np.testing.assert_array_equal(img, data[:, 336:672, 672:1000].transpose(1, 2, 0))
        assert valid.all()
        img, valid = pyr.read_tile(1, 0, 0)
        assert img.shape == (336, 336, 3)
        expected = data[:, :672, :672].reshape(3, 336, 2, 336, 2).mean(axis=(2, 4)).transpose(1, 2, 0)
        assert np.abs(img.astype(float) - expected).max() <= 1.0
        top, _ = pyr.read_tile(2, 0, 0, pad=True)
        assert top.shape == (336, 336, 3) and (top[175:] == 0).all()
        raw = pyr.read_tile_raw(2, 0, 0, bands=[2])
        assert raw.shape == (1, 175, 250)
        pyr.close()
        assert not src.closed  # a pyramid never closes a source it did not open


def test_pyramid_reads_of_huge_image_stay_small(huge_sparse_tif):
    tracemalloc.start()
    try:
        with ImagePyramid(huge_sparse_tif, tile_size=336, resampling="nearest") as pyr:
            assert len(pyr) == 8
            top, _ = pyr.read_tile(7, 0, 0)
            kids = pyr.children(7, 0, 0)
            child, _ = pyr.read_tile(kids[-1].level, kids[-1].row, kids[-1].col)
            _, deep_valid = pyr.read_tile(0, 45, 45)  # native 15120..15456 holds data
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert top.shape == (235, 235, 3) and child.shape == (133, 133, 3)
    assert deep_valid[240:, 240:].all() and not deep_valid[:240, :240].any()
    assert peak < 40 * 2**20

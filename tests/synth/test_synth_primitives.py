"""SynthRS building blocks: seeds, noise, rasterisation, clipping, RLE, terrain windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from rsvl.geometry import masks
from rsvl.synth.noise import fbm_grid, fbm_points, value_noise_grid, value_noise_points
from rsvl.synth.palette import Ground
from rsvl.synth.raster import clip_polygon, rasterize, rle_from_local
from rsvl.synth.rng import derive_seed, hash_unit, rng_for
from rsvl.synth.terrain import GroundPlan, Region, stall_slots


def test_derive_seed_is_stable_and_key_sensitive():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed("a", 2) != derive_seed("a", 3)
    assert 0 <= derive_seed(123, "x") < 2**63
    a = rng_for(5, "layout").random(4)
    b = rng_for(5, "layout").random(4)
    assert np.array_equal(a, b)


def test_hash_unit_range_and_independence():
    xs = np.arange(-500, 500)
    h = hash_unit(7, xs, 3)
    assert h.dtype == np.float32 and h.min() >= 0 and h.max() < 1
    assert 0.45 < h.mean() < 0.55
    assert not np.array_equal(h, hash_unit(8, xs, 3))
    assert abs(np.corrcoef(h[:-1], h[1:])[0, 1]) < 0.1


def test_noise_grid_equals_points_and_windows_agree():
    grid = value_noise_grid(3, 10, -7, 90, 60, 13.7)
    xs, ys = np.meshgrid(np.arange(10, 100) + 0.5, np.arange(-7, 53) + 0.5)
    assert np.array_equal(grid, value_noise_points(3, xs, ys, 13.7))
    whole = fbm_grid(9, 0, 0, 128, 128, (40, 9))
    part = fbm_grid(9, 50, 70, 40, 30, (40, 9))
    assert np.array_equal(whole[70:100, 50:90], part)
    assert np.array_equal(part, fbm_points(9, *np.meshgrid(np.arange(50, 90) + 0.5, np.arange(70, 100) + 0.5), (40, 9)))
    assert whole.min() >= -1.0 and whole.max() <= 1.0


def _centre_rule(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    """Reference fill: pixel centres inside by the even-odd ray test, one pixel at a time."""
    out = np.zeros((h, w), bool)
    n = len(poly)
    for r in range(h):
        for c in range(w):
            x, y = c + 0.5, r + 0.5
            inside = False
            for i in range(n):
                (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % n]
                if (y1 <= y) != (y2 <= y) and x > x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                    inside = not inside
            out[r, c] = inside
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 27), st.floats(-3, 21)), min_size=3, max_size=7))
def test_rasterize_matches_pixel_centre_rule(points):
    poly = np.array(points, np.float64)
    assert np.array_equal(rasterize([poly], 0, 0, 24, 18), _centre_rule(poly, 24, 18))


def test_rasterize_square_window_independence_and_coverage():
    sq = np.array([[10.2, 10.2], [20.7, 10.2], [20.7, 15.9], [10.2, 15.9]])
    m = rasterize([sq], 0, 0, 32, 32)
    ys, xs = np.nonzero(m)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 20, 10, 15)
    assert np.array_equal(m[5:25, 12:22], rasterize([sq], 12, 5, 10, 20))
    cov = rasterize([sq], 0, 0, 32, 32, supersample=4)
    assert cov.dtype == np.float32 and abs(cov.sum() - 10.5 * 5.7) < 1.5
    # union of two overlapping polygons is not cancelled by the even-odd rule
    other = sq + np.array([3.0, 2.0])
    union = rasterize([sq, other], 0, 0, 32, 32)
    assert np.array_equal(union, m | rasterize([other], 0, 0, 32, 32))


def test_supersampled_coverage_approximates_the_polygon_area():
    rng = np.random.default_rng(0)
    for _ in range(5):
        t = np.sort(rng.uniform(0, 2 * math.pi, 7))
        poly = np.stack([20 + 12 * np.cos(t), 18 + 9 * np.sin(t)], 1)
        exact = Polygon(poly).area
        cov = rasterize([poly], 0, 0, 40, 36, supersample=8)
        assert cov.sum() == pytest.approx(exact, rel=0.03)


def test_clip_polygon_against_rectangle():
    tri = np.array([[-10.0, 5.0], [10.0, -5.0], [10.0, 15.0]])
    clipped = clip_polygon(tri, 0, 0, 20, 20)
    assert clipped[:, 0].min() >= 0 and clipped[:, 1].min() >= 0
    expected = Polygon(tri).intersection(box(0, 0, 20, 20)).area
    assert Polygon(clipped).area == pytest.approx(expected)
    concave = np.array([[0.0, 0.0], [30.0, 0.0], [30.0, 30.0], [20.0, 30.0], [20.0, 10.0], [0.0, 10.0]])
    part = clip_polygon(concave, 5, -5, 25, 25)
    assert Polygon(part).area == pytest.approx(Polygon(concave).intersection(box(5, -5, 25, 25)).area)
    assert len(clip_polygon(tri, 50, 50, 60, 60)) == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 30), st.integers(0, 20), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_rle_from_local_equals_full_encode(x0, y0, w, h, seed):
    H, W = 40, 50
    mask = np.random.default_rng(seed).random((h, w)) < 0.4
    w, h = min(w, W - x0), min(h, H - y0)
    mask = mask[:h, :w]
    full = np.zeros((H, W), bool)
    full[y0 : y0 + h, x0 : x0 + w] = mask
    assert rle_from_local(mask, x0, y0, H, W) == masks.encode(full)


def test_rle_from_local_refuses_a_window_outside_the_image():
    with pytest.raises(ValueError):
        rle_from_local(np.ones((3, 3), bool), 48, 0, 40, 50)


def test_ground_plan_windows_and_points_agree():
    plan = GroundPlan(
        Ground.GRASS,
        [
            Region(Ground.FIELD_GREEN, "rect", (100, 100, 400, 400, 0.3), pattern="parcels",
                   pattern_params=(60, 40, Ground.FIELD_GREEN, Ground.FIELD_BROWN), seed=5),
            Region(Ground.WATER, "band", (0, 120, 0.2, 40, 10, 200, 0.5), edge_noise=4, seed=7),
            Region(Ground.ASPHALT, "band", (90, 0, 1.3, 14), pattern="road", pattern_params=(1.2, 8, 8, 1), seed=2),
            Region(Ground.PAVEMENT, "rect", (160, 60, 80, 50, 0.1), pattern="stalls", pattern_params=(7, 15, 12, 1)),
            Region(Ground.FOREST, "disk", (50, 180, 30), edge_noise=6, seed=11, clip=(0, 0, 70, 256)),
        ],
        seed=42,
    )  # fmt: skip
    whole = plan.render(0, 0, 200, 200)
    assert np.array_equal(whole[37:137, 61:161], plan.render(61, 37, 100, 100))
    ids = plan.ground_grid(0, 0, 200, 200)[0]
    ys, xs = np.nonzero(np.ones((200, 200), bool))
    pts = plan.ground_at(xs + 0.5, ys + 0.5).reshape(200, 200)
    assert (pts == ids).mean() > 0.999  # float32 grid vs float64 points may differ on exact boundaries
    assert {Ground.WATER, Ground.ASPHALT, Ground.PAVEMENT, Ground.FOREST} <= set(np.unique(ids).tolist())
    # the forest disk is clipped at x = 70
    assert not (ids[:, 71:] == Ground.FOREST).any()
    cover = plan.cover(0, 0, 200, 200)
    assert sum(cover.values()) == pytest.approx(1.0)


def test_stall_slots_lie_inside_the_lot():
    lot = Region(Ground.PAVEMENT, "rect", (100, 80, 120, 70, 0.4), pattern="stalls", pattern_params=(7.5, 16, 14, 1))
    slots = stall_slots(lot)
    assert len(slots) == 16 * 3  # rows of 16 stalls: two back to back, an aisle, a third row
    d = lot.local(slots[:, 0], slots[:, 1])[2]
    assert (d < 0).all()
    assert np.allclose(slots[:, 2], 0.4 + math.pi / 2)

"""Box converters: round trips, conventions, and agreement with DOTA_devkit and shapely."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rsvl.errors import GeometryError
from rsvl.geometry import (
    HBoxes,
    OBoxes,
    best_begin_poly,
    cxcywh_to_xyxy,
    hbb_area,
    hbb_to_obb,
    hbb_to_poly,
    min_area_rect,
    normalize_le90,
    obb_area,
    obb_to_hbb,
    obb_to_poly,
    poly_area,
    poly_to_hbb,
    poly_to_obb,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

finite = st.floats(-1e4, 1e4, allow_nan=False)


def _obbs(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack(
        [
            rng.uniform(-500, 500, n),
            rng.uniform(-500, 500, n),
            rng.uniform(1, 300, n),
            rng.uniform(1, 300, n),
            rng.uniform(-4, 4, n),
        ],
        1,
    )


@given(arrays(np.float64, (7, 4), elements=finite))
def test_hbb_layout_round_trips(b):
    np.testing.assert_allclose(xywh_to_xyxy(xyxy_to_xywh(b)), b, atol=1e-9)
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, atol=1e-9)


def test_hbb_known_values_and_torch_dispatch():
    b = np.array([[10.0, 20.0, 40.0, 30.0]])
    assert xyxy_to_xywh(b).tolist() == [[10, 20, 30, 10]]
    assert xyxy_to_cxcywh(b).tolist() == [[25, 25, 30, 10]]
    assert hbb_to_poly(b).tolist() == [[10, 20, 40, 20, 40, 30, 10, 30]]
    assert hbb_area(b).tolist() == [300]
    t = xyxy_to_cxcywh(torch.tensor(b, dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.tolist() == [[25, 25, 30, 10]]
    # batched leading dims
    assert xyxy_to_xywh(np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_le90_convention():
    rng = np.random.default_rng(0)
    raw = _obbs(rng, 1000)
    le = normalize_le90(raw)
    assert np.all(le[:, 2] >= le[:, 3])
    assert np.all(le[:, 4] >= -math.pi / 2) and np.all(le[:, 4] < math.pi / 2)
    # same rectangle: corner sets coincide up to order
    np.testing.assert_allclose(np.sort(obb_to_poly(raw), 1), np.sort(obb_to_poly(le), 1), atol=1e-8)
    # a tall axis-aligned box becomes (long side, short side, -pi/2)
    np.testing.assert_allclose(hbb_to_obb(np.array([[0.0, 0.0, 2.0, 10.0]])), [[1, 5, 10, 2, -math.pi / 2]])


def test_obb_poly_round_trip_numpy_and_torch():
    rng = np.random.default_rng(1)
    b = normalize_le90(_obbs(rng, 500))
    p = obb_to_poly(b)
    back = poly_to_obb(p)
    np.testing.assert_allclose(back[:, :4], b[:, :4], atol=1e-7)
    # angles agree modulo pi (squares could legitimately differ by pi/2: our boxes are not square)
    d = (back[:, 4] - b[:, 4] + math.pi / 2) % math.pi - math.pi / 2
    assert np.abs(d).max() < 1e-7
    tp = obb_to_poly(torch.from_numpy(b))
    assert isinstance(tp, torch.Tensor)
    np.testing.assert_allclose(tp.numpy(), p, atol=1e-9)
    np.testing.assert_allclose(poly_to_obb(tp).numpy(), back, atol=1e-9)


def test_polygons_are_clockwise_on_screen_with_area_wh():
    rng = np.random.default_rng(2)
    b = _obbs(rng, 200)
    p = obb_to_poly(b)
    np.testing.assert_allclose(poly_area(p), obb_area(b), rtol=1e-9)


def _dota_get_best_begin_point_single(coordinate):
    """Direct port of DOTA_devkit's ``get_best_begin_point_single`` (the reference)."""
    x1, y1, x2, y2, x3, y3, x4, y4 = coordinate
    xmin, ymin = min(x1, x2, x3, x4), min(y1, y2, y3, y4)
    xmax, ymax = max(x1, x2, x3, x4), max(y1, y2, y3, y4)
    combinate = [
        [[x1, y1], [x2, y2], [x3, y3], [x4, y4]],
        [[x2, y2], [x3, y3], [x4, y4], [x1, y1]],
        [[x3, y3], [x4, y4], [x1, y1], [x2, y2]],
        [[x4, y4], [x1, y1], [x2, y2], [x3, y3]],
    ]
    dst = [[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]]
    force, flag = 100000000.0, 0
    for i in range(4):
        temp = sum(math.hypot(combinate[i][k][0] - dst[k][0], combinate[i][k][1] - dst[k][1]) for k in range(4))
        if temp < force:
            force, flag = temp, i
    return [v for pt in combinate[flag] for v in pt]


def test_best_begin_point_equals_dota_devkit():
    rng = np.random.default_rng(3)
    polys = rng.uniform(0, 100, (300, 8))
    ours = best_begin_poly(polys)
    ref = np.array([_dota_get_best_begin_point_single(p) for p in polys])
    np.testing.assert_allclose(ours, ref)


def test_min_area_rect_matches_shapely_minimum_rotated_rectangle():
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 50, (200, 6, 2))
    ours = min_area_rect(pts)
    ref = shapely.area(shapely.minimum_rotated_rectangle(shapely.multipoints(pts)))
    np.testing.assert_allclose(obb_area(ours), ref, rtol=1e-9, atol=1e-9)
    # and the rectangle contains every point
    for b, p in zip(ours[:20], pts[:20], strict=True):
        rect = shapely.polygons(obb_to_poly(b).reshape(4, 2))
        assert shapely.contains(shapely.buffer(rect, 1e-7), shapely.multipoints(p))


def test_obb_to_hbb_encloses_the_corners():
    b = np.array([[0.0, 0.0, 4.0, 2.0, math.pi / 2 - 1e-12]])
    np.testing.assert_allclose(obb_to_hbb(b), [[-1, -2, 1, 2]], atol=1e-9)
    np.testing.assert_allclose(poly_to_hbb(np.array([[3, 1, 5, 2, 4, 9, 0, 4.0]])), [[0, 1, 5, 9]])


def test_containers_validate_and_convert():
    h = HBoxes([[0, 0, 4, 2], [1, 1, 3, 5]])
    assert len(h) == 2 and h.area().tolist() == [8, 8]
    o = h.to_obb()
    assert isinstance(o, OBoxes) and np.all(o.le90[:, 2] >= o.le90[:, 3])
    np.testing.assert_allclose(o.to_hbb().xyxy, h.xyxy, atol=1e-12)
    assert len(h[1:]) == 1 and len(HBoxes([])) == 0
    with pytest.raises(GeometryError, match=r"\(N, 4\)"):
        HBoxes([[0, 0, 1]])
    with pytest.raises(GeometryError, match="NaN"):
        OBoxes([[0, 0, 1, 1, float("nan")]])
    with pytest.raises(GeometryError, match="polygon"):
        poly_to_obb(np.zeros((3, 6)))


@settings(max_examples=50)
@given(arrays(np.float64, (5,), elements=st.floats(-100, 100)), st.floats(0.5, 60), st.floats(0.5, 60))
def test_poly_to_obb_inverts_obb_to_poly_property(centre_angle, w, h):
    b = np.array([[centre_angle[0], centre_angle[1], w, h, centre_angle[2] / 10]])
    b = normalize_le90(b)
    back = poly_to_obb(obb_to_poly(b))
    np.testing.assert_allclose(obb_to_poly(back), obb_to_poly(b), atol=1e-6)


def test_empty_batches_keep_their_shapes():
    assert poly_area(np.zeros((0, 8))).shape == (0,)
    assert poly_to_hbb(np.zeros((0, 8))).shape == (0, 4)
    assert obb_to_poly(np.zeros((0, 5))).shape == (0, 8)
    assert poly_to_obb(np.zeros((0, 8))).shape == (0, 5)
    assert obb_to_hbb(torch.zeros(0, 5)).shape == (0, 4)

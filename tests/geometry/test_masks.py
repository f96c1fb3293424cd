"""COCO mask encodings through rsvl.geometry.masks, checked against pycocotools itself."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from rsvl.errors import GeometryError
from rsvl.geometry import masks


def test_encode_decode_round_trip_and_equals_pycocotools() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = masks.encode(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
    ref = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    assert rle["counts"].encode() == ref["counts"]
    np.testing.assert_array_equal(masks.decode(rle, 37, 53), m)
    assert masks.area(rle, 37, 53) == int(m.sum())


def test_polygon_and_uncompressed_rle() -> None:
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]
    m = masks.decode(poly, 20, 20)
    assert m[3:8, 3:12].all() and not m[10:, :].any()
    assert masks.to_bbox(poly, 20, 20) == pytest.approx((2, 2, 13, 9), abs=1)
    uncompressed = {"size": [2, 3], "counts": [1, 2, 3]}
    # column-major runs: 1 background, 2 foreground, 3 background
    expected = np.array([[0, 1, 0], [1, 0, 0]], bool)
    np.testing.assert_array_equal(masks.decode(uncompressed, 2, 3), expected)


@pytest.mark.parametrize(
    "bad",
    [
        [[1.0, 2.0, 3.0]],  # fewer than 3 points
        {"size": [2, 3], "counts": [1, 2]},  # counts do not cover the mask
        {"size": ["a", 3], "counts": "x"},
        {"counts": "abc"},
        "not a mask",
    ],
)
def test_malformed_segmentations_raise_geometry_error(bad: object) -> None:
    with pytest.raises(GeometryError):
        masks.decode(bad, 2, 3)


def test_size_mismatch_and_iou() -> None:
    rle = masks.encode(np.ones((4, 4), bool))
    with pytest.raises(GeometryError, match="does not match"):
        masks.decode(rle, 5, 4)
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert masks.iou(a, b) == pytest.approx(4 / 12)
    assert masks.iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0

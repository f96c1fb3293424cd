"""Cropping annotations to tiles, and the split -> merge round trip it enables."""

from __future__ import annotations

import numpy as np

from rsvl.geometry import box_iou
from rsvl.io import Detections, MergeConfig, TileSpec, Window, iter_windows, merge_detections
from rsvl.io.cropping import crop_to_window


def test_crop_keeps_visible_boxes_in_tile_coordinates():
    dets = Detections([[10, 10, 30, 30], [90, 10, 130, 30], [200, 200, 210, 210]], [1, 1, 1], [0, 1, 2])
    tile = crop_to_window(dets, Window(0, 0, 100, 100), min_visible=0.2)
    assert tile.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(tile.boxes, [[10, 10, 30, 30], [90, 10, 100, 30]])
    shifted = crop_to_window(dets, Window(50, 0, 100, 100), min_visible=0.9, scale_scores=True)
    np.testing.assert_array_equal(shifted.boxes, [[40, 10, 80, 30]])
    assert shifted.scores.tolist() == [1.0]
    partial = crop_to_window(dets, Window(0, 0, 100, 100), min_visible=0.2, scale_scores=True)
    assert partial.scores.tolist() == [1.0, 0.25]


def test_split_then_merge_recovers_every_box():
    rng = np.random.default_rng(0)
    # one box per 50 px grid cell, up to 40 px, so no two truth boxes overlap
    gx, gy = np.meshgrid(np.arange(10) * 50.0, np.arange(8) * 50.0)
    xy = np.stack([gx.ravel(), gy.ravel()], 1) + rng.uniform(0, 8, (80, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (80, 2))], 1)
    truth = Detections(boxes, np.ones(80), np.zeros(80, int))
    parts = [
        crop_to_window(truth, w, min_visible=0.3, scale_scores=True).translate(w.col_off, w.row_off)
        for w in iter_windows(500, 500, TileSpec(128, 48))
    ]
    merged = merge_detections(Detections.concat(parts, kind="hbb"), MergeConfig("nms", 0.5, "ios"))
    iou = box_iou(merged.boxes, truth.boxes)
    # tile overlap (48) exceeds every box, so each box has a whole copy that beats its cut-off copies
    assert len(merged) == 80
    assert (iou.max(axis=0) > 0.999).all()

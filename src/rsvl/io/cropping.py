"""Crop image-level HBB annotations to a tile window (the inverse of merging tile detections).

Dataset tilers (DOTA's ``split``, SAHI's ``slice_coco``) keep an object in a tile when enough of it
is visible there, clipped to the tile. Together with :func:`rsvl.io.merge.merge_detections` this
gives a lossless split -> merge round trip when the tile overlap exceeds the largest object.
"""

from __future__ import annotations

import numpy as np

from rsvl.io.detections import Detections
from rsvl.io.tiling import Window


def crop_to_window(
    dets: Detections, window: Window, min_visible: float = 0.5, scale_scores: bool = False
) -> Detections:
    """HBB detections of the whole image -> those visible in ``window``, in tile coordinates.

    Args:
        dets: HBB detections in image pixels.
        window: the tile.
        min_visible: keep a box when at least this fraction of its area lies inside the tile
            (a box of zero area is kept when its point lies inside).
        scale_scores: multiply each kept score by the visible fraction of its box, so a cut-off
            copy ranks below the whole object (what a detector's confidence does near tile edges).
    """
    if dets.kind != "hbb":
        raise ValueError("crop_to_window handles HBB detections; convert OBBs to polygons first")
    x0, y0 = window.col_off, window.row_off
    x1, y1 = x0 + window.width, y0 + window.height
    b = dets.boxes
    clipped = np.stack(
        [np.clip(b[:, 0], x0, x1), np.clip(b[:, 1], y0, y1), np.clip(b[:, 2], x0, x1), np.clip(b[:, 3], y0, y1)], 1
    )
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    inside_point = (b[:, 0] >= x0) & (b[:, 0] <= x1) & (b[:, 1] >= y0) & (b[:, 1] <= y1)
    keep = np.where(area > 0, visible >= min_visible * area, inside_point)
    kept = dets.select(np.flatnonzero(keep))
    scores = kept.scores
    if scale_scores:
        fraction = np.where(area > 0, visible / np.where(area > 0, area, 1.0), 1.0)
        scores = scores * fraction[keep]
    return Detections(clipped[keep], scores, kept.labels, kept.names).translate(-x0, -y0)

"""Boxes, rotated IoU/NMS and box <-> text codecs (see :mod:`rsvl.geometry.boxes` for conventions)."""

# ruff: noqa: RUF022

from rsvl.geometry.boxes import (
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
    obb_corners,
    obb_to_hbb,
    obb_to_poly,
    poly_area,
    poly_to_hbb,
    poly_to_obb,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from rsvl.geometry.codecs import CODECS, BoxCodec, TextObject, get_codec
from rsvl.geometry.horizontal import batched_nms, box_iou, nms
from rsvl.geometry.rotated import (
    batched_rotated_nms,
    convex_poly_intersection_area,
    rotated_iou,
    rotated_nms,
)

__all__ = [
    "CODECS",
    "BoxCodec",
    "TextObject",
    "get_codec",
    "HBoxes",
    "OBoxes",
    "batched_nms",
    "batched_rotated_nms",
    "best_begin_poly",
    "box_iou",
    "convex_poly_intersection_area",
    "cxcywh_to_xyxy",
    "hbb_area",
    "hbb_to_obb",
    "hbb_to_poly",
    "min_area_rect",
    "nms",
    "normalize_le90",
    "obb_area",
    "obb_corners",
    "obb_to_hbb",
    "obb_to_poly",
    "poly_area",
    "poly_to_hbb",
    "poly_to_obb",
    "rotated_iou",
    "rotated_nms",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]

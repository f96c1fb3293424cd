"""Horizontal-box IoU and NMS: torchvision's kernels, accepting numpy as well as torch."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import ops

from rsvl.errors import GeometryError
from rsvl.geometry.boxes import Array


def _tensor(x: Array, width: int | None, what: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if width is not None:
        if t.ndim == 1 and t.numel() == 0:
            t = t.reshape(0, width)
        if t.ndim != 2 or t.shape[1] != width:
            raise GeometryError(f"{what} must have shape (N, {width}); got {tuple(t.shape)}")
    return t


def box_iou(a: Array, b: Array) -> Array:
    """(N, M) IoU of ``xyxy`` boxes (torchvision ``box_iou``); numpy in -> numpy out."""
    ta = _tensor(a, 4, "a").to(torch.float64)
    tb = _tensor(b, 4, "b").to(torch.float64)
    out = ops.box_iou(ta, tb).nan_to_num(0.0)
    if isinstance(a, torch.Tensor):
        return out.to(a.dtype if a.is_floating_point() else torch.float64)
    return out.numpy()


def nms(boxes: Array, scores: Array, iou_threshold: float) -> Array:
    """Greedy NMS of ``xyxy`` boxes: kept indices, highest score first (torchvision ``nms``)."""
    tb = _tensor(boxes, 4, "boxes").to(torch.float64)
    ts = _tensor(scores, None, "scores").to(torch.float64).reshape(-1)
    if ts.shape[0] != tb.shape[0]:
        raise GeometryError(f"{tb.shape[0]} boxes but {ts.shape[0]} scores")
    kept = ops.nms(tb, ts, float(iou_threshold))
    return kept if isinstance(boxes, torch.Tensor) else kept.numpy()


def batched_nms(boxes: Array, scores: Array, idxs: Array, iou_threshold: float) -> Array:
    """Per-category NMS of ``xyxy`` boxes (torchvision ``batched_nms``)."""
    tb = _tensor(boxes, 4, "boxes").to(torch.float64)
    ts = _tensor(scores, None, "scores").to(torch.float64).reshape(-1)
    ti = _tensor(idxs, None, "idxs").to(torch.int64).reshape(-1)
    if not (ts.shape[0] == ti.shape[0] == tb.shape[0]):
        raise GeometryError(f"{tb.shape[0]} boxes, {ts.shape[0]} scores, {ti.shape[0]} category ids")
    kept = ops.batched_nms(tb, ts, ti, float(iou_threshold))
    return kept if isinstance(boxes, torch.Tensor) else kept.numpy()

"""Rotated (le90) FCOS: an anchor-free oriented-box detector on the shared P3-P7 pyramid.

It sits beside torchvision's horizontal :class:`~torchvision.models.detection.FCOS` and follows
mmrotate's rotated FCOS (le90): per pyramid location the head predicts class logits, four distances
``(l, t, r, b)`` to the box sides measured in the box's own (rotated) frame, an angle and a
centre-ness logit. Pieces reused from torchvision: :class:`FCOSClassificationHead`, the conv tower
and output convs of :class:`FCOSRegressionHead`, :class:`GeneralizedRCNNTransform` (normalisation and
padding only, never resizing), :func:`~torchvision.ops.sigmoid_focal_loss` and
:func:`~torchvision.ops.generalized_box_iou_loss`. Rotated NMS and le90 normalisation come from
:mod:`rsvl.geometry`.

Geometry (image pixels, y down, le90 boxes ``(cx, cy, w, h, theta)``): a point ``p`` relative to a box
has frame coordinates ``u = R(-theta) (p - c)``; its distances are ``l = w/2 + u_x``, ``r = w/2 - u_x``,
``t = h/2 + u_y``, ``b = h/2 - u_y``. Decoding inverts this: ``c = p + R(theta) ((r - l)/2, (b - t)/2)``,
``w = l + r``, ``h = t + b``, then :func:`~rsvl.geometry.normalize_le90`.

Assignment (as mmrotate): a point is positive for a GT when it lies strictly inside the rotated box,
within ``center_sampling_radius * stride`` of its centre along both box axes (rotated frame), and
``max(l, t, r, b)`` is inside its level's regress range; a point claimed by several GTs takes the one
of smallest area.

Regression loss (key ``"bbox_regression"``) = GIoU loss of the distances (both boxes drawn in the same
frame around the point, i.e. the rotated IoU for equal angles) + ``angle_loss_weight`` x smooth-L1 on
the angle. The core's :func:`~rsvl.geometry.rotated_iou` is exact but detached (float64, no autograd),
so it is not used as a loss. The angle term respects the box's symmetry: ``(d, theta)`` and
``(roll(d, -k), theta + k*pi/2)`` describe the same rectangle for any integer ``k`` (a quarter turn
of the frame swaps which side is "left"), which contains le90's period ``pi`` (``k = 2``). Each positive is
compared with the description whose angle is nearest the prediction, so the angle error is the
difference wrapped to ``[-pi/4, pi/4)`` and the distance targets are rolled consistently: no penalty
at the le90 boundary ``+-pi/2``, nor for near-square boxes whose long side flips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSRegressionHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from rsvl.errors import GeometryError, InputError
from rsvl.geometry import batched_rotated_nms, normalize_le90

__all__ = [
    "LevelPoints",
    "RotatedFCOS",
    "RotatedFCOSHead",
    "assign_points",
    "distances_to_obb",
    "level_points",
    "nearest_equivalent",
    "obb_to_distances",
]

_QUARTER = math.pi / 2
#: Point x GT pairs evaluated at once during assignment (bounds memory on crowded DOTA crops).
_ASSIGN_PAIRS = 4_000_000


# --------------------------------------------------------------------------- geometry of points


class LevelPoints(NamedTuple):
    """Location centres of all pyramid levels, flattened level by level, row-major inside a level.

    ``points`` (P, 2) ``(x, y)`` pixels; ``strides`` (P,); ``ranges`` (P, 2) regress range (lo, hi);
    ``sizes`` the number of points of each level.
    """

    points: Tensor
    strides: Tensor
    ranges: Tensor
    sizes: list[int]


def level_points(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[float],
    regress_ranges: Sequence[tuple[float, float]],
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> LevelPoints:
    """Centres ``((j + 0.5) * s, (i + 0.5) * s)`` of every cell of maps of the given ``(H, W)`` sizes.

    The half-cell offset puts each point at the centre of the image block it sees (pixel-edge
    coordinates, as everywhere in rsvl), in the same order as the heads' flattened outputs.
    """
    pts, strd, rngs, sizes = [], [], [], []
    for (h, w), s, (lo, hi) in zip(feature_sizes, strides, regress_ranges, strict=True):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
        strd.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
        rngs.append(torch.tensor([[float(lo), float(hi)]], device=device, dtype=dtype).expand(h * w, 2))
        sizes.append(h * w)
    return LevelPoints(torch.cat(pts), torch.cat(strd), torch.cat(rngs), sizes)


def _frame_offsets(points: Tensor, boxes: Tensor) -> Tensor:
    """Offsets of ``points`` from the box centres in each box's frame, broadcasting ``(..., 2)`` / ``(..., 5)``."""
    dx = points[..., 0] - boxes[..., 0]
    dy = points[..., 1] - boxes[..., 1]
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    return torch.stack([dx * cos + dy * sin, -dx * sin + dy * cos], -1)


def _offsets_to_distances(offsets: Tensor, boxes: Tensor) -> Tensor:
    hw, hh = boxes[..., 2] / 2, boxes[..., 3] / 2
    u, v = offsets[..., 0], offsets[..., 1]
    return torch.stack([hw + u, hh + v, hw - u, hh - v], -1)


def obb_to_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """Distances ``(l, t, r, b)`` from ``points`` (K, 2) to the sides of ``boxes`` (K, 5), in each box's frame.

    Aligned (point k with box k); negative values mean the point lies outside that side.
    """
    return _offsets_to_distances(_frame_offsets(points, boxes), boxes)


def distances_to_obb(points: Tensor, distances: Tensor, angles: Tensor) -> Tensor:
    """Decode ``(l, t, r, b)`` (K, 4) measured in a frame turned by ``angles`` (K,) from ``points`` (K, 2).

    Returns le90 boxes (K, 5) (:func:`~rsvl.geometry.normalize_le90`), in the dtype of ``distances``.
    """
    left, top, right, bottom = distances.unbind(-1)
    u, v = (right - left) / 2, (bottom - top) / 2
    cos, sin = torch.cos(angles), torch.sin(angles)
    cx = points[..., 0] + u * cos - v * sin
    cy = points[..., 1] + u * sin + v * cos
    return normalize_le90(torch.stack([cx, cy, left + right, top + bottom, angles], -1))


def nearest_equivalent(distances: Tensor, angles: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """The description ``(roll(d, -k), angle + k*pi/2)`` of the same rectangles whose angle is nearest ``reference``.

    A quarter turn of the frame maps ``(l, t, r, b)`` to ``(t, r, b, l)``; every ``k`` decodes to the same
    box. Used by the loss so the angle error is wrapped (le90's period pi included) consistently with
    the distances. Shapes: distances (K, 4), angles and reference (K,).
    """
    k = torch.round((reference - angles) / _QUARTER)
    idx = (torch.arange(4, device=distances.device)[None, :] + k.to(torch.int64)[:, None]) % 4
    return torch.gather(distances, 1, idx), angles + k * _QUARTER


def assign_points(
    points: Tensor,
    strides: Tensor,
    ranges: Tensor,
    boxes: Tensor,
    center_sampling_radius: float,
) -> Tensor:
    """Index of the GT each point regresses (-1 for background), mmrotate's rotated FCOS rule.

    Args:
        points, strides, ranges: as in :class:`LevelPoints` (P, 2), (P,), (P, 2).
        boxes: (M, 5) le90 GT boxes.
        center_sampling_radius: in strides, along both axes of the GT's frame.

    Returns:
        (P,) int64. Among several qualifying GTs the smallest-area one wins (first on exact ties).
    """
    p, m = points.shape[0], boxes.shape[0]
    best_area = torch.full((p,), float("inf"), device=points.device, dtype=points.dtype)
    best_idx = torch.full((p,), -1, device=points.device, dtype=torch.int64)
    if m == 0:
        return best_idx
    areas = boxes[:, 2] * boxes[:, 3]
    radius = (center_sampling_radius * strides)[:, None]
    chunk = max(1, _ASSIGN_PAIRS // max(p, 1))
    for s in range(0, m, chunk):
        sub = boxes[s : s + chunk][None]  # (1, m', 5)
        off = _frame_offsets(points[:, None, :], sub)  # (P, m', 2)
        dist = _offsets_to_distances(off, sub)  # (P, m', 4)
        reach = dist.amax(-1)
        ok = (dist.amin(-1) > 0) & (off.abs().amax(-1) < radius)
        ok &= (reach >= ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
        cand = torch.where(ok, areas[None, s : s + chunk], float("inf"))
        val, arg = cand.min(1)
        better = val < best_area
        best_area = torch.where(better, val, best_area)
        best_idx = torch.where(better, arg + s, best_idx)
    return best_idx


def _centerness(distances: Tensor) -> Tensor:
    lr, tb = distances[:, [0, 2]], distances[:, [1, 3]]
    return torch.sqrt((lr.amin(-1) / lr.amax(-1)) * (tb.amin(-1) / tb.amax(-1)))


# --------------------------------------------------------------------------- head


class RotatedFCOSHead(nn.Module):
    """Classification tower (torchvision's) + regression tower giving distances, angle and centre-ness.

    Distances are ``relu(scale_level * x) * stride`` in pixels (one learnable scale per level, as FCOS);
    the angle is the raw output in radians; centre-ness is a logit on the regression tower.

    Args:
        in_channels: pyramid width (a multiple of 32: GroupNorm(32) in the towers).
        num_classes: object classes (no background class).
        strides: stride of each level, in the order the features come.
        num_convs: conv layers per tower.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[float], num_convs: int = 4) -> None:
        super().__init__()
        self.classification_head = FCOSClassificationHead(in_channels, 1, num_classes, num_convs)
        self.regression_head = FCOSRegressionHead(in_channels, 1, num_convs)
        self.bbox_angle = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        nn.init.normal_(self.bbox_angle.weight, std=0.01)
        nn.init.zeros_(self.bbox_angle.bias)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        self.register_buffer("strides", torch.tensor([float(s) for s in strides]), persistent=False)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        """Per-location outputs over all levels: cls_logits (N, P, C), bbox_regression (N, P, 4) pixels,
        bbox_angle (N, P), bbox_ctrness (N, P)."""
        reg = self.regression_head
        dists, angles, ctrs = [], [], []
        for level, feat in enumerate(features):
            tower = reg.conv(feat)
            d = functional.relu(self.scales[level] * reg.bbox_reg(tower)) * self.strides[level]
            dists.append(d.flatten(2).transpose(1, 2))
            angles.append(self.bbox_angle(tower).flatten(1))
            ctrs.append(reg.bbox_ctrness(tower).flatten(1))
        return {
            "cls_logits": self.classification_head(features),
            "bbox_regression": torch.cat(dists, 1),
            "bbox_angle": torch.cat(angles, 1),
            "bbox_ctrness": torch.cat(ctrs, 1),
        }


# --------------------------------------------------------------------------- detector


class RotatedFCOS(nn.Module):
    """le90 oriented-box FCOS on a backbone returning P3-P7 (see the module docstring for the design).

    Args:
        backbone: module mapping a normalised ``(N, 3, H, W)`` batch to the pyramid (OrderedDict or
            list, one map per ``fpn_strides`` entry), with an ``out_channels`` attribute. Kept as
            ``self.backbone`` (the VLM branch hooks it).
        num_classes: object classes; labels are ``0 .. num_classes - 1``.
        image_mean, image_std: normalisation of the 0..1 RGB input.
        size_divisible: the batch is zero-padded (bottom/right) to a multiple of this; never resized,
            so boxes stay in input pixels.
        fpn_strides, regress_ranges: per level.
        center_sampling_radius: in strides, measured in the GT's rotated frame.
        score_thresh, nms_thresh, detections_per_img, topk_candidates: post-processing, as torchvision
            (``topk_candidates`` per level; NMS is rotated, per class).

    ``forward(images, targets)``: training returns ``{"classification", "bbox_regression",
    "bbox_ctrness"}`` scalar losses; eval returns per image ``{"boxes": (K, 5) le90 float32,
    "scores": (K,), "labels": (K,) int64}``.
    """

    #: weight of the angle term inside "bbox_regression"; smooth-L1 width (radians).
    angle_loss_weight: float = 1.0
    angle_loss_beta: float = 0.1

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        size_divisible: int = 32,
        fpn_strides: Sequence[float] = (8, 16, 32, 64, 128),
        regress_ranges: Sequence[tuple[float, float]] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)),
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.1,
        detections_per_img: int = 300,
        topk_candidates: int = 1000,
        num_convs: int = 4,
    ) -> None:
        super().__init__()
        channels = getattr(backbone, "out_channels", None)
        if not isinstance(channels, int) or channels <= 0 or channels % 32:
            raise InputError(f"backbone needs an int out_channels that is a multiple of 32; got {channels!r}")
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1; got {num_classes}")
        if len(fpn_strides) != len(regress_ranges) or not fpn_strides:
            raise InputError(f"need one regress range per stride; got {len(fpn_strides)} and {len(regress_ranges)}")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise InputError("image_mean and image_std need 3 values (RGB)")
        self.backbone = backbone
        self.num_classes = num_classes
        self.fpn_strides = tuple(float(s) for s in fpn_strides)
        self.regress_ranges = tuple((float(lo), float(hi)) for lo, hi in regress_ranges)
        self.head = RotatedFCOSHead(channels, num_classes, self.fpn_strides, num_convs)
        # used only for normalise + pad (min/max size are unused: resize() is never called)
        self.transform = GeneralizedRCNNTransform(1, 1, list(image_mean), list(image_std), size_divisible)
        self.size_divisible = size_divisible
        self.center_sampling_radius = center_sampling_radius
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates

    # ----------------------------------------------------------------- inputs

    def _check_images(self, images: list[Tensor]) -> None:
        if not isinstance(images, (list, tuple)) or not images:
            raise InputError("images must be a non-empty list of (3, H, W) float tensors")
        for i, img in enumerate(images):
            if not isinstance(img, Tensor) or img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
                what = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
                raise InputError(f"image {i} must be a float (3, H, W) tensor in 0..1; got {what}")

    def _prepare_targets(self, targets: list[dict[str, Tensor]] | None, like: Tensor) -> list[dict]:
        """Validated copies on ``like``'s device: boxes (M, 5) le90-normalised in its dtype, labels (M,) int64."""
        n = like.shape[0]
        if targets is None or len(targets) != n:
            got = "none" if targets is None else len(targets)
            raise InputError(f"training needs one target dict per image ({n}); got {got}")
        out = []
        for i, t in enumerate(targets):
            boxes = torch.as_tensor(t.get("boxes", torch.zeros(0, 5))).to(device=like.device, dtype=like.dtype)
            labels = torch.as_tensor(t.get("labels", torch.zeros(0, dtype=torch.int64))).to(like.device)
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 5)
            if boxes.ndim != 2 or boxes.shape[1] != 5:
                raise GeometryError(f"target {i}: boxes must be (N, 5) le90; got {tuple(boxes.shape)}")
            if labels.ndim != 1 or labels.shape[0] != boxes.shape[0] or labels.is_floating_point():
                raise InputError(f"target {i}: labels must be (N,) integers matching {boxes.shape[0]} boxes")
            if not bool(torch.isfinite(boxes).all()) or bool((boxes[:, 2:4] <= 0).any()):
                raise GeometryError(f"target {i}: boxes must be finite with w, h > 0")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise InputError(f"target {i}: labels must lie in 0..{self.num_classes - 1}")
            out.append({"boxes": normalize_le90(boxes), "labels": labels.to(torch.int64)})
        return out

    def _features(self, batch: Tensor) -> list[Tensor]:
        feats = self.backbone(batch)
        if isinstance(feats, Tensor):
            feats = [feats]
        elif isinstance(feats, dict):
            feats = list(feats.values())
        feats = list(feats)
        if len(feats) != len(self.fpn_strides):
            raise InputError(f"backbone returned {len(feats)} maps but {len(self.fpn_strides)} fpn_strides are set")
        return feats

    # ----------------------------------------------------------------- forward

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in eval mode (see the class docstring)."""
        self._check_images(images)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch = self.transform.batch_images([self.transform.normalize(img) for img in images], self.size_divisible)
        feats = self._features(batch)
        outputs = self.head(feats)
        grid = level_points(
            [tuple(f.shape[-2:]) for f in feats], self.fpn_strides, self.regress_ranges, batch.device, batch.dtype
        )
        if self.training:
            return self.compute_loss(self._prepare_targets(targets, batch), outputs, grid)
        return self.postprocess_detections(outputs, grid, sizes)

    # ----------------------------------------------------------------- training

    def compute_loss(
        self, targets: list[dict[str, Tensor]], outputs: dict[str, Tensor], grid: LevelPoints
    ) -> dict[str, Tensor]:
        """Focal / (GIoU + angle) / centre-ness BCE losses, each summed over the batch and divided by
        the number of positive points (torchvision's normalisation)."""
        cls_logits = outputs["cls_logits"]
        labels, dist_t, angle_t, pos = [], [], [], []
        for t in targets:
            matched = assign_points(grid.points, grid.strides, grid.ranges, t["boxes"], self.center_sampling_radius)
            fg = matched >= 0
            gt = t["boxes"][matched[fg]]
            onehot = torch.zeros_like(cls_logits[0])
            onehot[fg, t["labels"][matched[fg]]] = 1.0
            labels.append(onehot)
            dist_t.append(obb_to_distances(grid.points[fg], gt))
            angle_t.append(gt[:, 4])
            pos.append(fg)
        fg = torch.stack(pos)
        num_fg = max(1, int(fg.sum()))
        loss_cls = sigmoid_focal_loss(cls_logits, torch.stack(labels), reduction="sum")

        pred_d, pred_a = outputs["bbox_regression"][fg], outputs["bbox_angle"][fg]
        tgt_d, tgt_a = nearest_equivalent(torch.cat(dist_t), torch.cat(angle_t), pred_a.detach())
        # both boxes drawn around the point in one frame: (-l, -t, r, b)
        sign = pred_d.new_tensor([-1.0, -1.0, 1.0, 1.0])
        loss_giou = generalized_box_iou_loss(pred_d * sign, tgt_d * sign, reduction="sum")
        loss_angle = functional.smooth_l1_loss(pred_a, tgt_a, beta=self.angle_loss_beta, reduction="sum")
        loss_ctr = functional.binary_cross_entropy_with_logits(
            outputs["bbox_ctrness"][fg], _centerness(tgt_d), reduction="sum"
        )
        return {
            "classification": loss_cls / num_fg,
            "bbox_regression": (loss_giou + self.angle_loss_weight * loss_angle) / num_fg,
            "bbox_ctrness": loss_ctr / num_fg,
        }

    # ----------------------------------------------------------------- inference

    def postprocess_detections(
        self, outputs: dict[str, Tensor], grid: LevelPoints, image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Score ``sqrt(sigmoid(cls) * sigmoid(ctr))``, threshold and top-k per level, decode to le90,
        then per-class rotated NMS (:func:`~rsvl.geometry.batched_rotated_nms`) and keep the best
        ``detections_per_img``. ``image_sizes`` only fixes the number of images (no clipping: a
        rotated box cannot be clipped to the image and stay a rectangle)."""
        results = []
        per_level = {k: v.split(grid.sizes, dim=1) for k, v in outputs.items()}
        pts = grid.points.split(grid.sizes)
        for i in range(len(image_sizes)):
            boxes, scores, labels = [], [], []
            for lvl in range(len(grid.sizes)):
                logits = per_level["cls_logits"][lvl][i]
                s = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(per_level["bbox_ctrness"][lvl][i])[:, None])
                s = s.flatten()
                idx = torch.nonzero(s > self.score_thresh).flatten()
                s, order = s[idx].topk(min(self.topk_candidates, idx.numel()))
                idx = idx[order]
                loc, cls = idx // self.num_classes, idx % self.num_classes
                dec = distances_to_obb(
                    pts[lvl][loc], per_level["bbox_regression"][lvl][i][loc], per_level["bbox_angle"][lvl][i][loc]
                )
                good = torch.isfinite(dec).all(1) & (dec[:, 3] > 0)
                boxes.append(dec[good])
                scores.append(s[good])
                labels.append(cls[good])
            b, s, c = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = torch.as_tensor(batched_rotated_nms(b, s, c, self.nms_thresh), device=b.device)
            keep = keep[: self.detections_per_img]
            results.append({"boxes": b[keep].float(), "scores": s[keep], "labels": c[keep].to(torch.int64)})
        return results

"""The deployed detectors: torchvision FCOS (HBB) and rsvl's rotated FCOS (le90 OBB) on one FPN.

Both take ``list[(3, H, W)]`` float images in 0..1 and targets in the same pixels, and return
torchvision-style loss dicts (training) or ``{"boxes", "scores", "labels"}`` per image (eval).
Neither resizes its input: small objects stay at their native size, tiles of a huge image are fed
as they are, and boxes come back in the input's pixels. Both expose ``.backbone`` (backbone + FPN,
five maps P3-P7), which is what the VLM branch reads during collaborative training.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from rsvl.errors import InputError
from rsvl.methods.vlm4rsdet.config import DetectorConfig
from rsvl.models.fpn import FPN_STRIDES, build_fpn_backbone

__all__ = ["NativeSizeTransform", "build_detector", "detector_kind"]


class NativeSizeTransform(GeneralizedRCNNTransform):
    """torchvision's normalise-and-batch transform without the resize (boxes stay in input pixels)."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, Any]:
        return image, target


def build_detector(cfg: DetectorConfig, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """The detector a recipe describes, with ``num_classes`` classes (labels ``0 .. num_classes-1``).

    Args:
        cfg: the recipe's ``detector`` section.
        num_classes: number of object classes (no background class).
        pretrained: load the backbone weights the recipe names (False: random, for loading a
            checkpoint over it without reading the ImageNet file).
    """
    if num_classes < 1:
        raise InputError(f"a detector needs at least one class, got {num_classes}")
    weights = cfg.backbone_weights if pretrained else False
    backbone, mean, std = build_fpn_backbone(cfg.backbone, weights, out_channels=cfg.fpn_channels)
    if cfg.freeze_backbone:
        backbone.body.requires_grad_(False)
    if cfg.box_type == "hbb":
        model = FCOS(
            backbone,
            num_classes,
            image_mean=list(mean),
            image_std=list(std),
            score_thresh=cfg.score_thresh,
            nms_thresh=cfg.nms_thresh,
            detections_per_img=cfg.detections_per_img,
            topk_candidates=cfg.topk_candidates,
            head=FCOSHead(cfg.fpn_channels, 1, num_classes, num_convs=cfg.head_convs),
        )
        model.transform = NativeSizeTransform(1, 1, list(mean), list(std), size_divisible=32)
        # torchvision's FCOS regresses ReLU(conv) with a zero bias: every box starts as a point, on the
        # ReLU's kink. Tiny objects push the outputs below zero early and the regression dies
        # (GIoU loss stuck at exactly 1). Start at distances of one anchor size instead.
        nn.init.constant_(model.head.regression_head.bbox_reg.bias, 1.0)
        return model
    from rsvl.models.rotated_fcos import RotatedFCOS

    return RotatedFCOS(
        backbone,
        num_classes,
        image_mean=list(mean),
        image_std=list(std),
        fpn_strides=FPN_STRIDES,
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img,
        topk_candidates=cfg.topk_candidates,
        num_convs=cfg.head_convs,
    )


def detector_kind(model: nn.Module) -> str:
    """``hbb`` or ``obb`` for a detector built by :func:`build_detector`."""
    return "hbb" if isinstance(model, FCOS) else "obb"

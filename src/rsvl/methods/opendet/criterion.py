"""Open-Det's training losses over every prediction stage (encoder proposals and each decoder layer).

For each stage and image the queries are matched to the ground truth (:mod:`.matching`):
one-to-many (each ground truth repeated ``one_to_many_k`` times) in the first decoder layers, one-to-one
(Hungarian) in the last ones and for the encoder proposals; ``decoupled_matching: false`` (the
ablation) matches one-to-one everywhere. The matched pairs give, with the loss weights of
:class:`~rsvl.methods.opendet.config.LossConfig`:

* ``bce``: the joint loss (soft targets from objectness, IoU and alignment) + binary focal loss;
* ``align``: the masked alignment loss on BVLA-M's logits (ground truths whose name embeddings
  agree above ``mal_tau`` are all positives; ``masked_alignment: false`` uses one-hot targets);
* ``bbox`` / ``giou``: L1 and GIoU of the matched boxes.

Each term is divided by the batch's number of ground-truth boxes (times ``k`` in one-to-many layers).
The vision-language terms (distillation, name generation) need the matches of the last layers and
live in :class:`~rsvl.methods.opendet.model.OpenDet`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from rsvl.methods.opendet.config import LossConfig
from rsvl.methods.opendet.detector import LayerOutput
from rsvl.methods.opendet.losses import (
    binary_focal_loss,
    box_losses,
    joint_loss,
    masked_alignment_loss,
    plain_alignment_loss,
)
from rsvl.methods.opendet.matching import MatchResult, match_one_to_many, match_one_to_one
from rsvl.utils.distributed import mean_over_processes

__all__ = ["ImageTargets", "StageLosses", "stage_losses"]


@dataclass
class ImageTargets:
    """One image's ground truth: normalised cxcywh boxes, names and their (L2-normalised) text embeddings."""

    boxes: Tensor  # (M, 4)
    names: list[str]
    text: Tensor  # (M, T)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class StageLosses:
    """The weighted loss terms of one stage and its matches (one per image)."""

    terms: dict[str, Tensor]
    matches: list[MatchResult]


def stage_losses(
    stage: LayerOutput,
    align_logits: list[Tensor],
    targets: list[ImageTargets],
    cfg: LossConfig,
    one_to_many: bool,
) -> StageLosses:
    """Match one stage's queries to the targets and compute its weighted losses."""
    k = cfg.one_to_many_k if one_to_many and cfg.decoupled_matching else 1
    # averaged over data-parallel processes, as Deformable DETR does: N processes = one whole batch
    num_boxes = max(1.0, mean_over_processes(float(sum(len(t) for t in targets) * k)))
    totals = {name: stage.boxes.new_zeros(()) for name in ("bce", "align", "bbox", "giou")}
    matches: list[MatchResult] = []
    for b, tgt in enumerate(targets):
        obj, boxes, logits = stage.objectness[b], stage.boxes[b], align_logits[b]
        gt = tgt.boxes.to(boxes)
        with torch.no_grad():
            if k > 1:
                match = match_one_to_many(
                    obj, logits, boxes, gt, k=k, cost_class=cfg.cost_class_one_to_many,
                    cost_bbox=cfg.cost_bbox, cost_giou=cfg.cost_giou,
                )  # fmt: skip
            else:
                match = match_one_to_one(
                    obj, logits, boxes, gt, cost_class=cfg.cost_class, cost_bbox=cfg.cost_bbox, cost_giou=cfg.cost_giou
                )
        matches.append(match)
        q_idx = match.query_idx.to(boxes.device)
        g_idx = match.gt_idx.to(boxes.device)
        pred, true = boxes[q_idx], gt[g_idx]
        with torch.no_grad():
            iou = box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(true, "cxcywh", "xyxy")).diagonal()
            score = logits[q_idx, g_idx].sigmoid() if len(q_idx) else iou
        totals["bce"] = (
            totals["bce"]
            + joint_loss(obj, q_idx, iou, score, num_boxes, alpha=cfg.joint_alpha)
            + binary_focal_loss(obj, q_idx, num_boxes)
        )
        if len(tgt):
            # the IoU mask of the authors' loss applies to the one-to-one stages only
            box_args = {} if k > 1 else {"pred_boxes": boxes.detach(), "gt_boxes": gt}
            if cfg.masked_alignment:
                align = masked_alignment_loss(logits, q_idx, g_idx, tgt.text, num_boxes, tau=cfg.mal_tau, **box_args)
            else:
                align = plain_alignment_loss(logits, q_idx, g_idx, num_boxes, **box_args)
            totals["align"] = totals["align"] + align
        box = box_losses(pred, true, num_boxes)
        totals["bbox"] = totals["bbox"] + box["l1"]
        totals["giou"] = totals["giou"] + box["giou"]
    weights = {"bce": cfg.bce, "align": cfg.align, "bbox": cfg.bbox, "giou": cfg.giou}
    return StageLosses({name: weights[name] * value for name, value in totals.items()}, matches)

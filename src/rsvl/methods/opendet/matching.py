"""Hungarian matching of Open-Det queries to ground-truth boxes, one-to-one and one-to-many.

Follows ``HungarianMatcher`` / ``HungarianMatcher_One_to_Many`` of the authors' code
(``Med-Process/Open-Det2``, ``projects/DDETRS/ddetrs/models/qfree_det/matcher.py``). The cost of
assigning query ``q`` to ground truth ``j`` is::

    cost_obj * F(sigmoid(obj[q])) + cost_class * F(sigmoid(align[q, j]))
        + cost_bbox * |box[q] - gt[j]|_1 - cost_giou * GIoU(box[q], gt[j])

where ``F(p) = alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))`` is DETR's focal-style
class cost. In the authors' code the objectness term (``binary_outputs_class``) is added with weight 1
whatever ``cost_class`` is (their ``cost_binary`` argument is stored but never used), and ``cost_class``
weights the per-ground-truth alignment logits only; ``cost_obj`` reproduces that (default 1.0). Without
alignment logits only the objectness term remains.

Boxes are normalised ``cxcywh`` (DETR convention). Everything is per image; :func:`match_batch` loops
over a batch whose sizes vary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["MatchResult", "focal_class_cost", "match_batch", "match_cost", "match_one_to_many", "match_one_to_one"]

logger = logging.getLogger(__name__)

# Stand-in for non-finite costs (degenerate boxes give 0/0 GIoU), so that scipy accepts the matrix.
_BIG = 1e8


@dataclass(frozen=True)
class MatchResult:
    """Matched pairs of one image: ``query_idx[i]`` is assigned ground truth ``gt_idx[i]`` (int64, CPU)."""

    query_idx: Tensor
    gt_idx: Tensor

    def __len__(self) -> int:
        return int(self.query_idx.numel())

    def __iter__(self):
        """Unpacks as ``query_idx, gt_idx`` like the authors' ``(index_i, index_j)`` tuples."""
        return iter((self.query_idx, self.gt_idx))


def _empty() -> tuple[Tensor, Tensor]:
    return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)


def focal_class_cost(prob: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """DETR/Deformable-DETR focal class cost ``pos - neg`` of probabilities ``prob`` (any shape)."""
    neg = (1 - alpha) * prob.pow(gamma) * (-(1 - prob + 1e-8).log())
    pos = alpha * (1 - prob).pow(gamma) * (-(prob + 1e-8).log())
    return pos - neg


def _check(pred_logits_obj: Tensor, pred_align_logits: Tensor | None, pred_boxes: Tensor, gt_boxes: Tensor) -> None:
    q = pred_logits_obj.shape[0]
    if pred_logits_obj.dim() != 1:
        raise ValueError(f"objectness logits must be (Q,), got {tuple(pred_logits_obj.shape)}")
    if pred_boxes.shape != (q, 4):
        raise ValueError(f"pred_boxes must be ({q}, 4), got {tuple(pred_boxes.shape)}")
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (M, 4), got {tuple(gt_boxes.shape)}")
    m = gt_boxes.shape[0]
    if pred_align_logits is not None and (
        pred_align_logits.dim() != 2 or pred_align_logits.shape[0] != q or pred_align_logits.shape[1] < m
    ):
        raise ValueError(f"alignment logits must be ({q}, >={m}), got {tuple(pred_align_logits.shape)}")


@torch.no_grad()
def match_cost(
    pred_logits_obj: Tensor,
    pred_align_logits: Tensor | None,
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    cost_class: float = 2.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    focal_alpha: float = 0.25,
    gamma: float = 2.0,
    cost_obj: float = 1.0,
) -> Tensor:
    """The (Q, M) float32 matching cost described in the module docstring (no gradient).

    Alignment logits may be padded to more than M columns (a batch padded to its largest image); only the
    first M are used.
    """
    _check(pred_logits_obj, pred_align_logits, pred_boxes, gt_boxes)
    m = gt_boxes.shape[0]
    obj = pred_logits_obj.detach().float()
    boxes = pred_boxes.detach().float()
    gts = gt_boxes.detach().float().to(boxes.device)
    cost = cost_obj * focal_class_cost(obj.sigmoid(), focal_alpha, gamma)[:, None].expand(-1, m)
    if pred_align_logits is not None:
        align = pred_align_logits.detach().float()[:, :m]
        cost = cost + cost_class * focal_class_cost(align.sigmoid(), focal_alpha, gamma)
    cost = cost + cost_bbox * torch.cdist(boxes, gts, p=1)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(gts, "cxcywh", "xyxy"))
    cost = cost - cost_giou * giou
    return torch.nan_to_num(cost, nan=_BIG, posinf=_BIG, neginf=-_BIG)


def _hungarian(cost: Tensor) -> tuple[Tensor, Tensor]:
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def match_one_to_one(
    pred_logits_obj: Tensor,
    pred_align_logits: Tensor | None,
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    cost_class: float = 2.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    focal_alpha: float = 0.25,
    gamma: float = 2.0,
    cost_obj: float = 1.0,
) -> MatchResult:
    """One-to-one Hungarian matching (scipy) of Q queries to M ground truths: ``min(Q, M)`` pairs.

    Args:
        pred_logits_obj: (Q,) objectness logits.
        pred_align_logits: (Q, M) query-to-ground-truth alignment logits (BVLA-M), or None.
        pred_boxes: (Q, 4) normalised cxcywh.
        gt_boxes: (M, 4) normalised cxcywh.
        cost_obj: weight of the objectness cost; the authors add it unweighted (1.0).

    Returns:
        :class:`MatchResult` with query indices sorted ascending; empty when M or Q is 0.
    """
    return match_one_to_many(
        pred_logits_obj,
        pred_align_logits,
        pred_boxes,
        gt_boxes,
        k=1,
        cost_class=cost_class,
        cost_bbox=cost_bbox,
        cost_giou=cost_giou,
        focal_alpha=focal_alpha,
        gamma=gamma,
        cost_obj=cost_obj,
    )


def match_one_to_many(
    pred_logits_obj: Tensor,
    pred_align_logits: Tensor | None,
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    k: int = 2,
    cost_class: float = 0.2,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    focal_alpha: float = 0.25,
    gamma: float = 2.0,
    cost_obj: float = 1.0,
) -> MatchResult:
    """One-to-many matching: every ground truth repeated ``k`` times, then Hungarian on the (Q, k*M) cost.

    Column ``j + r*M`` is copy ``r`` of ground truth ``j``; the returned ``gt_idx`` is mapped back to
    ``[0, M)``, so each ground truth gets up to ``k`` distinct queries (exactly ``k`` when ``Q >= k*M``)
    and ``min(Q, k*M)`` pairs come back. The loss normaliser for these layers is ``num_boxes * k`` in the
    authors' criterion.

    Differences from the authors' code, kept deliberately: their criterion builds this matcher with
    ``focal_alpha=2.0`` (pass it to reproduce; 0.25 is the textbook focal cost used here by default), and
    their loop fills the alignment cost only into the first M columns (and misplaces columns for batches
    of more than one image), so the copies carry no alignment cost there; here every copy has the
    alignment cost of its ground truth.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check(pred_logits_obj, pred_align_logits, pred_boxes, gt_boxes)
    m = gt_boxes.shape[0]
    if m == 0 or pred_boxes.shape[0] == 0:
        return MatchResult(*_empty())
    cost = match_cost(
        pred_logits_obj,
        pred_align_logits,
        pred_boxes,
        gt_boxes,
        cost_class,
        cost_bbox,
        cost_giou,
        focal_alpha,
        gamma,
        cost_obj,
    )
    rows, cols = _hungarian(cost.repeat(1, k) if k > 1 else cost)
    return MatchResult(rows, cols % m)


def match_batch(
    pred_logits_obj: Sequence[Tensor] | Tensor,
    pred_align_logits: Sequence[Tensor | None] | Tensor | None,
    pred_boxes: Sequence[Tensor] | Tensor,
    gt_boxes: Sequence[Tensor],
    one_to_many: bool = False,
    k: int = 2,
    **costs: float,
) -> list[MatchResult]:
    """Match every image of a batch; inputs are per-image lists or (B, ...) tensors (iterated on dim 0).

    ``costs`` go to :func:`match_one_to_one` / :func:`match_one_to_many` (``cost_class``, ``cost_bbox``,
    ``cost_giou``, ``focal_alpha``, ``gamma``, ``cost_obj``); their defaults differ between the two.
    """
    b = len(gt_boxes)
    if len(pred_logits_obj) != b or len(pred_boxes) != b:
        raise ValueError(f"batch sizes differ: {len(pred_logits_obj)} logits, {len(pred_boxes)} boxes, {b} targets")
    aligns = [None] * b if pred_align_logits is None else list(pred_align_logits)
    if len(aligns) != b:
        raise ValueError(f"batch sizes differ: {len(aligns)} alignment logits, {b} targets")
    out = []
    for obj, align, boxes, gts in zip(pred_logits_obj, aligns, pred_boxes, gt_boxes, strict=True):
        if one_to_many:
            out.append(match_one_to_many(obj, align, boxes, gts, k=k, **costs))
        else:
            out.append(match_one_to_one(obj, align, boxes, gts, **costs))
    return out

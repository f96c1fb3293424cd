"""Open-Det matching and losses: brute-force and float64 reference answers, gradients, empty images."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from rsvl.methods.opendet.losses import (
    binary_focal_loss,
    box_losses,
    distillation_loss,
    joint_loss,
    masked_alignment_loss,
    plain_alignment_loss,
    similarity_mask,
)
from rsvl.methods.opendet.matching import (
    MatchResult,
    match_batch,
    match_cost,
    match_one_to_many,
    match_one_to_one,
)


def random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """Valid normalised cxcywh boxes."""
    c = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([c, wh], dim=1)


def focal_cost_ref(p: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    return alpha * (1 - p) ** gamma * -torch.log(p + 1e-8) - (1 - alpha) * p**gamma * -torch.log(1 - p + 1e-8)


def focal_loss_ref(x: torch.Tensor, t: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise RetinaNet focal loss in float64."""
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    pt = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * (1 - pt) ** gamma * ce


# ----------------------------------------------------------------------------------------------- matching


def test_match_cost_equals_hand_written_formula():
    g = torch.Generator().manual_seed(0)
    q, m = 5, 3
    obj, align = torch.randn(q, generator=g), torch.randn(q, m + 2, generator=g)  # padded columns ignored
    boxes, gts = random_boxes(q, g), random_boxes(m, g)
    cost = match_cost(obj, align, boxes, gts, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    l1 = (boxes[:, None, :] - gts[None, :, :]).abs().sum(-1)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(gts, "cxcywh", "xyxy"))
    ref = 1.0 * focal_cost_ref(obj.sigmoid())[:, None] + 2.0 * focal_cost_ref(align[:, :m].sigmoid())
    ref = ref + 5.0 * l1 - 2.0 * giou
    torch.testing.assert_close(cost, ref, rtol=1e-5, atol=1e-5)
    # Without alignment logits only the objectness term is left.
    no_align = match_cost(obj, None, boxes, gts, cost_obj=3.0)
    torch.testing.assert_close(no_align, 3.0 * focal_cost_ref(obj.sigmoid())[:, None] + 5.0 * l1 - 2.0 * giou)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_to_one_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    q, m = 5, 3
    obj, align = torch.randn(q, generator=g), torch.randn(q, m, generator=g)
    boxes, gts = random_boxes(q, g), random_boxes(m, g)
    cost = match_cost(obj, align, boxes, gts).double()
    best = min(itertools.permutations(range(q), m), key=lambda rows: sum(cost[r, j].item() for j, r in enumerate(rows)))
    res = match_one_to_one(obj, align, boxes, gts)
    assert isinstance(res, MatchResult) and len(res) == m
    assert res.query_idx.dtype == res.gt_idx.dtype == torch.int64
    got = {int(j): int(r) for r, j in zip(res.query_idx, res.gt_idx, strict=True)}
    assert got == dict(enumerate(best))


def test_one_to_one_recovers_a_permutation_of_the_truth():
    g = torch.Generator().manual_seed(3)
    gts = random_boxes(4, g)
    perm = torch.tensor([2, 0, 3, 1])
    boxes = torch.cat([gts[perm], random_boxes(3, g) * 0.1 + 0.9])  # 4 exact copies, 3 far away
    query_idx, gt_idx = match_one_to_one(torch.zeros(7), None, boxes, gts)
    assert sorted(zip(query_idx.tolist(), gt_idx.tolist(), strict=True)) == [(i, int(perm[i])) for i in range(4)]


def test_one_to_many_gives_each_ground_truth_k_queries():
    g = torch.Generator().manual_seed(4)
    m, k = 3, 2
    gts = random_boxes(m, g)
    # Two near copies of each ground truth plus two far-away queries: the copies must be the ones picked.
    near = torch.cat([gts + 0.001, gts - 0.001])  # query i and i+m are near gt i
    boxes = torch.cat([near, torch.tensor([[0.95, 0.95, 0.02, 0.02], [0.05, 0.05, 0.02, 0.02]])])
    res = match_one_to_many(torch.zeros(len(boxes)), torch.zeros(len(boxes), m), boxes, gts, k=k)
    assert len(res) == k * m
    assert res.query_idx.unique().numel() == k * m
    assert res.gt_idx.max() < m and res.gt_idx.min() >= 0
    assert torch.bincount(res.gt_idx, minlength=m).tolist() == [k] * m
    assert sorted(zip(res.query_idx.tolist(), res.gt_idx.tolist(), strict=True)) == [(i, i % m) for i in range(k * m)]


def test_one_to_many_random_counts_and_too_few_queries():
    g = torch.Generator().manual_seed(5)
    q, m, k = 10, 3, 3
    res = match_one_to_many(torch.randn(q, generator=g), None, random_boxes(q, g), random_boxes(m, g), k=k)
    assert torch.bincount(res.gt_idx, minlength=m).tolist() == [k] * m
    assert res.query_idx.unique().numel() == k * m
    few = match_one_to_many(torch.randn(4, generator=g), None, random_boxes(4, g), random_boxes(m, g), k=2)
    assert len(few) == 4 and few.query_idx.unique().numel() == 4
    assert torch.bincount(few.gt_idx, minlength=m).max() <= 2
    # k = 1 is plain one-to-one matching.
    obj, boxes, gts = torch.randn(6, generator=g), random_boxes(6, g), random_boxes(m, g)
    one = match_one_to_many(obj, None, boxes, gts, k=1, cost_class=2.0)
    ref = match_one_to_one(obj, None, boxes, gts)
    assert torch.equal(one.query_idx, ref.query_idx) and torch.equal(one.gt_idx, ref.gt_idx)


def test_empty_ground_truth_and_batches():
    g = torch.Generator().manual_seed(6)
    q = 4
    obj, boxes = torch.randn(q, generator=g), random_boxes(q, g)
    for fn in (match_one_to_one, match_one_to_many):
        res = fn(obj, torch.zeros(q, 0), boxes, torch.zeros(0, 4))
        assert len(res) == 0 and res.query_idx.dtype == torch.int64
    gts = [random_boxes(2, g), torch.zeros(0, 4), random_boxes(3, g)]
    obj_b, align_b, boxes_b = torch.randn(3, q, generator=g), torch.randn(3, q, 3, generator=g), random_boxes(3 * q, g)
    boxes_b = boxes_b.view(3, q, 4)
    out = match_batch(obj_b, align_b, boxes_b, gts)
    assert [len(r) for r in out] == [2, 0, 3]
    first = match_one_to_one(obj_b[0], align_b[0, :, :2], boxes_b[0], gts[0])
    assert torch.equal(out[0].query_idx, first.query_idx) and torch.equal(out[0].gt_idx, first.gt_idx)
    many = match_batch(list(obj_b), None, list(boxes_b), gts, one_to_many=True, k=2)
    assert [len(r) for r in many] == [4, 0, 4]


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="pred_boxes"):
        match_one_to_one(torch.zeros(3), None, torch.zeros(2, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="alignment"):
        match_one_to_one(torch.zeros(3), torch.zeros(3, 1), torch.rand(3, 4), torch.rand(2, 4))


# ------------------------------------------------------------------------------------------------ losses


def joint_ref(x, idx, iou, s, num_boxes, alpha=0.25):
    """The authors' sigmoid_loss_align_iou_score, transcribed in float64 with plain logs."""
    x = x.double()
    p = torch.sigmoid(x)
    t = torch.sqrt(p[idx] ** alpha * iou.double().clamp(min=0.01) ** (1 - 2 * alpha) * s.double() ** alpha)
    t = t.clamp(min=0.1).detach()
    pos_w = torch.zeros_like(p)
    pos_w[idx] = (t - p[idx]) ** 2
    neg_w = p**2
    neg_w[idx] = (1 - t) * p[idx] ** 2
    return (-pos_w * torch.log(p) - neg_w * torch.log(1 - p)).sum() / num_boxes


def test_joint_loss_matches_reference_and_detaches_the_target():
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(8, generator=g) * 2).requires_grad_()
    idx = torch.tensor([1, 4, 6])
    iou = torch.tensor([0.7, 0.005, 0.3], requires_grad=True)  # 0.005 exercises the clamp at 0.01
    s = torch.tensor([0.9, 0.5, 0.0], requires_grad=True)  # 0.0 exercises the clamp of t at 0.1
    loss = joint_loss(x, idx, iou, s, num_boxes=3.0)
    x64 = x.detach().double().requires_grad_()
    ref = joint_ref(x64, idx, iou.detach(), s.detach(), 3.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    gx, giou, gs = torch.autograd.grad(loss, [x, iou, s], allow_unused=True)
    assert giou is None and gs is None
    (gref,) = torch.autograd.grad(ref, [x64])
    torch.testing.assert_close(gx.double(), gref, rtol=1e-4, atol=1e-6)


def test_joint_loss_is_finite_for_extreme_logits_and_empty_images():
    x = torch.tensor([60.0, -60.0, 0.0], requires_grad=True)
    loss = joint_loss(x, torch.tensor([1]), torch.tensor([0.9]), torch.tensor([0.9]), 1.0)
    assert torch.isfinite(loss)
    # Unmatched 60: -p^2 log(1-p) ~ 60; matched -60: t clamps to 0.1, (0.1-0)^2 * 60; unmatched 0: log(2)/4.
    assert loss.item() == pytest.approx(60 + 0.01 * 60 + 0.25 * math.log(2), rel=1e-4)
    empty = joint_loss(x, torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), 1.0)
    only_neg = -(torch.sigmoid(x.double()) ** 2 * torch.nn.functional.logsigmoid(-x.double())).sum()
    assert empty.item() == pytest.approx(only_neg.item(), rel=1e-6)
    none = joint_loss(
        torch.zeros(0, requires_grad=True), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), 1.0
    )
    assert none.item() == 0.0 and none.requires_grad


def test_binary_focal_loss_against_reference():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, generator=g)
    idx = torch.tensor([0, 3])
    t = torch.zeros(6)
    t[idx] = 1
    assert binary_focal_loss(x, idx, 2.0).item() == pytest.approx((focal_loss_ref(x, t).sum() / 2).item(), rel=1e-5)


def two_identical_names():
    """Three ground truths; 0 and 1 have the same name embedding, 2 is orthogonal."""
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    return e


def test_masked_alignment_marks_same_name_columns_positive():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 3, generator=g, requires_grad=True)
    qi, gi = torch.tensor([2, 0]), torch.tensor([0, 2])
    mal = masked_alignment_loss(logits, qi, gi, two_identical_names(), 2.0)
    targets = torch.zeros(4, 3)
    targets[2, 0] = targets[2, 1] = 1  # query 2 matched gt 0, whose twin gt 1 is positive too
    targets[0, 2] = 1
    assert mal.item() == pytest.approx((focal_loss_ref(logits.detach(), targets).sum() / 2).item(), rel=1e-5)
    plain = plain_alignment_loss(logits, qi, gi, 2.0)
    onehot = targets.clone()
    onehot[2, 1] = 0
    assert plain.item() == pytest.approx((focal_loss_ref(logits.detach(), onehot).sum() / 2).item(), rel=1e-5)
    assert abs(mal.item() - plain.item()) > 1e-4
    mal.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_tau_threshold_between_paper_and_code_values():
    theta = math.acos(0.995)  # cos = 0.995: a twin at tau 0.99, distinct at the code's 0.999
    e = torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)]]) * 3.0  # unnormalised on purpose
    assert similarity_mask(e, 0.99).tolist() == [[True, True], [True, True]]
    assert similarity_mask(e, 0.999).tolist() == [[True, False], [False, True]]
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(10))
    qi, gi = torch.tensor([1]), torch.tensor([0])
    plain = plain_alignment_loss(logits, qi, gi, 1.0)
    assert masked_alignment_loss(logits, qi, gi, e, 1.0, tau=0.999).item() == pytest.approx(plain.item())
    assert masked_alignment_loss(logits, qi, gi, e, 1.0, tau=0.99).item() != pytest.approx(plain.item())


def test_alignment_iou_mask_keeps_the_matched_pair():
    gts = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])
    # query 0 sits on gt 0; query 1 is nowhere near either (matched to gt 1 anyway); query 2 overlaps both a bit.
    preds = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.5, 0.05, 0.05, 0.05], [0.5, 0.5, 0.62, 0.62]])
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(11))
    qi, gi = torch.tensor([0, 1]), torch.tensor([0, 1])
    loss = plain_alignment_loss(logits, qi, gi, 2.0, pred_boxes=preds, gt_boxes=gts, min_iou=0.05)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    keep = torch.tensor([[True, False], [False, True], [True, True]])  # (1,1) kept although its IoU is 0
    ref = focal_loss_ref(logits, targets)[keep].sum() / 2
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # The same with the masked loss and distinct names.
    e = torch.eye(2)
    assert masked_alignment_loss(
        logits, qi, gi, e, 2.0, pred_boxes=preds, gt_boxes=gts, min_iou=0.05
    ).item() == pytest.approx(ref.item(), rel=1e-5)


def test_alignment_losses_with_no_ground_truth_or_no_match():
    logits = torch.randn(4, 0, requires_grad=True)
    none = torch.zeros(0, dtype=torch.long)
    for loss in (
        masked_alignment_loss(logits, none, none, torch.zeros(0, 8), 1.0),
        plain_alignment_loss(logits, none, none, 1.0, pred_boxes=torch.rand(4, 4), gt_boxes=torch.zeros(0, 4)),
    ):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
    # Ground truths but no matched query: all-negative targets.
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(12))
    got = masked_alignment_loss(x, none, none, torch.eye(2), 1.0)
    assert got.item() == pytest.approx(focal_loss_ref(x, torch.zeros(3, 2)).sum().item(), rel=1e-5)


def test_box_losses():
    g = torch.Generator().manual_seed(13)
    gts = random_boxes(5, g)
    perfect = box_losses(gts.clone().requires_grad_(), gts, 5.0)
    assert perfect["l1"].item() == pytest.approx(0.0, abs=1e-7)
    assert perfect["giou"].item() == pytest.approx(0.0, abs=1e-5)
    preds = random_boxes(5, g)
    out = box_losses(preds, gts, 2.0)
    assert out["l1"].item() == pytest.approx(((preds - gts).abs().sum() / 2).item(), rel=1e-6)
    giou = generalized_box_iou(box_convert(preds, "cxcywh", "xyxy"), box_convert(gts, "cxcywh", "xyxy"))
    assert out["giou"].item() == pytest.approx(((1 - giou.diag()).sum() / 2).item(), rel=1e-5)
    empty = box_losses(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4), 1.0)
    assert empty["l1"].item() == empty["giou"].item() == 0.0
    (empty["l1"] + empty["giou"]).backward()


def test_distillation_loss():
    g = torch.Generator().manual_seed(14)
    v = torch.randn(3, 16, generator=g)
    assert distillation_loss(v, v * 2.5).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(v, -v).item() == pytest.approx(2.0, abs=1e-6)
    orth = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert distillation_loss(orth, orth.flip(0)).item() == pytest.approx(1.0, abs=1e-6)
    zero = distillation_loss(torch.zeros(0, 16, requires_grad=True), torch.zeros(0, 16))
    assert zero.item() == 0.0 and zero.requires_grad


def test_loss_weights_are_the_authors():
    from rsvl.methods.opendet.config import LossConfig

    w = LossConfig()
    assert {k: getattr(w, k) for k in ("align", "bbox", "giou", "bce", "distill", "lm", "lm_denoise")} == {
        "align": 2.0,
        "bbox": 5.0,
        "giou": 2.0,
        "bce": 1.0,
        "distill": 1.0,
        "lm": 1.0,
        "lm_denoise": 1.0,
    }


def test_num_boxes_must_be_positive():
    with pytest.raises(ValueError, match="num_boxes"):
        binary_focal_loss(torch.zeros(2), torch.zeros(0, dtype=torch.long), 0.0)

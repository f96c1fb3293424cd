"""Rotated (le90) FCOS: losses, assignment known answers, decoding round trips, inference, overfitting."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import shapely
import torch
from torch import nn

from rsvl.errors import GeometryError, InputError
from rsvl.geometry import obb_corners, rotated_iou
from rsvl.models.fpn import lite0_fpn
from rsvl.models.rotated_fcos import (
    RotatedFCOS,
    assign_points,
    distances_to_obb,
    level_points,
    nearest_equivalent,
    obb_to_distances,
)

STRIDES = (8, 16, 32, 64, 128)
RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
SIZES_128 = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


class TinyPyramid(nn.Module):
    """Stand-in backbone: five maps at strides 8..128 (64 channels: GroupNorm(32) needs 2+ per group on 1x1)."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.out_channels = channels
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 8, 8), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        f = self.stem(x)
        out = OrderedDict(p3=f)
        for i, down in enumerate(self.down):
            f = down(f)
            out[f"p{i + 4}"] = f
        return out


def _model(backbone: nn.Module | None = None, num_classes: int = 3, **kw) -> RotatedFCOS:
    torch.manual_seed(0)
    return RotatedFCOS(
        backbone or TinyPyramid(), num_classes, image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25), **kw
    )


def _paint(boxes: torch.Tensor, size: int = 128) -> torch.Tensor:
    """A black image with each OBB filled white (pixel centres inside the box)."""
    img = torch.zeros(3, size, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for cx, cy, w, h, a in boxes.tolist():
        dx, dy = xs - cx, ys - cy
        u = dx * math.cos(a) + dy * math.sin(a)
        v = -dx * math.sin(a) + dy * math.cos(a)
        img[:, (u.abs() < w / 2) & (v.abs() < h / 2)] = 1.0
    return img


TWO_BOXES = torch.tensor([[40.0, 50.0, 60.0, 20.0, math.radians(30)], [95.0, 90.0, 30.0, 14.0, -1.2]])


def _targets(boxes: torch.Tensor, labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64)}


# --------------------------------------------------------------------------- training forward


def test_training_losses_finite_and_reach_backbone():
    model = _model(lite0_fpn(pretrained=False, out_channels=64)).train()
    images = [_paint(TWO_BOXES), torch.rand(3, 128, 128)]
    for targets in (
        [_targets(TWO_BOXES, [0, 2]), _targets(TWO_BOXES[:1], [1])],
        [_targets(torch.zeros(0, 5), []), _targets(torch.zeros(0, 5), [])],
    ):
        model.zero_grad()
        losses = model(images, targets)
        assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
        assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        grads = [p.grad for p in model.backbone.body.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # without GT only the classification term is non-zero
    assert losses["classification"] > 0
    assert losses["bbox_regression"] == 0 and losses["bbox_ctrness"] == 0


def test_training_rejects_bad_targets():
    model = _model().train()
    img = [torch.rand(3, 64, 64)]
    with pytest.raises(InputError, match="target dict per image"):
        model(img)
    with pytest.raises(GeometryError, match=r"\(N, 5\)"):
        model(img, [_targets(torch.zeros(2, 4), [0, 1])])
    with pytest.raises(GeometryError, match="w, h > 0"):
        model(img, [_targets(torch.tensor([[10.0, 10.0, 0.0, 5.0, 0.0]]), [0])])
    with pytest.raises(InputError, match=r"0\.\.2"):
        model(img, [_targets(TWO_BOXES, [0, 3])])
    with pytest.raises(InputError, match="out_channels"):
        RotatedFCOS(nn.Conv2d(3, 8, 1), 2, image_mean=(0, 0, 0), image_std=(1, 1, 1))


# --------------------------------------------------------------------------- assignment


def test_assignment_of_rotated_gt_known_answer_and_round_trip():
    grid = level_points(SIZES_128, STRIDES, RANGES)
    gt = torch.tensor([[64.0, 60.0, 80.0, 24.0, math.radians(30)]])
    matched = assign_points(grid.points, grid.strides, grid.ranges, gt, 1.5)
    pos = matched >= 0
    # Expected, computed independently with shapely: inside the rotated box and inside the centre
    # square of half side 1.5 * 8 turned with the box. On P3 max(l,t,r,b) < 40 + 12 < 64 fits the range; on P4
    # the radius 1.5 * 16 keeps |u| < 24, so max(l,t,r,b) < 64 falls below P4's range: P3 only.
    box = shapely.Polygon(obb_corners(gt.double())[0].numpy())
    centre = shapely.Polygon(obb_corners(torch.tensor([64.0, 60.0, 24.0, 24.0, math.radians(30)]).double()).numpy())
    region = box.intersection(centre)
    p3 = grid.points[: grid.sizes[0]].double().numpy()
    expected = torch.tensor([region.contains(shapely.Point(x, y)) for x, y in p3])
    assert expected.sum() >= 6
    assert torch.equal(pos[: grid.sizes[0]], expected)
    assert not pos[grid.sizes[0] :].any()
    assert (matched[pos] == 0).all()

    pts = grid.points[pos]
    dist = obb_to_distances(pts, gt.expand(len(pts), 5))
    assert (dist > 0).all()
    # the centre-ness invariant: l + r = w and t + b = h at every positive point
    torch.testing.assert_close(dist[:, 0] + dist[:, 2], torch.full((len(pts),), 80.0))
    torch.testing.assert_close(dist[:, 1] + dist[:, 3], torch.full((len(pts),), 24.0))
    decoded = distances_to_obb(pts, dist, gt[:, 4].expand(len(pts)))
    torch.testing.assert_close(decoded, gt.expand(len(pts), 5), atol=1e-4, rtol=0)


def test_assignment_scale_ranges_and_smallest_area_ties():
    grid = level_points(SIZES_128, STRIDES, RANGES)
    # a 200 x 60 box: max(l,t,r,b) ~ 100 near its centre -> regressed on P4 (64..128) only
    big = torch.tensor([[64.0, 64.0, 200.0, 60.0, -0.4]])
    matched = assign_points(grid.points, grid.strides, grid.ranges, big, 1.5)
    levels = torch.repeat_interleave(torch.arange(5), torch.tensor(grid.sizes))
    assert (matched >= 0).any()
    assert set(levels[matched >= 0].tolist()) == {1}

    # nested GTs: the centre point belongs to the small one whatever the order
    large = torch.tensor([64.0, 64.0, 100.0, 100.0, 0.3])
    small = torch.tensor([64.0, 64.0, 30.0, 12.0, 0.3])
    for boxes, small_idx in ((torch.stack([large, small]), 1), (torch.stack([small, large]), 0)):
        m = assign_points(grid.points, grid.strides, grid.ranges, boxes, 1.5)
        inside_small = obb_to_distances(grid.points, small.expand(len(grid.points), 5)).amin(-1) > 0
        on_p3 = levels == 0
        assert (m[inside_small & on_p3 & (m >= 0)] == small_idx).all()
        assert (m[inside_small & on_p3] >= 0).sum() >= 2
        # P3 points of the large box's centre region outside the small box go to the large one
        assert (m[~inside_small & on_p3 & (m >= 0)] == 1 - small_idx).all()
        assert (~inside_small & on_p3 & (m >= 0)).any()
    empty = assign_points(grid.points, grid.strides, grid.ranges, torch.zeros(0, 5), 1.5)
    assert (empty == -1).all()


# --------------------------------------------------------------------------- decoding and le90


@pytest.mark.parametrize("angle", [-math.pi / 2, -math.pi / 2 + 1e-3, math.pi / 2 - 1e-3, 1.2])
def test_decode_and_le90_round_trip_near_the_boundary(angle):
    gt = torch.tensor([[50.0, 40.0, 36.0, 10.0, angle]], dtype=torch.float64).expand(3, 5)
    # three points inside the box (offsets along its axes)
    c, s = math.cos(angle), math.sin(angle)
    offsets = torch.tensor([[0.0, 0.0], [10.0, 3.0], [-14.0, -4.0]], dtype=torch.float64)
    pts = gt[:, :2] + torch.stack([offsets[:, 0] * c - offsets[:, 1] * s, offsets[:, 0] * s + offsets[:, 1] * c], -1)
    dist = obb_to_distances(pts, gt)
    for k in (-2, -1, 0, 1, 2, 3):
        # every description (roll(d, -k), angle + k pi/2) of the rectangle decodes to the same le90 box
        idx = (torch.arange(4) + k) % 4
        dec = distances_to_obb(pts, dist[:, idx], gt[:, 4] + k * math.pi / 2)
        assert (dec[:, 2] >= dec[:, 3]).all()
        assert ((dec[:, 4] >= -math.pi / 2) & (dec[:, 4] < math.pi / 2)).all()
        if angle == -math.pi / 2:  # exactly on the boundary, rounding may land on either end: same box
            torch.testing.assert_close(dec[:, :4], gt[:, :4], atol=1e-6, rtol=0)
            assert torch.allclose(rotated_iou(dec, gt, aligned=True), torch.ones(3, dtype=torch.float64), atol=1e-6)
        else:
            torch.testing.assert_close(dec, gt, atol=1e-6, rtol=0)


def test_nearest_equivalent_wraps_across_le90_boundary():
    pts = torch.tensor([[60.0, 40.0]])
    gt = torch.tensor([[64.0, 41.0, 40.0, 12.0, math.pi / 2 - 0.01]], dtype=torch.float64)
    dist = obb_to_distances(pts.double(), gt)
    near_d, near_a = nearest_equivalent(dist, gt[:, 4], torch.tensor([-math.pi / 2 + 0.01], dtype=torch.float64))
    torch.testing.assert_close(near_a, torch.tensor([-math.pi / 2 - 0.01], dtype=torch.float64))
    torch.testing.assert_close(near_d, dist[:, [2, 3, 0, 1]])  # half turn: l<->r, t<->b
    torch.testing.assert_close(distances_to_obb(pts.double(), near_d, near_a), gt)


def _mock_outputs(n_points: int, num_classes: int) -> dict[str, torch.Tensor]:
    return {
        "cls_logits": torch.full((1, n_points, num_classes), -20.0),
        "bbox_regression": torch.zeros(1, n_points, 4),
        "bbox_angle": torch.zeros(1, n_points),
        "bbox_ctrness": torch.full((1, n_points), -20.0),
    }


def test_regression_loss_is_periodic_in_the_angle():
    model = _model(num_classes=2)
    grid = level_points(SIZES_128, STRIDES, RANGES)
    gt = torch.tensor([[64.0, 60.0, 60.0, 20.0, math.pi / 2 - 0.01]])
    targets = [_targets(gt, [1])]
    pos = assign_points(grid.points, grid.strides, grid.ranges, gt, 1.5) >= 0
    dist = obb_to_distances(grid.points[pos], gt.expand(int(pos.sum()), 5))

    def reg_loss(d: torch.Tensor, a: float) -> float:
        out = _mock_outputs(len(grid.points), 2)
        out["bbox_regression"][0, pos] = d
        out["bbox_angle"][0, pos] = a
        return float(model.compute_loss(targets, out, grid)["bbox_regression"])

    exact = reg_loss(dist, math.pi / 2 - 0.01)
    assert exact < 1e-5
    # the same rectangles described from the other side of the le90 boundary: free of charge
    assert reg_loss(dist[:, [2, 3, 0, 1]], -math.pi / 2 - 0.01) < 1e-5
    assert reg_loss(dist[:, [3, 0, 1, 2]], 0.0 - 0.01) < 1e-5  # a quarter turn back: (b, l, t, r)
    # a small angle error across the boundary costs little; wrong distances cost a lot
    assert reg_loss(dist[:, [2, 3, 0, 1]], -math.pi / 2 + 0.01) < 0.01
    assert reg_loss(dist[:, [1, 0, 3, 2]], math.pi / 2 - 0.01) > 0.1
    assert reg_loss(dist, 0.3) > 0.3


# --------------------------------------------------------------------------- inference


def test_eval_forward_contract_shapes():
    model = _model(detections_per_img=7, score_thresh=0.0).eval()
    with torch.no_grad():
        dets = model([torch.rand(3, 128, 128), torch.rand(3, 100, 90)])
    assert len(dets) == 2
    for d in dets:
        assert set(d) == {"boxes", "scores", "labels"}
        k = d["boxes"].shape[0]
        assert 0 < k <= 7
        assert d["boxes"].shape == (k, 5) and d["boxes"].dtype == torch.float32
        assert d["scores"].shape == (k,) and d["labels"].shape == (k,) and d["labels"].dtype == torch.int64
        assert (d["scores"][:-1] >= d["scores"][1:]).all()
        assert (d["boxes"][:, 2] >= d["boxes"][:, 3]).all()
        assert ((d["boxes"][:, 4] >= -math.pi / 2) & (d["boxes"][:, 4] < math.pi / 2)).all()
        assert ((d["labels"] >= 0) & (d["labels"] < 3)).all()


def test_postprocess_rotated_nms_removes_duplicates_per_class():
    model = _model(num_classes=2).eval()
    grid = level_points(SIZES_128, STRIDES, RANGES)
    box = torch.tensor([[60.0, 52.0, 40.0, 12.0, 0.5]])
    out = _mock_outputs(len(grid.points), 2)
    # three P3 points inside the box, all predicting it exactly; two say class 1, one class 0
    inside = (obb_to_distances(grid.points, box.expand(len(grid.points), 5)).amin(-1) > 0).nonzero().flatten()[:3]
    assert len(inside) == 3
    out["bbox_regression"][0, inside] = obb_to_distances(grid.points[inside], box.expand(3, 5))
    out["bbox_angle"][0, inside] = 0.5
    out["bbox_ctrness"][0, inside] = 5.0
    out["cls_logits"][0, inside[0], 1] = 2.0
    out["cls_logits"][0, inside[1], 1] = 4.0  # the best duplicate of class 1
    out["cls_logits"][0, inside[2], 0] = 3.0
    # a distinct class-1 box elsewhere survives
    far = (grid.points[:, 0] > 110) & (grid.points[:, 1] > 110) & (grid.strides == 8)
    j = far.nonzero()[0, 0]
    out["bbox_regression"][0, j] = torch.tensor([5.0, 4.0, 5.0, 4.0])
    out["cls_logits"][0, j, 1] = 1.0
    out["bbox_ctrness"][0, j] = 5.0
    (det,) = model.postprocess_detections(out, grid, [(128, 128)])
    assert det["labels"].tolist() == [1, 0, 1]
    expected = torch.sigmoid(torch.tensor([4.0, 3.0, 1.0])) * torch.sigmoid(torch.tensor(5.0))
    torch.testing.assert_close(det["scores"], expected.sqrt())
    torch.testing.assert_close(det["boxes"][:2], box.expand(2, 5), atol=1e-4, rtol=0)
    torch.testing.assert_close(det["boxes"][2], torch.tensor([grid.points[j, 0], grid.points[j, 1], 10.0, 8.0, 0.0]))
    # with a threshold no IoU exceeds, nothing is suppressed
    model.nms_thresh = 1.0
    assert len(model.postprocess_detections(out, grid, [(128, 128)])[0]["boxes"]) == 4


# --------------------------------------------------------------------------- overfit sanity


STEPS = 100


@pytest.mark.parametrize("threads", [1, 2])
def test_overfits_one_image_with_two_rotated_boxes(threads):
    # the float reductions differ with the thread count: the fit must not hang on one of them
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        first, last, det = _overfit_two_rotated_boxes()
    finally:
        torch.set_num_threads(before)
    assert last < 0.5 * first, (first, last)
    # the top detections find both boxes with their classes
    ious = rotated_iou(det["boxes"][:5].double(), TWO_BOXES.double())
    for g, label in enumerate((0, 2)):
        assert ((ious[:, g] > 0.5) & (det["labels"][:5] == label)).any(), ious


def _overfit_two_rotated_boxes() -> tuple[float, float, dict[str, torch.Tensor]]:
    """Train on one image for ``STEPS`` steps: the first and last loss, and the detections after."""
    model = _model().train()
    image = _paint(TWO_BOXES)
    targets = [_targets(TWO_BOXES, [0, 2])]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = last = None
    for _ in range(STEPS):
        losses = model([image], targets)
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        last = float(total.detach())
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        det = model([image])[0]
    assert first is not None and last is not None
    return first, last, det

"""Detections container and per-tile merging (NMS / greedy NMM, HBB / OBB) with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import box_iou as tv_box_iou

from rsvl.errors import GeometryError, InputError
from rsvl.geometry import obb_corners, rotated_iou
from rsvl.geometry.greedy import greedy_groups
from rsvl.io import Detections, MergeConfig, greedy_nmm, merge_detections, nms
from rsvl.io import merge as merge_mod


def dets(boxes, scores, labels=None, names=None) -> Detections:
    n = len(scores)
    return Detections(np.asarray(boxes, float), np.asarray(scores, float), labels or [0] * n, names)


# --------------------------------------------------------------------------- Detections


def test_detections_normalises_and_validates():
    d = Detections(torch.tensor([[0, 0, 2, 2]]), torch.tensor([0.5]), torch.tensor([3]))
    assert d.boxes.dtype == np.float64 and d.labels.dtype == np.int64 and d.kind == "hbb" and len(d) == 1
    assert Detections.empty("obb").boxes.shape == (0, 5)
    with pytest.raises(GeometryError, match="shape"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(GeometryError, match="2 boxes but 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(GeometryError, match="NaN"):
        Detections(np.full((1, 4), np.nan), np.zeros(1), np.zeros(1))
    with pytest.raises(GeometryError, match="integers"):
        Detections(np.zeros((1, 4)), np.zeros(1), np.array([0.5]))
    with pytest.raises(GeometryError, match="names"):
        Detections(np.zeros((1, 4)), np.zeros(1), np.zeros(1), ("a", "b"))


def test_translate_select_concat_clip():
    h = dets([[0, 0, 10, 10], [5, 5, 30, 8]], [0.9, 0.4], [1, 2], ("car", "ship"))
    moved = h.translate(100, 50)
    np.testing.assert_array_equal(moved.boxes, [[100, 50, 110, 60], [105, 55, 130, 58]])
    o = Detections(np.array([[10.0, 10, 4, 2, 0.3]]), np.array([0.5]), np.array([0]))
    np.testing.assert_array_equal(o.translate(1, 2).boxes, [[11, 12, 4, 2, 0.3]])
    assert h.select(np.array([False, True])).names == ("ship",)
    assert h.select(slice(None, None, -1)).labels.tolist() == [2, 1]
    both = Detections.concat([h, moved, Detections.empty("obb")])
    assert len(both) == 4 and both.names == ("car", "ship", "car", "ship")
    with pytest.raises(GeometryError, match="HBB and OBB"):
        Detections.concat([h, o])
    clipped = dets([[-5, -5, 5, 5], [20, 20, 30, 30], [8, 2, 40, 6]], [1, 1, 1]).clip(25, 25)
    np.testing.assert_array_equal(clipped.boxes, [[0, 0, 5, 5], [20, 20, 25, 25], [8, 2, 25, 6]])
    assert len(dets([[30, 30, 40, 40]], [1]).clip(25, 25)) == 0
    assert dets([[0, 0, 1, 1]], [1], [1]).with_class_names(["a", "b"]).names == ("b",)
    assert dets([[0, 0, 1, 1]], [1], [1]).class_names(["a", "b"]) == ["b"]
    np.testing.assert_allclose(o.scale(2).boxes, [[20, 20, 8, 4, 0.3]])


# --------------------------------------------------------------------------- known answers


def test_two_tile_detections_of_one_object_collapse_hbb():
    d = dets([[100, 100, 150, 150], [102, 101, 151, 150]], [0.8, 0.9])
    out = merge_detections(d, MergeConfig("nms", 0.5))
    assert len(out) == 1 and out.scores.tolist() == [0.9]
    np.testing.assert_array_equal(out.boxes, [[102, 101, 151, 150]])
    out = merge_detections(d, MergeConfig("nmm", 0.5))
    assert len(out) == 1 and out.scores.tolist() == [0.9]
    np.testing.assert_array_equal(out.boxes, [[100, 100, 151, 150]])


def test_different_classes_are_kept_unless_class_agnostic():
    d = dets([[100, 100, 150, 150], [101, 100, 150, 150]], [0.9, 0.8], [0, 1], ("car", "van"))
    for method in ("nms", "nmm"):
        out = merge_detections(d, MergeConfig(method))
        assert len(out) == 2 and out.names == ("car", "van")
        agnostic = merge_detections(d, MergeConfig(method, class_agnostic=True))
        assert len(agnostic) == 1 and agnostic.names == ("car",) and agnostic.labels.tolist() == [0]


def test_nmm_encloses_the_group_with_max_score():
    d = dets([[100, 100, 150, 150], [110, 105, 160, 152], [400, 400, 410, 410]], [0.7, 0.9, 0.5])
    # IoU of the first two = 1800 / 3050 = 0.59
    out = greedy_nmm(d, 0.5)
    np.testing.assert_array_equal(out.boxes, [[100, 100, 160, 152], [400, 400, 410, 410]])
    assert out.scores.tolist() == [0.9, 0.5]


def test_ios_joins_an_object_cut_by_a_tile_edge():
    d = dets([[100, 100, 150, 150], [100, 100, 120, 150]], [0.9, 0.6])  # IoU 0.4, IOS 1.0
    assert len(nms(d, 0.5, "iou")) == 2
    assert len(nms(d, 0.5, "ios")) == 1
    out = greedy_nmm(dets([[100, 100, 150, 150], [130, 100, 155, 150]], [0.6, 0.9]), 0.5, "ios")
    np.testing.assert_array_equal(out.boxes, [[100, 100, 155, 150]])


def test_obb_nms_and_nmm_known_answers():
    d = Detections(np.array([[100, 100, 40, 20, 0.3], [101, 100, 40, 20, 0.3]]), np.array([0.9, 0.8]), np.zeros(2))
    out = merge_detections(d, MergeConfig("nms"))
    assert len(out) == 1 and out.scores.tolist() == [0.9]
    relabelled = Detections(d.boxes, d.scores, np.array([0, 1]))
    assert len(merge_detections(relabelled, MergeConfig("nms"))) == 2
    theta = 0.4
    u = np.array([math.cos(theta), math.sin(theta)])
    c1, c2 = np.array([100.0, 100.0]), np.array([100.0, 100.0]) + 20 * u
    boxes = np.array([[*c1, 40, 20, theta], [*c2, 40, 20, theta]])  # IoU = 400 / 1200
    out = greedy_nmm(Detections(boxes, np.array([0.5, 0.7]), np.zeros(2)), 0.3)
    assert len(out) == 1 and out.scores.tolist() == [0.7]
    np.testing.assert_allclose(out.boxes[0], [*(c1 + 10 * u), 60, 20, theta], atol=1e-9)
    assert len(greedy_nmm(Detections(boxes, np.array([0.5, 0.7]), np.zeros(2)), 0.34)) == 2


def test_merge_none_and_min_score():
    d = dets([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.2, 0.9, 0.05])
    out = merge_detections(d, MergeConfig("none", min_score=0.1))
    assert out.scores.tolist() == [0.9, 0.2]
    assert len(merge_detections(Detections.empty())) == 0
    with pytest.raises(InputError):
        MergeConfig("wbf")
    with pytest.raises(InputError):
        MergeConfig(threshold=1.5)


# --------------------------------------------------------------------------- against references


def _random_hbb(rng, n, span=400.0):
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(2, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def _random_obb(rng, n, span=300.0):
    return np.column_stack(
        [rng.uniform(0, span, (n, 2)), rng.uniform(20, 50, n), rng.uniform(5, 20, n), rng.uniform(-1.5, 1.5, n)]
    )


@pytest.mark.parametrize("seed", range(4))
def test_sparse_pair_search_matches_dense_overlaps(seed, monkeypatch):
    monkeypatch.setattr(merge_mod, "_PAIR_CHUNK", 97)  # exercise chunking
    rng = np.random.default_rng(seed)
    n = 250
    labels = rng.integers(0, 3, n)
    for kind in ("hbb", "obb"):
        boxes = _random_hbb(rng, n) if kind == "hbb" else _random_obb(rng, n)
        d = Detections(boxes, rng.uniform(size=n), labels)
        if kind == "hbb":
            dense = tv_box_iou(torch.as_tensor(boxes), torch.as_tensor(boxes)).numpy()
        else:
            dense = rotated_iou(boxes, boxes)
        same = labels[:, None] == labels[None, :]
        upper = np.triu(np.ones((n, n), bool), 1)
        expected = set(zip(*np.nonzero((dense > 0.1) & same & upper), strict=True))
        ii, jj = merge_mod.overlap_pairs(d, 0.1, "iou")
        assert set(zip(ii.tolist(), jj.tolist(), strict=True)) == expected


@pytest.mark.parametrize("seed", range(3))
def test_hbb_nms_with_ios_machinery_in_iou_mode_equals_torchvision(seed):
    rng = np.random.default_rng(seed)
    n = 300
    boxes, scores, labels = _random_hbb(rng, n), rng.uniform(size=n), rng.integers(0, 2, n)
    d = Detections(boxes, scores, labels)
    ranked = d.select(np.argsort(-scores, kind="stable"))
    ii, jj = merge_mod.overlap_pairs(ranked, 0.3, "iou")
    keep, _ = greedy_groups(len(ranked), ii, jj)
    tv = tv_batched_nms(torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(labels), 0.3).numpy()
    np.testing.assert_array_equal(np.sort(ranked.scores[keep]), np.sort(scores[tv]))
    np.testing.assert_array_equal(nms(d, 0.3).scores, scores[tv])


def test_large_hbb_nms_takes_the_sparse_path_with_the_same_result(monkeypatch):
    rng = np.random.default_rng(7)
    n = 400
    boxes, scores, labels = _random_hbb(rng, n), rng.uniform(size=n), rng.integers(0, 3, n)
    d = Detections(boxes, scores, labels)
    via_torchvision = nms(d, 0.4)
    monkeypatch.setattr(merge_mod, "_TORCHVISION_MAX_BOXES", 10)
    via_sweep = nms(d, 0.4)
    np.testing.assert_array_equal(via_sweep.boxes, via_torchvision.boxes)
    np.testing.assert_array_equal(via_sweep.labels, via_torchvision.labels)


def _reference_greedy_nmm(boxes, scores, labels, thr):
    """Dense transcription of SAHI's greedy_nmm (match against the leader, merge into the hull)."""
    order = list(np.argsort(-scores, kind="stable"))
    iou = tv_box_iou(torch.as_tensor(boxes), torch.as_tensor(boxes)).numpy()
    out = []
    while order:
        lead = order.pop(0)
        group = [j for j in order if labels[j] == labels[lead] and iou[lead, j] > thr]
        order = [j for j in order if j not in group]
        members = boxes[[lead, *group]]
        out.append([*members[:, :2].min(0), *members[:, 2:].max(0), scores[lead]])
    return np.array(out)


@pytest.mark.parametrize("seed", range(3))
def test_greedy_nmm_matches_dense_reference(seed):
    rng = np.random.default_rng(seed)
    n = 200
    boxes, scores, labels = _random_hbb(rng, n, 300), rng.uniform(size=n), rng.integers(0, 2, n)
    out = greedy_nmm(Detections(boxes, scores, labels), 0.2)
    ref = _reference_greedy_nmm(boxes, scores, labels, 0.2)
    np.testing.assert_allclose(np.column_stack([out.boxes, out.scores]), ref)


def test_large_obb_group_merges_through_convex_hull():
    rng = np.random.default_rng(0)
    n = 12  # 48 corners: the hull keeps min_area_rect's pair search small
    boxes = np.column_stack([100 + rng.normal(0, 2, (n, 2)), np.full(n, 40.0), np.full(n, 20.0), np.full(n, 0.2)])
    out = greedy_nmm(Detections(boxes, rng.uniform(size=n), np.zeros(n)), 0.1)
    assert len(out) == 1
    corners = np.asarray(obb_corners(boxes)).reshape(-1, 2)
    # every input corner lies inside the merged rectangle
    cx, cy, w, h, a = out.boxes[0]
    rel = corners - [cx, cy]
    u = rel @ [math.cos(a), math.sin(a)]
    v = rel @ [-math.sin(a), math.cos(a)]
    assert (np.abs(u) <= w / 2 + 1e-6).all() and (np.abs(v) <= h / 2 + 1e-6).all()

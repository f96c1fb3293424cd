"""Grounding metrics: hand-computed cases, and the official loops of RMSIN and VRSBench as oracles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsvl.datasets.sample import Instance, Referring, Sample
from rsvl.errors import GeometryError, InputError
from rsvl.geometry import masks
from rsvl.metrics.grounding import (
    evaluate_grounding,
    grounding_from_samples,
    load_grounding_json,
    load_vrsbench_referring,
)

GT = {"a": (0, 0, 10, 10), "b": (0, 0, 10, 10), "c": (0, 0, 4, 4)}
PRED = {"a": (0, 0, 10, 5), "b": (5, 0, 15, 10), "c": (0, 0, 4, 4)}  # IoU 1/2, 1/3, 1


def test_hbb_hand_computed_rrsisd():
    r = evaluate_grounding(GT, PRED, "rrsisd")
    assert r.metrics["Pr@0.5"] == pytest.approx(2 / 3)  # 0.5 >= 0.5 counts
    assert r.metrics["Pr@0.6"] == pytest.approx(1 / 3)
    assert r.metrics["Pr@0.9"] == pytest.approx(1 / 3)
    assert r.metrics["mIoU"] == pytest.approx((0.5 + 1 / 3 + 1) / 3)
    assert r.metrics["oIoU"] == pytest.approx((50 + 50 + 16) / (100 + 150 + 16))
    assert r.protocol["comparison"] == "IoU >= t"
    assert "RMSIN" in r.protocol["reference"]["implementation"]
    assert r.to_dict()["task"] == "grounding"


def test_strict_preset_and_overrides():
    strict = evaluate_grounding(GT, PRED, "zeroov")
    assert strict.metrics["Pr@0.5"] == pytest.approx(1 / 3)  # 0.5 > 0.5 does not count
    assert strict.metrics["mIoU"] == pytest.approx((0.5 + 1 / 3 + 1) / 3)
    over = evaluate_grounding(GT, PRED, "rrsisd", strict=True, thresholds=[0.3, 0.5])
    assert set(over.metrics) == {"Pr@0.3", "Pr@0.5", "mIoU", "oIoU"}
    assert over.metrics["Pr@0.3"] == pytest.approx(1.0)
    assert over.metrics["Pr@0.5"] == pytest.approx(1 / 3)
    assert over.protocol["overrides"] == ["strict", "thresholds"]


def test_vrsbench_plus_one_hand_computed():
    gt = {"q": (0, 0, 9, 9)}
    pred = {"q": (0, 0, 9, 4)}  # 10x10 and 10x5 pixels under the +1 convention
    r = evaluate_grounding(gt, pred, "vrsbench")
    assert r.metrics["mIoU"] == pytest.approx(0.5)
    assert r.metrics["Pr@0.5"] == 1.0
    assert r.details["cum_I"] == 50 and r.details["cum_U"] == 100
    assert r.protocol["paper_names"]["Pr@0.7"] == "Acc@0.7"
    plain = evaluate_grounding(gt, pred, "rrsisd")
    assert plain.metrics["mIoU"] == pytest.approx(36 / 81)


def _vrsbench_compute_iou(bbox1, bbox2):
    """Transcription of lx709/VRSBench eval_fianl/eval_utils.py computeIoU (the oracle)."""
    x1, y1, x2, y2 = bbox1
    x3, y3, x4, y4 = bbox2
    inter = max(0, min(x2, x4) - max(x1, x3) + 1) * max(0, min(y2, y4) - max(y1, y3) + 1)
    union = (x2 - x1 + 1) * (y2 - y1 + 1) + (x4 - x3 + 1) * (y4 - y3 + 1) - inter
    return inter / union, inter, union


box_0_100 = st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)).map(
    lambda t: (min(t[0], t[2]), min(t[1], t[3]), max(t[0], t[2]), max(t[1], t[3]))
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(box_0_100, box_0_100), min_size=1, max_size=12))
def test_vrsbench_matches_notebook_loop(pairs):
    gt = {str(i): g for i, (g, _) in enumerate(pairs)}
    pred = {str(i): p for i, (_, p) in enumerate(pairs)}
    # compute_metrics.ipynb: count iou >= thres, mean_IoU / total, cumI / cumU
    count = np.zeros(2)
    cum_i = cum_u = mean = 0.0
    for g, p in pairs:
        iou, i, u = _vrsbench_compute_iou(g, p)
        mean += iou
        cum_i += i
        cum_u += u
        for j, t in enumerate((0.5, 0.7)):
            count[j] += iou >= t
    r = evaluate_grounding(gt, pred, "vrsbench")
    assert r.metrics["Pr@0.5"] == count[0] / len(pairs)
    assert r.metrics["Pr@0.7"] == count[1] / len(pairs)
    assert r.metrics["mIoU"] == pytest.approx(mean / len(pairs), abs=1e-12)
    assert r.metrics["oIoU"] == pytest.approx(cum_i / cum_u, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_masks_match_rmsin_loop(seed, n):
    rng = np.random.default_rng(seed)
    gts = [rng.random((12, 9)) < rng.random() for _ in range(n)]
    preds = [rng.random((12, 9)) < rng.random() for _ in range(n)]
    # RMSIN test.py evaluate(): computeIoU, this_iou = 0 if U == 0, >= thresholds, cum_I / cum_U
    cum_i = cum_u = 0
    ious, correct = [], np.zeros(5)
    for g, p in zip(gts, preds, strict=True):
        i = np.sum(np.logical_and(p, g))
        u = np.sum(np.logical_or(p, g))
        this = 0.0 if u == 0 else i * 1.0 / u
        ious.append(this)
        cum_i += i
        cum_u += u
        for j, t in enumerate((0.5, 0.6, 0.7, 0.8, 0.9)):
            correct[j] += this >= t
    r = evaluate_grounding(dict(enumerate(gts)), dict(enumerate(preds)), "rrsisd")
    for j, t in enumerate((0.5, 0.6, 0.7, 0.8, 0.9)):
        assert r.metrics[f"Pr@{t}"] == correct[j] / n
    assert r.metrics["mIoU"] == pytest.approx(np.mean(ious), abs=1e-12)
    if cum_u:
        assert r.metrics["oIoU"] == pytest.approx(cum_i / cum_u, abs=1e-12)
    else:
        assert r.metrics["oIoU"] == -1.0


def test_rle_masks_equal_bool_masks():
    rng = np.random.default_rng(3)
    g = {i: rng.random((20, 30)) < 0.4 for i in range(4)}
    p = {i: rng.random((20, 30)) < 0.5 for i in range(4)}
    as_bool = evaluate_grounding(g, p)
    as_rle = evaluate_grounding({k: masks.encode(v) for k, v in g.items()}, {k: masks.encode(v) for k, v in p.items()})
    assert as_rle.metrics == as_bool.metrics
    assert as_rle.details["kind"] == "mask"


def test_obb_rotated_pair():
    theta = 0.3
    c, s = math.cos(theta), math.sin(theta)
    # (5, 5) and (10, 5) 10x10 squares (IoU 1/3), the second centre rotated about the first
    gt = {"r": (5.0, 5.0, 10.0, 10.0, theta), "same": (3.0, 4.0, 6.0, 2.0, -0.7)}
    pred = {"r": (5.0 + 5.0 * c, 5.0 + 5.0 * s, 10.0, 10.0, theta), "same": (3.0, 4.0, 6.0, 2.0, -0.7)}
    r = evaluate_grounding(gt, pred, per_item=True)
    assert r.details["iou"]["r"] == pytest.approx(1 / 3, abs=1e-9)
    assert r.details["iou"]["same"] == pytest.approx(1.0, abs=1e-9)
    assert r.details["cum_I"] == pytest.approx(50 + 12, abs=1e-6)
    assert r.details["cum_U"] == pytest.approx(150 + 12, abs=1e-6)
    with pytest.raises(InputError, match="horizontal boxes only"):
        evaluate_grounding(gt, pred, "vrsbench")


def test_missing_prediction_counts_as_empty():
    pred = {"a": PRED["a"], "c": PRED["c"]}
    r = evaluate_grounding(GT, pred)
    assert r.metrics["mIoU"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert r.metrics["oIoU"] == pytest.approx((50 + 0 + 16) / (100 + 100 + 16))  # union += GT area
    assert r.details["n_missing"] == 1
    assert any("1 of 3" in w and "'b'" in w for w in r.warnings)
    with pytest.raises(InputError, match="no prediction"):
        evaluate_grounding(GT, pred, missing="error")


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="absent from the ground truth"):
        evaluate_grounding(GT, {**PRED, "zzz": (0, 0, 1, 1)})
    with pytest.raises(GeometryError, match="x2 < x1"):
        evaluate_grounding(GT, {**PRED, "a": (5, 0, 1, 1)})
    with pytest.raises(GeometryError, match="NaN"):
        evaluate_grounding({"a": (0, 0, float("nan"), 1)}, {})
    with pytest.raises(GeometryError, match="mix kinds"):
        evaluate_grounding({"a": (0, 0, 1, 1), "b": np.zeros((3, 3), bool)}, {})
    with pytest.raises(GeometryError, match="shape"):
        evaluate_grounding({"a": np.zeros((3, 3), bool)}, {"a": np.zeros((3, 4), bool)})
    with pytest.raises(InputError, match="unknown grounding preset"):
        evaluate_grounding(GT, PRED, "nope")
    with pytest.raises(InputError, match="both read as"):
        evaluate_grounding({1: (0, 0, 1, 1), "1": (0, 0, 1, 1)}, {})


def test_int_and_str_ids_are_the_same_item():
    r = evaluate_grounding({1: (0, 0, 10, 10)}, {"1": (0, 0, 10, 10)})
    assert r.metrics["mIoU"] == 1.0 and not r.warnings


def test_from_samples():
    inst = Instance(
        "ship", bbox=(0, 0, 10, 10), polygon=(0, 0, 10, 0, 10, 10, 0, 10), mask=masks.encode(np.eye(4, dtype=bool))
    )
    sample = Sample(
        "img/1.png",
        instances=[inst],
        refs=[Referring(["the ship"], target=0), Referring(["the box"], bbox=(1, 1, 2, 2), id=7)],
    )
    boxes = grounding_from_samples([sample])
    assert boxes == {"img/1.png#0": (0.0, 0.0, 10.0, 10.0), "7": (1.0, 1.0, 2.0, 2.0)}
    only_target = Sample("img/2.png", instances=[inst], refs=[Referring(["x"], target=0)])
    obb = grounding_from_samples([only_target], kind="obb")["img/2.png#0"]
    assert obb[:4] == pytest.approx((5.0, 5.0, 10.0, 10.0))
    m = grounding_from_samples([only_target], kind="mask")["img/2.png#0"]
    assert m.dtype == bool and m.sum() == 4
    with pytest.raises(InputError, match="no mask"):
        grounding_from_samples(
            [Sample("x.png", instances=[Instance("a")], refs=[Referring(["x"], target=0)])], kind="mask"
        )


def test_load_grounding_json(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps([{"id": 1, "bbox": [0, 0, 2, 2]}, {"question_id": "x", "bbox": [1, 1, 3, 3]}]))
    assert load_grounding_json(path) == {"1": [0, 0, 2, 2], "x": [1, 1, 3, 3]}
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"1": [0, 0, 2, 2]}))
    assert load_grounding_json(obj) == {"1": [0, 0, 2, 2]}
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "bbox": [0, 0, 1, 1]}\n{"id": "1", "bbox": [0, 0, 1, 1]}\n')
    with pytest.raises(InputError, match=r"dup.jsonl:2: .*duplicate id"):
        load_grounding_json(dup)


def test_load_vrsbench_referring(tmp_path):
    lines = [
        {"question_id": 1, "ground_truth": "{<10><20><30><40>}", "answer": "{<10><20><30><40>}"},
        {"question_id": 2, "ground_truth": "{<0><0><9><9>}", "answer": "the ship at {<0><0><9><4>} "},
        {"question_id": 3, "ground_truth": "{<0><0><50><50>}", "answer": "I cannot find it"},
    ]
    path = tmp_path / "rsbench_referring.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    gt, pred = load_vrsbench_referring(path)
    assert gt["2"] == (0, 0, 9, 9) and pred["2"] == (0, 0, 9, 4) and "3" not in pred
    r = evaluate_grounding(gt, pred, "vrsbench")
    assert r.metrics["mIoU"] == pytest.approx((1 + 0.5 + 0) / 3)  # the invalid answer is IoU 0 over total
    assert r.metrics["Pr@0.5"] == pytest.approx(2 / 3)
    assert r.details["n_missing"] == 1

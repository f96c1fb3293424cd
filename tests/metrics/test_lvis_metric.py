"""The lvis preset equals the ``lvis`` package's LVISEval, and Fixed AP equals Dave et al.'s script."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from collections import defaultdict

import numpy as np
import pytest

from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError
from rsvl.metrics.detection import evaluate_detection

lvis = pytest.importorskip("lvis")
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
TOL = 1e-9
_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def random_lvis_case(rng: np.random.Generator, n_images: int, n_cats: int, dets_per_image: int = 12):
    cats = [{"id": c + 1, "name": f"cat{c}", "frequency": "rcf"[rng.integers(3)]} for c in range(n_cats)]
    images, anns, res = [], [], []
    for i in range(n_images):
        iid = i + 1
        pos = set(rng.choice(n_cats, size=int(rng.integers(0, min(4, n_cats) + 1)), replace=False).tolist())
        others = [c for c in range(n_cats) if c not in pos]
        neg = (
            set(rng.choice(others, size=min(len(others), int(rng.integers(0, 3))), replace=False).tolist())
            if others
            else set()
        )
        not_exh = set(c for c in pos if rng.random() < 0.3)
        images.append(
            {
                "id": iid,
                "width": 640,
                "height": 480,
                "neg_category_ids": sorted(cats[c]["id"] for c in neg),
                "not_exhaustive_category_ids": sorted(cats[c]["id"] for c in not_exh),
            }
        )
        for c in pos:
            for _ in range(int(rng.integers(1, 5))):
                x, y = rng.uniform(0, 500, 2)
                w, h = rng.uniform(4, 120, 2)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": iid,
                        "category_id": cats[c]["id"],
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "area": float(w * h * rng.uniform(0.6, 1.0)),
                        "ignore": int(rng.random() < 0.05),
                    }
                )
                for _ in range(int(rng.integers(0, 3))):
                    j = rng.normal(0, 4, 4)
                    res.append(
                        {
                            "image_id": iid,
                            "category_id": cats[c]["id"],
                            "bbox": [
                                float(x + j[0]),
                                float(y + j[1]),
                                float(max(w + j[2], 1)),
                                float(max(h + j[3], 1)),
                            ],
                            "score": round(float(rng.random()), 2),
                        }
                    )
        for _ in range(dets_per_image):  # verified negatives, unverified categories, random boxes
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(4, 100, 2)
            res.append(
                {
                    "image_id": iid,
                    "category_id": int(rng.integers(1, n_cats + 1)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": round(float(rng.random()), 2),
                }
            )
    rng.shuffle(res)
    return {"images": images, "annotations": anns, "categories": cats}, res


@pytest.fixture
def numpy_float(monkeypatch):
    """lvis 0.5.3 still calls ``np.float`` (removed in numpy 1.24)."""
    monkeypatch.setattr(np, "float", float, raising=False)
    logging.getLogger("lvis").setLevel(logging.ERROR)


def lvis_reference(tmp_path, gt, res, max_dets=300, top_per_cat=None):
    """LVISEval as its README runs it; with ``top_per_cat``, as evaluate_ap_fixed.py runs it."""
    path = tmp_path / "lvis_gt.json"
    path.write_text(json.dumps(gt))
    res = copy.deepcopy(res)
    if top_per_cat is not None:
        by_cat = defaultdict(list)
        for ann in res:
            by_cat[ann["category_id"]].append(ann)
        res = []
        for cat_anns in by_cat.values():
            res.extend(sorted(cat_anns, key=lambda x: x["score"], reverse=True)[:top_per_cat])
        max_dets = -1
    with contextlib.redirect_stdout(io.StringIO()):
        G = lvis.LVIS(str(path))
        D = lvis.LVISResults(G, res, max_dets=max_dets)
        E = lvis.LVISEval(G, D, iou_type="bbox")
        E.params.max_dets = max_dets
        E.run()
    return E.results


@pytest.mark.parametrize("seed", range(6))
def test_lvis_equals_lviseval(seed, tmp_path, numpy_float):
    rng = np.random.default_rng(seed)
    gt, res = random_lvis_case(rng, int(rng.integers(3, 20)), int(rng.integers(2, 9)))
    ref = lvis_reference(tmp_path, gt, res)
    report = evaluate_detection(gt, res, preset="lvis")
    for key in (*_KEYS, "AR@300", "ARs@300", "ARm@300", "ARl@300"):
        assert report.metrics[key] == pytest.approx(float(ref[key]), abs=TOL), key


@pytest.mark.parametrize("seed", range(3))
def test_per_image_cap_applies_before_the_federated_filter(seed, tmp_path, numpy_float):
    rng = np.random.default_rng(50 + seed)
    gt, res = random_lvis_case(rng, 6, 5, dets_per_image=25)
    ref = lvis_reference(tmp_path, gt, res, max_dets=8)
    report = evaluate_detection(gt, res, preset="lvis", max_dets=[8], fixed_ap=False)
    for key in (*_KEYS, "AR@8"):
        assert report.metrics[key] == pytest.approx(float(ref[key]), abs=TOL), key
    assert "AP_fixed" not in report.metrics


@pytest.mark.parametrize("seed", range(3))
def test_fixed_ap_equals_the_devil_script(seed, tmp_path, numpy_float):
    rng = np.random.default_rng(80 + seed)
    gt, res = random_lvis_case(rng, 12, 4, dets_per_image=20)
    cap = 30  # below the detections per category, so the cap bites
    ref = lvis_reference(tmp_path, gt, res, top_per_cat=cap)
    report = evaluate_detection(gt, res, preset="lvis", dets_per_cat=cap)
    for key in _KEYS:
        assert report.metrics[f"{key}_fixed"] == pytest.approx(float(ref[key]), abs=TOL), key
    assert report.protocol["fixed_ap"]["dets_per_category"] == cap
    # with the default 10,000 per category nothing is cut: Fixed AP is LVIS AP without the per-image cap
    ref_uncapped = lvis_reference(tmp_path, gt, res, top_per_cat=10_000)
    default = evaluate_detection(gt, res, preset="lvis")
    assert default.metrics["AP_fixed"] == pytest.approx(float(ref_uncapped["AP"]), abs=TOL)


def test_federated_rules_by_hand():
    cats = [
        {"id": 1, "name": "a", "frequency": "r"},
        {"id": 2, "name": "b", "frequency": "f"},
        {"id": 3, "name": "c", "frequency": "c"},
    ]
    gt = {
        "categories": cats,
        "images": [{"id": 1, "neg_category_ids": [2], "not_exhaustive_category_ids": [1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100}],
    }
    res = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.9},  # not exhaustive: ignored
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.9},  # verified absent: FP
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},
    ]  # unverified: dropped
    report = evaluate_detection(gt, res, preset="lvis")
    assert report.metrics["APr"] == pytest.approx(1.0)  # category a: the unmatched 0.9 box is ignored
    assert report.metrics["APf"] == -1.0  # b has no positives
    assert report.metrics["APc"] == -1.0
    assert report.protocol["frequency_groups"] == {"r": 1, "c": 1, "f": 1}


def test_lvis_needs_its_fields():
    gt = {"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1}], "annotations": []}
    with pytest.raises(DatasetError, match="frequency"):
        evaluate_detection(gt, [], preset="lvis")
    gt["categories"][0]["frequency"] = "r"
    with pytest.raises(DatasetError, match=r"images\[0\]\.neg_category_ids"):
        evaluate_detection(gt, [], preset="lvis")


def test_lvis_from_samples():
    cats = [Category(1, "a", {"frequency": "c"}), Category(2, "b", {"frequency": "f"})]
    gt = [
        Sample(
            image="x.png",
            image_id=1,
            instances=[Instance("a", bbox=(0, 0, 10, 10))],
            meta={"neg_categories": ["b"], "not_exhaustive_categories": []},
        )
    ]
    pred = [
        Sample(
            image="x.png",
            image_id=1,
            instances=[Instance("a", bbox=(0, 0, 10, 10), score=0.3), Instance("b", bbox=(0, 0, 10, 10), score=0.9)],
        )
    ]
    report = evaluate_detection(gt, pred, preset="lvis", categories=cats)
    assert report.metrics["APc"] == pytest.approx(1.0)
    assert report.metrics["AP"] == pytest.approx(1.0)  # b has no positives, so it has no AP

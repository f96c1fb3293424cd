"""Presets other than plain COCO: AI-TOD against its cocoapi fork, option checking, report shape."""

from __future__ import annotations

import numpy as np
import pytest
from aitod_fork_port import STAT_NAMES, AitodCOCOeval
from coco_cases import pycocotools_eval, random_coco_case

from rsvl.datasets.sample import Instance, Sample
from rsvl.errors import InputError
from rsvl.metrics.detection import AITOD, COCO, evaluate_detection

TOL = 1e-9


@pytest.mark.parametrize("seed", range(8))
def test_aitod_equals_the_fork(seed):
    rng = np.random.default_rng(100 + seed)
    gt, res = random_coco_case(
        rng,
        int(rng.integers(2, 25)),
        int(rng.integers(1, 4)),
        box_scale=0.35,
        crowded_image=seed % 2 == 0,
        score_decimals=[1, None][seed % 2],
    )
    ref = pycocotools_eval(gt, res, evaluator_cls=AitodCOCOeval)
    report = evaluate_detection(gt, res, preset="aitod")
    assert tuple(report.metrics) == STAT_NAMES
    np.testing.assert_allclose([report.metrics[k] for k in STAT_NAMES], ref.stats, rtol=0, atol=TOL)
    assert report.metrics["AP25"] == -1.0  # 0.25 is not an evaluated threshold, as in the fork


def test_aitod_area_ranges_and_maxdets_match_the_fork():
    assert AITOD.max_dets == (1, 100, 1500)
    assert [(a[0], a[1], a[2]) for a in AITOD.area_ranges] == [
        ("all", 0, 1e10),
        ("verytiny", 0, 64),
        ("tiny", 64, 256),
        ("small", 256, 1024),
        ("medium", 1024, 1e10),
    ]
    gt, res = random_coco_case(np.random.default_rng(1), 4, 1, box_scale=0.3)
    report = evaluate_detection(gt, res, preset="aitod")
    assert report.protocol["max_dets"] == [1, 100, 1500]
    assert report.protocol["area_ranges"]["tiny"] == [64.0, 256.0]
    assert "LRP" in report.protocol["lrp"]


def test_aitod_with_025_threshold_reports_ap25():
    gt, res = random_coco_case(np.random.default_rng(7), 10, 2, box_scale=0.3)
    thr = [0.25, 0.5, 0.75]
    ref = pycocotools_eval(gt, res, evaluator_cls=AitodCOCOeval, iouThrs=np.array(thr))
    report = evaluate_detection(gt, res, preset="aitod", iou_thrs=thr)
    np.testing.assert_allclose([report.metrics[k] for k in STAT_NAMES], ref.stats, atol=TOL)
    assert report.metrics["AP25"] >= report.metrics["AP50"] >= 0


def test_lrp_corner_cases_match_the_fork():
    # one category never detected correctly (no TP: oLRP 1), one without detections at all
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 6, 6], "area": 36, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [30, 30, 6, 6], "area": 36, "iscrowd": 0},
        ],
    }
    res = [
        {"image_id": 1, "category_id": 1, "bbox": [40, 40, 5, 5], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [30, 30, 6, 7], "score": 0.4},
    ]
    ref = pycocotools_eval(gt, res, evaluator_cls=AitodCOCOeval)
    report = evaluate_detection(gt, res, preset="aitod")
    np.testing.assert_allclose([report.metrics[k] for k in STAT_NAMES], ref.stats, atol=TOL)
    report.to_dict()  # NaNs of the LRP arrays never reach the metrics


def test_coco_preset_constants_are_pycocotools_params():
    from pycocotools.cocoeval import Params

    p = Params("bbox")
    assert list(COCO.max_dets) == p.maxDets
    assert [[a[1], a[2]] for a in COCO.area_ranges] == p.areaRng
    assert [a[0] for a in COCO.area_ranges] == p.areaRngLbl
    gt, res = random_coco_case(np.random.default_rng(0), 3, 1)
    report = evaluate_detection(gt, res)
    assert report.protocol["iou_thresholds"] == p.iouThrs.tolist()
    assert report.protocol["recall_thresholds"] == p.recThrs.tolist()


def test_option_and_override_checks():
    gt, res = random_coco_case(np.random.default_rng(0), 3, 1)
    with pytest.raises(InputError, match="unknown option"):
        evaluate_detection(gt, res, fixed_ap=True)
    with pytest.raises(InputError, match="iou_thrs"):
        evaluate_detection(gt, res, iou_thrs=[0.5, 1.5])
    with pytest.raises(InputError, match="max_dets"):
        evaluate_detection(gt, res, max_dets=[0, 10])
    with pytest.raises(InputError, match="area_ranges"):
        evaluate_detection(gt, res, area_ranges={"all": [10, 1]})
    with pytest.raises(InputError, match="box_type"):
        evaluate_detection(gt, res, box_type="rbox")
    with pytest.raises(InputError, match="horizontal boxes"):
        evaluate_detection(gt, res, preset="visdrone", box_type="obb")
    with pytest.raises(InputError, match="does not take"):
        evaluate_detection(gt, res, preset="dota", max_dets=[10])


def test_samples_with_polygons_and_categories_for_obb():
    gt = [
        Sample(
            image="a.png",
            image_id="a",
            instances=[
                Instance("ship", polygon=(10, 10, 30, 14, 28, 24, 8, 20)),
                Instance("plane", bbox=(50, 50, 70, 60)),
            ],
        )
    ]
    pred = [
        Sample(
            image="a.png",
            image_id="a",
            instances=[
                Instance("ship", polygon=(10, 10, 30, 14, 28, 24, 8, 20), score=0.7),
                Instance("plane", bbox=(50, 50, 70, 60), score=0.6),
                Instance("plane", bbox=(0, 0, 5, 5), score=0.9),
            ],
        )
    ]
    report = evaluate_detection(gt, pred, box_type="obb")
    assert report.details["per_category_AP"]["ship"] == pytest.approx(1.0)
    assert 0 < report.details["per_category_AP"]["plane"] < 1.0
    with pytest.raises(InputError, match="not among the declared categories"):
        evaluate_detection(gt, pred, categories=["ship"])
    unknown = [Sample(image="b.png", instances=[Instance("ship", bbox=(0, 0, 1, 1), score=0.5)])]
    with pytest.raises(InputError, match="not in the ground truth"):
        evaluate_detection(gt, unknown)

"""The COCO preset equals pycocotools' COCOeval (and faster-coco-eval) to 1e-9."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
from coco_cases import (
    coco_stats_from_report,
    faster_coco_eval_stats,
    pycocotools_eval,
    random_coco_case,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from rsvl.data import sample_path
from rsvl.datasets.sample import Instance, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.metrics import coco_eval as ce
from rsvl.metrics.detection import COCO, engine_params, engine_tables, evaluate_detection
from rsvl.metrics.detection_data import load_detection_data

TOL = 1e-9


def _engine_arrays(gt, results, **overrides):
    data = load_detection_data(gt, results, "hbb")
    params = engine_params(COCO, overrides.get("iou_thrs"), overrides.get("max_dets"), overrides.get("area_ranges"))
    g, d = engine_tables(data)
    return ce.accumulate(ce.match(g, d, params, len(data.categories)))


@pytest.mark.parametrize("seed", range(14))
def test_random_cases_equal_pycocotools_and_faster_coco_eval(seed):
    rng = np.random.default_rng(seed)
    gt, res = random_coco_case(
        rng,
        n_images=int(rng.integers(1, 30)),
        n_cats=int(rng.integers(1, 5)),
        crowded_image=seed % 3 == 0,
        score_decimals=[1, 2, None][seed % 3],
    )
    ref = pycocotools_eval(gt, res)
    ours = coco_stats_from_report(evaluate_detection(gt, res).metrics)
    np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=TOL)
    # the full precision/recall arrays too, not only their means
    acc = _engine_arrays(gt, res)
    np.testing.assert_allclose(acc.precision, ref.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(acc.recall, ref.eval["recall"], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours, faster_coco_eval_stats(gt, res), rtol=0, atol=TOL)


def grid_case(rng: np.random.Generator, n_images: int):
    """Boxes on a small integer grid: exact IoU ties, IoUs exactly at 0.5/0.75, duplicate and
    nested ground truth, crowd regions overlapping regular objects."""
    gt = {
        "images": [{"id": i + 1} for i in range(n_images)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [],
    }
    res = []
    for i in range(n_images):
        for _ in range(int(rng.integers(0, 8))):
            x, y = (int(v) for v in rng.integers(0, 12, 2))
            w, h = (int(v) for v in rng.integers(1, 9, 2))
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [x, y, w, h],
                    "area": float(w * h),
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
        for _ in range(int(rng.integers(0, 12))):
            x, y = (int(v) for v in rng.integers(0, 12, 2))
            w, h = (int(v) for v in rng.integers(1, 9, 2))
            res.append(
                {
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [x, y, w, h],
                    "score": float(rng.integers(0, 4)) / 4,
                }
            )
    return gt, res


@pytest.mark.parametrize("seed", range(10))
def test_integer_grid_ties_equal_pycocotools(seed):
    gt, res = grid_case(np.random.default_rng(1000 + seed), 6)
    ref = pycocotools_eval(gt, res)
    acc = _engine_arrays(gt, res)
    np.testing.assert_allclose(acc.precision, ref.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(acc.recall, ref.eval["recall"], rtol=0, atol=TOL)


def test_small_pair_chunks_change_nothing(monkeypatch):
    gt, res = random_coco_case(np.random.default_rng(21), 15, 3, crowded_image=True)
    whole = evaluate_detection(gt, res).metrics
    monkeypatch.setattr(ce, "_PAIR_CHUNK", 7)  # many chunks, groups split across chunk borders
    assert evaluate_detection(gt, res).metrics == whole
    np.testing.assert_allclose(coco_stats_from_report(whole), pycocotools_eval(gt, res).stats, atol=TOL)


def test_string_image_ids_equal_pycocotools():
    gt, res = random_coco_case(np.random.default_rng(99), 25, 3, str_ids=True)
    ref = pycocotools_eval(gt, res)
    np.testing.assert_allclose(coco_stats_from_report(evaluate_detection(gt, res).metrics), ref.stats, atol=TOL)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_images=st.integers(1, 12),
    n_cats=st.integers(1, 3),
    crowd_p=st.sampled_from([0.0, 0.3, 1.0]),
    decimals=st.sampled_from([0, 1, None]),
)
def test_hypothesis_cases_equal_pycocotools(seed, n_images, n_cats, crowd_p, decimals):
    rng = np.random.default_rng(seed)
    gt, res = random_coco_case(rng, n_images, n_cats, crowd_p=crowd_p, score_decimals=decimals, max_gt=6)
    ref = pycocotools_eval(gt, res)
    ours = coco_stats_from_report(evaluate_detection(gt, res).metrics)
    np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=TOL)


def test_overridden_thresholds_maxdets_and_areas_equal_pycocotools():
    gt, res = random_coco_case(np.random.default_rng(5), 20, 3, crowded_image=True)
    iou = np.array([0.3, 0.5, 0.75])
    areas = {"all": [0.0, 1e10], "tiny": [0.0, 100.0], "big": [100.0, 1e10]}
    ref = pycocotools_eval(
        gt, res, iouThrs=iou, maxDets=[2, 5, 50], areaRng=list(areas.values()), areaRngLbl=list(areas)
    )
    acc = _engine_arrays(gt, res, iou_thrs=iou, max_dets=[2, 5, 50], area_ranges=areas)
    np.testing.assert_allclose(acc.precision, ref.eval["precision"], atol=TOL)
    np.testing.assert_allclose(acc.recall, ref.eval["recall"], atol=TOL)
    report = evaluate_detection(gt, res, iou_thrs=iou, max_dets=[2, 5, 50], area_ranges=areas)
    assert report.metrics["AR2"] == pytest.approx(ref.stats[6], abs=TOL)
    assert report.metrics["AR50"] == pytest.approx(ref.stats[8], abs=TOL)
    assert report.metrics["AP50"] == pytest.approx(ref.stats[1], abs=TOL)
    assert report.protocol["max_dets"] == [2, 5, 50]
    assert report.metrics["APs"] == -1.0  # no 'small' range any more: undefined, as pycocotools says


def _osbs_boxes():
    with open(sample_path("deepforest/OSBS_029.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 61
    return np.array([[float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for r in rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_deepforest_boxes_equal_pycocotools(seed):
    xyxy = _osbs_boxes()
    xywh = np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]
    gt = {
        "images": [{"id": 1, "width": 400, "height": 400, "file_name": "OSBS_029.tif"}],
        "categories": [{"id": 1, "name": "Tree"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b.tolist(), "area": float(b[2] * b[3]), "iscrowd": 0}
            for i, b in enumerate(xywh)
        ],
    }
    rng = np.random.default_rng(seed)
    res = []
    for b in xywh:
        for _ in range(int(rng.integers(0, 3))):  # dropped, single and duplicated detections
            j = rng.normal(0, [2.0, 2.0, 3.0, 3.0])
            res.append({"image_id": 1, "category_id": 1, "bbox": (b + j).tolist(), "score": float(rng.random())})
    ref = pycocotools_eval(gt, res)
    report = evaluate_detection(gt, res)
    np.testing.assert_allclose(coco_stats_from_report(report.metrics), ref.stats, atol=TOL)
    np.testing.assert_allclose(coco_stats_from_report(report.metrics), faster_coco_eval_stats(gt, res), atol=TOL)
    assert 0.2 < report.metrics["AP50"] <= 1.0
    # the same boxes as rsvl Samples (bbox xyxy) give the same numbers
    samples_gt = [
        Sample(
            image="OSBS_029.tif",
            image_id=1,
            instances=[
                Instance("Tree", bbox=tuple(b), attrs={"area": float((b[2] - b[0]) * (b[3] - b[1]))}) for b in xyxy
            ],
        )
    ]
    samples_dt = [
        Sample(
            image="OSBS_029.tif",
            image_id=1,
            instances=[
                Instance(
                    "Tree",
                    bbox=(r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]),
                    score=r["score"],
                )
                for r in res
            ],
        )
    ]
    from_samples = evaluate_detection(samples_gt, samples_dt)
    np.testing.assert_allclose(coco_stats_from_report(from_samples.metrics), ref.stats, atol=1e-6)


def test_samples_on_a_half_pixel_grid_equal_coco_dicts():
    gt, res = random_coco_case(np.random.default_rng(3), 10, 2)
    for obj in gt["annotations"] + res:
        obj["bbox"] = [round(v * 2) / 2 for v in obj["bbox"]]  # exact in xyxy <-> xywh
    for a in gt["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    names = {c["id"]: c["name"] for c in gt["categories"]}

    def to_samples(objs, scored):
        by_image = {im["id"]: [] for im in gt["images"]}
        for o in objs:
            x, y, w, h = o["bbox"]
            by_image[o["image_id"]].append(
                Instance(
                    names[o["category_id"]],
                    bbox=(x, y, x + w, y + h),
                    score=o.get("score") if scored else None,
                    ignore=bool(o.get("iscrowd", 0)),
                    attrs={"area": o["area"]} if "area" in o else {},
                )
            )
        return [Sample(image=f"{i}.png", image_id=i, instances=v) for i, v in by_image.items()]

    cats = [c["name"] for c in gt["categories"]]
    a = evaluate_detection(gt, res).metrics
    b = evaluate_detection(to_samples(gt["annotations"], False), to_samples(res, True), categories=cats).metrics
    assert a == pytest.approx(b, abs=TOL)


def test_empty_predictions_give_zero_ap_and_a_warning():
    gt, _ = random_coco_case(np.random.default_rng(4), 6, 2, crowd_p=0.0)
    ref = pycocotools_eval(gt, [])
    report = evaluate_detection(gt, [])
    np.testing.assert_allclose(coco_stats_from_report(report.metrics), ref.stats, atol=TOL)
    assert report.metrics["AP"] == 0.0 and report.metrics["AR100"] == 0.0
    assert any("no predictions" in w for w in report.warnings)
    report.to_dict()  # serialisable: no NaN


def test_images_without_ground_truth_count_false_positives():
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
    }
    res = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    ]
    report = evaluate_detection(gt, res)
    ref = pycocotools_eval(gt, res)
    np.testing.assert_allclose(coco_stats_from_report(report.metrics), ref.stats, atol=TOL)
    # the FP on image 2 scores first: precision 1/2 at every recall point
    assert report.metrics["AP50"] == pytest.approx(0.5, abs=1e-12)


def test_obb_axis_aligned_equals_hbb_and_rotation_invariance():
    gt, res = random_coco_case(np.random.default_rng(8), 8, 2, crowd_p=0.2, score_decimals=None)

    def as_obb(obj):
        x, y, w, h = obj["bbox"]
        return {**obj, "obb": [x + w / 2, y + h / 2, w, h, 0.0]}

    gt_o = {**gt, "annotations": [as_obb(a) for a in gt["annotations"]]}
    res_o = [as_obb(r) for r in res]
    hbb = evaluate_detection(gt, res).metrics
    obb = evaluate_detection(gt_o, res_o, box_type="obb").metrics
    assert obb == pytest.approx(hbb, abs=1e-9)

    # turning the whole scene about one point changes nothing
    theta = 0.37
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    def turned(obj):
        cx, cy, w, h, a = obj["obb"]
        c = rot @ np.array([cx, cy])
        return {**obj, "obb": [float(c[0]), float(c[1]), w, h, a + theta]}

    gt_t = {**gt_o, "annotations": [turned(a) for a in gt_o["annotations"]]}
    turned_metrics = evaluate_detection(gt_t, [turned(r) for r in res_o], box_type="obb").metrics
    assert turned_metrics == pytest.approx(obb, abs=1e-9)


def test_obb_equals_pycocotools_matching_with_shapely_iou():
    shapely = pytest.importorskip("shapely")
    from pycocotools.cocoeval import COCOeval

    from rsvl.geometry import obb_corners

    rng = np.random.default_rng(11)
    gt, res = random_coco_case(rng, 10, 2, crowd_p=0.15, score_decimals=2)
    for obj in gt["annotations"] + res:
        x, y, w, h = obj["bbox"]
        obj["obb"] = [x + w / 2, y + h / 2, max(w, h), min(w, h), float(rng.uniform(-np.pi / 2, np.pi / 2))]
        obj["bbox"] = [x, y, w, h]  # keeps pycocotools' own bookkeeping happy; IoU comes from the OBBs

    class ShapelyObbEval(COCOeval):
        def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
            gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
            if len(gts) == 0 and len(dts) == 0:
                return []
            inds = np.argsort([-d["score"] for d in dts], kind="mergesort")
            dts = [dts[i] for i in inds][: self.params.maxDets[-1]]
            if not gts or not dts:
                return []
            out = np.zeros((len(dts), len(gts)))
            for i, d in enumerate(dts):
                pd = shapely.Polygon(obb_corners(np.array(d["obb"])))
                for j, g in enumerate(gts):
                    pg = shapely.Polygon(obb_corners(np.array(g["obb"])))
                    inter = pd.intersection(pg).area
                    out[i, j] = inter / pd.area if g["iscrowd"] else inter / (pd.area + pg.area - inter)
            return out

    # pycocotools takes the detection area from the xywh box: give it the OBB area instead
    for r in res:
        r["bbox"] = [r["bbox"][0], r["bbox"][1], r["obb"][2], r["obb"][3]]
    for a in gt["annotations"]:
        a["area"] = a["obb"][2] * a["obb"][3]
    ref = pycocotools_eval(gt, res, evaluator_cls=ShapelyObbEval)
    ours = evaluate_detection(gt, res, box_type="obb").metrics
    np.testing.assert_allclose(coco_stats_from_report(ours), ref.stats, atol=1e-9)


def test_polygons_become_min_area_rectangles_for_obb():
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "ship"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "area": 200.0,
                "iscrowd": 0,
                "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]],
            }
        ],
    }
    res = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": [[30, 20, 10, 20, 10, 10, 30, 10]]},
        {"image_id": 1, "category_id": 1, "score": 0.8, "obb": [20.0, 15.0, 20.0, 10.0, 0.0]},
    ]
    report = evaluate_detection(gt, res, box_type="obb")
    assert report.metrics["AP"] == pytest.approx(1.0)  # second is a duplicate, scored after the TP
    assert report.protocol["box_type"] == "obb"


# ----------------------------------------------------------------------------- bad input


def _tiny():
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
    }
    return gt, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.5}]


def test_prediction_on_unknown_image_is_an_error_unless_not_strict():
    gt, res = _tiny()
    res.append({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.1})
    with pytest.raises(DatasetError, match=r"\[1\]\.image_id.*not in the ground truth"):
        evaluate_detection(gt, res)
    report = evaluate_detection(gt, res, strict=False)
    assert any("1 predictions on images absent" in w for w in report.warnings)
    assert report.metrics["AP50"] == pytest.approx(1.0)  # 1 / (1 + eps), as pycocotools


def test_unknown_category_nan_score_and_negative_width_are_errors(tmp_path):
    gt, res = _tiny()
    with pytest.raises(DatasetError, match="category 9 is not a ground-truth category"):
        evaluate_detection(gt, [{**res[0], "category_id": 9}])
    with pytest.raises(DatasetError, match=r"\[0\]\.score: expected a finite number"):
        evaluate_detection(gt, [{**res[0], "score": float("nan")}])
    with pytest.raises(DatasetError, match=r"\[0\]\.bbox.*negative width"):
        evaluate_detection(gt, [{**res[0], "bbox": [0, 0, -3, 4]}])
    bad_gt = copy.deepcopy(gt)
    bad_gt["annotations"][0]["bbox"] = [0, 0, 5, -1]
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.bbox.*negative"):
        evaluate_detection(bad_gt, res)
    bad_gt["annotations"][0]["bbox"] = [0, 0, 5, "7"]
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.bbox\[3\]: expected a number"):
        evaluate_detection(bad_gt, res)
    # files: errors name the file
    path = tmp_path / "results.json"
    path.write_text('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}]')
    with pytest.raises(DatasetError, match=r"results\.json: \[0\]\.bbox: expected a list of 4 numbers"):
        evaluate_detection(gt, path)
    path.write_text('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": NaN}]')
    with pytest.raises(DatasetError, match=r"results\.json"):
        evaluate_detection(gt, path)


def test_ground_truth_structure_errors():
    gt, res = _tiny()
    with pytest.raises(DatasetError, match="duplicate image id 1"):
        evaluate_detection({**gt, "images": [{"id": 1}, {"id": 1}]}, res)
    dup = copy.deepcopy(gt)
    dup["annotations"].append(dict(dup["annotations"][0]))
    with pytest.raises(DatasetError, match="duplicate annotation id 1"):
        evaluate_detection(dup, res)
    orphan = copy.deepcopy(gt)
    orphan["annotations"][0]["image_id"] = 5
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.image_id.*not in 'images'"):
        evaluate_detection(orphan, res)
    with pytest.raises(DatasetError, match="categories: expected a list"):
        evaluate_detection({"images": [], "annotations": []}, res)
    with pytest.raises(InputError, match="unknown detection preset 'voc'"):
        evaluate_detection(gt, res, preset="voc")
    with pytest.raises(InputError, match="no score"):
        evaluate_detection(
            [Sample(image="a.png", instances=[Instance("a", bbox=(0, 0, 1, 1))])],
            [Sample(image="a.png", instances=[Instance("a", bbox=(0, 0, 1, 1))])],
        )


def test_no_categories_and_unused_flags():
    empty = {"images": [{"id": 1}], "categories": [], "annotations": []}
    ref = pycocotools_eval(empty, [])
    report = evaluate_detection(empty, [])
    np.testing.assert_allclose(coco_stats_from_report(report.metrics), ref.stats)
    assert set(report.metrics.values()) == {-1.0}
    gt, res = _tiny()
    gt["annotations"][0].update(ignore=1, difficult=1)
    report = evaluate_detection(gt, res)
    assert report.metrics["AP50"] == pytest.approx(1.0)  # still a normal object, as in pycocotools
    assert any("ignore=1 without iscrowd" in w for w in report.warnings)
    assert any("marked difficult" in w for w in report.warnings)


def test_annotation_id_zero_is_matched_and_warned_about():
    gt, res = _tiny()
    gt["annotations"][0]["id"] = 0
    report = evaluate_detection(gt, res)
    assert report.metrics["AP50"] == pytest.approx(1.0)  # pycocotools says 0: its match marker bug
    assert any("id 0" in w for w in report.warnings)


def test_missing_area_falls_back_to_box_area_with_a_warning():
    gt, res = _tiny()
    del gt["annotations"][0]["area"]
    report = evaluate_detection(gt, res)
    assert any("no 'area'" in w for w in report.warnings)
    assert report.metrics["APs"] == report.metrics["AP"]  # 10 x 10 box: small


def test_report_protocol_and_json():
    gt, res = random_coco_case(np.random.default_rng(2), 5, 2)
    report = evaluate_detection(gt, res)
    d = report.to_dict()
    assert d["protocol"]["reference"]["implementation"].startswith("pycocotools")
    assert d["protocol"]["reference"]["version"]  # installed here
    assert d["protocol"]["max_dets"] == [1, 10, 100]
    assert d["protocol"]["area_ranges"]["medium"] == [1024.0, 9216.0]
    assert len(d["protocol"]["recall_thresholds"]) == 101
    assert list(report.metrics) == [
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ]
    assert set(d["details"]["per_category_AP"]) == {"c0", "c1", "c2"}
    assert d["details"]["per_category_AP"]["c2"] == -1.0  # declared, never annotated

"""The dota preset equals a direct port of DOTA_devkit's dota_evaluation_task1.py."""

from __future__ import annotations

import numpy as np
import pytest
from dota_devkit_port import evaluate as devkit_evaluate
from dota_devkit_port import iou_poly as shapely_iou

from rsvl.datasets.sample import Instance, Sample
from rsvl.errors import InputError
from rsvl.geometry import obb_to_poly
from rsvl.metrics.detection import evaluate_detection
from rsvl.metrics.dota import evaluate_dota, is_convex_quad, polygon_iou_pairs, polyiou_iou, voc_ap

CLASSES = ["plane", "ship", "small-vehicle"]
TOL = 1e-9


def _quad(rng: np.random.Generator, kind: str, cx: float, cy: float) -> np.ndarray:
    w, h = rng.uniform(8, 60), rng.uniform(6, 40)
    rect = obb_to_poly(np.array([cx, cy, max(w, h), min(w, h), rng.uniform(-np.pi / 2, np.pi / 2)]))
    if kind == "rect":
        return rect
    pts = rect.reshape(4, 2).copy()
    if kind == "convex":
        return (pts + rng.uniform(-0.15, 0.15, (4, 2)) * min(w, h)).reshape(8)
    # non-convex ("dart"): pull one vertex past the diagonal towards the centre
    i = int(rng.integers(4))
    centre = pts.mean(axis=0)
    pts[i] = centre + (centre - pts[i]) * 0.3
    return pts.reshape(8)


def _jitter(rng: np.random.Generator, poly: np.ndarray, scale: float) -> np.ndarray:
    """A jittered copy that stays a simple polygon (shapely, the port's IoU, refuses bow-ties)."""
    from shapely.geometry import Polygon

    for _ in range(50):
        out = poly + rng.normal(0, scale, 8)
        if Polygon(out.reshape(4, 2)).is_valid:
            return out
    return poly.copy()


def random_dota_case(rng: np.random.Generator, n_images: int, nonconvex_p: float = 0.05):
    recs, dets, samples_gt, samples_dt = {}, {c: [] for c in CLASSES}, [], []
    for i in range(n_images):
        name = f"P{i:04d}"
        objs, gt_inst, dt_inst = [], [], []
        for _ in range(int(rng.integers(0, 10))):
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            kind = "nonconvex" if rng.random() < nonconvex_p else ("rect" if rng.random() < 0.6 else "convex")
            poly = _quad(rng, kind, *rng.uniform(30, 500, 2))
            difficult = int(rng.random() < 0.15)
            objs.append({"name": cls, "difficult": difficult, "bbox": poly.tolist()})
            gt_inst.append(Instance(cls, polygon=tuple(poly.tolist()), difficult=bool(difficult)))
            for _ in range(int(rng.integers(0, 3))):
                det = _jitter(rng, poly, float(rng.choice([0.5, 2.0, 6.0])))
                dcls = cls if rng.random() < 0.9 else CLASSES[int(rng.integers(len(CLASSES)))]
                score = float(rng.random())
                dets[dcls].append((name, score, det.tolist()))
                dt_inst.append(Instance(dcls, polygon=tuple(det.tolist()), score=score))
        for _ in range(int(rng.integers(0, 4))):
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            det = _quad(rng, "rect", *rng.uniform(30, 500, 2))
            score = float(rng.random())
            dets[cls].append((name, score, det.tolist()))
            dt_inst.append(Instance(cls, polygon=tuple(det.tolist()), score=score))
        recs[name] = objs
        samples_gt.append(Sample(image=f"images/{name}.png", image_id=name, instances=gt_inst))
        samples_dt.append(Sample(image=f"images/{name}.png", image_id=name, instances=dt_inst))
    return (recs, dets), (samples_gt, samples_dt)


def _has_all_positives(recs) -> bool:
    return all(any(o["name"] == c and not o["difficult"] for objs in recs.values() for o in objs) for c in CLASSES)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("method", ["voc07", "voc12"])
def test_dota_equals_the_devkit(seed, method):
    rng = np.random.default_rng(seed)
    (recs, dets), (sgt, sdt) = random_dota_case(rng, int(rng.integers(3, 12)), nonconvex_p=0.1)
    if not _has_all_positives(recs):
        pytest.skip("a class without positives: the devkit divides by zero")
    ref_map, ref_aps = devkit_evaluate(recs, dets, list(recs), CLASSES, use_07_metric=method == "voc07")
    report = evaluate_detection(sgt, sdt, preset="dota", ap_method=method, classes=CLASSES)
    assert report.metrics["mAP"] == pytest.approx(ref_map, abs=TOL)
    for cls, ap in zip(CLASSES, ref_aps, strict=True):
        assert report.metrics[f"AP/{cls}"] == pytest.approx(ap, abs=TOL), cls
    assert report.protocol["ap_method"] == method


def test_dota_difficult_duplicates_and_strict_threshold():
    sq = (0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0)
    gt = [
        Sample(
            image="a.png",
            image_id="a",
            instances=[
                Instance("ship", polygon=sq),
                Instance("ship", polygon=tuple(v + 100 for v in sq), difficult=True),
            ],
        )
    ]
    half = (0.0, 0.0, 10.0, 0.0, 10.0, 5.0, 0.0, 5.0)  # IoU exactly 0.5 with sq: not a match (strict >)
    pred = [
        Sample(
            image="a.png",
            image_id="a",
            instances=[
                Instance("ship", polygon=sq, score=0.9),
                Instance("ship", polygon=sq, score=0.8),  # duplicate: FP
                Instance("ship", polygon=tuple(v + 100 for v in sq), score=0.95),  # on the difficult one: ignored
                Instance("ship", polygon=half, score=0.7),
            ],
        )
    ]
    report = evaluate_dota(gt, pred, ap_method="voc12")
    stats = report.details["per_class"]["ship"]
    assert (stats["tp"], stats["fp"], stats["npos"]) == (1, 2, 1)
    assert report.metrics["AP/ship"] == pytest.approx(1.0)
    (recs, dets) = (
        {
            "a": [
                {"name": "ship", "difficult": 0, "bbox": list(sq)},
                {"name": "ship", "difficult": 1, "bbox": [v + 100 for v in sq]},
            ]
        },
        {"ship": [("a", i.score, list(i.polygon)) for i in pred[0].instances]},
    )
    assert devkit_evaluate(recs, dets, ["a"], ["ship"], use_07_metric=False)[0] == pytest.approx(1.0)


def test_class_without_positives_is_left_out():
    gt = [
        Sample(
            image="a.png",
            instances=[Instance("ship", bbox=(0, 0, 10, 10)), Instance("plane", bbox=(20, 20, 30, 30), difficult=True)],
        )
    ]
    pred = [Sample(image="a.png", instances=[Instance("ship", bbox=(0, 0, 10, 10), score=0.5)])]
    report = evaluate_dota(gt, pred)
    assert report.metrics["AP/plane"] == -1.0
    assert report.metrics["mAP"] == pytest.approx(1.0)
    assert any("'plane' has no non-difficult ground truth" in w for w in report.warnings)


def test_polyiou_port_equals_shapely_on_simple_quads():
    rng = np.random.default_rng(3)
    for _ in range(200):
        kinds = rng.choice(["rect", "convex", "nonconvex"], 2)
        c = rng.uniform(0, 30, 2)
        p = _quad(rng, kinds[0], *c)
        q = _quad(rng, kinds[1], *(c + rng.normal(0, 10, 2)))
        assert polyiou_iou(p, q) == pytest.approx(shapely_iou(p, q), abs=1e-9)
    # and the vectorised path (convex kernel + port) agrees with shapely as a whole
    ps = np.array([_quad(rng, k, 20, 20) for k in rng.choice(["rect", "convex", "nonconvex"], 300)])
    qs = np.array([_quad(rng, k, *rng.uniform(10, 30, 2)) for k in rng.choice(["rect", "convex", "nonconvex"], 300)])
    ious, general = polygon_iou_pairs(ps, qs)
    expected = [shapely_iou(p, q) for p, q in zip(ps, qs, strict=True)]
    np.testing.assert_allclose(ious, expected, atol=1e-9)
    assert general == int((~(is_convex_quad(ps) & is_convex_quad(qs))).sum()) > 0


def test_convexity_check():
    square = np.array([[0, 0, 1, 0, 1, 1, 0, 1]], dtype=float)
    dart = np.array([[0, 0, 2, 0, 0.5, 0.5, 0, 2]], dtype=float)
    bowtie = np.array([[0, 0, 1, 1, 1, 0, 0, 1]], dtype=float)
    assert is_convex_quad(square).tolist() == [True]
    assert is_convex_quad(square[:, ::-1].copy()).tolist() == [True]  # either orientation
    assert is_convex_quad(dart).tolist() == [False]
    assert is_convex_quad(bowtie).tolist() == [False]
    assert np.isfinite(polyiou_iou(bowtie[0], square[0]))


def test_voc_ap_methods():
    rec = np.array([0.2, 0.4, 0.4, 0.8])
    prec = np.array([1.0, 1.0, 0.6, 0.8])
    # VOC07: p(r>=t) for t in 0, .1, ..., 1 -> 1, 1, 1, 1, 1, .8, .8, .8, .8, 0, 0
    assert voc_ap(rec, prec, "voc07") == pytest.approx((5 * 1.0 + 4 * 0.8) / 11)
    # VOC12: 0.4 * 1 + 0.4 * 0.8
    assert voc_ap(rec, prec, "voc12") == pytest.approx(0.72)


def test_dota_input_errors():
    gt = [Sample(image="a.png", instances=[Instance("ship", bbox=(0, 0, 10, 10))])]
    with pytest.raises(InputError, match="ap_method"):
        evaluate_dota(gt, gt, ap_method="area")
    with pytest.raises(InputError, match="not ground-truth categories"):
        evaluate_dota(gt, [], classes=["plane"])
    with pytest.raises(InputError, match="4-vertex"):
        evaluate_dota([Sample(image="a.png", instances=[Instance("ship", polygon=(0, 0, 1, 0, 1, 1))])], [])

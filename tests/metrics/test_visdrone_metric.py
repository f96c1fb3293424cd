"""The visdrone preset equals a literal port of the official VisDrone2018-DET MATLAB toolkit."""

from __future__ import annotations

import numpy as np
import pytest
from visdrone_toolkit_port import calc_accuracy, save_anno_res

from rsvl.datasets import get_format
from rsvl.datasets.sample import Instance, Sample
from rsvl.errors import InputError
from rsvl.metrics.detection import evaluate_detection
from rsvl.metrics.visdrone_eval import ignored_region_keep, matlab_round

NAMES = ["ignored regions", "pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle",
         "awning-tricycle", "bus", "motor", "others"]  # fmt: skip
TOL = 1e-9


def random_visdrone_case(rng: np.random.Generator, n_images: int, dets_extra: int = 6):
    """Toolkit arrays (gt rows [x y w h score cat], det rows [x y w h score cat] in file order) and
    the same data as rsvl Samples."""
    gts, dets, sizes = [], [], []
    for _ in range(n_images):
        W, H = int(rng.integers(40, 90)), int(rng.integers(30, 70))
        rows = []
        for _ in range(int(rng.integers(0, 4))):  # ignored regions, some reaching out of the image
            x, y = rng.integers(0, W), rng.integers(0, H)
            rows.append([x, y, rng.integers(5, 40), rng.integers(5, 40), 0, 0])
        for _ in range(int(rng.integers(0, 10))):
            x, y = rng.integers(0, W - 2), rng.integers(0, H - 2)
            cat = 11 if rng.random() < 0.05 else int(rng.integers(1, 6))  # a few classes: more overlaps
            rows.append([x, y, rng.integers(2, 20), rng.integers(2, 20), int(rng.random() > 0.1), cat])
        gt = np.array(rows, dtype=float).reshape(-1, 6)
        det_rows = []
        for r in gt:
            if r[5] == 0:
                continue
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 1.5, 4)
                x1, y1 = r[0] + j[0], r[1] + j[1]
                x2, y2 = x1 + max(r[2] + j[2], 1.0), y1 + max(r[3] + j[3], 1.0)
                cat = r[5] if rng.random() < 0.9 else int(rng.integers(1, 12))
                det_rows.append([x1, y1, x2, y2, round(float(rng.random()), 2), cat])
        for _ in range(int(rng.integers(0, dets_extra + 1))):
            x1, y1 = rng.uniform(0, W), rng.uniform(0, H)
            if rng.random() < 0.2:  # on the half pixel: MATLAB rounding matters
                x1, y1 = np.floor(x1) + 0.5, np.floor(y1) + 0.5
            x2, y2 = x1 + rng.uniform(1, 25), y1 + rng.uniform(1, 25)
            det_rows.append([x1, y1, x2, y2, round(float(rng.random()), 2), int(rng.integers(1, 12))])
        det = np.array(det_rows, dtype=float).reshape(-1, 6)
        det = det[np.argsort(-det[:, 4], kind="stable")]  # result files are written best first
        gts.append(gt)
        dets.append(det)
        sizes.append((W, H))

    toolkit_dets = [np.c_[d[:, 0:2], d[:, 2:4] - d[:, 0:2], d[:, 4:6]] for d in dets]
    samples_gt, samples_dt = [], []
    for i, (gt, det, (W, H)) in enumerate(zip(gts, dets, sizes, strict=True)):
        samples_gt.append(
            Sample(
                image=f"{i:04d}.jpg",
                image_id=i,
                width=W,
                height=H,
                instances=[
                    Instance(NAMES[int(r[5])], bbox=(r[0], r[1], r[0] + r[2], r[1] + r[3]), ignore=r[4] == 0)
                    for r in gt
                ],
            )
        )
        samples_dt.append(
            Sample(
                image=f"{i:04d}.jpg",
                image_id=i,
                instances=[Instance(NAMES[int(r[5])], bbox=tuple(r[:4]), score=float(r[4])) for r in det],
            )
        )
    return (gts, toolkit_dets, sizes), (samples_gt, samples_dt)


def toolkit(gts, dets, sizes, max_dets=(1, 10, 100, 500)):
    allgt, alldet = save_anno_res(gts, dets, [s[1] for s in sizes], [s[0] for s in sizes])
    return calc_accuracy(len(gts), allgt, alldet, max_dets_list=max_dets)


@pytest.mark.parametrize("seed", range(6))
def test_visdrone_equals_the_toolkit(seed):
    rng = np.random.default_rng(seed)
    (gts, dets, sizes), (sgt, sdt) = random_visdrone_case(rng, int(rng.integers(2, 9)))
    ap_all, ap50, ap75, ars, _ = toolkit(gts, dets, sizes)
    report = evaluate_detection(sgt, sdt, preset="visdrone", categories=NAMES)
    m = report.metrics
    assert m["AP"] == pytest.approx(ap_all / 100, abs=TOL)
    assert m["AP50"] == pytest.approx(ap50 / 100, abs=TOL)
    assert m["AP75"] == pytest.approx(ap75 / 100, abs=TOL)
    for key, ar in zip(("AR1", "AR10", "AR100", "AR500"), ars, strict=True):
        assert m[key] == pytest.approx(ar / 100, abs=TOL), key
    assert report.protocol["classes"] == NAMES[1:11]


@pytest.mark.parametrize("seed", range(3))
def test_per_image_cap_over_all_categories(seed):
    rng = np.random.default_rng(40 + seed)
    (gts, dets, sizes), (sgt, sdt) = random_visdrone_case(rng, 4, dets_extra=30)
    caps = (1, 3, 8, 20)
    ap_all, ap50, _, ars, _ = toolkit(gts, dets, sizes, max_dets=caps)
    m = evaluate_detection(sgt, sdt, preset="visdrone", categories=NAMES, max_dets=caps).metrics
    assert m["AP"] == pytest.approx(ap_all / 100, abs=TOL)
    assert m["AP50"] == pytest.approx(ap50 / 100, abs=TOL)
    for cap, ar in zip(caps, ars, strict=True):
        assert m[f"AR{cap}"] == pytest.approx(ar / 100, abs=TOL)


def test_coco_dict_input_gives_the_same_numbers():
    rng = np.random.default_rng(9)
    (gts, dets, sizes), (sgt, sdt) = random_visdrone_case(rng, 5)
    cats = [{"id": k, "name": n} for k, n in enumerate(NAMES)]
    images = [{"id": i, "width": W, "height": H} for i, (W, H) in enumerate(sizes)]
    anns = [
        {
            "id": len_id,
            "image_id": i,
            "category_id": int(r[5]),
            "bbox": r[:4].tolist(),
            "area": float(r[2] * r[3]),
            "iscrowd": int(r[4] == 0 and r[5] != 0),
        }
        for len_id, (i, r) in enumerate((i, r) for i, g in enumerate(gts) for r in g)
    ]
    res = [
        {"image_id": i, "category_id": int(r[5]), "bbox": r[:4].tolist(), "score": float(r[4])}
        for i, d in enumerate(dets)
        for r in d
    ]
    a = evaluate_detection({"images": images, "annotations": anns, "categories": cats}, res, preset="visdrone")
    b = evaluate_detection(sgt, sdt, preset="visdrone", categories=NAMES)
    assert a.metrics == pytest.approx(b.metrics, abs=TOL)
    assert a.details["dropped_in_ignored_regions"] == b.details["dropped_in_ignored_regions"]


def test_drop_rule_by_hand():
    # region (1, 1, 10, 10) paints rows/cols 1..11 (1-based): one pixel more than the box
    region = np.array([[1.0, 1.0, 10.0, 10.0]])
    boxes = np.array(
        [
            [2.0, 2.0, 6.0, 6.0],  # inside
            [40.0, 40.0, 5.0, 5.0],  # far away
            [8.0, 1.0, 6.0, 4.0],  # counted cols 9..14, 3 of 6 inside: exactly half -> dropped (< 0.5 keeps)
            [9.0, 1.0, 6.0, 4.0],  # cols 10..15: 2 of 6 inside -> kept
        ]
    )
    keep = ignored_region_keep(region, boxes, width=50, height=50)
    assert keep.tolist() == [False, True, False, True]
    assert matlab_round(np.array([0.5, 1.5, 2.5, -0.5])).tolist() == [1.0, 2.0, 3.0, -1.0]


def test_no_evaluated_class_and_missing_size():
    gt = [Sample(image="a.jpg", image_id=1, width=20, height=20, instances=[Instance("others", bbox=(0, 0, 5, 5))])]
    dt = [Sample(image="a.jpg", image_id=1, instances=[Instance("others", bbox=(0, 0, 5, 5), score=0.5)])]
    report = evaluate_detection(gt, dt, preset="visdrone")
    assert report.metrics["AP"] == -1.0
    assert any("no evaluated categories" in w for w in report.warnings)
    gt[0].width = None
    gt[0].instances.append(Instance("ignored regions", bbox=(10, 10, 15, 15), ignore=True))
    with pytest.raises(InputError, match="width/height"):
        evaluate_detection(gt, dt, preset="visdrone")


def test_class_weighting_by_image_count():
    # class A in two images (AP 1), class B in one image (AP 0): the toolkit's mean is (1 + 1 + 0) / 3
    gt = [
        Sample(image=f"{i}.jpg", image_id=i, width=50, height=50, instances=inst)
        for i, inst in enumerate(
            [
                [Instance("car", bbox=(0, 0, 10, 10))],
                [Instance("car", bbox=(0, 0, 10, 10)), Instance("bus", bbox=(20, 20, 30, 30))],
            ]
        )
    ]
    dt = [
        Sample(image=f"{i}.jpg", image_id=i, instances=[Instance("car", bbox=(0, 0, 10, 10), score=0.9)])
        for i in range(2)
    ]
    report = evaluate_detection(gt, dt, preset="visdrone")
    assert report.metrics["AP"] == pytest.approx(2 / 3)
    assert report.details["class_image_counts"] == {"bus": 1, "car": 2}
    assert report.details["per_category_AP"] == {"bus": 0.0, "car": 1.0}


def _visdrone_folder(root, gts, sizes):
    """Write the toolkit's ground-truth rows as a VisDrone dataset folder and read it back the way
    `rsvl eval` does (image sizes as the images would give them)."""
    (root / "annotations").mkdir(parents=True)
    for i, gt in enumerate(gts):
        lines = "".join(f"{x},{y},{w},{h},{score},{cat},0,0\n" for x, y, w, h, score, cat in gt.astype(int).tolist())
        (root / "annotations" / f"{i:04d}.txt").write_text(lines)
    dataset = get_format("visdrone").open(root)
    samples = dataset.load()
    for s, (W, H) in zip(samples, sizes, strict=True):
        s.width, s.height = W, H
    return samples, [c.name for c in dataset.categories]


def _metrics_equal_toolkit(m, toolkit_result) -> bool:
    ap_all, ap50, ap75, ars, _ = toolkit_result
    expected = [ap_all, ap50, ap75, *ars]
    got = [m[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AR500")]
    return all(g == pytest.approx(e / 100, abs=TOL) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("seed", [2, 4, 5, 6])
def test_ground_truth_read_from_a_visdrone_folder_equals_the_toolkit(tmp_path, seed):
    # Score-0 objects (not only category-0 regions) are ignore ground truth in the toolkit.
    rng = np.random.default_rng(seed)
    (gts, dets, sizes), (_, sdt) = random_visdrone_case(rng, 8)
    sgt, names = _visdrone_folder(tmp_path, gts, sizes)
    for s in sdt:
        s.image_id = f"{s.image_id:04d}"  # VisDrone samples are keyed by file stem
    expected = toolkit(gts, dets, sizes)
    report = evaluate_detection(sgt, sdt, preset="visdrone", categories=names)
    assert _metrics_equal_toolkit(report.metrics, expected), (report.metrics, expected)
    # the case exercises the rule: taking score-0 objects as regular ground truth gives other numbers
    flagged = [
        inst for s in sgt for inst in s.instances if inst.attrs["visdrone_score"] == 0 and inst.category != NAMES[0]
    ]
    assert flagged and all(inst.ignore for inst in flagged)
    for inst in flagged:
        inst.ignore = False
    wrong = evaluate_detection(sgt, sdt, preset="visdrone", categories=names).metrics
    assert not _metrics_equal_toolkit(wrong, expected)


def test_score_zero_object_by_hand(tmp_path):
    # the reviewed case: one evaluated car, one score-0 car; the better detection sits on the ignored one
    gts = [np.array([[10, 10, 20, 20, 1, 4], [60, 60, 20, 20, 0, 4]], dtype=float)]
    dets = [np.array([[60, 60, 20, 20, 0.95, 4], [10, 10, 20, 20, 0.9, 4]])]
    ap_all, _, _, ars, _ = toolkit(gts, dets, [(100, 100)])
    assert (ap_all, ars[0]) == (50.0, 0.0)
    sgt, names = _visdrone_folder(tmp_path, gts, [(100, 100)])
    sdt = [Sample(image="images/0000.jpg", image_id="0000", instances=[
        Instance("car", bbox=(x, y, x + w, y + h), score=s) for x, y, w, h, s, _ in dets[0].tolist()
    ])]  # fmt: skip
    m = evaluate_detection(sgt, sdt, preset="visdrone", categories=names).metrics
    assert (m["AP"], m["AR1"], m["AR10"]) == (pytest.approx(0.5), 0.0, pytest.approx(0.5))

"""VisDrone-DET evaluation equal to the official MATLAB toolkit (VisDrone/VisDrone2018-DET-toolkit).

What the toolkit does, and what is reproduced here rule by rule (``evalDET.m`` ->
``saveAnnoRes.m`` -> ``dropObjectsInIgr.m`` -> ``calcAccuracy.m`` -> ``evalRes.m``/``VOCap.m``):

1. **Ignored regions** (category 0, here the ground-truth category named "ignored regions") are
   painted into a W x H mask: each region ``max(1, [x y w h])`` fills rows ``y .. min(H, y+h)``
   and columns ``x .. min(W, x+w)`` (1-based, inclusive — one pixel more than the box). Every
   other ground-truth object *and every detection* is then dropped when the mask's integral
   image says at least half of it is covered: with ``p = max(1, round([x y w h]))`` (MATLAB
   rounds half away from zero), ``x' = clamp(p1, 1, W)``, ``y' = clamp(p2, 1, H)``, the covered
   count is ``I(y2, x2) + I(y', x') - I(y', x2) - I(y2, x')`` with ``x2 = min(W, x'+p3)``,
   ``y2 = min(H, y'+p4)``, and the object stays when ``count / (p3 * p4) < 0.5``. This needs the
   image size; region coordinates are integers in VisDrone (other values are rounded).
2. Ground truth whose ``score`` column is 0 (here ``ignore`` / ``iscrowd``; the VisDrone reader
   sets ``ignore`` on such objects and keeps the column in ``attrs["visdrone_score"]``) is *ignore*
   ground truth: a detection may match it any number of times with overlap ``inter / area(det)``;
   such a detection is neither TP nor FP.
3. Each image's detections are capped at maxDets = 1, 10, 100, 500 over all categories (the
   toolkit takes the first lines of the result file; rsvl sorts each image's detections by
   score first, ties in input order, which equals the toolkit on score-sorted files).
4. Matching per image and class at IoU .50:.05:.95, highest score first, best IoU wins (ties:
   the later GT), regular GT preferred over ignore GT — the COCO engine's rule.
5. Per class and threshold: detections of all images sorted by score (stable), ``rec = tp /
   max(1, #GT of the class including ignore GT)``, ``prec = tp / max(1, tp + fp)``; AP is
   the VOC all-point area (``VOCap``) at maxDets 500, AR_m the largest recall at maxDets m.
6. Class means run over the classes 1..10 that occur in the ground truth, *each counted once per
   image that contains it* (``evalClass`` collects the class id per image; ``mean2`` then weights
   classes by image count). Reported as fractions (the toolkit prints percentages).

Evaluated classes: every ground-truth category except the ignored-region one and ``others``
(VisDrone category 11), unless ``classes`` names them. Detections of other categories still
occupy the per-image cap, as in the toolkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rsvl.datasets.sample import Category
from rsvl.errors import InputError
from rsvl.metrics import coco_eval as ce
from rsvl.metrics.detection_data import DetectionData, GtLike, ObjectTable, PredLike, load_detection_data
from rsvl.metrics.report import EvalReport, reference

VISDRONE_MAX_DETS = (1, 10, 100, 500)
_REGION_NAMES = {"ignored regions", "ignored region"}
_NOT_EVALUATED = {"others"}


def _norm(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ").strip()


def matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: halves away from zero (numpy rounds them to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def ignored_region_keep(regions_xywh: np.ndarray, boxes_xywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """``dropObjectsInIgr.m``: True for boxes that stay (less than half inside ignored regions)."""
    if not regions_xywh.shape[0] or not boxes_xywh.shape[0]:
        return np.ones(boxes_xywh.shape[0], dtype=bool)
    W, H = int(width), int(height)
    mask = np.zeros((H, W), dtype=np.int64)
    reg = np.maximum(1, matlab_round(regions_xywh)).astype(np.int64)
    for x, y, w, h in reg.tolist():
        # MATLAB igrMap(y:min(H, y+h), x:min(W, x+w)) = 1, 1-based inclusive
        mask[y - 1 : min(H, y + h), x - 1 : min(W, x + w)] = 1
    integral = mask.cumsum(axis=0).cumsum(axis=1)
    pos = np.maximum(1, matlab_round(boxes_xywh)).astype(np.int64)
    x = np.clip(pos[:, 0], 1, W)
    y = np.clip(pos[:, 1], 1, H)
    w, h = pos[:, 2], pos[:, 3]
    x2 = np.minimum(W, x + w)
    y2 = np.maximum(1, np.minimum(H, y + h))
    tl = integral[y - 1, x - 1]
    tr = integral[y - 1, x2 - 1]
    bl = integral[y2 - 1, x - 1]
    br = integral[y2 - 1, x2 - 1]
    covered = tl + br - tr - bl
    return covered / (h * w) < 0.5


def voc_all_point_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """``VOCap.m`` (and DOTA_devkit's VOC12 branch): area under the monotone precision envelope."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def evaluate_visdrone(
    gt: GtLike,
    predictions: PredLike,
    *,
    categories: Sequence[str | Category] | None = None,
    strict: bool = True,
    iou_thrs: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    ignored_region_category: str | None = None,
) -> EvalReport:
    """VisDrone-DET AP/AR as the official toolkit computes them (see the module docstring)."""
    data = load_detection_data(gt, predictions, "hbb", categories=categories, strict=strict)
    names = data.category_names
    region_cats = {
        k
        for k, n in enumerate(names)
        if (n == ignored_region_category if ignored_region_category else _norm(n) in _REGION_NAMES)
    }
    if classes is None:
        eval_cats = [k for k, n in enumerate(names) if k not in region_cats and _norm(n) not in _NOT_EVALUATED]
    else:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise InputError(f"classes {unknown!r} are not ground-truth categories {names!r}")
        eval_cats = [names.index(c) for c in classes]
    thr = ce.coco_iou_thresholds() if iou_thrs is None else np.asarray(list(iou_thrs), dtype=np.float64)
    md = VISDRONE_MAX_DETS if max_dets is None else tuple(sorted(int(m) for m in max_dets))
    if not md or md[0] < 1:
        raise InputError(f"max_dets must be positive integers, got {max_dets!r}")

    gt_keep, dt_keep, dropped = _drop_in_ignored_regions(data, region_cats)
    g = data.gt.subset(gt_keep)
    d = data.dt.subset(dt_keep)
    ig = g.crowd | g.ignore
    params = ce.EngineParams(thr, ce.coco_recall_thresholds(), md, [[-np.inf, np.inf]], ("all",), cap="image")
    result = ce.match(
        ce.GroundTruth(g.image, g.category, g.xywh, g.area, ig, ig),
        ce.Detections(d.image, d.category, d.xywh, d.score, d.area),
        params,
        len(names),
    )
    ap, ar, weights = _accumulate(result, g, eval_cats, len(data.images))
    metrics = _means(ap, ar, weights, thr, md)
    details: dict[str, Any] = {
        "per_category_AP": {names[k]: float(ap[i].mean()) for i, k in enumerate(eval_cats)},
        "class_image_counts": {names[k]: int(w) for k, w in zip(eval_cats, weights, strict=True)},
        "dropped_in_ignored_regions": dropped,
        "counts": {
            "images": len(data.images),
            "categories": len(names),
            "ground_truth": len(data.gt),
            "predictions": len(data.dt),
        },
    }
    warnings = list(data.warnings)
    if not eval_cats:
        warnings.append("no evaluated categories: every metric is -1")
    protocol = {
        "name": "visdrone",
        "box_type": "hbb",
        "iou": "IoU on xywh; ignore GT (score 0): inter / area(det)",
        "iou_thresholds": [float(t) for t in thr],
        "max_dets": list(md),
        "max_dets_scope": "per image over all categories, after dropping objects in ignored regions; "
        "each image's detections sorted by score (stable) first",
        "ap": "VOC all-point area (VOCap) at the largest maxDets, per class and IoU threshold",
        "ar": "largest recall at each maxDets; recall denominators count ignore GT too (as the toolkit does)",
        "class_mean": "classes present in the ground truth, each weighted by the number of images containing it "
        "(calcAccuracy.m evalClass)",
        "ignore_rules": "objects and detections >= 50% inside ignored regions (category 0, integral image of the "
        "1-pixel-dilated region mask, MATLAB rounding) are dropped; score-0 GT is ignore GT",
        "classes": [names[k] for k in eval_cats],
        "ignored_region_categories": [names[k] for k in sorted(region_cats)],
        "score_ties": "stable sort: equal scores keep image order, then input order",
        "reference": reference("VisDrone2018-DET-toolkit (MATLAB) evalDET.m, ported", None),
    }
    return EvalReport(
        task="det", preset="visdrone", metrics=metrics, protocol=protocol, details=details, warnings=warnings
    )


def _drop_in_ignored_regions(
    data: DetectionData, region_cats: set[int]
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Masks of the GT objects (regions themselves excluded) and detections that stay."""
    g, d = data.gt, data.dt
    is_region = np.isin(g.category, list(region_cats))
    gt_keep = ~is_region
    dt_keep = np.ones(len(d), dtype=bool)
    for i in np.unique(g.image[is_region]).tolist():
        im = data.images[i]
        if im.width is None or im.height is None:
            raise InputError(
                f"image {im.id!r} has ignored regions but no width/height; the VisDrone rule needs the image size"
            )
        regions = g.xywh[is_region & (g.image == i)]
        gi = np.flatnonzero(~is_region & (g.image == i))
        di = np.flatnonzero(d.image == i)
        gt_keep[gi] = ignored_region_keep(regions, g.xywh[gi], int(im.width), int(im.height))
        dt_keep[di] = ignored_region_keep(regions, d.xywh[di], int(im.width), int(im.height))
    dropped = {"ground_truth": int((~gt_keep & ~is_region).sum()), "predictions": int((~dt_keep).sum())}
    return gt_keep, dt_keep, dropped


def _accumulate(
    result: ce.MatchResult, g: ObjectTable, eval_cats: list[int], n_images: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluated class: AP (C, T) and AR (C, T, M) as fractions, and the image-count weights."""
    p = result.params
    T, M = len(p.iou_thrs), len(p.max_dets)
    C = len(eval_cats)
    ap = np.zeros((C, T))
    ar = np.zeros((C, T, M))
    weights = np.zeros(C, dtype=np.int64)
    order = result.accumulation_order()
    cat_sorted = result.det_category[order]
    for i, k in enumerate(eval_cats):
        in_k = g.category == k
        n_gt = int(in_k.sum())
        weights[i] = np.unique(g.image[in_k]).shape[0]
        seg = order[np.searchsorted(cat_sorted, k, "left") : np.searchsorted(cat_sorted, k, "right")]
        rank = result.det_rank[seg]
        for m, max_det in enumerate(p.max_dets):
            sel = seg[rank < max_det]
            if not sel.shape[0]:
                continue
            matched, ignored = result.matched[0][:, sel], result.det_ignore[0][:, sel]  # (T, n)
            tp = np.cumsum(matched & ~ignored, axis=1)
            rec = tp / max(1, n_gt)
            ar[i, :, m] = rec.max(axis=1)
            if m == M - 1:
                fp = np.cumsum(~matched & ~ignored, axis=1)
                prec = tp / np.maximum(1, fp + tp)
                for t in range(T):
                    ap[i, t] = voc_all_point_ap(rec[t], prec[t])
    return ap, ar, weights


def _means(
    ap: np.ndarray, ar: np.ndarray, weights: np.ndarray, thr: np.ndarray, md: tuple[int, ...]
) -> dict[str, float]:
    """``mean2`` over the per-image-repeated class rows (calcAccuracy.m)."""
    rows = np.repeat(np.arange(ap.shape[0]), weights)

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if x.size else -1.0

    out = {"AP": mean(ap[rows, :])}
    for iou, key in ((0.5, "AP50"), (0.75, "AP75")):
        t = np.flatnonzero(thr == iou)
        out[key] = mean(ap[rows][:, t]) if t.size else -1.0
    for m, max_det in enumerate(md):
        out[f"AR{max_det}"] = mean(ar[rows, :, m])
    return out

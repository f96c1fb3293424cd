"""DOTA Task 1 (oriented boxes) mAP, equal to DOTA_devkit's ``dota_evaluation_task1.py``.

The devkit's rules, reproduced:

* Per class, all detections of the class over all images are sorted by confidence, highest first
  (the devkit uses numpy's default ``argsort``; rsvl a stable sort, so ties keep input order).
* Each detection takes the ground truth of its image and class with the highest polygon IoU (the
  first one on ties, in annotation order) — whether or not it is already taken. It is a TP when
  that IoU is ``> 0.5`` (strict) and the object is free and not ``difficult``; a duplicate (object
  already taken) is a FP; a detection whose best object is ``difficult`` counts as nothing;
  IoU ``<= 0.5`` is a FP.
* ``rec = tp / npos`` (npos: non-difficult objects of the class), ``prec = tp / max(tp + fp, eps)``;
  AP is VOC07 11-point (``ap_method="voc07"``, the devkit's and the DOTA server's default) or the
  VOC12 all-point area (``"voc12"``); mAP is the mean over classes.

Polygon IoU. The devkit filters pairs by (+1-pixel) HBB overlap and then calls ``polyiou``, a
C++ signed-triangle decomposition exact for any simple polygon. rsvl computes the IoU of convex
quadrilaterals with its exact vectorised kernel (:func:`rsvl.geometry.convex_poly_intersection_area`)
and, for the rare non-convex or self-intersecting annotation, with a line-by-line Python port of
``polyiou`` — so both cases equal the devkit (the HBB pre-filter never changes a result: any
pair with polygon IoU > 0 overlaps as HBBs too). Such pairs are counted in ``warnings``.

A class without non-difficult ground truth has an undefined AP (the devkit divides by zero and
prints nan): rsvl reports -1 for it, leaves it out of mAP and says so in ``warnings``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from rsvl.datasets.sample import Category
from rsvl.errors import InputError
from rsvl.geometry.boxes import poly_area
from rsvl.geometry.rotated import convex_poly_intersection_area
from rsvl.metrics.detection_data import GtLike, PredLike, load_detection_data
from rsvl.metrics.report import EvalReport, reference

ApMethod = Literal["voc07", "voc12"]
_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- AP


def voc_ap(rec: np.ndarray, prec: np.ndarray, method: ApMethod = "voc07") -> float:
    """The devkit's ``voc_ap``: VOC07 11-point (thresholds ``np.arange(0, 1.1, 0.1)``) or the
    VOC12 area under the monotone precision envelope."""
    if method == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0 if np.sum(rec >= t) == 0 else float(np.max(prec[rec >= t]))
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# --------------------------------------------------------------------------- polygon IoU


def is_convex_quad(poly: np.ndarray, rel_tol: float = 1e-12) -> np.ndarray:
    """(N,) True for quadrilaterals ``(N, 8)`` whose turns all go the same way (collinear allowed).

    Self-intersecting ("bow-tie") quads have turns of both signs and are not convex.
    """
    pts = poly.reshape(-1, 4, 2)
    e = np.roll(pts, -1, axis=1) - pts
    en = np.roll(e, -1, axis=1)
    cross = e[..., 0] * en[..., 1] - e[..., 1] * en[..., 0]
    scale = np.linalg.norm(e, axis=2) * np.linalg.norm(en, axis=2)
    tol = rel_tol * scale
    return (cross >= -tol).all(axis=1) | (cross <= tol).all(axis=1)


def polygon_iou_pairs(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, int]:
    """IoU of paired quadrilaterals ``(N, 8)``: the exact convex kernel where both are convex, the
    ``polyiou`` port elsewhere. Returns the IoUs and how many pairs took the general path."""
    out = np.zeros(p.shape[0], dtype=np.float64)
    if not p.shape[0]:
        return out, 0
    convex = is_convex_quad(p) & is_convex_quad(q)
    if convex.any():
        pc, qc = p[convex], q[convex]
        inter = convex_poly_intersection_area(pc, qc)
        union = np.abs(poly_area(pc)) + np.abs(poly_area(qc)) - inter
        res = np.zeros(pc.shape[0])
        np.divide(inter, union, out=res, where=union > 0)
        out[convex] = res
    general = np.flatnonzero(~convex)
    for i in general.tolist():
        out[i] = polyiou_iou(p[i].tolist(), q[i].tolist())
    return out, int(general.shape[0])


# A line-by-line port of DOTA_devkit polyiou.cpp (MIT licence), used for non-convex quadrilaterals.
_PI_EPS = 1e-8


def _sig(d: float) -> int:
    return (d > _PI_EPS) - (d < -_PI_EPS)


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (b[0] - o[0]) * (a[1] - o[1])


def _area(ps: list[tuple[float, float]]) -> float:
    n = len(ps)
    res = 0.0
    for i in range(n):
        a, b = ps[i], ps[(i + 1) % n]
        res += a[0] * b[1] - a[1] * b[0]
    return res / 2.0


def _line_cross(a, b, c, d) -> tuple[float, float] | None:
    s1 = _cross(a, b, c)
    s2 = _cross(a, b, d)
    if _sig(s1) == 0 and _sig(s2) == 0:
        return None  # collinear: polyiou returns 2 and leaves the point unset
    if _sig(s2 - s1) == 0:
        return None
    return ((c[0] * s2 - d[0] * s1) / (s2 - s1), (c[1] * s2 - d[1] * s1) / (s2 - s1))


def _polygon_cut(p: list[tuple[float, float]], a, b) -> list[tuple[float, float]]:
    pp: list[tuple[float, float]] = []
    n = len(p)
    for i in range(n):
        cur, nxt = p[i], p[(i + 1) % n]
        if _sig(_cross(a, b, cur)) > 0:
            pp.append(cur)
        if _sig(_cross(a, b, cur)) != _sig(_cross(a, b, nxt)):
            x = _line_cross(a, b, cur, nxt)
            pp.append(x if x is not None else _UNSET)
    out: list[tuple[float, float]] = []
    for i, pt in enumerate(pp):
        if i == 0 or not _same(pt, pp[i - 1]):
            out.append(pt)
    while len(out) > 1 and _same(out[-1], out[0]):
        out.pop()
    return out


#: polyiou leaves the intersection point uninitialised when lineCross fails (a degenerate case
#: where the two cross products differ in sign but not by more than eps); it never happens for
#: non-degenerate input. The port uses the origin there.
_UNSET = (0.0, 0.0)


def _same(p: tuple[float, float], q: tuple[float, float]) -> bool:
    return _sig(p[0] - q[0]) == 0 and _sig(p[1] - q[1]) == 0


def _tri_intersect(a, b, c, d) -> float:
    o = (0.0, 0.0)
    s1 = _sig(_cross(o, a, b))
    s2 = _sig(_cross(o, c, d))
    if s1 == 0 or s2 == 0:
        return 0.0
    if s1 == -1:
        a, b = b, a
    if s2 == -1:
        c, d = d, c
    p = [o, a, b]
    p = _polygon_cut(p, o, c)
    p = _polygon_cut(p, c, d)
    p = _polygon_cut(p, d, o)
    res = abs(_area(p)) if len(p) > 0 else 0.0
    return -res if s1 * s2 == -1 else res


def polyiou_iou(p: Sequence[float], q: Sequence[float]) -> float:
    """DOTA_devkit ``polyiou.iou_poly`` for two 4-vertex polygons (flat 8-number lists)."""
    ps1 = [(float(p[2 * i]), float(p[2 * i + 1])) for i in range(4)]
    ps2 = [(float(q[2 * i]), float(q[2 * i + 1])) for i in range(4)]
    if _area(ps1) < 0:
        ps1.reverse()
    if _area(ps2) < 0:
        ps2.reverse()
    inter = 0.0
    for i in range(4):
        for j in range(4):
            inter += _tri_intersect(ps1[i], ps1[(i + 1) % 4], ps2[j], ps2[(j + 1) % 4])
    union = abs(_area(ps1)) + abs(_area(ps2)) - inter
    if union == 0:
        return 0.0 if inter == 0 else math.copysign(math.inf, inter)
    return inter / union


# --------------------------------------------------------------------------- evaluation


def evaluate_dota(
    gt: GtLike,
    predictions: PredLike,
    *,
    ap_method: ApMethod = "voc07",
    iou_threshold: float = 0.5,
    classes: Sequence[str] | None = None,
    categories: Sequence[str | Category] | None = None,
    strict: bool = True,
) -> EvalReport:
    """DOTA Task 1 mAP and per-class AP (see the module docstring).

    Args:
        gt: Samples whose instances carry ``polygon`` (4 vertices; ``bbox`` is used as a rectangle
            when there is no polygon) and ``difficult``; or a COCO dict/file with 8-number
            ``segmentation`` polygons (or ``bbox``) and optional ``difficult``.
        predictions: scored Samples or COCO results of the same form.
        ap_method: ``voc07`` (11-point, the devkit default) or ``voc12`` (all-point area).
        iou_threshold: a detection needs IoU strictly above it.
        classes: the classes averaged into mAP, in order (default: every ground-truth category).

    Returns:
        ``metrics``: ``mAP`` and ``AP/<class>`` as fractions (-1 for classes without positives).
    """
    if ap_method not in ("voc07", "voc12"):
        raise InputError(f"ap_method must be 'voc07' or 'voc12', got {ap_method!r}")
    if not 0 <= float(iou_threshold) < 1:
        raise InputError(f"iou_threshold must be in [0, 1), got {iou_threshold!r}")
    data = load_detection_data(gt, predictions, "poly", categories=categories, strict=strict)
    names = data.category_names
    if classes is None:
        cls_idx = list(range(len(names)))
    else:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise InputError(f"classes {unknown!r} are not ground-truth categories {names!r}")
        cls_idx = [names.index(c) for c in classes]

    g, d = data.gt, data.dt
    K = max(len(names), 1)
    ious, general = _best_overlaps(g.image * K + g.category, d.image * K + d.category, g.geometry, d.geometry)
    best_iou, best_gt = ious
    warnings = list(data.warnings)
    if general:
        warnings.append(
            f"{general} polygon pairs involved non-convex or self-intersecting quadrilaterals; "
            "their IoU used the port of DOTA_devkit's polyiou"
        )

    metrics: dict[str, float] = {}
    per_class: dict[str, Any] = {}
    aps = []
    for k in cls_idx:
        npos = int(((g.category == k) & ~g.difficult).sum())
        sel = np.flatnonzero(d.category == k)
        sel = sel[np.argsort(-d.score[sel], kind="stable")]
        tp, fp = _tp_fp(best_iou[sel], best_gt[sel], g.difficult, float(iou_threshold))
        ndet = int(sel.shape[0])
        if npos == 0:
            ap = -1.0
            warnings.append(f"class {names[k]!r} has no non-difficult ground truth: AP undefined (-1), left out of mAP")
        else:
            tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
            rec = tp_c / float(npos)
            prec = tp_c / np.maximum(tp_c + fp_c, _EPS)
            ap = voc_ap(rec, prec, ap_method)
            aps.append(ap)
        metrics[f"AP/{names[k]}"] = float(ap)
        per_class[names[k]] = {
            "AP": float(ap),
            "npos": npos,
            "detections": ndet,
            "tp": int(tp.sum()),
            "fp": int(fp.sum()),
        }
    metrics = {"mAP": float(np.mean(aps)) if aps else -1.0, **metrics}
    protocol = {
        "name": "dota",
        "box_type": "poly",
        "iou": "polygon IoU of quadrilaterals (exact convex kernel; DOTA_devkit polyiou port for non-convex)",
        "iou_threshold": float(iou_threshold),
        "iou_rule": "strictly greater than the threshold",
        "ap_method": ap_method,
        "ap": "VOC07 11-point (recall thresholds 0:0.1:1)" if ap_method == "voc07" else "VOC12 all-point area",
        "matching": "each detection takes its highest-IoU object (first on ties) even if already taken; a "
        "taken object makes it a FP",
        "ignore_rules": "detections whose best object is difficult count as neither TP nor FP; difficult objects "
        "are not positives",
        "classes": [names[k] for k in cls_idx],
        "undefined": "-1 for classes without non-difficult ground truth; left out of mAP",
        "score_ties": "stable sort (the devkit's default argsort leaves tie order unspecified)",
        "reference": reference("DOTA_devkit dota_evaluation_task1.py (CAPTAIN-WHU), ported", None),
    }
    details = {
        "per_class": per_class,
        "counts": {"images": len(data.images), "ground_truth": len(g), "predictions": len(d)},
    }
    return EvalReport(task="det", preset="dota", metrics=metrics, protocol=protocol, details=details, warnings=warnings)


def _best_overlaps(
    gkey: np.ndarray, dkey: np.ndarray, gpoly: np.ndarray, dpoly: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """Per detection: the best polygon IoU with an object of its image and class (-inf when there
    is none) and that object's index (first on ties, in annotation order; -1 when none)."""
    nd = dkey.shape[0]
    best = np.full(nd, -np.inf)
    arg = np.full(nd, -1, dtype=np.int64)
    if not nd or not gkey.shape[0]:
        return (best, arg), 0
    g_order = np.lexsort((np.arange(gkey.shape[0]), gkey))
    gk = gkey[g_order]
    gs = np.searchsorted(gk, dkey, "left")
    counts = np.searchsorted(gk, dkey, "right") - gs
    ii = np.repeat(np.arange(nd), counts)
    jj = g_order[np.repeat(gs, counts) + np.arange(ii.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)]
    # HBB pre-filter (overlap >= 0 keeps touching boxes; a pair with polygon IoU > 0 always passes)
    dp, gp = dpoly[ii], gpoly[jj]
    lo_x = np.maximum(dp[:, 0::2].min(1), gp[:, 0::2].min(1))
    hi_x = np.minimum(dp[:, 0::2].max(1), gp[:, 0::2].max(1))
    lo_y = np.maximum(dp[:, 1::2].min(1), gp[:, 1::2].min(1))
    hi_y = np.minimum(dp[:, 1::2].max(1), gp[:, 1::2].max(1))
    near = (hi_x >= lo_x) & (hi_y >= lo_y)
    ii, jj = ii[near], jj[near]
    iou, general = polygon_iou_pairs(dpoly[ii], gpoly[jj])
    if not ii.shape[0]:
        return (best, arg), general
    # pairs are grouped by detection with objects in annotation order
    starts = np.flatnonzero(np.r_[True, ii[1:] != ii[:-1]])
    seg = np.cumsum(np.r_[True, ii[1:] != ii[:-1]]) - 1
    segmax = np.maximum.reduceat(iou, starts)
    first = np.minimum.reduceat(np.where(iou == segmax[seg], np.arange(ii.shape[0]), ii.shape[0]), starts)
    dets = ii[starts]
    best[dets] = segmax
    arg[dets] = jj[first]
    # detections whose candidates were all filtered out keep -inf; those with candidates of IoU 0 get 0
    return (best, arg), general


def _tp_fp(
    best_iou: np.ndarray, best_gt: np.ndarray, difficult: np.ndarray, thr: float
) -> tuple[np.ndarray, np.ndarray]:
    """TP/FP flags of detections in score order (see the module docstring)."""
    n = best_iou.shape[0]
    tp = np.zeros(n)
    fp = np.zeros(n)
    hit = best_iou > thr
    fp[~hit] = 1.0
    cand = np.flatnonzero(hit)
    dif = difficult[best_gt[cand]]
    regular = cand[~dif]
    # the first detection (in score order) to reach an object takes it; later ones are duplicates
    _, first = np.unique(best_gt[regular], return_index=True)
    is_first = np.zeros(regular.shape[0], dtype=bool)
    is_first[first] = True
    tp[regular[is_first]] = 1.0
    fp[regular[~is_first]] = 1.0
    return tp, fp

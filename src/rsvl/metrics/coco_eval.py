"""The COCO-style matching and accumulation engine, vectorised, equal to pycocotools' ``COCOeval``.

pycocotools matches detections image by image and category by category with three nested Python
loops (IoU threshold x detection x ground truth). The same greedy rule is computed here for every
(image, category) group at once:

* Detections are ranked inside their *cap scope* — per (image, category) for COCO, per image for
  LVIS and VisDrone — by score, highest first, with ties kept in input order (``mergesort``).
  Only the first ``max(max_dets)`` of each scope are matched.
* IoUs are computed for every (detection, ground truth) pair of a group with the exact
  floating-point expression of pycocotools' C ``bbIou`` (so equal IoUs compare equal and
  thresholds fall where pycocotools puts them); crowd ground truth uses ``inter / area(det)``.
* Matching walks *rounds*: round r handles, in every group simultaneously, the r-th detection that
  has any candidate (a pair with IoU >= the smallest threshold). For all area ranges and IoU
  thresholds at once it picks pycocotools' choice: among still-free ground truth (crowd is never
  used up) with IoU >= threshold, prefer non-ignored ones, take the highest IoU, and on ties the
  last one in annotation order. Detections without a candidate never match and are skipped.
* Accumulation follows ``COCOeval.accumulate`` (cumulative TP/FP in score order, precision made
  monotone from the right, 101 recall points looked up with ``searchsorted(side="left")``), with
  the lookup done as one integer ``searchsorted`` per (category, maxDets) instead of Python loops.

Everything is numpy on flat arrays; there are no per-detection Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rsvl.geometry.boxes import obb_corners
from rsvl.geometry.rotated import convex_poly_intersection_area, rotated_iou

#: "No limit" for a maxDets entry (LVIS Fixed AP evaluates every detection kept per category).
NO_LIMIT = np.iinfo(np.int64).max
#: Largest number of (detection, ground truth) pairs whose IoU is computed in one chunk.
_PAIR_CHUNK = 2_000_000

CapScope = Literal["image_category", "image"]
BoxType = Literal["hbb", "obb"]


def coco_iou_thresholds() -> np.ndarray:
    """``[.5:.05:.95]`` exactly as pycocotools builds it (``np.linspace``, not ``arange``)."""
    return np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


def coco_recall_thresholds() -> np.ndarray:
    """The 101 recall points ``[0:.01:1]`` exactly as pycocotools builds them."""
    return np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class EngineParams:
    """Everything that changes matching and accumulation.

    Attributes:
        iou_thrs: (T,) IoU thresholds.
        rec_thrs: (R,) recall points of the interpolated precision.
        max_dets: ascending detection caps (``NO_LIMIT`` for none), applied inside ``cap``.
        area_rngs: (A, 2) inclusive ``[lo, hi]`` area ranges.
        area_labels: one name per area range (``all``, ``small``...).
        cap: ``image_category`` (COCO: maxDets per image and category) or ``image`` (LVIS,
            VisDrone: per image, all categories together).
    """

    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    max_dets: tuple[int, ...]
    area_rngs: np.ndarray
    area_labels: tuple[str, ...]
    cap: CapScope = "image_category"

    def __post_init__(self) -> None:
        object.__setattr__(self, "iou_thrs", np.asarray(self.iou_thrs, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "rec_thrs", np.asarray(self.rec_thrs, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "area_rngs", np.asarray(self.area_rngs, dtype=np.float64).reshape(-1, 2))
        object.__setattr__(self, "max_dets", tuple(sorted(int(m) for m in self.max_dets)))
        if len(self.area_labels) != len(self.area_rngs):
            raise ValueError(f"{len(self.area_rngs)} area ranges but {len(self.area_labels)} labels")
        if not len(self.iou_thrs) or not len(self.max_dets) or not len(self.area_rngs):
            raise ValueError("need at least one IoU threshold, one maxDets value and one area range")
        if self.cap not in ("image_category", "image"):
            raise ValueError(f"cap must be 'image_category' or 'image', got {self.cap!r}")


@dataclass
class GroundTruth:
    """Ground-truth objects as parallel arrays in annotation order.

    ``boxes`` are ``xywh`` (HBB, as COCO stores them) or le90 ``(cx, cy, w, h, angle)`` (OBB).
    ``ignore`` marks objects that never count as positives (pycocotools: ``iscrowd``; LVIS: the
    ``ignore`` field); ``crowd`` marks those matched with ``inter / area(det)`` any number of times.
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    ignore: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclass
class Detections:
    """Detections as parallel arrays in input order (the order breaks score ties).

    ``ignore_unmatched`` marks detections that are ignored when they match nothing (LVIS: the
    category is not exhaustively annotated in that image).
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    area: np.ndarray
    ignore_unmatched: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclass
class MatchResult:
    """Per-detection matching outcome for every area range and IoU threshold.

    Detections (those inside the largest cap) are stored in group-major order: by image, then
    category, then score (ties in input order). Attributes with an ``A`` or ``T`` axis follow
    ``params.area_rngs`` and ``params.iou_thrs``.
    """

    params: EngineParams
    n_categories: int
    det_index: np.ndarray  # (N,) index into the input Detections
    det_image: np.ndarray
    det_category: np.ndarray
    det_score: np.ndarray
    det_rank: np.ndarray  # rank inside the cap scope (0 = highest score)
    matched: np.ndarray  # (A, T, N) bool
    det_ignore: np.ndarray  # (A, T, N) bool
    det_iou: np.ndarray  # (A, N) IoU of the match at the first threshold, 0 where unmatched
    gt_category: np.ndarray  # (G,) in group-major order
    gt_image: np.ndarray
    gt_ignore: np.ndarray  # (A, G) bool
    gt_matched: np.ndarray  # (A, T, G) bool

    def accumulation_order(self) -> np.ndarray:
        """Positions sorted as pycocotools' accumulate sees them: by category, then score
        descending with ties in (image, per-image order) — a stable sort of the concatenation."""
        pos = np.arange(self.det_image.shape[0])
        return np.lexsort((pos, self.det_image, -self.det_score, self.det_category))


@dataclass
class Accumulated:
    """``COCOeval.eval``: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where undefined,
    plus the AI-TOD fork's optimal-LRP arrays (K, A, M) when requested."""

    params: EngineParams
    precision: np.ndarray
    recall: np.ndarray
    lrp: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- IoU


def hbb_pair_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired ``xywh`` boxes with pycocotools' C ``bbIou`` arithmetic, operation by operation.

    ``crowd[i]`` switches pair i to ``inter / area(d)``. Disjoint or touching boxes give 0.
    """
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da = d[:, 2] * d[:, 3]
    ga = g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    hit = (w > 0) & (h > 0)
    out = np.zeros(d.shape[0], dtype=np.float64)
    np.divide(inter, union, out=out, where=hit)
    return out


def obb_pair_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired le90 OBBs (exact, :func:`rsvl.geometry.rotated_iou`); crowd pairs give
    ``inter / area(d)``. Pairs whose circumscribed circles miss each other are 0 without work."""
    out = np.zeros(d.shape[0], dtype=np.float64)
    if not d.shape[0]:
        return out
    reach = (np.hypot(d[:, 2], d[:, 3]) + np.hypot(g[:, 2], g[:, 3])) / 2
    near = np.hypot(d[:, 0] - g[:, 0], d[:, 1] - g[:, 1]) < reach
    plain = near & ~crowd
    if plain.any():
        out[plain] = rotated_iou(d[plain], g[plain], aligned=True)
    special = near & crowd
    if special.any():
        dd, gg = d[special], g[special]
        inter = convex_poly_intersection_area(obb_corners(dd).reshape(-1, 8), obb_corners(gg).reshape(-1, 8))
        da = dd[:, 2] * dd[:, 3]
        res = np.zeros(dd.shape[0])
        np.divide(inter, da, out=res, where=da > 0)
        out[special] = res
    return out


# --------------------------------------------------------------------------- ranking


def _group_rank(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal keys (keys already sorted)."""
    n = sorted_keys.shape[0]
    if not n:
        return np.zeros(0, dtype=np.int64)
    pos = np.arange(n)
    start = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    return pos - np.maximum.accumulate(np.where(start, pos, 0))


def cap_ranks(image: np.ndarray, category: np.ndarray, score: np.ndarray, cap: CapScope) -> np.ndarray:
    """Rank of every detection inside its cap scope, by score descending, ties in input order."""
    n = image.shape[0]
    idx = np.arange(n)
    if cap == "image_category":
        order = np.lexsort((idx, -score, category, image))
        keys = image[order] * (int(category.max(initial=0)) + 1) + category[order]
    else:
        order = np.lexsort((idx, -score, image))
        keys = image[order]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = _group_rank(keys)
    return ranks


# --------------------------------------------------------------------------- matching


def _candidate_pairs(
    dkey: np.ndarray,
    gkey: np.ndarray,
    dboxes: np.ndarray,
    gboxes: np.ndarray,
    gcrowd: np.ndarray,
    box_type: BoxType,
    min_thr: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (det, gt) pairs of the same group with IoU >= ``min_thr``, ordered by det then gt.

    Both key arrays are sorted (group-major order); pairs are generated per chunk of detections so
    that memory stays bounded however crowded a group is.
    """
    gs = np.searchsorted(gkey, dkey, side="left")
    ge = np.searchsorted(gkey, dkey, side="right")
    counts = ge - gs
    iou_fn = hbb_pair_iou if box_type == "hbb" else obb_pair_iou
    out_i, out_j, out_v = [], [], []
    csum = np.cumsum(counts)
    start = 0
    n = dkey.shape[0]
    while start < n:
        base = csum[start - 1] if start else 0
        stop = int(np.searchsorted(csum, base + _PAIR_CHUNK, side="right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            ii = np.repeat(np.arange(start, stop), c)
            offsets = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            jj = np.repeat(gs[start:stop], c) + offsets
            iou = iou_fn(dboxes[ii], gboxes[jj], gcrowd[jj])
            keep = iou >= min_thr
            out_i.append(ii[keep])
            out_j.append(jj[keep])
            out_v.append(iou[keep])
        start = stop
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_v)


def match(
    gt: GroundTruth,
    dt: Detections,
    params: EngineParams,
    n_categories: int,
    box_type: BoxType = "hbb",
) -> MatchResult:
    """Greedy matching of ``COCOeval.evaluateImg`` for every group, area range and threshold."""
    K = max(int(n_categories), 1)  # key multiplier; the category count itself may be 0
    A, T = len(params.area_rngs), len(params.iou_thrs)
    thr = np.minimum(params.iou_thrs, 1 - 1e-10)

    # detections kept by the largest cap, in group-major order
    ranks = cap_ranks(dt.image, dt.category, dt.score, params.cap)
    kept = np.flatnonzero(ranks < params.max_dets[-1])
    order = kept[np.lexsort((kept, -dt.score[kept], dt.category[kept], dt.image[kept]))]
    d_img, d_cat, d_score = dt.image[order], dt.category[order], dt.score[order]
    d_area = dt.area[order]
    dkey = d_img * K + d_cat
    N = order.shape[0]

    g_order = np.lexsort((np.arange(len(gt)), gt.category, gt.image))
    g_img, g_cat = gt.image[g_order], gt.category[g_order]
    gkey = g_img * K + g_cat
    g_area, g_crowd = gt.area[g_order], gt.crowd[g_order].astype(bool)
    G = g_order.shape[0]
    lo, hi = params.area_rngs[:, 0:1], params.area_rngs[:, 1:2]
    gt_ig = gt.ignore[g_order].astype(bool)[None, :] | (g_area[None, :] < lo) | (g_area[None, :] > hi)

    matched = np.zeros((A, T, N), dtype=bool)
    det_ig = np.zeros((A, T, N), dtype=bool)
    det_iou = np.zeros((A, N), dtype=np.float64)
    taken = np.zeros((A, T, G), dtype=bool)

    pi, pj, pv = _candidate_pairs(dkey, gkey, dt.boxes[order], gt.boxes[g_order], g_crowd, box_type, float(thr.min()))
    if pi.shape[0]:
        _match_rounds(pi, pj, pv, dkey, thr, g_crowd, gt_ig, matched, det_ig, det_iou, taken)

    # unmatched detections outside the area range (and LVIS not-exhaustive ones) are ignored
    d_out = (d_area[None, :] < lo) | (d_area[None, :] > hi)
    if dt.ignore_unmatched is not None:
        d_out = d_out | dt.ignore_unmatched[order].astype(bool)[None, :]
    det_ig |= ~matched & d_out[:, None, :]

    return MatchResult(
        params=params,
        n_categories=int(n_categories),
        det_index=order,
        det_image=d_img,
        det_category=d_cat,
        det_score=d_score,
        det_rank=ranks[order],
        matched=matched,
        det_ignore=det_ig,
        det_iou=det_iou,
        gt_category=g_cat,
        gt_image=g_img,
        gt_ignore=gt_ig,
        gt_matched=taken,
    )


def _match_rounds(
    pi: np.ndarray,
    pj: np.ndarray,
    pv: np.ndarray,
    dkey: np.ndarray,
    thr: np.ndarray,
    g_crowd: np.ndarray,
    gt_ig: np.ndarray,
    matched: np.ndarray,
    det_ig: np.ndarray,
    det_iou: np.ndarray,
    taken: np.ndarray,
) -> None:
    """Fill ``matched``/``det_ig``/``det_iou``/``taken`` in place, one candidate rank per round."""
    cand, first = np.unique(pi, return_index=True)
    per_det = np.diff(np.r_[first, pi.shape[0]])
    round_of_det = _group_rank(dkey[cand])
    pair_round = np.repeat(round_of_det, per_det)
    porder = np.argsort(pair_round, kind="stable")
    pi, pj, pv, pround = pi[porder], pj[porder], pv[porder], pair_round[porder]
    bounds = np.searchsorted(pround, np.arange(int(pround[-1]) + 2), side="left")
    thr_col = thr[None, :, None]
    for r in range(bounds.shape[0] - 1):
        s, e = int(bounds[r]), int(bounds[r + 1])
        di, gi, io = pi[s:e], pj[s:e], pv[s:e]
        P = e - s
        new = np.r_[True, di[1:] != di[:-1]]
        starts = np.flatnonzero(new)
        seg = np.cumsum(new) - 1
        ok = (~taken[:, :, gi] | g_crowd[gi]) & (io[None, None, :] >= thr_col)
        ok_reg = ok & ~gt_ig[:, None, gi]
        prefer = np.logical_or.reduceat(ok_reg, starts, axis=2)[:, :, seg]
        sel = np.where(prefer, ok_reg, ok)
        val = np.where(sel, io[None, None, :], -1.0)
        best = sel & (val == np.maximum.reduceat(val, starts, axis=2)[:, :, seg])
        choice = np.maximum.reduceat(np.where(best, np.arange(P), -1), starts, axis=2)
        a_i, t_i, s_i = np.nonzero(choice >= 0)
        p_i = choice[a_i, t_i, s_i]
        d_i, g_i = di[starts[s_i]], gi[p_i]
        matched[a_i, t_i, d_i] = True
        det_ig[a_i, t_i, d_i] = gt_ig[a_i, g_i]
        first = t_i == 0
        det_iou[a_i[first], d_i[first]] = io[p_i[first]]
        taken[a_i, t_i, g_i] = True


# --------------------------------------------------------------------------- accumulation


def _first_reaching(tp: np.ndarray, need: np.ndarray) -> np.ndarray:
    """For rows of nondecreasing integer counts ``tp`` (rows, n) and targets ``need`` (rows, R):
    the first column where ``tp >= need`` (n when never), with one ``searchsorted``."""
    rows, n = tp.shape
    stride = n + 2
    keys = (np.arange(rows)[:, None] * stride + tp).reshape(-1)
    queries = np.arange(rows)[:, None] * stride + np.minimum(need, n + 1)
    return np.searchsorted(keys, queries, side="left") - np.arange(rows)[:, None] * n


def accumulate(result: MatchResult, with_lrp: bool = False) -> Accumulated:
    """``COCOeval.accumulate`` on a :class:`MatchResult` (and the AI-TOD fork's oLRP if asked)."""
    p = result.params
    K = result.n_categories
    A, T, R, M = len(p.area_rngs), len(p.iou_thrs), len(p.rec_thrs), len(p.max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    lrp = {name: -np.ones((K, A, M)) for name in ("olrp", "olrp_loc", "olrp_fp", "olrp_fn", "lrp_opt_thr")}

    npig = np.zeros((A, K), dtype=np.int64)
    for a in range(A):
        npig[a] = np.bincount(result.gt_category[~result.gt_ignore[a]], minlength=K)[:K]
    # target TP count per recall point: the first c with c / npig >= r (same float division as rc)
    need = np.zeros((A, K, R), dtype=np.int64)
    for a in range(A):
        for k in np.flatnonzero(npig[a]):
            vals = np.arange(npig[a, k] + 1) / npig[a, k]
            need[a, k] = np.searchsorted(vals, p.rec_thrs, side="left")

    order = result.accumulation_order()
    bounds = np.searchsorted(result.det_category[order], np.arange(K + 1), side="left")
    valid = npig > 0  # (A, K)
    for k in range(K):
        if not valid[:, k].any():
            continue
        seg = order[bounds[k] : bounds[k + 1]]
        rank = result.det_rank[seg]
        for m, max_det in enumerate(p.max_dets):
            sel = seg[rank < max_det]
            n = sel.shape[0]
            a_ok = valid[:, k]
            if n == 0:
                recall[:, k, a_ok, m] = 0.0
                precision[:, :, k, a_ok, m] = 0.0
                if with_lrp:
                    for name, value in (("olrp", 1.0), ("olrp_fn", 1.0)):
                        lrp[name][k, a_ok, m] = value
                    for name in ("olrp_loc", "olrp_fp", "lrp_opt_thr"):
                        lrp[name][k, a_ok, m] = np.nan
                continue
            ig = result.det_ignore[:, :, sel]
            mt = result.matched[:, :, sel]
            tps = mt & ~ig
            fps = ~mt & ~ig
            tp_c = np.cumsum(tps, axis=2)
            fp_c = np.cumsum(fps, axis=2)
            tp = tp_c.astype(float)
            fp = fp_c.astype(float)
            npk = npig[:, k].astype(float)
            rc_last = tp[:, :, -1] / np.where(npk > 0, npk, 1.0)[:, None]
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
            # first position whose recall reaches each recall point (searchsorted side='left')
            need_k = np.repeat(need[:, k, :], T, axis=0)  # (A*T, R)
            pos = _first_reaching(tp_c.reshape(A * T, n), need_k).reshape(A, T, R)
            q = np.where(pos < n, np.take_along_axis(pr, np.minimum(pos, n - 1), axis=2), 0.0)
            for a in np.flatnonzero(a_ok):
                recall[:, k, a, m] = rc_last[a]
                precision[:, :, k, a, m] = q[a]
            if with_lrp:
                _lrp(
                    lrp,
                    k,
                    m,
                    a_ok,
                    tps[:, 0],
                    fps[:, 0],
                    result.det_iou[:, sel],
                    npig[:, k],
                    result.det_score[sel],
                    float(p.iou_thrs[0]),
                )
    return Accumulated(params=p, precision=precision, recall=recall, lrp=lrp if with_lrp else {})


def _lrp(
    lrp: dict[str, np.ndarray],
    k: int,
    m: int,
    a_ok: np.ndarray,
    tps: np.ndarray,
    fps: np.ndarray,
    ious: np.ndarray,
    npig: np.ndarray,
    scores: np.ndarray,
    thr0: float,
) -> None:
    """Optimal LRP of the AI-TOD cocoapi fork (Oksuz et al.) at the first IoU threshold."""
    for a in np.flatnonzero(a_ok):
        tp_num = np.cumsum(tps[a])
        fp_num = np.cumsum(fps[a])
        fn_num = npig[a] - tp_num
        if tp_num[-1] > 0:
            total_loc = tp_num - np.cumsum(ious[a] * tps[a])
            lrps = (total_loc / (1 - thr0) + fp_num + fn_num) / (tp_num + fp_num + fn_num)
            i = int(np.argmin(lrps))
            lrp["olrp"][k, a, m] = lrps[i]
            lrp["olrp_loc"][k, a, m] = total_loc[i] / tp_num[i]
            lrp["olrp_fp"][k, a, m] = fp_num[i] / (tp_num[i] + fp_num[i])
            lrp["olrp_fn"][k, a, m] = fn_num[i] / npig[a]
            lrp["lrp_opt_thr"][k, a, m] = scores[i]
        else:
            lrp["olrp_loc"][k, a, m] = np.nan
            lrp["olrp_fp"][k, a, m] = np.nan
            lrp["olrp_fn"][k, a, m] = 1.0
            lrp["olrp"][k, a, m] = 1.0
            lrp["lrp_opt_thr"][k, a, m] = np.nan


# --------------------------------------------------------------------------- summaries


def _mean_defined(s: np.ndarray) -> float:
    s = s[~np.isnan(s)]
    s = s[s > -1]
    return -1.0 if s.size == 0 else float(np.mean(s))


def summarize(
    acc: Accumulated,
    ap: bool,
    iou: float | None = None,
    area: str = "all",
    max_det: int | None = None,
    categories: Sequence[int] | None = None,
) -> float:
    """One number of ``COCOeval.summarize``: mean over defined entries (-1 when none).

    Args:
        ap: average precision (True) or average recall (False).
        iou: one IoU threshold (exact float match, as pycocotools does) or None for all.
        area: area-range label.
        max_det: maxDets value (default: the largest).
        categories: restrict to these category indices (LVIS frequency groups).
    """
    p = acc.params
    max_det = p.max_dets[-1] if max_det is None else max_det
    aind = [i for i, label in enumerate(p.area_labels) if label == area]
    mind = [i for i, m in enumerate(p.max_dets) if m == max_det]
    s = acc.precision if ap else acc.recall
    if iou is not None:
        s = s[np.where(iou == p.iou_thrs)[0]]
    if categories is not None:
        cats = np.asarray(list(categories), dtype=np.int64)
        s = s[:, :, cats] if ap else s[:, cats]
    s = s[:, :, :, aind][..., mind] if ap else s[:, :, aind][..., mind]
    return _mean_defined(s)


def summarize_lrp(acc: Accumulated, name: str, area: str = "all", max_det: int | None = None) -> float:
    """Mean of one oLRP array over categories (NaNs and -1 left out, as the AI-TOD fork does)."""
    p = acc.params
    max_det = p.max_dets[-1] if max_det is None else max_det
    aind = [i for i, label in enumerate(p.area_labels) if label == area]
    mind = [i for i, m in enumerate(p.max_dets) if m == max_det]
    return _mean_defined(acc.lrp[name][:, aind][..., mind])


def per_category_ap(acc: Accumulated, area: str = "all", max_det: int | None = None) -> np.ndarray:
    """(K,) AP over all IoU thresholds per category, -1 where the category has no positives."""
    return np.array(
        [summarize(acc, True, area=area, max_det=max_det, categories=[k]) for k in range(acc.precision.shape[2])]
    )

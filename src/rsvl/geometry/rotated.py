"""Exact rotated-box IoU and rotated NMS, vectorised, numpy or torch in.

Intersection area by Green's theorem instead of building the clipped polygon: the boundary of
``A ∩ B`` (both convex, both clockwise on screen) is made of the parts of A's edges inside B plus
the parts of B's edges inside A, so

    area(A ∩ B) = 1/2 * sum over those boundary pieces of cross(start, end).

Each piece comes from clipping one edge against the other polygon's 4 half-planes (Cyrus-Beck),
a fixed amount of arithmetic per pair with no sorting and no variable-length vertex lists. Edges
that lie on the same line in the same direction would be counted twice; the rule "A's copy
counts, B's copy does not" settles it, and opposite-direction shared edges (boxes touching from
outside) cancel as they should. Computation is float64 whatever the input dtype.

Only pairs whose circumscribed circles overlap are computed; the others are exactly 0. Candidate
pairs are found by sorting on x (sweep), so a scene of many boxes never builds an N x N mask.
"""

from __future__ import annotations

import numpy as np
import torch

from rsvl.errors import GeometryError
from rsvl.geometry.boxes import Array
from rsvl.geometry.greedy import greedy_groups

#: Relative tolerance deciding that two edges are parallel and on one line.
_COLLINEAR_EPS = 1e-10
#: Pairs evaluated per chunk by the kernel (bounds the kernel's temporary memory to ~150 MB).
_CHUNK = 40_000


def _to_torch64(x: Array, what: str) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    t = t.detach().to(dtype=torch.float64, device="cpu")
    if t.ndim == 1 and t.numel() == 0:
        t = t.reshape(0, 5)
    if t.ndim != 2 or t.shape[1] != 5:
        raise GeometryError(f"{what} must have shape (N, 5) le90 boxes; got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise GeometryError(f"{what} contain NaN or inf")
    return t


def _clipped_edges_integral(
    px: torch.Tensor, py: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor, second: bool
) -> torch.Tensor:
    """Sum of cross(start, end) over the parts of P's edges inside convex polygon Q.

    ``px, py, qx, qy``: (K, 4) contiguous vertex coordinates of clockwise quadrilaterals, shifted
    near the origin by the caller. ``second``: True when P is the second polygon of the pair,
    whose edges lying on one of Q's edges with the same direction are dropped (Q's copy of
    them is counted instead).
    """
    ex = (torch.roll(px, -1, dims=1) - px)[:, :, None]  # (K, 4, 1) P's edge vectors
    ey = (torch.roll(py, -1, dims=1) - py)[:, :, None]
    dx = (torch.roll(qx, -1, dims=1) - qx)[:, None, :]  # (K, 1, 4) Q's edge vectors
    dy = (torch.roll(qy, -1, dims=1) - qy)[:, None, :]
    # a_ij = cross(d_j, p_i - q_j): signed distance (times |d_j|) of P's edge start from Q's edge
    # line; b_ij = cross(d_j, e_i): its rate along P's edge. Inside Q <=> a + t b >= 0 for all j.
    a = dx * (py[:, :, None] - qy[:, None, :]) - dy * (px[:, :, None] - qx[:, None, :])
    b = dx * ey - dy * ex

    dlen = torch.sqrt(dx * dx + dy * dy)
    elen = torch.sqrt(ex * ex + ey * ey)
    parallel = b.abs() <= _COLLINEAR_EPS * dlen * elen
    collinear = parallel & (a.abs() <= _COLLINEAR_EPS * dlen * (dlen + elen))

    t = -a / torch.where(parallel, torch.ones_like(b), b)
    lower = torch.where(~parallel & (b > 0), t, float("-inf"))
    upper = torch.where(~parallel & (b < 0), t, float("inf"))
    tmin = lower.amax(dim=2).clamp(min=0.0)  # (K, 4)
    tmax = upper.amin(dim=2).clamp(max=1.0)

    outside = (parallel & ~collinear & (a < 0)).any(dim=2)
    if second:
        outside = outside | (collinear & ((ex * dx + ey * dy) > 0)).any(dim=2)
    keep = (tmax > tmin) & ~outside

    ex, ey = ex[:, :, 0], ey[:, :, 0]
    sx, sy = px + tmin * ex, py + tmin * ey
    fx, fy = px + tmax * ex, py + tmax * ey
    return torch.where(keep, sx * fy - sy * fx, 0.0).sum(dim=1)


def _convex_intersection_area(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Intersection area of convex clockwise quadrilaterals ``p[k]`` and ``q[k]`` (K, 4, 2)."""
    origin = p.mean(dim=1, keepdim=True)  # shift near the pair for precision
    p, q = p - origin, q - origin
    px, py = p[..., 0].contiguous(), p[..., 1].contiguous()
    qx, qy = q[..., 0].contiguous(), q[..., 1].contiguous()
    twice = _clipped_edges_integral(px, py, qx, qy, second=False) + _clipped_edges_integral(qx, qy, px, py, second=True)
    return (twice / 2).clamp(min=0.0)


def _paired_area(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """Chunked :func:`_convex_intersection_area` over K pairs."""
    out = torch.empty(pa.shape[0], dtype=torch.float64)
    for s in range(0, pa.shape[0], _CHUNK):
        out[s : s + _CHUNK] = _convex_intersection_area(pa[s : s + _CHUNK], pb[s : s + _CHUNK])
    return out


def _circle_candidates(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j) whose circumscribed circles overlap, found by a sweep on x.

    After sorting B on its centre x, the partners of box i lie in the x-range
    ``cx_i -/+ (r_i + r_max(B))``: a binary search gives that slice, and an exact circle test
    filters it. Memory is proportional to the number of slice members, not N x M.
    """
    if a.shape[0] == 0 or b.shape[0] == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty
    ra = torch.hypot(a[:, 2], a[:, 3]) / 2
    rb = torch.hypot(b[:, 2], b[:, 3]) / 2
    order = torch.argsort(b[:, 0])
    bx = b[order, 0].contiguous()
    reach = ra + rb.max()
    lo = torch.searchsorted(bx, (a[:, 0] - reach).contiguous(), side="left")
    hi = torch.searchsorted(bx, (a[:, 0] + reach).contiguous(), side="right")
    counts = hi - lo
    ii = torch.repeat_interleave(torch.arange(a.shape[0]), counts)
    starts = torch.repeat_interleave(lo - torch.cumsum(counts, 0) + counts, counts)
    jj_sorted = torch.arange(ii.shape[0]) + starts
    jj = order[jj_sorted]
    dist = torch.hypot(a[ii, 0] - b[jj, 0], a[ii, 1] - b[jj, 1])
    hit = dist < ra[ii] + rb[jj]
    return ii[hit], jj[hit]


_SIGNS_X = torch.tensor([-1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
_SIGNS_Y = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)


def _clip_to_rect_integral(
    px: torch.Tensor,
    py: torch.Tensor,
    rx: torch.Tensor,
    ry: torch.Tensor,
    hw: torch.Tensor,
    hh: torch.Tensor,
    second: bool,
) -> torch.Tensor:
    """Sum of cross(start, end) over the parts of quadrilateral P's edges inside an axis-aligned box.

    The box is centred at ``(rx, ry)`` with half sizes ``hw, hh`` (all (K,)); ``px, py`` (K, 4) are
    P's clockwise corners in the same frame. Liang-Barsky clipping per edge, one slab per axis.
    ``second`` drops P's edges lying on a box edge with the same direction (the box's own copy
    of that piece is counted when the roles are swapped).
    """
    ex = torch.roll(px, -1, dims=1) - px
    ey = torch.roll(py, -1, dims=1) - py
    rx, ry, hw, hh = rx[:, None], ry[:, None], hw[:, None], hh[:, None]
    elen = torch.sqrt(ex * ex + ey * ey)
    tol = _COLLINEAR_EPS * (hw + hh + elen)
    tmin = torch.zeros_like(px)
    tmax = torch.ones_like(px)
    outside = torch.zeros_like(px, dtype=torch.bool)
    exclude = torch.zeros_like(outside)
    # Each axis clips the edge to the slab [lo, hi]; the rectangle's boundary edges on that axis run
    # in direction -1 at ``lo`` and +1 at ``hi`` for x (left edge goes up, right edge goes down on screen)
    # and +1 at ``lo``, -1 at ``hi`` for y (top edge goes right, bottom edge goes left).
    for p, e, centre, half, lo_dir in ((px, ex, rx, hw, -1.0), (py, ey, ry, hh, 1.0)):
        lo, hi = centre - half, centre + half
        parallel = e.abs() <= _COLLINEAR_EPS * elen
        safe = torch.where(parallel, torch.ones_like(e), e)
        t1, t2 = (lo - p) / safe, (hi - p) / safe
        tmin = torch.where(parallel, tmin, torch.maximum(tmin, torch.minimum(t1, t2)))
        tmax = torch.where(parallel, tmax, torch.minimum(tmax, torch.maximum(t1, t2)))
        outside |= parallel & ((p < lo - tol) | (p > hi + tol))
        if second:
            # the edge runs along the other axis: its direction there is the other coordinate's delta
            other = ey if e is ex else ex
            on_lo = parallel & ((p - lo).abs() <= tol)
            on_hi = parallel & ((p - hi).abs() <= tol)
            exclude |= (on_lo & (other * lo_dir > 0)) | (on_hi & (other * lo_dir < 0))
    keep = (tmax > tmin) & ~outside & ~exclude
    sx, sy = px + tmin * ex, py + tmin * ey
    fx, fy = px + tmax * ex, py + tmax * ey
    return torch.where(keep, sx * fy - sy * fx, 0.0).sum(dim=1)


def _rect_pair_intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection areas of le90 boxes ``a[k]`` and ``b[k]`` (K, 5), float64.

    Both clipping passes work in frames centred on B's centre: one rotated with B (B axis-aligned),
    one rotated with A (A axis-aligned). Rotations about a common origin keep every cross product,
    so the two halves of the Green's-theorem sum add up in one consistent frame.
    """
    ca, sa = torch.cos(a[:, 4]), torch.sin(a[:, 4])
    cb, sb = torch.cos(b[:, 4]), torch.sin(b[:, 4])
    cd, sd = ca * cb + sa * sb, sa * cb - ca * sb  # cos, sin of (theta_a - theta_b)
    dx, dy = a[:, 0] - b[:, 0], a[:, 1] - b[:, 1]
    # A's centre in B's frame and in A's frame (origin at B's centre in both)
    ab_x, ab_y = dx * cb + dy * sb, -dx * sb + dy * cb
    aa_x, aa_y = dx * ca + dy * sa, -dx * sa + dy * ca
    ox_a, oy_a = _SIGNS_X * a[:, 2:3] / 2, _SIGNS_Y * a[:, 3:4] / 2
    ox_b, oy_b = _SIGNS_X * b[:, 2:3] / 2, _SIGNS_Y * b[:, 3:4] / 2
    cd_, sd_ = cd[:, None], sd[:, None]
    # A's corners in B's frame: its local offsets turned by +delta; B's corners in A's frame: by -delta
    pax = ab_x[:, None] + ox_a * cd_ - oy_a * sd_
    pay = ab_y[:, None] + ox_a * sd_ + oy_a * cd_
    pbx = ox_b * cd_ + oy_b * sd_
    pby = -ox_b * sd_ + oy_b * cd_
    zero = torch.zeros_like(ab_x)
    twice = _clip_to_rect_integral(pax, pay, zero, zero, b[:, 2] / 2, b[:, 3] / 2, second=False)
    twice = twice + _clip_to_rect_integral(pbx, pby, aa_x, aa_y, a[:, 2] / 2, a[:, 3] / 2, second=True)
    return (twice / 2).clamp(min=0.0)


def _pair_iou(a: torch.Tensor, b: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """IoU of the listed pairs (float64); 0 where the union is empty."""
    inter = torch.empty(ii.shape[0], dtype=torch.float64)
    for s in range(0, ii.shape[0], _CHUNK):
        inter[s : s + _CHUNK] = _rect_pair_intersection(a[ii[s : s + _CHUNK]], b[jj[s : s + _CHUNK]])
    area_a = a[ii, 2] * a[ii, 3]
    area_b = b[jj, 2] * b[jj, 3]
    inter = torch.minimum(inter, torch.minimum(area_a, area_b))
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), 0 * union)


def _restore(result: torch.Tensor, like: Array) -> Array:
    """Return ``result`` in the kind of array ``like`` is (numpy, or a tensor of its dtype/device)."""
    if isinstance(like, torch.Tensor):
        dtype = like.dtype if like.is_floating_point() else torch.float64
        return result.to(dtype=dtype, device=like.device)
    return result.numpy()


def rotated_iou(a: Array, b: Array, aligned: bool = False) -> Array:
    """Exact IoU of le90 OBBs.

    Args:
        a: (N, 5) boxes ``(cx, cy, w, h, angle_radians)``; numpy or torch.
        b: (M, 5) boxes, same convention.
        aligned: if True, N must equal M and the result is the (N,) IoU of ``a[i]`` with ``b[i]``.

    Returns:
        The (N, M) IoU matrix (or (N,) when aligned): numpy float64 for numpy input, a tensor of
        the input's dtype/device for torch input. Boxes of zero area have IoU 0 with everything.
    """
    ta, tb = _to_torch64(a, "a"), _to_torch64(b, "b")
    if aligned:
        if ta.shape[0] != tb.shape[0]:
            raise GeometryError(f"aligned IoU needs as many boxes in a as in b; got {ta.shape[0]} and {tb.shape[0]}")
        idx = torch.arange(ta.shape[0])
        return _restore(_pair_iou(ta, tb, idx, idx), a)
    out = torch.zeros(ta.shape[0], tb.shape[0], dtype=torch.float64)
    ii, jj = _circle_candidates(ta, tb)
    if ii.numel():
        out[ii, jj] = _pair_iou(ta, tb, ii, jj)
    return _restore(out, a)


def convex_poly_intersection_area(p: Array, q: Array) -> Array:
    """Aligned intersection areas of convex quadrilaterals ``(N, 8)`` and ``(N, 8)``.

    Vertex order may be clockwise or counter-clockwise; each polygon is oriented first.
    Used for polygon IoU of DOTA-style annotations, which are quadrilaterals, not always rectangles.
    """
    tp = torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p).to(torch.float64)
    tq = torch.as_tensor(np.asarray(q) if not isinstance(q, torch.Tensor) else q).to(torch.float64)
    if tp.ndim != 2 or tp.shape[1] != 8 or tq.shape != tp.shape:
        raise GeometryError(f"polygons must both have shape (N, 8); got {tuple(tp.shape)} and {tuple(tq.shape)}")
    pp, qq = _oriented(tp.reshape(-1, 4, 2)), _oriented(tq.reshape(-1, 4, 2))
    return _restore(_paired_area(pp, qq), p)


def _oriented(pts: torch.Tensor) -> torch.Tensor:
    """Reverse the vertex order of counter-clockwise (on screen) quadrilaterals."""
    x, y = pts[..., 0], pts[..., 1]
    signed = (x * torch.roll(y, -1, 1) - torch.roll(x, -1, 1) * y).sum(1)
    return torch.where((signed < 0)[:, None, None], pts.flip(1), pts)


# --------------------------------------------------------------------------- NMS


def rotated_nms(boxes: Array, scores: Array, iou_threshold: float) -> Array:
    """Greedy NMS of le90 OBBs: indices of the kept boxes, highest score first.

    A box is suppressed by a kept, higher-scored box when their IoU is strictly greater than
    ``iou_threshold`` (torchvision's rule). Ties in score keep the input order.
    """
    tb = _to_torch64(boxes, "boxes")
    ts = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores)
    ts = ts.detach().to(torch.float64).reshape(-1)
    if ts.shape[0] != tb.shape[0]:
        raise GeometryError(f"{tb.shape[0]} boxes but {ts.shape[0]} scores")
    order = torch.argsort(-ts, stable=True)
    sb = tb[order]
    ii, jj = _circle_candidates(sb, sb)
    upper = ii < jj
    ii, jj = ii[upper], jj[upper]
    if ii.numel():
        over = _pair_iou(sb, sb, ii, jj) > iou_threshold
        ii, jj = ii[over], jj[over]
    keep, _ = greedy_groups(sb.shape[0], ii.numpy(), jj.numpy())
    kept = order[torch.from_numpy(keep)]
    return kept.to(boxes.device) if isinstance(boxes, torch.Tensor) else kept.numpy()


def batched_rotated_nms(boxes: Array, scores: Array, idxs: Array, iou_threshold: float) -> Array:
    """Rotated NMS run independently per category ``idxs`` (boxes of different ids never suppress).

    Uses torchvision's offset trick: each category's boxes are moved far apart in x, further
    than any box reaches, so one sweep serves all categories.
    """
    tb = _to_torch64(boxes, "boxes")
    ti = torch.as_tensor(np.asarray(idxs) if not isinstance(idxs, torch.Tensor) else idxs).reshape(-1)
    if ti.shape[0] != tb.shape[0]:
        raise GeometryError(f"{tb.shape[0]} boxes but {ti.shape[0]} category ids")
    if tb.shape[0] == 0:
        return rotated_nms(boxes, scores, iou_threshold)
    reach = torch.hypot(tb[:, 2], tb[:, 3]).max() + 1.0
    span = tb[:, 0].max() - tb[:, 0].min() + 2 * reach
    _, dense = torch.unique(ti, return_inverse=True)
    shifted = tb.clone()
    shifted[:, 0] = shifted[:, 0] - tb[:, 0].min() + dense.to(torch.float64) * span
    kept = rotated_nms(shifted, scores, iou_threshold)
    kept_t = torch.as_tensor(kept)
    return kept_t.to(boxes.device) if isinstance(boxes, torch.Tensor) else kept_t.numpy()

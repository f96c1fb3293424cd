"""The Evolve stage: seeds from the cross-attention, region growing on the fused map, binarisation.

The paper grows a region by depth-first search from the top-K cross-attention pixels, taking a
pixel iff it touches the region (8-neighbourhood) and its fused response exceeds ``tau``; the
evolved map ``A_E`` keeps the fused response inside the region and zero elsewhere, and the mask is
``A_E > alpha``. A DFS from the seeds through pixels above ``tau`` reaches exactly the 8-connected
components of ``{A_F > tau}`` that contain a seed, so this computes them with one
``scipy.ndimage.label`` pass (no Python loop: ~ms at 512 x 512, see ``benchmarks/zeroov.py``).

Seeds are the K highest cells **of the cross-attention map on its own grid** (a VLM patch grid),
placed at their cell centres in the image: picking the K highest pixels after upsampling would
put all seeds next to one peak. A seed whose fused response is not above ``tau`` grows nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rsvl.errors import InputError

__all__ = ["EvolveResult", "evolve", "grow_regions", "mask_box", "top_k_seeds"]
__all__ = ["EvolveResult", "evolve", "grow_regions", "grow_regions_bfs", "mask_box", "top_k_seeds"]
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class EvolveResult:
    """What the Evolve stage produced.

    Attributes:
        mask: ``(H, W)`` bool, ``A_E > alpha``.
        region: ``(H, W)`` bool, the grown region (before binarisation).
        seeds: ``(K, 2)`` int ``(row, col)`` seed pixels.
    """

    mask: np.ndarray
    region: np.ndarray
    seeds: np.ndarray


def top_k_seeds(cross_map: np.ndarray, k: int, image_shape: tuple[int, int]) -> np.ndarray:
    """The ``k`` highest cells of ``cross_map`` (ties: lower index first) as ``(row, col)`` image pixels.

    Only cells with a positive response can be seeds (a sparse map has fewer than ``k``); a map
    with none gives its first maximum.

    Cell ``(r, c)`` of a ``(gh, gw)`` grid covering an ``(H, W)`` image has its centre at pixel
    ``(floor((r + .5) * H / gh), floor((c + .5) * W / gw))``.
    """
    m = np.asarray(cross_map, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise InputError(f"cross-attention map must be a non-empty 2-D array, got shape {m.shape}")
    if k < 1:
        raise InputError(f"need at least one seed, got k={k}")
    gh, gw = m.shape
    height, width = image_shape
    flat = m.reshape(-1)
    order = np.argsort(-flat, kind="stable")[: min(k, flat.size)]
    positive = order[flat[order] > 0]
    order = positive if positive.size else order[:1]
    rows, cols = np.divmod(order, gw)
    pr = np.minimum(((rows + 0.5) * height / gh).astype(int), height - 1)
    pc = np.minimum(((cols + 0.5) * width / gw).astype(int), width - 1)
    return np.stack([pr, pc], axis=1)


def grow_regions(response: np.ndarray, seeds: np.ndarray, tau: float) -> np.ndarray:
    """Pixels 8-connected to a seed through pixels with ``response > tau`` (the paper's DFS)."""
    above = np.asarray(response) > tau
    labels, _ = ndimage.label(above, structure=_EIGHT)
    seeds = np.asarray(seeds, dtype=int).reshape(-1, 2)
    hit = labels[seeds[:, 0], seeds[:, 1]]
    hit = np.unique(hit[hit > 0])
    if hit.size == 0:
        return np.zeros(above.shape, dtype=bool)
    keep = np.zeros(int(labels.max()) + 1, dtype=bool)
    keep[hit] = True
    return keep[labels]


def evolve(
    fused: np.ndarray, cross_map: np.ndarray, top_k: int = 7, tau: float = 0.3, alpha: float = 0.4
) -> EvolveResult:
    """Seeds from ``cross_map`` (its own grid), growth and binarisation on ``fused`` (image grid, [0, 1])."""
    fused = np.asarray(fused, dtype=np.float32)
    if fused.ndim != 2 or fused.size == 0:
        raise InputError(f"fused map must be a non-empty 2-D array, got shape {fused.shape}")
    seeds = top_k_seeds(cross_map, top_k, fused.shape)
    region = grow_regions(fused, seeds, tau)
    evolved = np.where(region, fused, 0.0)
    return EvolveResult(mask=evolved > alpha, region=region, seeds=seeds)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight ``xyxy`` box of a bool mask in pixel-edge coordinates (``x2 = last column + 1``); None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def grow_regions_bfs(response: np.ndarray, seeds: np.ndarray, tau: float) -> np.ndarray:
    """The paper's search written the slow obvious way: a breadth-first search through 8-neighbours
    with response > ``tau`` from every seed above ``tau``. The reference :func:`grow_regions` is
    tested equal to, and timed against (``benchmarks/zeroov.py``); not for use on large maps."""
    h, w = response.shape
    out = np.zeros((h, w), dtype=bool)
    queue = deque((int(r), int(c)) for r, c in seeds if response[r, c] > tau)
    for r, c in queue:
        out[r, c] = True
    while queue:
        r, c = queue.popleft()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if 0 <= rr < h and 0 <= cc < w and not out[rr, cc] and response[rr, cc] > tau:
                    out[rr, cc] = True
                    queue.append((rr, cc))
    return out

"""The greedy walk shared by NMS and non-maximum merging, over a sparse list of matching pairs."""

from __future__ import annotations

import numpy as np


def greedy_groups(n: int, ii: np.ndarray, jj: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Walk boxes ``0..n-1`` (already in decreasing score); each box not yet taken leads a group.

    Args:
        n: number of boxes.
        ii, jj: matching pairs with ``ii < jj`` (e.g. IoU above a threshold).

    Returns:
        The leaders (for NMS: the kept boxes) and, per leader, the boxes not yet taken that it
        matches and so absorbs (for NMS: suppresses; for NMM: merges).
    """
    ii = np.asarray(ii, dtype=np.int64)
    jj = np.asarray(jj, dtype=np.int64)
    order = np.argsort(ii, kind="stable")
    ii_s, jj_s = ii[order], jj[order]
    bounds = np.searchsorted(ii_s, np.arange(n + 1))
    used = np.zeros(n, dtype=bool)
    keep: list[int] = []
    groups: list[np.ndarray] = []
    for i in range(n):
        if used[i]:
            continue
        partners = jj_s[bounds[i] : bounds[i + 1]]
        partners = partners[~used[partners]]
        used[partners] = True
        keep.append(i)
        groups.append(partners)
    return np.asarray(keep, dtype=np.int64), groups

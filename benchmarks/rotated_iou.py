"""Rotated IoU: rsvl's kernel (numpy and torch inputs) against shapely, side by side in one run.

    python -m benchmarks.rotated_iou [--n 1000] [--repeat 3]

Two scenes of N x N pairs: ``sparse`` (N boxes of 8-120 px spread over a 1024 px image, like a
DOTA tile) and ``dense`` (every pair overlaps: the kernel's worst case, no pair skipped). The
baselines are shapely 2's vectorised ``intersection`` on the full N x N grid and a plain
per-pair shapely loop (as DOTA_devkit-style code does it), timed on a slice of rows and reported
per pair. Prints timings and the speed-up ratios; also checks the results agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import shapely
import torch
from shapely.geometry import Polygon

from rsvl.geometry import obb_corners, rotated_iou


def make_scene(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "sparse":
        xy, wh = rng.uniform(0, 1024, (n, 2)), rng.uniform(8, 120, (n, 2))
    else:
        xy, wh = rng.uniform(0, 20, (n, 2)), rng.uniform(30, 60, (n, 2))
    return np.concatenate([xy, wh, rng.uniform(-np.pi / 2, np.pi / 2, (n, 1))], 1)


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def shapely_vectorised(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    pa, pb = shapely.polygons(obb_corners(a)), shapely.polygons(obb_corners(b))
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    union = shapely.area(pa)[:, None] + shapely.area(pb)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def shapely_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ca, cb = obb_corners(a), obb_corners(b)
    pb = [Polygon(c) for c in cb]
    out = np.zeros((len(a), len(b)))
    for i, c in enumerate(ca):
        p = Polygon(c)
        for j, q in enumerate(pb):
            inter = p.intersection(q).area
            union = p.area + q.area - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="boxes per side (N x N pairs)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop-rows", type=int, default=20, help="rows of the shapely loop timed")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"rotated IoU, {args.n} x {args.n} pairs, torch threads = {torch.get_num_threads()}")
    columns = ("ours np", "ours torch", "shapely vec", "shapely loop*", "vs vec", "vs loop", "max|err|")
    print(f"{'scene':7} " + " ".join(f"{c:>13}" for c in columns))
    for kind in ("sparse", "dense"):
        a, b = make_scene(kind, args.n, rng), make_scene(kind, args.n, rng)
        t_np, ours = best_of(lambda a=a, b=b: rotated_iou(a, b), args.repeat)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        t_t, _ = best_of(lambda ta=ta, tb=tb: rotated_iou(ta, tb), args.repeat)
        t_vec, ref = best_of(lambda a=a, b=b: shapely_vectorised(a, b), 1)
        rows = min(args.loop_rows, args.n)
        t_loop_rows, _ = best_of(lambda a=a[:rows], b=b: shapely_loop(a, b), 1)
        t_loop = t_loop_rows * args.n / rows
        err = float(np.abs(ours - ref).max())
        cells = (
            f"{t_np:.3f}",
            f"{t_t:.3f}",
            f"{t_vec:.3f}",
            f"{t_loop:.2f}",
            f"{t_vec / t_np:.1f}x",
            f"{t_loop / t_np:.1f}x",
            f"{err:.1e}",
        )
        print(f"{kind:7} " + " ".join(f"{c:>13}" for c in cells))
    print(
        f"* shapely loop timed on {args.loop_rows} rows x {args.n} and scaled to the full grid (per-pair cost x N^2)."
    )
    print("times are seconds (best of --repeat); ratios = baseline time / ours (numpy input).")


if __name__ == "__main__":
    main()

"""Sliced inference on huge GeoTIFFs: peak memory and time per tile, side by side in one run.

    python -m benchmarks.sliced_inference [--sizes 5000 10000 20000] [--tile 512] [--overlap 64]
                                          [--quick] [--cache DIR] [--gdal-cache-mb 256]

For each size S a S x S 3-band uint8 GeoTIFF (tiled 512 px, deflate, EPSG:32616) is generated
block by block, never whole, and cached (``--cache``, default ``$TMPDIR/rsvl-bench-cache``). Then
each size runs :func:`rsvl.io.sliced_predict` in its **own subprocess**, so the peak resident set
size (``getrusage().ru_maxrss``) of one run does not mix with another's. The predictor is a
cheap deterministic stand-in (threshold the red channel, one box per bright blob), so the figures
measure the IO + display + merge pipeline, not a model. Targets: peak RSS < 1.5 GB at every size
and time growing linearly with the number of tiles (flat time per tile).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 512
BLOBS_PER_BLOCK = 6
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- synthetic image


def _block_pixels(size: int, row: int, col: int, height: int, width: int) -> np.ndarray:
    """Deterministic ``(3, height, width)`` content of the block at pixel ``(row, col)``."""
    ys = (np.arange(row, row + height, dtype=np.float32) / size)[:, None]
    xs = (np.arange(col, col + width, dtype=np.float32) / size)[None, :]
    base = (60 + 50 * xs + 30 * ys).astype(np.uint8)  # smooth: compresses well, never "bright"
    red = np.broadcast_to(base, (height, width)).copy()
    rng = np.random.default_rng([size, row // BLOCK, col // BLOCK, FORMAT_VERSION])
    for _ in range(BLOBS_PER_BLOCK):
        bw, bh = rng.integers(8, 48, 2)
        x0, y0 = rng.integers(0, max(1, width - bw)), rng.integers(0, max(1, height - bh))
        red[y0 : y0 + bh, x0 : x0 + bw] = 230
    return np.stack([red, base, base[::-1] if base.shape[0] > 1 else base])


def make_image(size: int, cache: Path) -> Path:
    """The cached S x S benchmark GeoTIFF, generated block by block when missing."""
    from benchmarks._geotiff import write_blocked_geotiff

    path = cache / f"sliced_{size}_v{FORMAT_VERSION}.tif"
    if path.exists():
        return path
    start = time.perf_counter()
    write_blocked_geotiff(path, size, BLOCK, lambda row, col, h, w: _block_pixels(size, row, col, h, w))
    mb = path.stat().st_size / 2**20
    print(f"generated {path} ({mb:.0f} MB on disk) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return path


# --------------------------------------------------------------------------- worker (one size)


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def blob_predictor(image: np.ndarray):
    """Stand-in detector: boxes around runs of bright columns, split by runs of bright rows."""
    from rsvl.io import Detections

    bright = image[..., 0] > 200
    boxes = []
    starts, stops = _runs(bright.any(axis=0))
    for x0, x1 in zip(starts, stops, strict=True):
        r0, r1 = _runs(bright[:, x0:x1].any(axis=1))
        boxes.extend([x0, y0, x1, y1] for y0, y1 in zip(r0, r1, strict=True))
    if not boxes:
        return None
    arr = np.asarray(boxes, dtype=np.float64)
    area = (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1])
    return Detections(arr, np.minimum(area / 2304.0, 1.0), np.zeros(len(arr), np.int64))


def _maxrss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def run_worker(path: Path, tile: int, overlap: int, gdal_cache_mb: int) -> dict:
    """Run sliced_predict over one image in this process; report time and peak RSS."""
    from rsvl.io import DisplayConfig, MergeConfig, RasterSource, TileSpec, count_windows, sliced_predict

    spec = TileSpec(tile, overlap, "shift")
    raw_count = 0

    def counting(image: np.ndarray):
        nonlocal raw_count
        out = blob_predictor(image)
        raw_count += 0 if out is None else len(out)
        return out

    rss_before = _maxrss_mb()
    with RasterSource(path, gdal_cache_mb=gdal_cache_mb) as src:
        tiles = count_windows(src.width, src.height, spec)
        t0 = time.perf_counter()
        # stretch 8-bit too, so the decimated whole-image statistics read is part of the run
        stretch = src.display_stretch(DisplayConfig(stretch_uint8=True))
        t1 = time.perf_counter()
        dets = sliced_predict(src, counting, spec, MergeConfig("nmm", 0.5, "ios"), display=stretch, progress=False)
        t2 = time.perf_counter()
        size = src.width
    return {
        "size": size,
        "tiles": tiles,
        "raw_detections": raw_count,
        "detections": len(dets),
        "stats_s": t1 - t0,
        "total_s": t2 - t0,
        "ms_per_tile": 1000 * (t2 - t1) / tiles,
        "rss_after_import_mb": rss_before,
        "peak_rss_mb": _maxrss_mb(),
    }


# --------------------------------------------------------------------------- driver


def _table(rows: list[dict]) -> str:
    head = (
        f"{'size':>7} {'Mpx':>6} {'tiles':>6} {'dets':>7} {'stats s':>8} {'total s':>8} "
        f"{'ms/tile':>8} {'peak RSS MB':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['size']:>7} {r['size'] ** 2 / 1e6:>6.0f} {r['tiles']:>6} {r['detections']:>7} {r['stats_s']:>8.2f} "
            f"{r['total_s']:>8.2f} {r['ms_per_tile']:>8.2f} {r['peak_rss_mb']:>11.0f}"
        )
    base = rows[0]
    lines.append("")
    lines.append(f"ratios against {base['size']} px:")
    lines.append(f"{'size':>7} {'pixels x':>9} {'tiles x':>8} {'time x':>7} {'ms/tile x':>10} {'peak RSS x':>11}")
    for r in rows:
        lines.append(
            f"{r['size']:>7} {r['size'] ** 2 / base['size'] ** 2:>9.2f} {r['tiles'] / base['tiles']:>8.2f} "
            f"{r['total_s'] / base['total_s']:>7.2f} {r['ms_per_tile'] / base['ms_per_tile']:>10.2f} "
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:>11.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="small sizes (1000 2000 4000) for a smoke run")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rsvl-bench-cache")
    parser.add_argument("--gdal-cache-mb", type=int, default=256)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_worker(args.worker, args.tile, args.overlap, args.gdal_cache_mb)))
        return 0

    sizes = [1000, 2000, 4000] if args.quick else sorted(args.sizes)
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        path = make_image(size, args.cache)
        cmd = [sys.executable, "-m", "benchmarks.sliced_inference", "--worker", str(path)]
        cmd += ["--tile", str(args.tile), "--overlap", str(args.overlap), "--gdal-cache-mb", str(args.gdal_cache_mb)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"size {size}: done in {rows[-1]['total_s']:.1f} s", file=sys.stderr)
    print(
        f"sliced_predict, tile {args.tile}, overlap {args.overlap}, GDAL cache {args.gdal_cache_mb} MB, "
        f"greedy NMM (IOS 0.5); one subprocess per size; {os.cpu_count()} CPUs; "
        f"RSS after imports {rows[0]['rss_after_import_mb']:.0f} MB"
    )
    print(_table(rows))
    worst = max(r["peak_rss_mb"] for r in rows)
    print(f"\npeak RSS max {worst:.0f} MB (target < 1536 MB): {'OK' if worst < 1536 else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

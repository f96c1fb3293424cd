"""Archive inference on Ray Data: tiles/s with 1 vs 2 workers, and peak memory per worker, in one run.

    python -m benchmarks.archive_inference [--images 4] [--size 2048] [--tile 512] [--overlap 64]
                                           [--workers 1 2] [--no-in-process] [--quick] [--cache DIR]

Data: ``--images`` generated S x S 3-band uint8 GeoTIFFs (tiled 512 px, deflate, EPSG:32616,
smooth background with bright blobs), cached under ``--cache`` (default
``$TMPDIR/rsvl-bench-cache``), and a VLM4RSDet detector with the default Lite0 backbone (random
weights, fixed seed: the cost of a forward pass does not depend on what the weights learned).

One local Ray cluster (``--workers`` max + 1 CPUs) runs :func:`rsvl.engines.detect_archive` once
per worker count over the same images. Per run: wall time from the first tile id to the last
write (includes starting the actors and loading the model in each), tiles/s over that wall time,
tiles/s over the busiest worker's tile time (read + predict, without start-up: the steady-state
rate), each worker's peak RSS measured inside the worker (``getrusage``), and the driver's time
merging and writing images ("driver s"). The in-process engine
(:func:`rsvl.methods.vlm4rsdet.infer.detect_files`, one torch thread, like one worker) runs first
as the reference; every run's GeoJSON must equal it byte for byte (exit status 1 otherwise).

On a 2-core machine, 2 workers share the cores with the driver and Ray's own processes: the
2-worker speed-up measured there is held down by that contention.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 512
FORMAT_VERSION = 1
CLASSES = ["vehicle", "building"]


def make_image(index: int, size: int, cache: Path) -> Path:
    """The cached ``index``-th S x S benchmark GeoTIFF, written block by block."""
    from benchmarks._geotiff import write_blocked_geotiff

    path = cache / f"archive_{size}_{index}_v{FORMAT_VERSION}.tif"
    if path.exists():
        return path

    def pixels(row: int, col: int, h: int, w: int) -> np.ndarray:
        rng = np.random.default_rng([index, row, col, FORMAT_VERSION])
        ys, xs = np.mgrid[row : row + h, col : col + w].astype(np.float32) / size
        base = (60 + 60 * xs + 40 * ys + rng.normal(0, 4, (h, w))).clip(0, 255).astype(np.uint8)
        block = np.stack([base, base, base[::-1]])
        for _ in range(12):
            bw, bh = rng.integers(8, 40, 2)
            x0, y0 = rng.integers(0, max(1, w - bw)), rng.integers(0, max(1, h - bh))
            block[:, y0 : y0 + bh, x0 : x0 + bw] = rng.integers(150, 256, (3, 1, 1))
        return block

    return write_blocked_geotiff(path, size, BLOCK, pixels, x0=500_000 + index * size * 0.3)


def make_detector(cache: Path) -> Path:
    """A Lite0 FCOS detector with random weights (seed 0), saved as ``rsvl train vlm4rsdet`` does."""
    import torch

    from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
    from rsvl.methods.vlm4rsdet.train import build_model, save_detector

    path = cache / f"archive_detector_v{FORMAT_VERSION}.pt"
    if path.exists():
        return path
    cfg = VLM4RSDetConfig.model_validate(
        {
            "data": {"format": "aitod", "root": "unused"},
            "detector": {"backbone": "lite0", "backbone_weights": False, "detections_per_img": 100},
            "vlm": {"enabled": False},
        }
    )
    torch.manual_seed(0)
    return save_detector(path, build_model(cfg, CLASSES, pretrained=False).detector, cfg, CLASSES)


def run_in_process(images: list[Path], model: Path, out: Path, tile: int, overlap: int) -> dict:
    """The default engine over the same images, one torch thread."""
    import torch

    from rsvl.methods.vlm4rsdet.infer import detect_files, load_detector

    torch.set_num_threads(1)
    detector = load_detector(model)
    t0 = time.perf_counter()
    detect_files(images, detector, out, formats=["geojson"], tile=tile, overlap=overlap, progress=False)
    return {"seconds": time.perf_counter() - t0}


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process reference run")
    parser.add_argument("--quick", action="store_true", help="2 images of 1024 px for a smoke run")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rsvl-bench-cache")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.size = 2, 1024

    import ray

    from rsvl.engines import PredictorSpec, detect_archive
    from rsvl.io.tiling import TileSpec, count_windows

    args.cache.mkdir(parents=True, exist_ok=True)
    images = [make_image(i, args.size, args.cache) for i in range(args.images)]
    model = make_detector(args.cache)
    tiles = args.images * count_windows(args.size, args.size, TileSpec(args.tile, args.overlap, "shift"))
    print(
        f"{args.images} images of {args.size} x {args.size} px, tile {args.tile} overlap {args.overlap}: "
        f"{tiles} tiles; Lite0 FCOS detector; {len(args.workers)} Ray runs",
        file=sys.stderr,
    )
    work = Path(tempfile.mkdtemp(prefix="rsvl-archive-bench-"))
    rows = []
    try:
        reference = None
        if not args.no_in_process:
            reference = work / "in_process"
            r = run_in_process(images, model, reference, args.tile, args.overlap)
            rows.append({"engine": "in-process", "workers": 1, "seconds": r["seconds"], "rate": tiles / r["seconds"]})
            rows[-1] |= {"busy_rate": rows[-1]["rate"], "rss": [_rss_mb()], "same": True, "driver": float("nan")}
        ray.init(
            num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        try:
            for n in args.workers:
                out = work / f"ray_{n}"
                res = detect_archive(
                    images, PredictorSpec("vlm4rsdet", model), out, tile=args.tile, overlap=args.overlap,
                    workers=n, progress=False,
                )  # fmt: skip
                same = reference is None or all(
                    (out / f"{p.stem}.geojson").read_bytes() == (reference / f"{p.stem}.geojson").read_bytes()
                    for p in images
                )
                rows.append(
                    {
                        "engine": "ray",
                        "workers": n,
                        "seconds": res.seconds,
                        "rate": res.tiles_per_s,
                        "busy_rate": res.busy_tiles_per_s,
                        "rss": sorted(res.worker_peak_rss_mb.values()),
                        "split": sorted(res.worker_tiles.values()),
                        "same": same,
                        "failed": res.tiles_failed,
                        "driver": res.assemble_seconds,
                    }
                )
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    head = (
        f"{'engine':<11} {'workers':>7} {'wall s':>7} {'tiles/s':>8} {'busy tiles/s':>12} "
        f"{'peak RSS/worker MB':>19} {'driver s':>8}  same"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        rss = "/".join(f"{v:.0f}" for v in r["rss"])
        print(
            f"{r['engine']:<11} {r['workers']:>7} {r['seconds']:>7.1f} {r['rate']:>8.2f} {r['busy_rate']:>12.2f} "
            f"{rss:>19} {r['driver']:>8.2f}  {'yes' if r['same'] else 'NO'}"
        )
    ray_rows = {r["workers"]: r for r in rows if r["engine"] == "ray"}
    if 1 in ray_rows and len(ray_rows) > 1:
        base = ray_rows[1]
        for n, r in sorted(ray_rows.items()):
            if n != 1:
                print(
                    f"{n} workers vs 1: wall tiles/s x{r['rate'] / base['rate']:.2f}, "
                    f"busy tiles/s x{r['busy_rate'] / base['busy_rate']:.2f} (tiles per worker {r['split']})"
                )
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""SynthRS: time to generate a labelled dataset and write it as COCO and DOTA.

    python -m benchmarks.synth [--n 1000] [--size 512] [--workers 2] [--formats coco,dota] [--large 0]

For each format, ``generate_dataset`` runs end to end into a fresh temporary folder: scene layout,
labels (HBB, OBB, RLE masks for COCO), rendering, PNG encoding, annotation writing. The target is
1,000 images of 512 x 512 in under 60 s on 2 cores. A serial profile of a few images splits the
per-image cost into layout+labels, rendering and PNG encoding. ``--large PX`` also times one
LRS-VQA-style large image (planning, then block-by-block GeoTIFF writing).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from rsvl.synth import generate_dataset, generate_scene, render_scene, scene_config_for
from rsvl.synth.large import LargeConfig, plan_large_scene, write_large_geotiff


def stage_profile(fmt: str, size: int, images: int) -> tuple[float, float, float, float]:
    """Mean seconds per image for layout+labels, rendering and PNG encoding (serial), objects/image."""
    config = scene_config_for(fmt, size)
    t_layout = t_render = t_png = 0.0
    objects = 0
    for i in range(images):
        t0 = time.perf_counter()
        scene = generate_scene(12345, i, config, with_masks=fmt != "dota")
        t1 = time.perf_counter()
        rgb = render_scene(scene)
        t2 = time.perf_counter()
        Image.fromarray(rgb).save(io.BytesIO(), format="PNG", compress_level=1)
        t3 = time.perf_counter()
        t_layout += t1 - t0
        t_render += t2 - t1
        t_png += t3 - t2
        objects += len(scene.objects)
    return t_layout / images, t_render / images, t_png / images, objects / images


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images per format")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--formats", default="coco,dota", help="comma-separated registry names")
    ap.add_argument("--profile", type=int, default=30, help="images in the serial stage profile (0: skip)")
    ap.add_argument("--large", type=int, default=0, help="also time one large image of this side (e.g. 8192)")
    ap.add_argument("--budget", type=float, default=60.0, help="target seconds for --n images")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"SynthRS benchmark: {args.n} images of {args.size} x {args.size}, {args.workers} workers, {cores} cores")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.profile:
        print(f"{'format':8} {'layout+labels':>14} {'render':>8} {'png':>8} {'objects/img':>12}  (serial, per image)")
        for fmt in formats:
            lay, ren, png, objs = stage_profile(fmt, args.size, args.profile)
            print(f"{fmt:8} {lay * 1e3:12.1f}ms {ren * 1e3:6.1f}ms {png * 1e3:6.1f}ms {objs:12.1f}")
    if args.n > 0:
        print(f"{'format':8} {'seconds':>8} {'img/s':>8} {'objects':>9} {'MB':>8} {'vs budget':>10}")
    with tempfile.TemporaryDirectory(prefix="synthrs-bench-") as tmp:
        for fmt in formats if args.n > 0 else []:
            out = Path(tmp) / fmt
            t0 = time.perf_counter()
            summary = generate_dataset(fmt, out, args.n, seed=0, size=args.size, progress=False, workers=args.workers)
            seconds = time.perf_counter() - t0
            mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
            ratio = args.budget / seconds
            print(f"{fmt:8} {seconds:8.1f} {args.n / seconds:8.1f} {summary.instances:9d} {mb:8.1f} {ratio:9.2f}x")
            shutil.rmtree(out)
        if args.large:
            cfg = LargeConfig(width=args.large, height=args.large)
            t0 = time.perf_counter()
            scene = plan_large_scene(0, 0, cfg)
            t1 = time.perf_counter()
            path = write_large_geotiff(scene, Path(tmp) / "large.tif")
            t2 = time.perf_counter()
            print(
                f"large {args.large} x {args.large}: plan {t1 - t0:.1f}s ({len(scene.objects)} objects, "
                f"{len(scene.qas)} questions), GeoTIFF {t2 - t1:.1f}s, {path.stat().st_size / 1e6:.0f} MB"
            )
    if args.n > 0:
        print(f"'vs budget' = {args.budget:.0f} s / measured time (above 1x: within the target).")


if __name__ == "__main__":
    main()

"""RSVG-ZeroOV miniature: the full training-free pipeline vs trivial baselines on SynthRS referring data.

    python -m benchmarks.zeroov [--images 80] [--size 512] [--out runs/bench_zeroov]
                                [--vlm-path DIR] [--sd-path DIR] [--variants ...]

A SynthRS referring set in the RRSIS-D format (``--images`` scenes, >= 200 expressions, masks) is
generated into ``<out>/data`` on first use. Every variant grounds the same expressions (first
sentence of each reference) and is scored with the ``zeroov`` grounding preset (strict ``IoU >
0.5``), on boxes (RSREC) and masks (RSRES). Variants:

* ``whole_image`` / ``centre_box``: trivial baselines (the whole image; the centred box of half the
  image's width and height).
* ``full``: Overview from Qwen2.5-VL (``--vlm-path``; else a *tiny random* one), Focus from the real
  EfficientNet-Lite0 feature affinity (or Stable Diffusion with ``--sd-path``), weighted-sum fusion,
  Evolve. Which providers had real weights is recorded with every result.
* ``point_*``: the same Focus/Evolve stages fed an *oracle* cross-attention: a Gaussian bump
  (sigma one cell) on an 18 x 18 grid at a random pixel of the target mask, i.e. a VLM whose
  attention lands somewhere on the object, the paper's observed failure mode (corners/boundaries).
  This isolates what the real-weight Focus and the Evolve stage add: ``point_full`` (Lite0 focus,
  weighted sum), ``point_cosine`` (the paper's cosine fusion), ``point_no_focus`` (w/o DM) and
  ``point_no_evolve`` (w/o Evolve). It is an upper-bound style probe, not a grounding result.

It also times region growing on a 512 x 512 map (the vectorised ``scipy.ndimage`` path vs a Python
breadth-first search, side by side) and writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from rsvl.attention import CrossAttention
from rsvl.datasets import get_format
from rsvl.geometry import masks as mask_codec
from rsvl.io.raster import RasterSource
from rsvl.methods.zeroov.config import FocusConfig, OverviewConfig, ZeroOVConfig
from rsvl.methods.zeroov.evolve import grow_regions, grow_regions_bfs
from rsvl.methods.zeroov.focus_lite0 import Lite0AffinityFocus
from rsvl.methods.zeroov.infer import referring_items
from rsvl.methods.zeroov.pipeline import ZeroOVGrounder, load_providers
from rsvl.methods.zeroov.providers import FOCUS_PROVIDERS, OVERVIEW_PROVIDERS
from rsvl.metrics.grounding import evaluate_grounding
from rsvl.synth import generate_dataset
from rsvl.utils.atomic import write_json
from rsvl.utils.progress import progress_bar

POINT_VARIANTS = ("point_full", "point_cosine", "point_no_focus", "point_no_evolve")
ALL_VARIANTS = ("whole_image", "centre_box", "full", *POINT_VARIANTS)
ORACLE_GRID = 18


class PointOracle:
    """Cross-attention: a Gaussian bump at a given pixel (set per expression by the benchmark)."""

    name = "oracle_point"
    real_weights = False

    def __init__(self) -> None:
        self.point = (0.0, 0.0)

    def cross_attention(self, image: np.ndarray, expression: str) -> CrossAttention:
        h, w = image.shape[:2]
        gy, gx = np.mgrid[0:ORACLE_GRID, 0:ORACLE_GRID]
        cx, cy = self.point[0] / w * ORACLE_GRID - 0.5, self.point[1] / h * ORACLE_GRID - 0.5
        bump = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / 2.0)
        return CrossAttention(bump.astype(np.float32), "oracle point on the target", False)


def build_dataset(out: Path, images: int, size: int, seed: int) -> Path:
    root = out / "data"
    if not (root / "rrsisd").exists():
        generate_dataset("rrsisd", root, images, seed=seed, size=size, progress=True)
    return root


def make_grounders(args: argparse.Namespace, variants: list[str]) -> dict[str, ZeroOVGrounder]:
    if "full" in variants or args.sd_path:
        load_providers()  # Qwen2.5-VL and Stable Diffusion providers (imports transformers/diffusers)
    focus_cfg = FocusConfig(provider="lite0_affinity", image_size=512, resolutions=[32, 64])
    if args.sd_path:
        focus_cfg = FocusConfig(provider="stable_diffusion", path=args.sd_path)
    focus = FOCUS_PROVIDERS.get(focus_cfg.provider)(focus_cfg) if args.sd_path else Lite0AffinityFocus()
    oracle = PointOracle()
    cosine = ZeroOVConfig()
    cosine.fusion.mode = "cosine"
    none = ZeroOVConfig()
    none.focus.provider = "none"
    grounders = {
        "point_full": ZeroOVGrounder(ZeroOVConfig(), overview=oracle, focus=focus),
        "point_cosine": ZeroOVGrounder(cosine, overview=oracle, focus=focus),
        "point_no_focus": ZeroOVGrounder(none, overview=oracle),
        "point_no_evolve": ZeroOVGrounder(ZeroOVConfig(), overview=oracle, focus=focus, evolve_stage=False),
    }
    if "full" in variants:
        if args.vlm_path:
            ov_cfg = OverviewConfig(path=args.vlm_path)
        else:
            ov_cfg = OverviewConfig(layers=[0, 1], layer_weights=[0.4, 0.6])  # the tiny model has 2 layers
        overview = OVERVIEW_PROVIDERS.get("qwen2_5_vl")(ov_cfg)
        grounders["full"] = ZeroOVGrounder(ZeroOVConfig(), overview=overview, focus=focus)
    return grounders


def target_mask(sample: Any, ref_index: int, shape: tuple[int, int]) -> np.ndarray:
    target = sample.instances[sample.refs[ref_index].target]
    return mask_codec.decode(target.mask, *shape)


def run_variants(root: Path, variants: list[str], args: argparse.Namespace) -> dict[str, Any]:
    samples = list(get_format("rrsisd").open(root))
    items = list(referring_items(samples))
    grounders = make_grounders(args, variants) if any(v not in ("whole_image", "centre_box") for v in variants) else {}
    oracle = grounders["point_full"].overview if "point_full" in grounders else None
    rng = np.random.default_rng(args.seed)
    gt_box: dict[str, Any] = {}
    gt_mask: dict[str, Any] = {}
    pred_box: dict[str, dict[str, Any]] = {v: {} for v in variants}
    pred_mask: dict[str, dict[str, Any]] = {v: {} for v in variants}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    fallbacks: dict[str, int] = {v: 0 for v in variants}
    providers: dict[str, Any] = {}
    image_cache: tuple[Any, np.ndarray] | None = None
    with progress_bar(True, label="[bold]zeroov[/]") as bar:
        task = bar.add_task("expressions", total=len(items))
        for sample, key, expression, ref_index in items:
            if image_cache is None or image_cache[0] is not sample:
                with RasterSource(sample.image_path) as src:
                    image_cache = (sample, src.read_display(src.full_window)[0])
            image = image_cache[1]
            h, w = image.shape[:2]
            truth = target_mask(sample, ref_index, (h, w))
            gt_box[key] = sample.instances[sample.refs[ref_index].target].bbox
            gt_mask[key] = mask_codec.encode(truth)
            ys, xs = np.nonzero(truth)
            pick = int(rng.integers(len(ys))) if len(ys) else 0
            if oracle is not None and len(ys):
                oracle.point = (float(xs[pick]) + 0.5, float(ys[pick]) + 0.5)
            for v in variants:
                if v == "whole_image":
                    box, mask = (0.0, 0.0, float(w), float(h)), np.ones((h, w), dtype=bool)
                elif v == "centre_box":
                    box = (w / 4, h / 4, 3 * w / 4, 3 * h / 4)
                    mask = np.zeros((h, w), dtype=bool)
                    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
                else:
                    t0 = time.perf_counter()
                    res = grounders[v].ground(image, expression)
                    seconds[v].append(time.perf_counter() - t0)
                    box, mask = res.box, res.mask
                    fallbacks[v] += res.fallback is not None
                    providers.setdefault(v, res.providers)
                pred_box[v][key] = box
                pred_mask[v][key] = mask_codec.encode(mask)
            bar.advance(task)
    results = {}
    for v in variants:
        box_report = evaluate_grounding(gt_box, pred_box[v], preset="zeroov")
        mask_report = evaluate_grounding(gt_mask, pred_mask[v], preset="zeroov")
        results[v] = {
            "box": box_report.metrics,
            "mask": mask_report.metrics,
            "fallbacks": fallbacks[v],
            "median_s_per_expression": statistics.median(seconds[v]) if seconds[v] else 0.0,
            "providers": providers.get(v),
        }
    return {"n_expressions": len(items), "n_images": len(samples), "variants": results}


def time_region_growing(repeats: int = 50) -> dict[str, float]:
    """Median ms of grow_regions on a smooth random 512 x 512 map vs a Python BFS (same output)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    fused = ndimage.gaussian_filter(rng.random((512, 512)), 12)
    fused = (fused - fused.min()) / (fused.max() - fused.min())
    seeds = np.stack([rng.integers(0, 512, 7), rng.integers(0, 512, 7)], axis=1)
    fast = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        grown = grow_regions(fused, seeds, 0.3)
        fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    slow = grow_regions_bfs(fused, seeds, 0.3)
    slow_s = time.perf_counter() - t0
    assert np.array_equal(grown, slow)
    fast_ms = statistics.median(fast) * 1e3
    return {
        "vectorised_ms": fast_ms,
        "python_bfs_ms": slow_s * 1e3,
        "speedup": slow_s * 1e3 / fast_ms,
        "region_px": int(grown.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_zeroov"))
    parser.add_argument("--vlm-path", type=Path, default=None)
    parser.add_argument("--sd-path", type=Path, default=None)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(ALL_VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(ALL_VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    growing = time_region_growing()
    print(
        f"region growing 512x512: {growing['vectorised_ms']:.2f} ms vectorised vs "
        f"{growing['python_bfs_ms']:.0f} ms Python BFS (x{growing['speedup']:.0f}), same region"
    )
    root = build_dataset(args.out, args.images, args.size, args.seed)
    results = run_variants(root, variants, args)
    results["region_growing"] = growing
    results["settings"] = {"images": args.images, "size": args.size, "seed": args.seed, "preset": "zeroov"}
    write_json(args.out / "results.json", results)
    print(f"{results['n_expressions']} expressions on {results['n_images']} images (zeroov preset, IoU > t)")
    header = f"{'variant':<16} {'box Pr@0.5':>10} {'box mIoU':>9} {'mask Pr@0.5':>11} {'mask mIoU':>9} {'oIoU':>6}"
    print(header + f" {'s/expr':>7}  providers (real weights?)")
    for v, r in results["variants"].items():
        prov = r["providers"] or {}
        real = ", ".join(
            f"{k}={d['name']}:{'real' if d['real_weights'] else 'random'}"
            for k in ("overview", "focus", "refine")
            if isinstance(d := prov.get(k), dict)
        )
        print(
            f"{v:<16} {r['box']['Pr@0.5']:>10.4f} {r['box']['mIoU']:>9.4f} {r['mask']['Pr@0.5']:>11.4f} "
            f"{r['mask']['mIoU']:>9.4f} {r['mask']['oIoU']:>6.3f} {r['median_s_per_expression']:>7.2f}  {real}"
        )
    print(json.dumps({"results": str(args.out / "results.json")}))


if __name__ == "__main__":
    main()

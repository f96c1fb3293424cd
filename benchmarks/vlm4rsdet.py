"""VLM4RSDet miniature: the paper's ablation (baseline / +framework / +GLCA / +LHPS / full) on CPU.

    python -m benchmarks.vlm4rsdet [--datasets trees,aitod] [--steps 600] [--variants ...]
                                   [--out runs/bench_vlm4rsdet] [--synth-train 200] [--synth-val 30]

Every variant trains from the same recipe (``configs/vlm4rsdet/<dataset>.yaml``), seed, data order
and number of steps; only the VLM branch switches differ. Then each exported detector is scored on
the validation set with the recipe's ``rsvl eval`` preset, and its inference cost is measured side
by side with a freshly built baseline detector: parameter count, FLOPs of one 512 x 512 forward
(``torch.utils.flop_counter``) and median latency of interleaved runs. The cost ratios must be
1.000 (the branch is dropped at inference). Results go to ``<out>/results.json`` and a table.

Datasets: ``trees`` — the bundled real NEON crowns: the 1249 x 1035 Yellowstone crop (279 trees)
is split at x = 875 into a training part and a held-out strip (validation, same site); OSBS_029
(61 trees, another site) is scored as well, as an out-of-domain check. ``aitod`` — SynthRS
AI-TOD-like small objects (generated into ``<out>/data`` on first use).

Miniature choices (CPU, minutes per run): 256 px crops, batch 4, ``--steps`` 400, and a visual
grid of 16 x 16 tokens per level (``--grid``; the paper's 32 x 32 is for ~1,000 px inputs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rsvl.datasets.training import DetectionTrainSet
from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig, load_recipe
from rsvl.methods.vlm4rsdet.detector import build_detector
from rsvl.methods.vlm4rsdet.infer import evaluate_detector, load_detector
from rsvl.methods.vlm4rsdet.train import train
from rsvl.synth import generate_dataset
from rsvl.utils.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "baseline": {"vlm.enabled": False},
    "framework": {"vlm.enabled": True, "vlm.glca": False, "vlm.lhps": False},
    "glca": {"vlm.enabled": True, "vlm.glca": True, "vlm.lhps": False},
    "lhps": {"vlm.enabled": True, "vlm.glca": False, "vlm.lhps": True},
    "full": {"vlm.enabled": True, "vlm.glca": True, "vlm.lhps": True},
}
RECIPES = {"trees": "trees.yaml", "aitod": "aitod_synth.yaml"}


SAMPLES = ROOT / "src" / "rsvl" / "data" / "samples" / "deepforest"
YELL = "2019_YELL_2_541000_4977000_image_crop"
SPLIT_X = 875


def trees_split(data: Path) -> tuple[Path, Path]:
    """Cut the Yellowstone crop at x = SPLIT_X into train / held-out deepforest folders.

    A box goes to the side holding its centre and is clipped to it; boxes with less than half
    their area on that side are dropped (there are few: crowns are ~30 px).
    """
    from PIL import Image

    from rsvl.datasets import Sample, get_format

    train_dir, val_dir = data / "trees_train", data / "trees_heldout"
    if (train_dir / "annotations.csv").is_file() and (val_dir / "annotations.csv").is_file():
        return train_dir, val_dir
    image = Image.open(SAMPLES / f"{YELL}.jpg").convert("RGB")
    sample = get_format("deepforest").open(SAMPLES / f"{YELL}.csv").load()[0]
    sides = {"train": (0, SPLIT_X, train_dir), "val": (SPLIT_X, image.width, val_dir)}
    for lo, hi, folder in sides.values():
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{YELL}_x{lo}-{hi}.png"
        image.crop((lo, 0, hi, image.height)).save(folder / name)
        kept = []
        for inst in sample.instances:
            x1, y1, x2, y2 = inst.bbox
            if not lo <= (x1 + x2) / 2 < hi:
                continue
            cx1, cx2 = max(x1, lo), min(x2, hi)
            if (cx2 - cx1) < 0.5 * (x2 - x1):
                continue
            kept.append(type(inst)(inst.category, bbox=(cx1 - lo, y1, cx2 - lo, y2)))
        out = Sample(name, width=hi - lo, height=image.height, instances=kept)
        get_format("deepforest").write(folder, [out])
    return train_dir, val_dir


def recipe(dataset: str, variant: str, args: argparse.Namespace) -> VLM4RSDetConfig:
    overrides = [f"{k}={str(v).lower()}" for k, v in VARIANTS[variant].items()]
    overrides += [f"optim.steps={args.steps}", f"name={dataset}_{variant}", f"optim.threads={args.threads}"]
    overrides += [f"vlm.grid={args.grid}"]
    if dataset == "trees":
        train_dir, val_dir = trees_split(args.out / "data")
        overrides += [f"data.root={train_dir}", f"data.val_root={val_dir}"]
    if dataset == "aitod":
        data = args.out / "data"
        for split, n, seed in (("train", args.synth_train, 0), ("val", args.synth_val, 1)):
            if not (data / split / "annotations.json").is_file():
                generate_dataset("aitod", data / split, n=n, seed=seed, progress=True)
        overrides += [f"data.root={data / 'train'}", f"data.val_root={data / 'val'}"]
    return load_recipe(ROOT / "configs" / "vlm4rsdet" / RECIPES[dataset], overrides)


def flops(model: torch.nn.Module, image: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model([image])
    return int(counter.get_total_flops())


def cost_ratios(detector_path: Path, cfg: VLM4RSDetConfig, repeats: int) -> dict[str, float]:
    """Exported detector vs a freshly built baseline with the same weights: params, FLOPs, latency."""
    exported = load_detector(detector_path)
    baseline = build_detector(cfg.detector, len(exported.classes), pretrained=False).eval()
    baseline.load_state_dict(exported.model.state_dict())
    image = torch.rand(3, 512, 512, generator=torch.Generator().manual_seed(0))
    params = [sum(p.numel() for p in m.parameters()) for m in (exported.model, baseline)]
    fl = [flops(m, image) for m in (exported.model, baseline)]
    times: list[list[float]] = [[], []]
    with torch.inference_mode():
        outs = [m([image])[0] for m in (exported.model, baseline)]
        for _ in range(repeats):
            for k, m in enumerate((exported.model, baseline)):
                t0 = time.perf_counter()
                m([image])
                times[k].append(time.perf_counter() - t0)
    same = all(torch.equal(outs[0][key], outs[1][key]) for key in outs[0])
    lat = [statistics.median(t) for t in times]
    return {
        "params": params[0],
        "params_ratio": params[0] / params[1],
        "gflops": fl[0] / 1e9,
        "flops_ratio": fl[0] / fl[1],
        "latency_ms": lat[0] * 1e3,
        "latency_ratio": lat[0] / lat[1],
        "identical_outputs": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="trees,aitod")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_vlm4rsdet")
    parser.add_argument("--synth-train", type=int, default=200)
    parser.add_argument("--synth-val", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-repeats", type=int, default=5)
    parser.add_argument(
        "--cost-only", action="store_true", help="re-measure the cost ratios of the finished runs (quiet machine)"
    )
    args = parser.parse_args()
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if args.cost_only:
        for key, entry in results.items():
            dataset, variant = key.split("/")
            cfg = recipe(dataset, variant, args)
            entry.update(cost_ratios(args.out / dataset / variant / "detector.pt", cfg, args.latency_repeats))
            print(f"{key}: latency {entry['latency_ms']:.1f} ms, ratio {entry['latency_ratio']:.3f}", flush=True)
        write_json(results_file, results)
        args.datasets = ""
    for dataset in filter(None, args.datasets.split(",")):
        for variant in args.variants.split(","):
            key = f"{dataset}/{variant}"
            cfg = recipe(dataset, variant, args)
            run_dir = args.out / dataset / variant
            if key in results and results[key].get("steps") == args.steps and results[key].get("grid") == args.grid:
                print(f"{key}: done before, kept")
                continue
            t0 = time.perf_counter()
            result = train(cfg, run_dir, progress=True)
            wall = time.perf_counter() - t0
            assert result.report is not None
            m = result.report.metrics
            extra = {}
            if dataset == "trees":  # out-of-domain site, same detector
                osbs = DetectionTrainSet(cfg.data, "hbb", ["Tree"], root=str(SAMPLES / "OSBS_029.csv"))
                extra["osbs_metrics"] = evaluate_detector(load_detector(result.detector_path), osbs, "coco").metrics
            entry = {
                "steps": args.steps,
                "grid": args.grid,
                "train_s": round(result.seconds, 1),
                "wall_s": round(wall, 1),
                "s_per_step": round(result.seconds / max(1, args.steps), 3),
                "final_loss": result.history[-1]["loss"] if result.history else None,
                "metrics": m,
                **extra,
                **cost_ratios(result.detector_path, cfg, args.latency_repeats),
            }
            results[key] = entry
            write_json(results_file, results)
            print(
                f"{key}: AP {m.get('AP', float('nan')):.4f} AP50 {m.get('AP50', float('nan')):.4f} "
                f"train {entry['train_s']:.0f} s, cost ratios params {entry['params_ratio']:.3f} "
                f"flops {entry['flops_ratio']:.3f} latency {entry['latency_ratio']:.3f}",
                flush=True,
            )
    print()
    print(f"{'run':<22}{'AP':>8}{'AP50':>8}{'train s':>9}{'params':>9}{'FLOPs':>8}{'latency':>9}  identical")
    for key, e in results.items():
        m = e["metrics"]
        print(
            f"{key:<22}{m.get('AP', -1):>8.4f}{m.get('AP50', -1):>8.4f}{e['train_s']:>9.0f}"
            f"{e['params_ratio']:>9.3f}{e['flops_ratio']:>8.3f}{e['latency_ratio']:>9.3f}  {e['identical_outputs']}"
        )
    print(f"\nresults: {results_file}")


if __name__ == "__main__":
    main()

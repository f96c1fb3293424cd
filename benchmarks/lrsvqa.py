"""LRS-VQA efficiency: vision tokens into the LLM and peak memory vs image side, side by side.

    python -m benchmarks.lrsvqa [--sides 2048 8192 20000] [--out runs/bench_lrsvqa]
                                [--model-path DIR | --gguf FILE] [--modes ...]

For each side S a SynthRS large scene (``lrsvqa`` format, GeoTIFF written block by block) is
generated once into ``<out>/data/S``. Each (side, mode) then runs in its **own subprocess**, so the
peak resident set size (``getrusage().ru_maxrss``) of one run does not mix with another's:

* ``full_tiling``: every native 336 px tile through the vision tower (what a tiling LVLM would feed
  its LLM); the LLM is not run (hundreds of thousands of tokens do not fit any context);
* ``uniform``: the global view + every token of the base level (the whole image downsampled to
  at most 3 x 3 tiles), then the answer;
* ``no_prune``: the coarse-to-fine tiles, every token of them, then the answer;
* ``pyramid``: the method: coarse-to-fine tiles, the top 25 % of tokens, then the answer.

The model is a LLaVA with CLIP ViT-L/14-336 geometry (336 px tiles, 24 x 24 tokens pooled to
12 x 12, the authors' settings) but *tiny random* widths unless ``--model-path``/``--gguf`` is
given: token counts and the memory of the tile path do not depend on the weights, answers do
(they are not scored here). Memory is reported as peak RSS and as the working memory above the
process's RSS once the model is loaded; the vision-token memory a LLaVA-1.5-7B would need (4,096
wide, fp16) is computed from the counts. Writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("full_tiling", "uniform", "no_prune", "pyramid")
QUESTION = "How many vehicles are parked in the small parking lot?"
WIDTH_7B = 4096  # LLaVA-1.5-7B hidden size (fp16: 2 bytes)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def image_for(out: Path, side: int) -> Path:
    """The cached SynthRS scene of ``side`` px (generated on first use)."""
    from rsvl.synth import generate_dataset

    root = out / "data" / str(side)
    images = sorted((root / "LRS_VQA" / "image").glob("*.tif")) if root.exists() else []
    if not images:
        generate_dataset("lrsvqa", root, 1, seed=0, size=side, progress=True)
        images = sorted((root / "LRS_VQA" / "image").glob("*.tif"))
    return images[0]


def worker(image: Path, mode: str, model_path: str | None, gguf: str | None) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from rsvl.methods.lrsvqa.config import LRSVQAConfig
    from rsvl.methods.lrsvqa.pipeline import LargeImageVQA

    torch.set_num_threads(2)
    cfg = LRSVQAConfig.model_validate(
        {"model": {"path": model_path, "gguf": gguf, "pool": 12}, "pyramid": {"tile_size": 336}}
    )
    vqa = LargeImageVQA(cfg)
    setup_mb = _rss_mb()
    t0 = time.perf_counter()
    with vqa.open(image) as dip, torch.inference_mode():
        if mode == "full_tiling":
            level = dip.level(0)
            tokens = vqa.bundle.grid_size**2  # the global view
            kept = []
            for row in range(level.rows):  # a row of tiles at a time: the tokens are what is kept
                images, _ = dip.read(list(level.tile(row, c) for c in range(level.cols)))
                kept.append(vqa.bundle.encode_tiles(images, pool=cfg.model.pool).reshape(-1, vqa.bundle.hidden_size))
            tokens += sum(int(k.shape[0]) for k in kept)
            tiles = 1 + len(level)
            answer_s = None
        else:
            answer = vqa.answer(dip, QUESTION, mode)  # type: ignore[arg-type]
            tokens, tiles, answer_s = answer.n_tokens, answer.tiles_encoded, answer.seconds["generate"]
    seconds = time.perf_counter() - t0
    peak = _peak_mb()
    return {
        "tokens": int(tokens),
        "tiles_encoded": int(tiles),
        "seconds": seconds,
        "generate_seconds": answer_s,
        "peak_rss_mb": peak,
        "working_mb": peak - setup_mb,
        "tokens_7b_fp16_mb": tokens * WIDTH_7B * 2 / 2**20,
    }


def run_one(image: Path, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.lrsvqa", "--worker", str(image), "--modes", mode]
    if args.model_path:
        cmd += ["--model-path", str(args.model_path)]
    if args.gguf:
        cmd += ["--gguf", str(args.gguf)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} on {image} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 8192, 20000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_lrsvqa"))
    parser.add_argument("--model-path", type=Path, default=None)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        model = str(args.model_path) if args.model_path else None
        gguf = str(args.gguf) if args.gguf else None
        print(json.dumps(worker(args.worker, args.modes[0], model, gguf)))
        return

    from rsvl.utils.atomic import write_json

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for side in args.sides:
        image = image_for(args.out, side)
        results[str(side)] = {mode: run_one(image, mode, args) for mode in args.modes}
        print(f"side {side}: " + ", ".join(f"{m} {r['tokens']:,} tokens" for m, r in results[str(side)].items()))
    write_json(args.out / "results.json", {"sides": results, "question": QUESTION})

    print(f"\n{'side':>6} {'mode':<12} {'tokens':>9} {'x fewer':>8} {'tiles':>6} {'peak MB':>8} {'work MB':>8}"
          f" {'7B tok MB':>9} {'s':>6}")  # fmt: skip
    for side, modes in results.items():
        base = modes.get("full_tiling", {}).get("tokens")
        for mode, r in modes.items():
            fewer = f"{base / r['tokens']:.1f}" if base else "-"
            print(
                f"{side:>6} {mode:<12} {r['tokens']:>9,} {fewer:>8} {r['tiles_encoded']:>6} {r['peak_rss_mb']:>8.0f} "
                f"{r['working_mb']:>8.0f} {r['tokens_7b_fp16_mb']:>9.0f} {r['seconds']:>6.1f}"
            )
    sides = sorted(int(s) for s in results)
    if len(sides) >= 2 and "pyramid" in args.modes:
        lo, hi = sides[0], sides[-1]
        grow = results[str(hi)]["pyramid"]["working_mb"] / max(results[str(lo)]["pyramid"]["working_mb"], 1e-6)
        print(f"\npixels x{(hi / lo) ** 2:.0f} from {lo} to {hi} px; pyramid working memory x{grow:.2f}")
    print(json.dumps({"results": str(args.out / "results.json")}))


if __name__ == "__main__":
    main()

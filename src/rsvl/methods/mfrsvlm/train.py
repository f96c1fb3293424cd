"""MF-RSVLM training (stage 1: projector + fusion/injection; stage 2: + LoRA) and evaluation.

A run folder holds:

* ``last.pt`` -- the trainable tensors, the AdamW and scheduler states, the RNG states, the step,
  the history and the run's fingerprint (config, sources, model), written atomically every
  ``checkpoint_every`` steps, at the end and on Ctrl-C; read back with ``weights_only=True``.
* ``trainable.safetensors`` -- :meth:`MFRSVLM.save_trainable` of the final weights (what
  :meth:`MFRSVLM.load_trainable` reads for inference or for the next stage).
* ``history.json`` -- one entry per optimiser step (``step``, ``lr``, ``loss``); ``config.json``.

Starting again in the same folder resumes from ``last.pt``. Batches are a pure function of
``(seed, micro-batch index)`` (:class:`~rsvl.methods.mfrsvlm.data.TaskMix`), the trainable state,
optimiser, scheduler and RNG are restored exactly, so a resumed run ends with the same weights as
an uninterrupted one (the model passed in must be built the same way: same base weights, same
variant). A checkpoint from another config (except ``checkpoint_every``/``device``), other sources
or another model variant is refused.

Optimisation: AdamW (weight decay on matrices only, not on biases, norms or gate scalars), the
learning rate warmed up linearly over ``warmup`` steps then cosine-decayed to ``min_lr_ratio * lr``
at the last step (LLaVA-1.5's schedule), gradients clipped to ``max_grad_norm``, ``grad_accum``
micro-batches of ``batch_size`` examples per step (the loss of each micro-batch is its mean over
supervised tokens; the step averages them).

:func:`evaluate` generates greedy answers and scores them with :mod:`rsvl.metrics`: captions with
BLEU-1..4 and CIDEr (:func:`~rsvl.metrics.caption.evaluate_captions`), VQA with the ``exact``
preset of :func:`~rsvl.metrics.vqa.evaluate_vqa`, classification with
:func:`~rsvl.metrics.classification.evaluate_classification` after mapping each answer to a class
with :func:`~rsvl.methods.mfrsvlm.prompts.match_class` (unmatched answers count wrong).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from rsvl.errors import InputError
from rsvl.methods.mfrsvlm.data import Collator, Item, Source, TaskMix
from rsvl.methods.mfrsvlm.injection import decoder_layers
from rsvl.methods.mfrsvlm.model import MFRSVLM
from rsvl.methods.mfrsvlm.prompts import match_class
from rsvl.metrics.report import EvalReport
from rsvl.utils.atomic import atomic_path, write_json
from rsvl.utils.checkpoint import read_torch_file
from rsvl.utils.config import CheckedModel
from rsvl.utils.device import check_device
from rsvl.utils.distributed import Distributed, MixedPrecision
from rsvl.utils.progress import progress_bar

__all__ = ["CHECKPOINT", "HISTORY", "TRAINABLE", "TrainConfig", "TrainResult", "evaluate", "lr_factor", "train"]

logger = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
TRAINABLE = "trainable.safetensors"
HISTORY = "history.json"
_FORMAT = "rsvl.mfrsvlm.train/1"
#: Config fields that may change between an interrupted run and its resumption (no effect on results).
RESUMABLE_CHANGES = ("checkpoint_every", "device", "strategy")

Sources = TaskMix | Iterable[Source | Mapping[str, Any] | Sequence[Any]]


class TrainConfig(CheckedModel):
    """One training stage.

    Attributes:
        stage: 1 (projector + fusion + injector) or 2 (those + LoRA on the LM's q/v projections).
        steps: optimiser steps.
        lr: peak learning rate (LLaVA-1.5: 1e-3 for stage 1, 2e-4 for LoRA fine-tuning).
        batch_size: examples per micro-batch, summed over processes (each computes its share).
        grad_accum: micro-batches per optimiser step.
        warmup: linear warm-up steps.
        min_lr_ratio: learning rate at the end of the cosine, as a fraction of ``lr``.
        weight_decay: AdamW weight decay (matrices only).
        max_grad_norm: gradient clipping (None: off).
        lora_rank, lora_alpha, lora_dropout: stage 2 LoRA adapters.
        max_length: truncate token sequences to this length (None: no limit).
        checkpoint_every: write ``last.pt`` every this many steps (and at the end).
        seed: data order, caption picks, LoRA initialisation and the torch RNG.
        device: torch device the model is moved to.
        mixed_precision: autocast ``no``/``bf16``/``fp16``/``auto`` (:mod:`rsvl.utils.distributed`).
        strategy: under ``torchrun``: ``ddp`` replicates the model; ``fsdp`` shards the frozen
            LLM and vision tower blocks with FSDP2 and replicates the trainable parts.
    """

    stage: Literal[1, 2] = 1
    steps: int = Field(default=1000, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    warmup: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    max_length: int | None = Field(default=2048, ge=8)
    checkpoint_every: int = Field(default=100, ge=1)
    seed: int = 0
    device: str = "cpu"
    mixed_precision: MixedPrecision = "no"
    strategy: Literal["ddp", "fsdp"] = "ddp"

    label: ClassVar[str] = "MF-RSVLM training config"


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    steps: int
    seconds: float
    trainable_path: Path
    checkpoint_path: Path
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): linear warm-up, then cosine."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup - 1)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _as_mix(sources: Sources, seed: int) -> TaskMix:
    if isinstance(sources, TaskMix):
        if sources.seed != seed:
            raise InputError(f"the TaskMix was built with seed {sources.seed}, the config says {seed}")
        return sources
    return TaskMix(sources, seed=seed)


def _optimizer(params: dict[str, torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in params.values() if p.ndim >= 2]
    rest = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def _fingerprint(model: MFRSVLM, mix: TaskMix, cfg: TrainConfig) -> str:
    config = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
    meta = {
        "variant": model.variant,
        "injection_layers": list(model.injection_layers),
        "num_stacks": model.features.num_stacks,
        "hidden_size": model.bundle.hidden_size,
        "base": model.bundle.name,
    }
    return json.dumps({"config": config, "sources": mix.describe(), "model": meta}, sort_keys=True)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(
    path: Path,
    model: MFRSVLM,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    rng: dict[str, Any],
    history: list[dict[str, float]],
    fingerprint: str,
) -> None:
    payload = {
        "format": _FORMAT,
        "step": int(step),
        "trainable": model.trainable_state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng,
        "history": [dict(h) for h in history],
        "fingerprint": fingerprint,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(
    path: Path,
    model: MFRSVLM,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> tuple[int, list[dict[str, float]]]:
    state = read_torch_file(path, "MF-RSVLM training checkpoint")
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise InputError("not an MF-RSVLM training checkpoint; use another out_dir or resume=False", path)
    if state.get("fingerprint") != fingerprint:
        raise InputError(
            "the run folder holds a checkpoint of another config, data or model; use another out_dir or resume=False",
            path,
        )
    try:
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        ours = model.trainable_state_dict()
        theirs = state["trainable"]
        if set(ours) != set(theirs):
            raise ValueError(f"trainable keys differ ({sorted(set(ours) ^ set(theirs))[:3]})")
        with torch.no_grad():
            for name, value in theirs.items():
                target = params.get(name, buffers.get(name))
                if target is None or target.shape != value.shape:
                    raise ValueError(f"{name}: no such tensor of shape {tuple(value.shape)}")
                target.copy_(value.to(device=target.device, dtype=target.dtype))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        return int(state["step"]), [dict(h) for h in state["history"]]
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise InputError(f"the checkpoint does not fit this model ({type(exc).__name__}: {exc})", path) from None


def train(
    model: MFRSVLM,
    sources: Sources,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for one stage into ``out_dir`` (resuming from its ``last.pt`` when ``resume``).

    Args:
        model: the MF-RSVLM; stage 2 adds LoRA adapters to it (seeded with ``cfg.seed``).
        sources: a :class:`TaskMix` (built with ``cfg.seed``) or the sources to build one from.
        cfg: the stage's :class:`TrainConfig`.
        out_dir: the run folder (created).
        resume: continue from ``out_dir/last.pt`` if it exists (else it is overwritten).
        progress: show a progress bar.
        on_step: called after every optimiser step with ``(steps done, loss)``.

    Raises:
        InputError: bad config, sources or run folder, a checkpoint that does not fit, a non-finite loss.
    """
    if not isinstance(model, MFRSVLM):
        raise InputError(f"model must be an MFRSVLM, got {type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise InputError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the run folder is an existing file", out)
    check_device(cfg.device)
    mix = _as_mix(sources, cfg.seed)
    dist = Distributed(cfg.device, cfg.mixed_precision, cfg.strategy)
    try:
        return _train(model, mix, cfg, out, dist, resume=resume, progress=progress, on_step=on_step)
    finally:
        dist.close()


def _frozen_blocks(model: MFRSVLM) -> list[torch.nn.Module]:
    """The blocks FSDP shards: the language model's decoder layers and the vision tower's layers."""
    blocks = list(decoder_layers(model.llava))
    tower = getattr(model.llava.model, "vision_tower", None)
    encoder = getattr(getattr(tower, "vision_model", None), "encoder", None)
    return blocks + list(getattr(encoder, "layers", []))


def _train(
    model: MFRSVLM,
    mix: TaskMix,
    cfg: TrainConfig,
    out: Path,
    dist: Distributed,
    *,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> TrainResult:
    """:func:`train` inside the process group: every rank trains its share, rank 0 writes."""
    dist.check_batch(cfg.batch_size)
    device = dist.device
    collate = Collator(model, max_length=cfg.max_length)
    model.to(device)
    if cfg.stage == 2:
        params = model.trainable_parameters(
            2, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, seed=cfg.seed
        )
    else:
        params = model.trainable_parameters(1)
    if not params:
        raise InputError(f"the model has nothing to train in stage {cfg.stage}")
    opt = _optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    fingerprint = _fingerprint(model, mix, cfg)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    ckpt = out / CHECKPOINT
    torch.manual_seed(cfg.seed)
    start, history = 0, []
    if resume and ckpt.is_file():
        start, history = _load_checkpoint(ckpt, model, opt, sched, fingerprint)
        logger.info("resuming %s from step %d", out, start)
    if dist.is_main:
        write_json(out / "config.json", {"config": cfg.model_dump(mode="json"), "sources": mix.describe()})
    runner = dist.wrap(model, _frozen_blocks(model))
    trained = list(params.values())

    def save(step: int, rng: dict[str, Any], entries: list[dict[str, float]]) -> None:
        if dist.is_main:
            _save_checkpoint(ckpt, model, opt, sched, step, rng, entries, fingerprint)
            write_json(out / HISTORY, entries)

    model.train()
    t0 = time.perf_counter()
    done = start
    rng_at_done = _rng_state(device)  # the RNG state when `done` steps are complete
    try:
        with progress_bar(progress and dist.is_main) as bar:
            task = bar.add_task(f"MF-RSVLM stage {cfg.stage}", total=cfg.steps, completed=start)
            for step in range(start, cfg.steps):
                if dist.distributed:  # each rank its own stream, fixed by (seed, rank, step)
                    dist.seed_step(cfg.seed, step)
                lr = float(opt.param_groups[0]["lr"])
                opt.zero_grad(set_to_none=True)
                total = 0.0
                for micro in range(cfg.grad_accum):
                    batch = collate(dist.shard(mix.batch(step * cfg.grad_accum + micro, cfg.batch_size)))
                    images = batch.pop("images").to(device)
                    with dist.sync_context(runner, micro == cfg.grad_accum - 1):
                        with dist.autocast():
                            out_ = runner(images, batch["input_ids"], batch["labels"], batch["attention_mask"])
                        value = float(out_.loss.detach())
                        if not math.isfinite(value):
                            raise InputError(f"non-finite loss {value} at step {step} (lower the learning rate?)")
                        dist.backward(out_.loss / cfg.grad_accum)
                    total += value / cfg.grad_accum
                clip = [(trained, cfg.max_grad_norm)] if cfg.max_grad_norm is not None else []
                dist.step(opt, clip)
                sched.step()
                total = dist.mean({"loss": total})["loss"]
                done = step + 1
                rng_at_done = _rng_state(device)
                history.append({"step": done, "lr": lr, "loss": total})
                bar.update(task, advance=1, description=f"MF-RSVLM stage {cfg.stage} loss {total:.3f}")
                if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    save(done, rng_at_done, history)
                    dist.barrier()
                if on_step is not None:
                    on_step(done, total)
    except KeyboardInterrupt:
        # a step in flight is dropped: it is redone, from the same RNG state, when the run resumes
        history = [h for h in history if h["step"] <= done]
        save(done, rng_at_done, history)
        logger.warning("interrupted: checkpoint at step %d in %s; run again to resume", done, ckpt)
        raise
    seconds = time.perf_counter() - t0
    model.eval()
    save(cfg.steps, _rng_state(device), history)
    trainable = out / TRAINABLE
    if dist.is_main:
        model.save_trainable(trainable)
    dist.barrier()
    return TrainResult(out, cfg.steps, seconds, trainable, ckpt, history)


# --------------------------------------------------------------------------- evaluation


def _generate_all(
    model: MFRSVLM, collate: Collator, items: list[Item], max_new_tokens: int, batch_size: int, bar: Any, task: Any
) -> dict[str, str]:
    answers: dict[str, str] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = collate.images([it.image_path for it in chunk])
        texts = model.generate(images, [it.prompt for it in chunk], max_new_tokens=max_new_tokens)
        answers.update({it.key: text for it, text in zip(chunk, texts, strict=True)})
        bar.advance(task, len(chunk))
    return answers


def evaluate(
    model: MFRSVLM,
    sources: Sources,
    max_new_tokens: int = 32,
    *,
    batch_size: int = 8,
    max_items: int | None = None,
    caption_metrics: Sequence[str] = ("BLEU", "CIDEr"),
    progress: bool = False,
) -> dict[str, EvalReport]:
    """Greedy answers for every item of ``sources``, scored per task.

    Returns ``{"caption": ..., "vqa": ..., "classification": ...}`` (the tasks present), each an
    :class:`~rsvl.metrics.report.EvalReport`: captions ``BLEU-1`` .. ``BLEU-4`` and ``CIDEr``
    (``caption_metrics`` may add ``METEOR``/``ROUGE-L``; needs Java and pycocoevalcap); VQA ``OA``
    (+ ``AA`` and ``acc/<type>`` for typed questions, ``<source>/OA`` with several VQA sources);
    classification ``OA``, ``AA``, ``acc/<class>`` (answers mapped by ``match_class``; the raw
    answers of unmatched ones are kept in ``details["unmatched"]``). Item keys are
    ``"<source index>:<id>"``. ``max_items`` keeps the first items of each task. Every report keeps
    the generated text per item key in ``details["predictions"]`` (for subsets and error analysis).
    """
    from rsvl.metrics.caption import evaluate_captions
    from rsvl.metrics.classification import evaluate_classification
    from rsvl.metrics.vqa import evaluate_vqa

    if not isinstance(model, MFRSVLM):
        raise InputError(f"model must be an MFRSVLM, got {type(model).__name__}")
    if max_new_tokens < 1 or batch_size < 1:
        raise InputError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    mix = sources if isinstance(sources, TaskMix) else TaskMix(sources)
    collate = Collator(model)
    per_task = {t: mix.task_items(t)[:max_items] for t in mix.tasks}
    reports: dict[str, EvalReport] = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("MF-RSVLM evaluation", total=sum(len(v) for v in per_task.values()))
        pred = {
            t: _generate_all(model, collate, items, max_new_tokens, batch_size, bar, task)
            for t, items in per_task.items()
        }
    if "caption" in per_task:
        gt = {it.key: list(it.answers) for it in per_task["caption"]}
        reports["caption"] = evaluate_captions(gt, pred["caption"], metrics=caption_metrics)
        reports["caption"].details["predictions"] = pred["caption"]
    if "vqa" in per_task:
        items = per_task["vqa"]
        vqa_gt = {it.key: it.answers[0] for it in items}
        types = {it.key: it.qtype for it in items}
        several = len({it.source for it in items}) > 1
        groups = {it.key: f"{mix.sources[it.source].format}{it.source}" for it in items} if several else None
        reports["vqa"] = evaluate_vqa(vqa_gt, pred["vqa"], "exact", types=types, groups=groups)
        reports["vqa"].details["predictions"] = pred["vqa"]
    if "classification" in per_task:
        items = per_task["classification"]
        classes: list[str] = []
        for it in items:
            classes.extend(c for c in it.classes or () if c not in classes)
        mapped, unmatched = {}, {}
        for it in items:
            answer = pred["classification"][it.key]
            name = match_class(answer, list(it.classes or classes))
            mapped[it.key] = name if name is not None else answer
            if name is None:
                unmatched[it.key] = answer
        report = evaluate_classification({it.key: it.answers[0] for it in items}, mapped, classes=classes)
        report.details["unmatched"] = unmatched
        report.details["predictions"] = pred["classification"]
        report.protocol["answer_mapping"] = "rsvl.methods.mfrsvlm.prompts.match_class; unmatched answers count wrong"
        reports["classification"] = report
    return reports

"""Distilling the Region Focus Module from the LLM's attention over a VQA dataset (resumable).

Each step takes one question of the dataset and builds the sequence the coarse-to-fine search
scores first: the global view's tokens, then every token of the base level's tiles, then the
question. The LLM's attention at ``rfm.teacher_layers`` over the tile tokens is the target
(:func:`~rsvl.methods.lrsvqa.rfm.distill_step`). Questions are visited in a seeded random order;
the base-level tokens of the last image are cached, as several questions ask about one image.

The run folder holds ``rfm.safetensors`` (the student, written atomically at every checkpoint
and at the end), ``optimizer.pt`` and ``state.json`` (the step and the loss history), so a killed
run resumes where it stopped; ``report.json`` gives the held-out distillation loss before and
after training.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvl.errors import InputError
from rsvl.methods.lrsvqa.pipeline import LargeImageVQA
from rsvl.methods.lrsvqa.rfm import (
    AttentionQuery,
    RegionFocusModule,
    distillation_loss,
    load_rfm,
    rfm_distillation_loss,
    save_rfm,
    teacher_attention,
)
from rsvl.methods.lrsvqa.selection import uniform_tokens
from rsvl.utils.atomic import atomic_path, write_json
from rsvl.utils.checkpoint import read_torch_file
from rsvl.utils.distributed import Distributed
from rsvl.utils.progress import progress_bar

__all__ = ["distill_on_dataset", "held_out_loss"]


class _Sequences:
    """The first-level sequence of each question (the last image's base-level tokens kept)."""

    def __init__(self, vqa: LargeImageVQA) -> None:
        self.vqa = vqa
        self._image: tuple[str, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, image_path: str, question: str) -> tuple[torch.Tensor, AttentionQuery, Any]:
        vqa = self.vqa
        if self._image is None or self._image[0] != image_path:
            with torch.inference_mode(), vqa.open(image_path) as dip:
                tokens, positions = uniform_tokens(dip, vqa.bundle, vqa.config.model.pool)
            self._image = (image_path, tokens.clone(), positions)
        _, tokens, positions = self._image
        n_global = int((positions[:, 0] == 0).sum())  # image 0 is the global view
        seq = vqa.bundle.build_sequence(tokens, question, positions=positions)
        keys = slice(seq.image_slice.start + n_global, seq.image_slice.stop)
        return seq.inputs_embeds.detach(), AttentionQuery(seq.query_index, keys), getattr(seq, "position_ids", None)


def held_out_loss(
    rfm: RegionFocusModule, vqa: LargeImageVQA, items: list[tuple[str, str]], sequences: _Sequences | None = None
) -> float:
    """Mean distillation loss (KL to the LLM's attention) of ``rfm`` over ``(image path, question)`` items."""
    sequences = sequences or _Sequences(vqa)
    losses = []
    with torch.no_grad():
        for image, question in items:
            embeds, query, rope = sequences(image, question)
            teacher = teacher_attention(vqa.bundle.model, embeds, query, rfm.teacher_layers, rope)
            student = rfm.log_attention(embeds, query, rope)
            losses.append(float(distillation_loss(student, [teacher[i] for i in rfm.teacher_layers])))
    return float(np.mean(losses)) if losses else float("nan")


def distill_on_dataset(
    vqa: LargeImageVQA,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    format_name: str = "lrsvqa",
    steps: int = 200,
    lr: float = 1e-4,
    held_out: int = 8,
    checkpoint_every: int = 50,
    seed: int = 0,
    batch_size: int = 1,
    mixed_precision: str = "no",
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the RFM of ``vqa.config.rfm`` on the questions of a dataset; returns the report.

    ``batch_size`` questions make one step (their losses averaged); under ``torchrun`` each
    process takes its share of them and the RFM's gradients are averaged over processes.
    """

    if steps < 1 or lr <= 0 or checkpoint_every < 1 or batch_size < 1:
        raise InputError(
            f"need steps >= 1, lr > 0, checkpoint_every >= 1 and batch_size >= 1 "
            f"(got {steps}, {lr}, {checkpoint_every}, {batch_size})"
        )
    dist = Distributed(str(vqa.bundle.device), mixed_precision)
    try:
        dist.check_batch(batch_size)
        return _distill(vqa, root, Path(out_dir), format_name, steps, lr, held_out, checkpoint_every, seed,
                        batch_size, dist, resume=resume, progress=progress)  # fmt: skip
    finally:
        dist.close()


def _distill(
    vqa: LargeImageVQA,
    root: str | os.PathLike[str],
    out: Path,
    format_name: str,
    steps: int,
    lr: float,
    held_out: int,
    checkpoint_every: int,
    seed: int,
    batch_size: int,
    dist: Distributed,
    *,
    resume: bool,
    progress: bool,
) -> dict[str, Any]:
    """:func:`distill_on_dataset` inside the process group: each rank its questions, rank 0 writes."""
    from rsvl.datasets import get_format

    items = [(str(s.image_path), qa.question) for s in get_format(format_name).open(root) for qa in s.qas]
    if len(items) < 2:
        raise InputError(f"{root}: need at least 2 questions to distil (one held out)", Path(root))
    rng = random.Random(seed)
    rng.shuffle(items)
    n_held = min(held_out, len(items) // 2)
    held, train_items = items[:n_held], items[n_held:]
    out.mkdir(parents=True, exist_ok=True)
    weights, opt_file, state_file = out / "rfm.safetensors", out / "optimizer.pt", out / "state.json"
    model = vqa.bundle.model
    cfg = vqa.config.rfm
    state: dict[str, Any] = {"step": 0, "losses": [], "teacher_layers": cfg.teacher_layers, "seed": seed}
    if resume and state_file.exists():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state.get("teacher_layers") != cfg.teacher_layers:
            raise InputError(f"the run used teacher_layers {state.get('teacher_layers')}; use --no-resume", state_file)
        rfm = load_rfm(model, weights)
        if rfm.trainable != cfg.trainable:
            raise InputError(f"the run trained rfm.trainable={rfm.trainable}; use --no-resume", weights)
    else:
        rfm = RegionFocusModule(model, cfg.teacher_layers, cfg.trainable).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(rfm.trainable_parameters().values())
    for p in rfm.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if resume and opt_file.exists() and state["step"]:
        opt.load_state_dict(read_torch_file(opt_file, "optimizer state"))
    sequences = _Sequences(vqa)
    before = state.get("held_out_before")
    if before is None:
        before = state["held_out_before"] = held_out_loss(rfm, vqa, held, sequences)
    order = [train_items[rng.randrange(len(train_items))] for _ in range(steps * batch_size)]
    with progress_bar(progress and dist.is_main, label="[bold]distil RFM[/]") as bar:
        task = bar.add_task("steps", total=steps, completed=min(state["step"], steps))
        for step in range(state["step"], steps):
            mine = dist.shard(order[step * batch_size : (step + 1) * batch_size])
            opt.zero_grad(set_to_none=True)
            rfm.train()
            total = 0.0
            for image, question in mine:
                embeds, query, rope = sequences(image, question)
                with dist.autocast():
                    loss = rfm_distillation_loss(rfm, model, embeds, query, cfg.temperature, rope)
                dist.backward(loss / len(mine))
                total += float(loss.detach()) / len(mine)
            rfm.eval()
            dist.average_gradients(params)
            dist.step(opt)
            state["losses"].append(dist.mean({"loss": total})["loss"])
            state["step"] = step + 1
            bar.advance(task)
            if dist.is_main and (state["step"] % checkpoint_every == 0 or state["step"] == steps):
                save_rfm(rfm, weights)
                with atomic_path(opt_file) as tmp:
                    torch.save(opt.state_dict(), tmp)
                write_json(state_file, state)
            dist.barrier()
    after = held_out_loss(rfm, vqa, held, sequences)
    report = {
        "steps": state["step"],
        "teacher_layers": cfg.teacher_layers,
        "trainable": cfg.trainable,
        "trained_values": sum(p.numel() for p in params),
        "held_out_questions": len(held),
        "held_out_loss_before": before,
        "held_out_loss_after": after,
        "train_loss_first": float(np.mean(state["losses"][:10])),
        "train_loss_last": float(np.mean(state["losses"][-10:])),
        "weights": str(weights),
    }
    if dist.is_main:
        write_json(out / "report.json", report)
    return report

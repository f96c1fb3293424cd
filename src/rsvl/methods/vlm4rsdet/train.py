"""Training: build the joint model from a recipe, optimise, checkpoint, resume, export, evaluate.

A run folder holds ``config.yaml`` (the recipe as run), ``last.pt`` (model + optimiser + step,
written atomically every ``checkpoint_every`` steps and on Ctrl-C), ``history.json`` (losses),
``detector.pt`` (the exported detector: no VLM branch) and ``eval.json`` when a validation set is
given. Starting again in the same folder resumes from ``last.pt``; because batches are a function
of ``(seed, step)``, a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rsvl.datasets.training import DetectionTrainSet
from rsvl.errors import InputError
from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
from rsvl.methods.vlm4rsdet.detector import build_detector
from rsvl.methods.vlm4rsdet.model import VLM4RSDet, export_detector
from rsvl.metrics.report import EvalReport
from rsvl.utils.atomic import atomic_path, write_json, write_text
from rsvl.utils.config import to_yaml
from rsvl.utils.device import check_device
from rsvl.utils.distributed import Distributed
from rsvl.utils.train_loop import resume_run, run_steps

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "build_model", "build_vlm_branch", "lr_at", "save_detector", "train"]

DETECTOR = "detector.pt"
DETECTOR_FORMAT = "rsvl.vlm4rsdet.detector/1"


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    steps: int
    seconds: float
    detector_path: Path
    history: list[dict[str, float]] = field(default_factory=list)
    report: EvalReport | None = None


def build_vlm_branch(cfg: VLM4RSDetConfig, classes: list[str]) -> nn.Module:
    """The Florence-2 branch: real weights from ``vlm.path``, else a tiny random Florence-2."""
    from rsvl.methods.vlm4rsdet.vlm_branch import VLMBranch
    from rsvl.models.florence2 import build_loc_tokenizer, load_florence2, tiny_florence2

    v = cfg.vlm
    if v.path:
        florence, tokenizer = load_florence2(v.path)
    else:
        tokenizer = build_loc_tokenizer(classes)
        t = v.tiny
        florence = tiny_florence2(tokenizer, d_model=t.d_model, layers=t.layers, heads=t.heads, ffn=t.ffn)
    branch = VLMBranch(
        florence,
        tokenizer,
        in_channels=cfg.detector.fpn_channels,
        visual_dim=v.visual_dim,
        grid=v.grid,
        obb=cfg.detector.box_type == "obb",
        use_glca=v.glca,
        use_lhps=v.lhps,
        prompt=v.prompt,
        max_target_tokens=v.max_target_tokens,
    )
    if v.freeze_language_model:
        for p in florence.parameters():
            p.requires_grad_(False)
    return branch


def build_model(cfg: VLM4RSDetConfig, classes: list[str], *, pretrained: bool = True) -> VLM4RSDet:
    """Detector (seeded identically with or without the branch) plus the branch when enabled."""
    torch.manual_seed(cfg.seed)
    detector = build_detector(cfg.detector, len(classes), pretrained=pretrained)
    vlm = None
    if cfg.vlm.enabled:
        torch.manual_seed(cfg.seed + 1)
        vlm = build_vlm_branch(cfg, classes)
    return VLM4RSDet(detector, vlm, classes, alpha=cfg.vlm.alpha)


def lr_at(step: int, cfg: VLM4RSDetConfig) -> float:
    """Linear warm-up from lr/1000, then 10x drops at the ``lr_drops`` fractions of the run."""
    o = cfg.optim
    lr = o.lr * (0.1 ** sum(step >= f * o.steps for f in o.lr_drops))
    if step < o.warmup_steps:
        lr *= 0.001 + (1 - 0.001) * step / o.warmup_steps
    return lr


def _optimizer(model: nn.Module, cfg: VLM4RSDetConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def save_detector(path: Path, detector: nn.Module, cfg: VLM4RSDetConfig, classes: list[str]) -> Path:
    """Write the exported detector (weights + the detector recipe + class names), atomically."""
    payload = {
        "format": DETECTOR_FORMAT,
        "detector": cfg.detector.model_dump(mode="json"),
        "classes": list(classes),
        "name": cfg.name,
        "state_dict": detector.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


#: Recipe keys that may change between an interrupted run and its resumption (no effect on results).
RESUMABLE_CHANGES = {("device",), ("optim", "threads"), ("optim", "checkpoint_every"), ("optim", "log_every")}


def train(
    cfg: VLM4RSDetConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    evaluate: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the recipe into ``out_dir`` (resuming from its ``last.pt`` when ``resume``).

    Returns the run's :class:`TrainResult`; the exported detector is ``out_dir/detector.pt``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the run folder is an existing file", out)
    check_device(cfg.device)
    if cfg.optim.threads:
        torch.set_num_threads(cfg.optim.threads)
    data = DetectionTrainSet(cfg.data, cfg.detector.box_type)
    classes = data.classes
    val = None
    if evaluate and cfg.data.val_root:  # read (and check) it now, not after hours of training
        val = DetectionTrainSet(cfg.data, cfg.detector.box_type, classes, root=cfg.data.val_root)
    dist = Distributed(cfg.device, cfg.optim.mixed_precision)
    try:
        return _train(cfg, out, data, val, dist, resume=resume, progress=progress, on_step=on_step)
    finally:
        dist.close()


def _train(
    cfg: VLM4RSDetConfig,
    out: Path,
    data: DetectionTrainSet,
    val: DetectionTrainSet | None,
    dist: Distributed,
    *,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    """:func:`train` inside the process group: every rank trains, rank 0 writes."""
    o = cfg.optim
    dist.check_batch(o.batch_size, o.grad_accum)
    classes = data.classes
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    cfg_yaml = to_yaml(cfg)
    model = build_model(cfg, classes).to(dist.device)
    model.train()
    opt = _optimizer(model, cfg)
    start, history = resume_run(out, model, opt, cfg_yaml, RESUMABLE_CHANGES, resume)
    if dist.is_main:
        write_text(out / "config.yaml", cfg_yaml)
    runner = dist.wrap(model)
    clip = [] if not o.grad_clip else [(list(model.detector.parameters()), o.grad_clip)]
    if o.grad_clip and model.vlm is not None:  # per branch: the VLM's gradients must not shrink the detector's step
        clip.append((list(model.vlm.parameters()), o.grad_clip))

    def one_step(step: int) -> dict[str, float]:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(o.grad_accum):
            slots = dist.slots(o.batch_size, o.grad_accum, micro)
            images, targets = data.batch(step, o.batch_size, cfg.seed, cfg.detector.input_scale, slots)
            images = [im.to(dist.device) for im in images]
            targets = [{k: v.to(dist.device) for k, v in t.items()} for t in targets]
            with dist.sync_context(runner, micro == o.grad_accum - 1):
                with dist.autocast():
                    losses = runner(images, targets)
                loss = losses["loss"]
                if not math.isfinite(float(loss.detach())):
                    raise RuntimeError(f"non-finite loss at step {step}: { {k: float(v) for k, v in losses.items()} }")
                dist.backward(loss / o.grad_accum)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / o.grad_accum
        dist.step(opt, clip)
        return dist.mean(sums)

    seconds = run_steps(
        out, model, opt, cfg_yaml, start=start, steps=o.steps, history=history, step_fn=one_step,
        lr_of=lambda step: lr_at(step, cfg), loss_key="loss", log_every=o.log_every,
        checkpoint_every=o.checkpoint_every, label=f"training {cfg.name}", progress=progress,
        on_step=on_step, dist=dist, seed=cfg.seed,
    )  # fmt: skip
    detector = export_detector(model).eval()
    det_path = out / DETECTOR
    report = None
    if dist.is_main:
        save_detector(det_path, detector, cfg, classes)
        if val is not None:
            from rsvl.methods.vlm4rsdet.infer import LoadedDetector, evaluate_detector

            loaded = LoadedDetector(detector, classes, cfg.detector, cfg.name)
            report = evaluate_detector(loaded, val, cfg.preset, progress=progress)
            write_json(out / "eval.json", report.to_dict())
    dist.barrier()
    return TrainResult(out, o.steps, seconds, det_path, history, report)

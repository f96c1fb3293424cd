"""The Region Focus Module: a few LLM decoder layers that rank vision tokens like the LLM does.

The LLM's own attention from the last prompt token to the vision tokens says which tokens matter
for the question (the *teacher*); computing it needs the LLM's first ``L`` layers over the whole
sequence. The RFM (the *student*) is ``len(teacher_layers) + 1`` decoder layers copied from the LLM
(student layer 0 from LLM layer ``teacher_layers[0] - 1``, student layer ``j`` from LLM layer
``teacher_layers[j - 1]``, as the authors initialise it), trained so that the attention of its
layer ``j`` matches the LLM's at ``teacher_layers[j - 1]``: a KL divergence between the two
distributions over the vision tokens, at temperature 1 and a softened temperature ``T`` (the
authors also add an MSE on logits; only differences of logits are defined for a softmax, so the
two KL terms carry the signal here). At inference the last student layer's attention is the
relevance used by the coarse-to-fine search.

Both run the real decoder layer modules of the model (``LlamaDecoderLayer``, ``Qwen2DecoderLayer``
...; eager attention), and read the attention probabilities with a forward hook on ``self_attn``:
nothing of the attention is re-implemented, so the student at its initialisation with consecutive
layers reproduces the LLM's attention exactly (tested).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from rsvl.errors import InputError
from rsvl.utils.atomic import atomic_path

__all__ = [
    "RFM_TRAINABLE",
    "AttentionQuery",
    "RegionFocusModule",
    "attention_rows",
    "distill_step",
    "distillation_loss",
    "load_rfm",
    "read_rfm_file",
    "save_rfm",
    "teacher_attention",
]

logger = logging.getLogger(__name__)

#: What RFM distillation trains: every weight of its layers, or their attention only.
RFM_TRAINABLE = ("all", "attention")


@dataclass(frozen=True)
class AttentionQuery:
    """Whose attention to read: the query position and the key positions (the vision tokens)."""

    query_index: int
    keys: slice


def _causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    mask = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.triu(mask, diagonal=1)[None, None]


def attention_rows(
    layers: Sequence[nn.Module],
    rotary_emb: nn.Module,
    inputs_embeds: torch.Tensor,
    query: AttentionQuery,
    capture: Iterable[int],
    rope_positions: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Run decoder ``layers`` over ``inputs_embeds (1, T, D)``; log-attention of the query over the keys.

    ``rope_positions``: the positions the rotary embedding reads, when they are not ``0..T-1``
    (Qwen2-VL's multimodal RoPE: ``(3, 1, T)``, as the model's own forward passes them).

    Returns ``{i: (H, K)}`` for every ``i`` in ``capture``: the log of layer ``i``'s attention
    probabilities from ``query.query_index`` to ``query.keys``, renormalised over those keys (so
    it is a log-softmax of the attention logits restricted to the keys). The layers must use eager
    attention (the probabilities are read from ``self_attn``'s output).
    """
    wanted = set(capture)
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1:
        raise InputError(f"expected inputs_embeds of shape (1, T, D), got {tuple(inputs_embeds.shape)}")
    length = inputs_embeds.shape[1]
    start, stop, _ = query.keys.indices(length)
    if not 0 <= query.query_index < length or stop <= start or stop > query.query_index + 1:
        raise InputError(f"query {query.query_index} must follow the keys {start}:{stop} in a sequence of {length}")
    rows: dict[int, torch.Tensor] = {}
    current: list[int] = [-1]

    def grab(_module: nn.Module, _args: Any, output: Any) -> None:
        if current[0] in wanted:
            weights = output[1]
            if weights is None:
                raise InputError(
                    "the decoder layers do not return attention weights; load the model with eager attention"
                )
            row = weights[0, :, query.query_index, start:stop]
            rows[current[0]] = torch.log(row.clamp_min(1e-30)) - torch.log(row.sum(-1, keepdim=True).clamp_min(1e-30))

    hooks = [layer.self_attn.register_forward_hook(grab) for layer in layers]
    try:
        hidden = inputs_embeds
        positions = torch.arange(length, device=hidden.device)[None]
        embeddings = rotary_emb(hidden, positions if rope_positions is None else rope_positions.to(hidden.device))
        mask = _causal_mask(length, hidden.dtype, hidden.device)
        for i, layer in enumerate(layers):
            if i > max(wanted, default=-1):
                break
            current[0] = i
            out = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=embeddings)
            hidden = out[0] if isinstance(out, tuple) else out
    finally:
        for hook in hooks:
            hook.remove()
    missing = wanted - set(rows)
    if missing:
        raise InputError(f"layers {sorted(missing)} do not exist (the stack has {len(layers)})")
    return rows


def _text_model(model: nn.Module) -> nn.Module:
    """The decoder stack (``.layers``, ``.rotary_emb``) of a LLaVA model, a causal LM or a base model."""
    for candidate in (
        getattr(getattr(model, "model", None), "language_model", None),
        getattr(model, "model", None),
        model,
    ):
        if candidate is not None and hasattr(candidate, "layers") and hasattr(candidate, "rotary_emb"):
            return candidate
    raise InputError(f"{type(model).__name__} has no decoder stack with .layers and .rotary_emb")


def teacher_attention(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    query: AttentionQuery,
    layers: Sequence[int],
    rope_positions: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """The LLM's log-attention ``{layer: (H, K)}`` over the vision tokens at ``layers`` (no gradients)."""
    text = _text_model(model)
    with torch.no_grad():
        return attention_rows(list(text.layers), text.rotary_emb, inputs_embeds, query, layers, rope_positions)


class RegionFocusModule(nn.Module):
    """Decoder layers copied from the LLM that learn the LLM's text-to-vision attention.

    Args:
        model: the VLM (or its language model); its layers are copied, never shared.
        teacher_layers: increasing LLM layer indices >= 1 (see the module docstring).
        trainable: ``"all"`` (the authors) or ``"attention"``: only the layers' ``self_attn``
            weights learn, the rest stay the LLM's own, so a saved RFM holds only the attention
            weights and the rest is restored from the LLM (a few MB instead of whole layers).
    """

    def __init__(self, model: nn.Module, teacher_layers: Sequence[int], trainable: str = "all") -> None:
        super().__init__()
        if trainable not in RFM_TRAINABLE:
            raise InputError(f"RFM trainable must be one of {', '.join(RFM_TRAINABLE)}, got {trainable!r}")
        self.trainable = trainable
        text = _text_model(model)
        layers = list(teacher_layers)
        n = len(text.layers)
        if not layers or layers[0] < 1 or any(b <= a for a, b in pairwise(layers)):
            raise InputError(f"teacher_layers must be increasing and >= 1, got {layers}")
        if layers[-1] >= n:
            raise InputError(
                f"teacher layer {layers[-1]} does not exist: the language model has {n} layers (0..{n - 1})"
            )
        self.teacher_layers = layers
        self.source_layers = [layers[0] - 1, *layers]
        self.layers = nn.ModuleList(copy.deepcopy(text.layers[i]) for i in self.source_layers)
        self.rotary_emb = copy.deepcopy(text.rotary_emb)
        for i, layer in enumerate(self.layers):
            layer.self_attn.layer_idx = i

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters distillation updates (and :func:`save_rfm` writes), by name."""
        return {
            name: p
            for name, p in self.named_parameters()
            if self.trainable == "all" or (name.startswith("layers.") and ".self_attn." in name)
        }

    def log_attention(
        self, inputs_embeds: torch.Tensor, query: AttentionQuery, rope_positions: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Student log-attention ``(H, K)`` of layers ``1..n``, one per teacher layer."""
        layers = range(1, len(self.layers))
        rows = attention_rows(self.layers, self.rotary_emb, inputs_embeds, query, layers, rope_positions)
        return [rows[j] for j in range(1, len(self.layers))]

    @torch.no_grad()
    def relevance(
        self, inputs_embeds: torch.Tensor, query: AttentionQuery, rope_positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(K,)`` relevance of the vision tokens: the last layer's head-averaged attention."""
        last_layer = [len(self.layers) - 1]
        last = attention_rows(self.layers, self.rotary_emb, inputs_embeds, query, last_layer, rope_positions)
        return last[len(self.layers) - 1].exp().mean(dim=0)


def distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], temperature: float = 2.0):
    """Sum over layers of ``KL(teacher || student)`` at temperature 1 and ``T`` (times ``T**2``), head-mean."""
    if len(student) != len(teacher):
        raise InputError(f"{len(student)} student layers for {len(teacher)} teacher layers")
    total = torch.zeros((), dtype=torch.float32, device=student[0].device)
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float(), t.float()
        total = total + functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
        soft_t = (t / temperature).log_softmax(-1)
        soft_s = (s / temperature).log_softmax(-1)
        total = total + functional.kl_div(soft_s, soft_t, log_target=True, reduction="batchmean") * temperature**2
    return total


def distill_step(
    rfm: RegionFocusModule,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs_embeds: torch.Tensor,
    query: AttentionQuery,
    temperature: float = 2.0,
    rope_positions: torch.Tensor | None = None,
) -> float:
    """One optimisation step of the RFM towards the LLM's attention on one sequence; returns the loss."""
    rfm.train()
    loss = rfm_distillation_loss(rfm, model, inputs_embeds, query, temperature, rope_positions)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    rfm.eval()
    return float(loss.detach())


def rfm_distillation_loss(
    rfm: RegionFocusModule,
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    query: AttentionQuery,
    temperature: float = 2.0,
    rope_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The RFM's distillation loss on one sequence (differentiable in the RFM only)."""
    teacher = teacher_attention(model, inputs_embeds.detach(), query, rfm.teacher_layers, rope_positions)
    student = rfm.log_attention(inputs_embeds.detach(), query, rope_positions)
    return distillation_loss(student, [teacher[i] for i in rfm.teacher_layers], temperature)


def save_rfm(
    rfm: RegionFocusModule,
    path: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the RFM's trained weights as safetensors with its layer plan in the metadata (atomically).

    An RFM trained with ``trainable="attention"`` writes its attention weights only (the rest is
    the LLM's and is copied from it again on loading). ``dtype`` (e.g. float16) casts the file;
    ``metadata`` adds string entries (the zoo records its settings there).
    """
    from safetensors.torch import save_file

    names = set(rfm.trainable_parameters())
    state = {
        k: v.detach().to(dtype or v.dtype).contiguous().cpu()
        for k, v in rfm.state_dict().items()
        if rfm.trainable == "all" or k in names
    }
    meta = {
        **(metadata or {}),
        "format": "rsvl-rfm",
        "teacher_layers": json.dumps(rfm.teacher_layers),
        "trainable": rfm.trainable,
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def read_rfm_file(path: str | os.PathLike[str], tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of an RFM file written by :func:`save_rfm` (InputError otherwise).

    ``tensors=False`` reads the metadata only (the tensors dict is then empty).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError("RFM weights file not found", path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            keys = fh.keys() if tensors else []
            state = {k: fh.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"not a safetensors RFM file: {exc}", path) from None
    if meta.get("format") != "rsvl-rfm":
        raise InputError("not an RFM weights file (no rsvl-rfm metadata)", path)
    return meta, state


def load_rfm(model: nn.Module, path: str | os.PathLike[str]) -> RegionFocusModule:
    """An RFM for ``model`` with the weights at ``path`` (written by :func:`save_rfm`).

    A file of attention weights only (``trainable="attention"``) must hold exactly those: the other
    weights are the ones just copied from ``model``'s LLM.
    """
    meta, state = read_rfm_file(path)
    trainable = meta.get("trainable", "all")
    if trainable not in RFM_TRAINABLE:
        raise InputError(f"unknown RFM trainable {trainable!r} in the file's metadata", Path(path))
    rfm = RegionFocusModule(model, json.loads(meta["teacher_layers"]), trainable)
    expected = set(rfm.state_dict()) if trainable == "all" else set(rfm.trainable_parameters())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise InputError(
            f"the RFM weights do not fit this model: missing {missing[:3]}, unexpected {extra[:3]}", Path(path)
        )
    try:
        rfm.load_state_dict(state, strict=trainable == "all")
    except RuntimeError as exc:
        raise InputError(f"the RFM weights do not fit this model: {str(exc).splitlines()[0]}", Path(path)) from None
    return rfm.eval()

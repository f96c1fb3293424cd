"""VLM4RSDet's VLM branch: FPN maps -> visual tokens -> GLCA -> Florence-2 language-model loss (LHPS).

The paper's "Collaborative Optimization Framework": each FPN level ``P_i`` (256 channels) becomes
visual tokens ``N_i = Proj(Reshape(Interp(Conv1x1(P_i))))`` (1x1 conv to ``d_v = 1024``, bilinear
resize to 32x32, flatten, projector to the language model's width); GLCA adds level-5 context to
levels 1-4; each level's tokens, followed by the embedded task prompt, are the Florence-2 encoder's
input ``T_i = Concat(T_i^v, T^t)``; the decoder learns to write the image's boxes as Florence-2 text
(``category<loc_x1><loc_y1><loc_x2><loc_y2>``, or 8 locs clockwise for OBB, ``<sep>`` between
objects). The resulting ``L_llm`` flows back through the tokens into the shared FPN and backbone.

Level order: ``features[0]`` is the finest map (P3 in an FCOS/RetinaNet FPN, the paper's ``P_1``)
and ``features[-1]`` the coarsest (the paper's ``P_5``, GLCA's global ``N_5``).

Input layout follows Florence-2's processor: visual tokens, then ``<s> prompt </s>``; targets are
``<s> text </s>`` (the released checkpoints decode from ``</s>`` and start their answers with
``<s>``), padded with -100.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional
from transformers.models.florence2.modeling_florence2 import shift_tokens_right

from rsvl.errors import GeometryError, InputError
from rsvl.geometry.boxes import hbb_area, obb_area, obb_to_hbb
from rsvl.geometry.codecs import Florence2Codec, objects_from_arrays
from rsvl.models.florence2 import SEP_TOKEN, extend_position_embeddings, task_prompt_text

logger = logging.getLogger(__name__)

__all__ = ["LHPS", "FeatureTokens", "VLMBranch", "box_sizes", "box_target_text", "glca"]


# --------------------------------------------------------------------------- visual tokens


class FeatureTokens(nn.Module):
    """``P_i (N, C, h, w)`` -> visual tokens ``(N, grid*grid, d_model)``, shared across levels.

    1x1 conv to ``visual_dim`` channels, bilinear resize to ``grid x grid`` (any input size),
    row-major flatten, then a LLaVA-style projector ``Linear -> GELU -> Linear`` to the language
    model's width (the paper: ``d_v = 1024``, 32x32).
    """

    def __init__(self, in_channels: int = 256, visual_dim: int = 1024, grid: int = 32, d_model: int = 768) -> None:
        super().__init__()
        if grid < 1:
            raise InputError(f"grid must be a positive integer; got {grid}")
        self.grid = int(grid)
        self.conv = nn.Conv2d(in_channels, visual_dim, kernel_size=1)
        self.proj = nn.Sequential(nn.Linear(visual_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, feature: Tensor) -> Tensor:
        x = self.conv(feature)
        x = functional.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return self.proj(x.flatten(2).transpose(1, 2))


def glca(tokens: Sequence[Tensor]) -> list[Tensor]:
    """Global-Local Cross-Attention, exactly the paper's parameter-free formula.

    ``T_i = softmax(N_i N_5^T / sqrt(d)) N_5 + N_i`` for every level but the last, ``T_5 = N_5``;
    ``N_5 = tokens[-1]`` (the coarsest level), ``d`` the token width. Each tensor is ``(N, L, d)``.
    """
    if not tokens:
        raise InputError("glca needs at least one level of tokens")
    top = tokens[-1]
    scale = 1.0 / math.sqrt(top.shape[-1])
    out = [torch.softmax(n @ top.transpose(-1, -2) * scale, dim=-1) @ top + n for n in tokens[:-1]]
    return [*out, top]


# --------------------------------------------------------------------------- LHPS


class LHPS(nn.Module):
    """Learnable Hierarchical Prediction Strategy: objects split over the levels by size.

    ``beta`` (one logit per level, initialised equal) gives the proportions
    ``beta* = softmax(beta)`` (positive, summing to 1; the paper writes ``beta_i / sum beta_j``,
    softmax keeps that positive without clamping). :meth:`split` sorts objects by size, smallest
    first, and gives the first ``M_1 = ceil(beta*_1 M)`` to the finest level, the next
    ``M_2 = ceil(beta*_2 M)`` to the next, and so on; the ceilings can over-count, so a later group
    gets only what is left (possibly nothing) and the last group always takes the rest. Every
    object lands in exactly one group.

    How ``beta`` learns (our interpretation: the paper does not say how a rounded-up count gets a
    gradient): the counts carry none, so ``beta*`` also weights the per-level language-model
    losses, ``L_llm = sum_i beta*_i L_i`` (= ``mean_i (num_levels * beta*_i) L_i``; equal ``beta``
    is the plain mean over levels). The gradient shifts weight, and with it objects, towards levels
    whose text is cheaper to predict: empty coarse levels gain weight (in a tiny overfit run with 3
    objects, 0.2 -> ~0.3 each for the two empty levels after 150 steps). Softmax keeps every share
    positive, and the objects a growing share brings raise that level's loss, which limits the drift.
    """

    def __init__(self, num_levels: int = 5) -> None:
        super().__init__()
        if num_levels < 1:
            raise InputError(f"num_levels must be >= 1; got {num_levels}")
        self.num_levels = int(num_levels)
        self.beta = nn.Parameter(torch.zeros(self.num_levels))

    def weights(self) -> Tensor:
        """``beta* = softmax(beta)``: the normalised, positive proportions (differentiable)."""
        return torch.softmax(self.beta, dim=0)

    def counts(self, m: int) -> list[int]:
        """``M_i = ceil(beta*_i * M)`` before the leftover rule.

        Computed in float64 with a ``1e-9 * M`` slack, so round-off cannot push an exact product
        over an integer (equal betas and ``M = 10`` give 2 each, not 3).
        """
        props = torch.softmax(self.beta.detach().double(), dim=0).cpu().tolist()
        return [math.ceil(p * m - 1e-9 * max(m, 1)) for p in props]

    def split(self, sizes: Tensor) -> list[Tensor]:
        """Indices into ``sizes`` (shape ``(M,)``) for each level, finest level first.

        Objects are sorted by size ascending (ties by original index); groups follow that order.
        """
        sizes = torch.as_tensor(sizes).reshape(-1)
        m = int(sizes.numel())
        order = torch.from_numpy(np.argsort(sizes.detach().double().cpu().numpy(), kind="stable")).long()
        groups, start = [], 0
        for level, count in enumerate(self.counts(m)):
            stop = m if level == self.num_levels - 1 else min(start + count, m)
            groups.append(order[start:stop].to(sizes.device))
            start = stop
        return groups


# --------------------------------------------------------------------------- targets


def _box_array(boxes: Any) -> np.ndarray:
    """``(N, 4)`` or ``(N, 5)`` float64 numpy copy of boxes (tensor, array or list)."""
    arr = np.asarray(boxes.detach().cpu() if hasattr(boxes, "detach") else boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise GeometryError(f"boxes must be (N, 4) xyxy or (N, 5) le90; got shape {arr.shape}")
    return arr


def box_sizes(boxes: Any) -> Tensor:
    """Areas used to sort objects for LHPS: ``w * h`` of xyxy (N, 4) or le90 (N, 5) boxes."""
    arr = _box_array(boxes)
    area = hbb_area(arr) if arr.shape[1] == 4 else obb_area(arr)
    return torch.as_tensor(area, dtype=torch.float64)


def box_target_text(boxes: Any, names: Sequence[str], image_size: tuple[int, int], obb: bool) -> str:
    """Florence-2 target text for one image via :class:`rsvl.geometry.codecs.Florence2Codec`.

    ``boxes`` are ``(N, 4)`` xyxy or ``(N, 5)`` le90 pixels of the network input image of size
    ``image_size = (H, W)``. HBB text is ``name`` + 4 locs; OBB text ``name`` + 8 locs (polygon
    clockwise); ``<sep>`` between objects; ``""`` without objects. For HBB text a le90 box is
    written as its enclosing xyxy box.
    """
    arr = _box_array(boxes)
    if not obb and arr.shape[1] == 5:
        arr = np.asarray(obb_to_hbb(arr), dtype=np.float64)
    height, width = image_size
    codec = Florence2Codec(obb=obb)
    return codec.encode(objects_from_arrays(list(names), arr), (float(width), float(height)))


# --------------------------------------------------------------------------- the branch


class VLMBranch(nn.Module):
    """The VLM branch: FPN maps + box targets -> Florence-2 language-model loss ``L_llm``.

    Args:
        florence: a ``transformers.Florence2ForConditionalGeneration`` (its vision tower and image
            projector are never run and are frozen here; the BART encoder-decoder is trained).
        tokenizer: its tokenizer, holding ``<sep>`` and the ``<loc_k>`` tokens.
        in_channels: FPN channels (256).
        num_levels: FPN levels fed to the branch (5).
        visual_dim, grid: the 1x1 conv width and token grid (1024, 32x32 in the paper).
        obb: write oriented boxes (8 locs) instead of horizontal ones (4 locs).
        use_glca: apply :func:`glca` (off = the ablation without it).
        use_lhps: split objects over levels by size with :class:`LHPS`. Off, every level learns to
            write all objects (Florence-2's "one feature layer predicts everything", applied to
            each level) and the level losses are averaged with equal weights.
        prompt: the task prompt (see :func:`rsvl.models.florence2.task_prompt_text`).
        max_target_tokens: longest target sequence incl. ``<s>``/``</s>`` (2048 in the paper);
            longer targets are cut after the last whole object that fits (a warning is logged
            once).

    If the model's learned position tables are shorter than ``grid**2`` + prompt tokens (encoder)
    or ``max_target_tokens`` (decoder), they are extended with
    :func:`rsvl.models.florence2.extend_position_embeddings` (Florence-2-base has 1,024).

    The loss: per level, the token-mean cross-entropy over the batch, ``L_i``; then
    ``L_llm = sum_i w_i L_i`` with ``w = LHPS.weights()`` (or ``1 / num_levels`` without LHPS).
    Every (image, level) pair is one sequence; all of them run in one Florence-2 call. A level
    without objects gets the empty target ``<s></s>`` (the model also learns "nothing here").
    """

    def __init__(
        self,
        florence: nn.Module,
        tokenizer: Any,
        *,
        in_channels: int = 256,
        num_levels: int = 5,
        visual_dim: int = 1024,
        grid: int = 32,
        obb: bool = False,
        use_glca: bool = True,
        use_lhps: bool = True,
        prompt: str = "<OD>",
        max_target_tokens: int = 2048,
    ) -> None:
        super().__init__()
        missing = [t for t in (SEP_TOKEN, "<loc_0>", "<loc_999>") if t not in tokenizer.get_vocab()]
        if missing:
            raise InputError(f"the Florence-2 tokenizer lacks {missing}; load it with rsvl.models.florence2")
        if max_target_tokens < 3:
            raise InputError(f"max_target_tokens must be >= 3 (<s>, one token, </s>); got {max_target_tokens}")
        self.florence = florence
        self.tokenizer = tokenizer
        self.num_levels = int(num_levels)
        self.obb = bool(obb)
        self.use_glca = bool(use_glca)
        self.max_target_tokens = int(max_target_tokens)
        text_cfg = florence.config.text_config
        self.tokens = FeatureTokens(in_channels, visual_dim, grid, text_cfg.d_model)
        self.lhps = LHPS(num_levels) if use_lhps else None
        prompt_ids = tokenizer(task_prompt_text(prompt, tokenizer), add_special_tokens=True).input_ids
        self.register_buffer("prompt_ids", torch.tensor(prompt_ids, dtype=torch.long), persistent=False)
        self._sep_id = tokenizer.convert_tokens_to_ids(SEP_TOKEN)
        self._warned_truncation = False
        extend_position_embeddings(florence, max(grid * grid + len(prompt_ids), self.max_target_tokens))
        for unused in (florence.model.vision_tower, florence.model.multi_modal_projector):
            unused.requires_grad_(False)

    # ----------------------------------------------------------------- inputs

    def encoder_inputs(self, features: Sequence[Tensor]) -> Tensor:
        """``(B * num_levels, grid**2 + prompt, d_model)``: tokens (GLCA'd) then ``<s> prompt </s>``.

        Rows are ordered image-major: row ``b * num_levels + i`` is image ``b``, level ``i``.
        """
        if len(features) != self.num_levels:
            raise InputError(f"expected {self.num_levels} feature levels, got {len(features)}")
        levels = [self.tokens(f) for f in features]
        if self.use_glca:
            levels = glca(levels)
        embed = self.florence.get_input_embeddings()
        visual = torch.stack(levels, dim=1).flatten(0, 1).to(embed.weight.dtype)
        prompt = embed(self.prompt_ids).unsqueeze(0).expand(visual.shape[0], -1, -1)
        return torch.cat([visual, prompt], dim=1)

    def level_texts(self, target: dict[str, Any]) -> list[str]:
        """The target text of each level for one image (LHPS split, or everything everywhere)."""
        boxes = _box_array(target["boxes"])
        names = list(target["names"])
        if len(names) != boxes.shape[0]:
            raise InputError(f"target has {boxes.shape[0]} boxes but {len(names)} names")
        if self.lhps is None:
            groups = [np.arange(len(names))] * self.num_levels
        else:
            groups = [g.sort().values.cpu().numpy() for g in self.lhps.split(box_sizes(boxes))]
        size = target["image_size"]
        return [box_target_text(boxes[g], [names[k] for k in g], size, self.obb) for g in groups]

    def _target_ids(self, text: str) -> list[int]:
        """``<s> text </s>`` ids, cut after the last whole object if longer than the limit."""
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        if len(ids) <= self.max_target_tokens:
            return ids
        if not self._warned_truncation:
            logger.warning(
                "VLM target of %d tokens cut to at most %d (max_target_tokens); later objects are dropped",
                len(ids),
                self.max_target_tokens,
            )
            self._warned_truncation = True
        body = ids[1:-1]
        room = self.max_target_tokens - 2
        # cut where a whole object ends (a <sep>, or the end): never inside an object; if not even
        # the first object fits, the target is empty rather than a half label
        cuts = [k for k, t in enumerate(body) if t == self._sep_id and k <= room]
        return [ids[0], *body[: max(cuts, default=0)], ids[-1]]

    def labels(self, targets: Sequence[dict[str, Any]]) -> Tensor:
        """``(B * num_levels, T)`` label ids padded with -100, rows ordered like :meth:`encoder_inputs`."""
        rows = [self._target_ids(text) for target in targets for text in self.level_texts(target)]
        length = max(len(r) for r in rows)
        out = torch.full((len(rows), length), -100, dtype=torch.long)
        for k, row in enumerate(rows):
            out[k, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    # ----------------------------------------------------------------- loss

    def level_weights(self) -> Tensor:
        """``w_i`` of ``L_llm = sum_i w_i L_i``: LHPS's ``beta*`` or uniform."""
        if self.lhps is not None:
            return self.lhps.weights()
        return torch.full((self.num_levels,), 1.0 / self.num_levels, device=self.prompt_ids.device)

    def level_losses(self, features: Sequence[Tensor], targets: Sequence[dict[str, Any]]) -> Tensor:
        """``(num_levels,)`` token-mean cross-entropy of each level over the batch."""
        batch = features[0].shape[0]
        if len(targets) != batch:
            raise InputError(f"got {len(targets)} targets for a batch of {batch} feature maps")
        inputs = self.encoder_inputs(features)
        labels = self.labels(targets).to(inputs.device)
        text_cfg = self.florence.config.text_config
        decoder_ids = shift_tokens_right(labels, text_cfg.pad_token_id, text_cfg.decoder_start_token_id)
        logits = self.florence(inputs_embeds=inputs, decoder_input_ids=decoder_ids, use_cache=False).logits
        flat = logits.flatten(0, 1).float()
        ce = functional.cross_entropy(flat, labels.flatten(), ignore_index=-100, reduction="none")
        ce = ce.view(batch, self.num_levels, -1).sum(dim=(0, 2))
        counts = (labels != -100).view(batch, self.num_levels, -1).sum(dim=(0, 2))
        return ce / counts.clamp_min(1)

    def forward(self, features: Sequence[Tensor], targets: Sequence[dict[str, Any]]) -> Tensor:
        """Scalar ``L_llm`` (see the class docstring); differentiable w.r.t. ``features``.

        ``features``: ``num_levels`` maps ``(B, C, h_i, w_i)``, finest first. ``targets``: one dict
        per image, ``{"boxes": (N, 4) xyxy | (N, 5) le90, "names": [str] * N, "image_size": (H, W)}``
        in pixels of the network input.
        """
        losses = self.level_losses(features, targets)
        return (self.level_weights().to(losses.dtype) * losses).sum()

    # ----------------------------------------------------------------- inspection

    @torch.no_grad()
    def generate_text(self, features: Sequence[Tensor], max_new_tokens: int = 64) -> list[list[str]]:
        """Greedy Florence-2 text per image and level (``<loc_k>`` and ``<sep>`` kept, ``<s>``,
        ``</s>`` and padding removed), e.g. to check what the branch has learnt; decode boxes with
        :class:`rsvl.geometry.codecs.Florence2Codec`.
        """
        was_training = self.training
        self.eval()
        try:
            inputs = self.encoder_inputs(features)
            encoder_outputs = self.florence.get_encoder()(inputs_embeds=inputs)
            text_cfg = self.florence.config.text_config
            ids = self.florence.generate(
                encoder_outputs=encoder_outputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                no_repeat_ngram_size=0,
                decoder_start_token_id=text_cfg.decoder_start_token_id,
                pad_token_id=text_cfg.pad_token_id,
                eos_token_id=text_cfg.eos_token_id,
            )
        finally:
            self.train(was_training)
        drop = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        rows = [[t for t in row.tolist() if t not in drop] for row in ids]
        texts = [self.tokenizer.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in rows]
        return [texts[b : b + self.num_levels] for b in range(0, len(texts), self.num_levels)]

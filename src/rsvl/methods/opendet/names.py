"""Open-Det's Object Name Generator (ONG): FlanT5 decodes each object's VL-prompt into its name.

Follows the authors' ``Generate_with_T5`` (Med-Process/Open-Det2,
``projects/DDETRS/ddetrs/models/qfree_det/t5.py``) around the real
``transformers.T5ForConditionalGeneration``:

* each object's VL-prompt ``(D,)`` goes through ``input_proj`` (``Linear(D -> d_model)``, identity when
  equal), is L2-normalised (``x / (|x| + 1e-6)``), passes dropout 0.1 (training only) and is the
  T5 encoder's whole input: ``inputs_embeds`` of shape ``(N, 1, d_model)``, attention mask 1;
* :meth:`NameGenerator.loss` is teacher-forced cross-entropy of the tokenised names (at most 32
  tokens, padding -> -100);
* :meth:`NameGenerator.denoise_loss` is the same loss on noised *text* embeddings of the names
  (Gaussian noise with the embeddings' own std, on 90 % of the elements), which teaches the
  generator to read text-like prompts before the detector's prompts are any good;
* :meth:`NameGenerator.generate` runs beam search (3 beams, 3 returned) per object and
  :meth:`NameGenerator.generate_joined` joins the candidates with ``", "`` as the authors do.

Deviations, on purpose:

* The prompt is normalised at generation time too. The authors' ``text_decoder`` skips the
  normalisation (and the adapter when the width is already 768) that training applies, so the
  encoder sees inputs of another scale than it was trained on; normalising in both is the
  consistent choice (dropout, of course, only in training).
* The authors override FlanT5's ``dense_act_fn`` to exact ``gelu``; the checkpoint's own
  ``gelu_new`` (tanh approximation) is kept here. The difference is below 1e-3 per activation.

The "LoRA head" (:meth:`NameGenerator.add_lora_head`): the vocabulary matrices are 24.7 M of
FlanT5-base's parameters (32128 x 768). In the early stage the whole T5 stays frozen and only the
prompt adapter plus low-rank adapters on the output head (``lm_head``) and on the decoder's token
embedding are trained (``trainable_parameters("head")``); later ``trainable_parameters("full")``
unfreezes everything. The adapters are the real ``peft`` LoRA layers (``inject_adapter_in_model``).
The token embedding adapter sits on ``decoder.embed_tokens``, not on ``shared``: in transformers 5
the encoder and decoder stacks hold their own ``nn.Embedding`` modules (sharing ``shared``'s weight
tensor), so ``shared`` is never *called* in the forward pass and a LoRA wrapped around it would be
dead weight. (The encoder's embedding is never called either: the encoder reads ``inputs_embeds``.)

Mapping names onto a fixed vocabulary (the authors' LVIS evaluation): :func:`map_names_to_categories`
and :func:`open_scores`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import string
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5Config, T5ForConditionalGeneration, T5Tokenizer

from rsvl.errors import InputError
from rsvl.models.folders import check_model_folder, load_pretrained, torch_dtype
from rsvl.models.text_encoders import TextEncoder

logger = logging.getLogger(__name__)

__all__ = [
    "LORA_TARGETS",
    "STAGES",
    "NameGenerator",
    "build_t5_tokenizer",
    "map_names_to_categories",
    "noise_text_embeds",
    "open_scores",
    "tiny_t5",
]

#: Modules of ``T5ForConditionalGeneration`` that :meth:`NameGenerator.add_lora_head` adapts.
LORA_TARGETS = ("lm_head", "decoder.embed_tokens")
#: Training stages of :meth:`NameGenerator.trainable_parameters`.
STAGES = ("head", "full")
#: Characters of a generated name kept for the vocabulary mapping (authors: CLIP's 77-token context).
NAME_CHARS = 75


class NameGenerator(nn.Module):
    """VL-prompts -> object names with a T5 encoder-decoder.

    Args:
        model: a ``T5ForConditionalGeneration`` (FlanT5-base in Open-Det).
        tokenizer: its tokenizer (needs pad and eos tokens).
        prompt_dim: width of the VL-prompts (None: T5's ``d_model``).
        max_length: names are truncated to this many tokens in the losses (authors: 32).
        dropout: dropout on the normalised prompt in training (authors: 0.1).
    """

    def __init__(
        self,
        model: T5ForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        prompt_dim: int | None = None,
        max_length: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the T5 tokenizer needs a pad and an eos token")
        self.model = model
        self.tokenizer = tokenizer
        self.d_model = int(model.config.d_model)
        self.prompt_dim = int(prompt_dim) if prompt_dim is not None else self.d_model
        self.input_proj: nn.Module = (
            nn.Identity() if self.prompt_dim == self.d_model else nn.Linear(self.prompt_dim, self.d_model)
        )
        self.dropout = nn.Dropout(dropout)
        self.max_length = int(max_length)
        self.has_lora = False

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        prompt_dim: int | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        **kwargs: object,
    ) -> NameGenerator:
        """Load a local FlanT5 folder (``google/flan-t5-base`` layout: config, safetensors, tokenizer.json)."""
        folder = Path(path)
        check_model_folder(folder, "FlanT5", model_type="t5")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # missing or corrupt tokenizer files are input errors
            raise InputError(f"cannot load the FlanT5 tokenizer: {type(exc).__name__}: {exc}", folder) from exc
        model = load_pretrained(T5ForConditionalGeneration, folder, "FlanT5", dtype=torch_dtype(dtype))
        return cls(model, tokenizer, prompt_dim=prompt_dim, **kwargs).to(device)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ inputs and losses

    def embed_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        """``(N, prompt_dim)`` -> the encoder input ``(N, 1, d_model)``: adapter, L2 norm, dropout (training)."""
        if prompts.dim() != 2 or prompts.shape[1] != self.prompt_dim:
            raise ValueError(f"prompts must be (N, {self.prompt_dim}), got {tuple(prompts.shape)}")
        weight = getattr(self.input_proj, "weight", None)
        x = self.input_proj(prompts.to(weight.dtype if weight is not None else self._dtype))
        x = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        return self.dropout(x).to(self._dtype).unsqueeze(1)

    def loss(self, prompts: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """Teacher-forced cross-entropy (mean over name tokens) of ``names[i]`` given ``prompts[i]``.

        Zero prompts give a zero that is still attached to the trainable parameters (so a step
        with no matched object works like any other).
        """
        names = list(names)
        if len(names) != prompts.shape[0]:
            raise ValueError(f"{prompts.shape[0]} prompts but {len(names)} names")
        if not names:
            return self._zero(prompts)
        inputs = self.embed_prompts(prompts)
        tokens = self.tokenizer(
            names, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(inputs.device)
        labels = tokens.input_ids.masked_fill(tokens.input_ids == self.tokenizer.pad_token_id, -100)
        out = self.model(
            inputs_embeds=inputs,
            attention_mask=torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device),
            decoder_attention_mask=tokens.attention_mask,
            labels=labels,
            return_dict=True,
        )
        return out.loss

    def denoise_loss(
        self,
        text_embeds: torch.Tensor,
        names: Sequence[str],
        generator: torch.Generator | None = None,
        prob: float = 0.9,
    ) -> torch.Tensor:
        """:meth:`loss` on :func:`noise_text_embeds` of the names' text embeddings (``(M, prompt_dim)``)."""
        return self.loss(noise_text_embeds(text_embeds, generator=generator, prob=prob), names)

    def _zero(self, like: torch.Tensor) -> torch.Tensor:
        zero = like.sum() * 0.0
        for p in self.parameters():
            if p.requires_grad:
                zero = zero + p.reshape(-1)[0] * 0.0
        return zero

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.dtype

    # ------------------------------------------------------------------ LoRA head and stages

    def add_lora_head(self, rank: int = 16, alpha: int = 16, dropout: float = 0.0) -> None:
        """Wrap :data:`LORA_TARGETS` in peft LoRA layers (rank ``rank``, scale ``alpha / rank``).

        The adapters start as the identity (peft zero-initialises one factor), so the model's output
        does not change until they are trained. Call once, before building the optimizer; then pick
        the stage with :meth:`trainable_parameters`.
        """
        if self.has_lora:
            raise RuntimeError("the LoRA head was already added")
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS))
        with warnings.catch_warnings():
            # transformers 5 reports T5's embeddings as tied; the adapters are never merged, so
            # peft's warning about merging tied layers does not apply.
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
            inject_adapter_in_model(config, self.model)
        self.has_lora = True
        self.trainable_parameters("head")

    def lora_parameters(self) -> list[nn.Parameter]:
        """The LoRA adapter parameters (empty before :meth:`add_lora_head`)."""
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def trainable_parameters(self, stage: str) -> list[nn.Parameter]:
        """Set ``requires_grad`` for ``stage`` and return the parameters to optimise.

        * ``"head"``: ``input_proj`` and the LoRA adapters; every T5 weight frozen (with no LoRA
          head added this is the authors' stage 1: the adapter alone).
        * ``"full"``: everything (T5, adapters, ``input_proj``).
        """
        if stage not in STAGES:
            raise InputError(f"unknown name-generator stage {stage!r}; choose one of {', '.join(STAGES)}")
        lora_ids = {id(p) for p in self.lora_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(stage == "full" or id(p) in lora_ids)
        for p in self.input_proj.parameters():
            p.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        prompts: torch.Tensor,
        num_beams: int = 3,
        num_return_sequences: int = 3,
        max_new_tokens: int = 30,
        batch_size: int = 200,
    ) -> list[list[str]]:
        """Beam-search names per object: ``N`` lists of distinct, stripped, non-empty candidates.

        Runs in eval mode (restored after), so equal prompts give equal names. ``batch_size`` objects
        go through the model at a time (the authors use 200).
        """
        if not 1 <= num_return_sequences <= num_beams:
            raise ValueError(f"need 1 <= num_return_sequences <= num_beams, got {num_return_sequences}, {num_beams}")
        results: list[list[str]] = []
        with self._eval():
            for start in range(0, prompts.shape[0], batch_size):
                inputs = self.embed_prompts(prompts[start : start + batch_size])
                sequences = self.model.generate(
                    inputs_embeds=inputs,
                    attention_mask=torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device),
                    num_beams=num_beams,
                    num_return_sequences=num_return_sequences,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                )
                texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
                for i in range(inputs.shape[0]):
                    beams = (t.strip() for t in texts[i * num_return_sequences : (i + 1) * num_return_sequences])
                    results.append(list(dict.fromkeys(t for t in beams if t)))
        return results

    def generate_joined(self, prompts: torch.Tensor, **kwargs: int) -> list[str]:
        """:meth:`generate` with each object's candidates joined by ``", "`` (the authors' output)."""
        return [", ".join(names) for names in self.generate(prompts, **kwargs)]

    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)


def noise_text_embeds(
    text_embeds: torch.Tensor, generator: torch.Generator | None = None, prob: float = 0.9
) -> torch.Tensor:
    """``x + m * e``: ``e ~ N(0, sigma^2)`` with ``sigma = x.std()`` over the whole tensor, ``m ~ Bernoulli(prob)``.

    The authors' text denoising: the name generator learns to name *noised* text embeddings, a
    stand-in for the imperfect VL-prompts the detector produces. ``sigma`` is detached (a
    statistic, not a path for gradients). ``generator`` must live on ``text_embeds``' device.
    """
    if text_embeds.numel() == 0:
        return text_embeds
    sigma = text_embeds.detach().float().std() if text_embeds.numel() > 1 else text_embeds.new_zeros(())
    kwargs = {"generator": generator, "device": text_embeds.device}
    noise = torch.randn(text_embeds.shape, **kwargs) * sigma
    keep = torch.rand(text_embeds.shape, **kwargs) < prob
    return text_embeds + (noise * keep).to(text_embeds.dtype)


def map_names_to_categories(
    names: Sequence[str], category_embeds: torch.Tensor, encoder: TextEncoder, top_k: int = 15
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map generated names onto a fixed vocabulary (the authors' LVIS evaluation).

    Each name (e.g. a joined ``"storage tank, tank, oil tank"``) is cut to 75 characters, embedded
    with ``encoder.encode_names`` (``'a ' + name``), and compared with the normalised
    ``category_embeds`` ``(C, D)`` (best made with ``encoder.encode_names(categories)``):
    ``sim = clamp(t @ E^T, 0, 1)``. Returns the ``top_k`` (at most C) categories per name:
    ``indices (N, k)`` long and ``sims (N, k)`` float32, best first.
    """
    if category_embeds.dim() != 2 or category_embeds.shape[1] != encoder.dim:
        raise ValueError(f"category_embeds must be (C, {encoder.dim}), got {tuple(category_embeds.shape)}")
    k = min(int(top_k), category_embeds.shape[0])
    texts = encoder.encode_names([str(n)[:NAME_CHARS] for n in names])
    sims = (texts @ category_embeds.to(texts).T).clamp(0.0, 1.0)
    values, indices = sims.topk(k, dim=1) if k > 0 else (sims[:, :0], sims[:, :0].long())
    return indices, values


def open_scores(obj_prob: torch.Tensor, sims: torch.Tensor) -> torch.Tensor:
    """Detection score per (object, category): ``sqrt(objectness * name similarity)``."""
    return torch.sqrt(obj_prob[:, None] * sims)


#: Words the tiny tokenizer keeps whole (other text falls back to single characters).
_TINY_WORDS = ("storage", "tank", "plane", "ship", "small", "vehicle", "large", "harbor", "bridge", "car", "court")


def build_t5_tokenizer(words: Sequence[str] = _TINY_WORDS) -> T5Tokenizer:
    """A real ``T5Tokenizer`` (transformers 5: tokenizers-backed Unigram) built in memory, no sentencepiece.

    Layout as T5's: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then ``▁`` and the pieces: ``▁word`` for
    each of ``words`` (preferred), then ``a``-``z``, ``A``-``Z``, ``0``-``9`` and ``-,.'/()`` alone and with ``▁``,
    so any ASCII word text tokenises and decodes back. No sentinel (``<extra_id_*>``) tokens.
    """
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    for word in words:
        if "▁" + word not in seen:
            pieces.append(("▁" + word, -1.0))
            seen.add("▁" + word)
    for ch in string.ascii_letters + string.digits + "-,.'/()":
        for piece, score in ((ch, -4.0), ("▁" + ch, -4.5)):
            if piece not in seen:
                pieces.append((piece, score))
                seen.add(piece)
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_t5(seed: int = 0, d_model: int = 32, prompt_dim: int | None = None, **kwargs: object) -> NameGenerator:
    """A seeded random tiny FlanT5-shaped generator for tests: gated-GELU, 2+2 layers, an untied
    ``lm_head`` and no output rescaling (as FlanT5), with :func:`build_t5_tokenizer`."""
    tokenizer = build_t5_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // 4,
        d_ff=2 * d_model,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,  # transformers 5 reads this as "no decoder output scaling" (T5 v1.1 / FlanT5)
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    # transformers 5 ties lm_head to the shared embedding for every T5; FlanT5's checkpoints hold a
    # separate head, so untie it (and drop it from the tied keys so save_pretrained keeps it).
    model.lm_head.weight = nn.Parameter(torch.randn(config.vocab_size, d_model) * d_model**-0.5)
    model.all_tied_weights_keys.pop("lm_head.weight", None)
    generator = NameGenerator(model, tokenizer, prompt_dim=prompt_dim, **kwargs)  # type: ignore[arg-type]
    return generator

"""LRS-VQA end to end: pyramid -> coarse-to-fine selection -> pruned tokens -> the language model's answer.

:class:`LargeImageVQA` holds a LLaVA-style model (:class:`rsvl.models.llava.LlavaBundle`: the real
``transformers.LlavaForConditionalGeneration``) and a relevance source, and answers one question
about one (possibly enormous) image at a time. Three ways of choosing the vision tokens, for the
method and its baselines:

* ``pyramid`` (the method): global view + the kept tokens of the coarse-to-fine search;
* ``no_prune``: the same tiles, every token of them (the full-token baseline);
* ``uniform``: global view + every token of the base level (the uniform-downsample baseline).

Relevance comes from the LLM's own text-to-image attention at ``selection.layer``
(:class:`LLMAttentionScorer`, training-free) or from a distilled Region Focus Module
(:class:`RFMScorer`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rsvl.errors import InputError
from rsvl.io.raster import RasterSource
from rsvl.methods.lrsvqa.config import LRSVQAConfig
from rsvl.methods.lrsvqa.dip import DynamicPyramid
from rsvl.methods.lrsvqa.rfm import AttentionQuery, RegionFocusModule, load_rfm
from rsvl.methods.lrsvqa.selection import LevelVisit, Selection, coarse_to_fine, uniform_tokens
from rsvl.models.folders import torch_dtype
from rsvl.utils.device import check_device

__all__ = [
    "LLMAttentionScorer",
    "LargeImageVQA",
    "RFMScorer",
    "RelativeScorer",
    "VQAAnswer",
    "build_bundle",
    "check_weights",
]

logger = logging.getLogger(__name__)

Mode = Literal["pyramid", "no_prune", "uniform"]
MODES: tuple[str, ...] = ("pyramid", "no_prune", "uniform")


class LLMAttentionScorer:
    """Relevance = the LLM's head-averaged attention from the last prompt token at ``layer``."""

    name = "llm_attention"

    def __init__(self, bundle: Any, layer: int) -> None:
        n = int(bundle.model.config.text_config.num_hidden_layers)
        if not 0 <= layer < n:
            raise InputError(f"selection.layer {layer} does not exist: the language model has layers 0..{n - 1}")
        self.bundle, self.layer = bundle, layer

    def score(
        self, global_tokens: torch.Tensor, tokens: torch.Tensor, question: str, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        seq = self.bundle.build_sequence(torch.cat([global_tokens, tokens]), question, positions=positions)
        return self.bundle.text_to_image_attention(seq, self.layer)[global_tokens.shape[0] :]


class RFMScorer:
    """Relevance = the Region Focus Module's last-layer attention over the candidate tokens."""

    name = "rfm"

    def __init__(self, bundle: Any, rfm: RegionFocusModule) -> None:
        self.bundle, self.rfm = bundle, rfm

    def score(
        self, global_tokens: torch.Tensor, tokens: torch.Tensor, question: str, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        seq = self.bundle.build_sequence(torch.cat([global_tokens, tokens]), question, positions=positions)
        keys = slice(seq.image_slice.start + global_tokens.shape[0], seq.image_slice.stop)
        rope = getattr(seq, "position_ids", None)  # grid-position models (Qwen-VL); None: 0..T-1
        return self.rfm.relevance(seq.inputs_embeds, AttentionQuery(seq.query_index, keys), rope)


class RelativeScorer:
    """Relevance relative to a question-free prompt: ``score(question) / score(generic_prompt)``.

    Raw text-to-image attention mixes what the question asks for with what the model attends to
    whatever is asked: in a causal LLM, the vision tokens nearest the text (the last tiles in reading
    order) and a few sink tokens. Dividing by the attention under a generic prompt, token by token,
    cancels the second part (Zhang et al., ICLR 2025, "MLLMs know where to look", relative attention).
    """

    def __init__(self, inner: Any, generic_prompt: str, eps: float = 1e-8) -> None:
        self.inner, self.generic_prompt, self.eps = inner, generic_prompt, eps
        self.name = f"{getattr(inner, 'name', type(inner).__name__)}/relative"

    def score(
        self, global_tokens: torch.Tensor, tokens: torch.Tensor, question: str, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        asked = self.inner.score(global_tokens, tokens, question, positions).float()
        generic = self.inner.score(global_tokens, tokens, self.generic_prompt, positions).float()
        return asked / generic.clamp_min(self.eps)


def check_weights(config: LRSVQAConfig, allow_random: bool = False) -> list[str]:
    """The parts that would be random; an InputError unless ``allow_random`` (``--tiny``)."""
    random = []
    if config.model.zoo is not None:
        if config.model.path is not None or config.model.gguf is not None or config.model.family != "llava":
            raise InputError("model.zoo names the whole LLaVA: it takes no model.path or model.gguf (family llava)")
        if config.selection.scorer == "rfm" and config.rfm.path is None:
            random.append("the RFM starts from the LLM's layers, not distilled: pass --rfm-path")
        return random
    if config.model.path is None and config.model.gguf is None:
        random.append("the whole VLM: pass --model-path (a LLaVA folder) or --gguf")
    elif config.model.path is None:
        if config.model.vision_path:
            random.append("the projector (the GGUF language model and the CLIP tower are real)")
        else:
            random.append("the vision tower and projector (only the GGUF language model is real)")
    if config.selection.scorer == "rfm" and config.rfm.path is None:
        random.append("the RFM starts from the LLM's layers, not distilled: pass --rfm-path")
    if random and config.model.path is None and config.model.gguf is None and not allow_random:
        raise InputError(
            "no local weights for " + "; ".join(random) + ". There is nothing to download: point at local "
            "model files, use the zoo's CPU miniature (--model-path lrsvqa-rfm-mini), or pass --tiny to run a "
            "tiny random model (for testing only)"
        )
    return random


def build_bundle(config: LRSVQAConfig) -> Any:
    """The model bundle the settings name (local folder, GGUF language model, or tiny random),
    on ``model.device`` in ``model.dtype``."""
    bundle = _build_bundle(config)
    bundle.model.to(device=check_device(config.model.device), dtype=torch_dtype(config.model.dtype))
    return bundle


def _build_bundle(config: LRSVQAConfig) -> Any:
    from rsvl.models import llava

    check_device(config.model.device)
    if config.model.family == "qwen2_5_vl":
        from rsvl.models import qwen_vl_tiles

        if config.model.gguf is not None:
            raise InputError("model.gguf builds a LLaVA head; it does not apply to model.family qwen2_5_vl")
        tile = config.pyramid.tile_size
        if config.model.path is not None:
            model = config.model
            return qwen_vl_tiles.load_qwen_vl_tiles(model.path, tile or 448, model.device, model.dtype)
        logger.warning("LRS-VQA: no model path, using a tiny RANDOM Qwen2.5-VL (answers are meaningless)")
        return qwen_vl_tiles.tiny_qwen_vl_tiles(tile_size=tile or 56)
    if config.model.zoo is not None:
        from rsvl.zoo import get_model, load_mfrsvlm

        if get_model(config.model.zoo).method != "mfrsvlm":
            raise InputError(f"model.zoo {config.model.zoo!r} is not a zoo VLM (rsvl models list: method mfrsvlm)")
        return load_mfrsvlm(config.model.zoo).bundle  # type: ignore[attr-defined]
    if config.model.path is not None:
        return llava.load_llava(config.model.path, config.model.device, config.model.dtype)
    if config.model.gguf is not None:
        tile = config.pyramid.tile_size or 336
        vision = config.model.vision_path
        return llava.llava_with_gguf_language_model(config.model.gguf, tile_size=tile, vision_path=vision)
    logger.warning("LRS-VQA: no model path, using a tiny RANDOM LLaVA (answers are meaningless)")
    return llava.tiny_llava(tile_size=config.pyramid.tile_size or 56)


@dataclass
class VQAAnswer:
    """One answered question, with what the model looked at."""

    question: str
    answer: str
    mode: str
    n_tokens: int
    full_resolution_tokens: int
    tiles_encoded: int
    levels: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "mode": self.mode,
            "vision_tokens": self.n_tokens,
            "full_resolution_tokens": self.full_resolution_tokens,
            "tiles_encoded": self.tiles_encoded,
            "levels": self.levels,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "image_size": list(self.image_size),
        }


def _visit_record(dip: DynamicPyramid, visit: LevelVisit) -> dict[str, Any]:
    return {
        "level": visit.level,
        "downsample": dip.level(visit.level).downsample,
        "tiles": [list(dip.native_box(t)) for t in visit.tiles],
        "tokens": visit.tokens,
        "kept": visit.kept,
        "chosen": [list(dip.native_box(t)) for t in visit.chosen],
    }


class LargeImageVQA:
    """Answer questions about large images with the pyramid, the selection and a LLaVA-style model.

    Args:
        config: the settings (model, pyramid, selection, RFM).
        bundle: a ready :class:`~rsvl.models.llava.LlavaBundle` (else built from ``config``).
        rfm: a ready Region Focus Module (else loaded from ``config.rfm.path`` when the scorer is ``rfm``).
    """

    def __init__(self, config: LRSVQAConfig | None = None, *, bundle: Any | None = None, rfm: Any = None) -> None:
        self.config = config or LRSVQAConfig()
        self.bundle = bundle if bundle is not None else build_bundle(self.config)
        sel = self.config.selection
        if sel.scorer == "rfm":
            if rfm is None:
                model = self.bundle.model
                path = self.config.rfm.path
                rfm = load_rfm(model, path) if path else RegionFocusModule(model, self.config.rfm.teacher_layers).eval()
            self.scorer: Any = RFMScorer(self.bundle, rfm)
        else:
            self.scorer = LLMAttentionScorer(self.bundle, sel.layer)
        if sel.calibration == "relative":
            self.scorer = RelativeScorer(self.scorer, sel.generic_prompt)
        self.tile_size = int(self.bundle.tile_size)
        if self.config.pyramid.tile_size not in (None, self.tile_size):
            raise InputError(
                f"pyramid.tile_size {self.config.pyramid.tile_size} differs from the vision tower's input "
                f"size {self.tile_size}"
            )

    def open(self, image: str | os.PathLike[str] | RasterSource) -> DynamicPyramid:
        cfg = self.config.pyramid
        return DynamicPyramid(image, self.tile_size, cfg.factor, cfg.max_block_num)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.bundle.name,
            "real_weights": bool(self.bundle.real_weights),
            "scorer": self.scorer.name,
            "settings": self.config.model_dump(mode="json"),
        }

    def select(
        self, dip: DynamicPyramid, question: str, mode: Mode = "pyramid", on_level: Callable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Selection | None]:
        """The vision tokens ``(N, D)`` the LLM reads for ``mode``, their ``(image, row, col)`` positions
        ``(N, 3)``, and the search (None for ``uniform``)."""
        pool = self.config.model.pool
        if mode == "uniform":
            tokens, positions = uniform_tokens(dip, self.bundle, pool)
            return tokens, positions, None
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        selection = coarse_to_fine(
            dip, question, self.bundle, self.scorer, self.config.selection, pool=pool, prune=mode == "pyramid",
            on_level=on_level,
        )  # fmt: skip
        return selection.vision_tokens(), selection.positions, selection

    def full_resolution_tokens(self, dip: DynamicPyramid) -> int:
        """Tokens that tiling the native image (plus the global view) would feed the LLM."""
        full = int(self.bundle.grid_size)  # tokens per tile side before pooling (the global view's)
        grid = self.config.model.pool or full
        return int(full * full + len(dip.level(0)) * grid * grid)

    @torch.inference_mode()
    def answer(
        self,
        image: str | os.PathLike[str] | RasterSource | DynamicPyramid,
        question: str,
        mode: Mode = "pyramid",
        on_level: Callable[[LevelVisit], None] | None = None,
    ) -> VQAAnswer:
        """Answer ``question`` about ``image`` (a path, an open raster or an open pyramid)."""
        if not question or not question.strip():
            raise InputError("the question is empty")
        owned = not isinstance(image, DynamicPyramid)
        dip = self.open(image) if owned else image
        try:
            t0 = time.perf_counter()
            tokens, positions, selection = self.select(dip, question, mode, on_level)
            t1 = time.perf_counter()
            seq = self.bundle.build_sequence(tokens, question, positions=positions)
            text = self.bundle.generate(seq, self.config.model.max_new_tokens)
            t2 = time.perf_counter()
            levels = [_visit_record(dip, v) for v in selection.visits] if selection is not None else []
            return VQAAnswer(
                question=question,
                answer=text,
                mode=mode,
                n_tokens=int(tokens.shape[0]),
                full_resolution_tokens=self.full_resolution_tokens(dip),
                tiles_encoded=selection.tiles_encoded if selection is not None else 1 + len(dip.base_tiles()),
                levels=levels,
                seconds={"select": t1 - t0, "generate": t2 - t1},
                image_size=(dip.source.width, dip.source.height),
            )
        finally:
            if owned:
                dip.close()

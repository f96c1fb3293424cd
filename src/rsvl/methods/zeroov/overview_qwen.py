"""The paper's Overview provider: Qwen2.5-VL's attention from the referring expression to the image.

For one ``(image, expression)``:

1. the prompt is Qwen2.5-VL's chat format with one user turn, the image then the text
   ``"Locate: <expression>"`` (:data:`DEFAULT_INSTRUCTION` + the stripped expression), and the
   assistant header the template adds as generation prompt;
2. the processor resizes the image (``smart_resize`` within ``min_pixels``/``max_pixels``) and
   expands ``<|image_pad|>`` to one token per merged 28x28 cell;
3. **one** forward pass (no generation, inference mode, eager attention); forward hooks on the
   chosen decoder layers' ``self_attn`` keep only the query position's attention row, so the full
   ``L x L`` maps of all layers are never held at once;
4. the rows are averaged over heads, read at the image tokens, laid out row-major on the merged
   grid (:mod:`rsvl.attention.qwen_vl`) and summed over layers with the normalised weights
   (paper: layers 16-19, 0.1/0.1/0.3/0.5).

The query position is the expression's last token (``query="expression_end"``, found by
tokenising the rendered prompt up to the end of the expression and checking it is a prefix of the
whole prompt's tokens) or the prompt's last token (``"prompt_end"``, the ``\\n`` after
``assistant``: the position whose attention produces the first answer token). The paper averages over
"autoregressive steps"; with one forward pass and no generation, these are the two natural choices.

Without ``OverviewConfig.path`` the builder uses a tiny random model (tests only: its maps carry no
meaning) with as many layers as the configured indices need.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from rsvl.attention.maps import CrossAttention
from rsvl.attention.qwen_vl import capture_attention_rows, image_token_layout, text_to_image_attention
from rsvl.errors import InputError
from rsvl.methods.zeroov.config import OverviewConfig
from rsvl.methods.zeroov.providers import OVERVIEW_PROVIDERS, check_image
from rsvl.models.qwen2_5_vl import load_qwen2_5_vl, tiny_qwen2_5_vl

logger = logging.getLogger(__name__)

#: transformers' ``smart_resize`` raises for images whose long side is this many times the short.
MAX_ASPECT = 200

__all__ = ["DEFAULT_INSTRUCTION", "QUERY_MODES", "QwenVLOverview", "build_qwen_overview"]

#: Text before the expression in the user turn.
DEFAULT_INSTRUCTION = "Locate: "
QUERY_MODES = ("expression_end", "prompt_end")


def _layer_span(layers: Sequence[int]) -> str:
    """``16-19`` for consecutive layers, ``3,5,9`` otherwise."""
    ls = list(layers)
    if len(ls) > 1 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"{ls[0]}-{ls[-1]}"
    return ",".join(str(i) for i in ls)


class QwenVLOverview:
    """Cross-attention of a referring expression to the image tokens of a Qwen2.5-VL model.

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration`` loaded with ``attn_implementation="eager"``.
        processor: its ``Qwen2_5_VLProcessor`` (with a chat template).
        layers: 0-based decoder layers to read; each must exist (else :class:`InputError`).
        layer_weights: one non-negative weight per layer (normalised); None is uniform.
        query: ``"expression_end"`` or ``"prompt_end"`` (see the module docstring).
        instruction: text placed before the expression in the user turn.
        real_weights: whether ``model`` holds pretrained weights (recorded in the map).
        source: description recorded in the maps (default ``"qwen2_5_vl layers 16-19"``).
    """

    name = "qwen2_5_vl"

    def __init__(
        self,
        model: torch.nn.Module,
        processor: object,
        layers: Sequence[int] = (16, 17, 18, 19),
        layer_weights: Sequence[float] | None = (0.1, 0.1, 0.3, 0.5),
        query: str = "expression_end",
        instruction: str = DEFAULT_INSTRUCTION,
        real_weights: bool = False,
        source: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.layers = [int(i) for i in layers]
        self.layer_weights = [1.0] * len(self.layers) if layer_weights is None else [float(w) for w in layer_weights]
        if query not in QUERY_MODES:
            raise InputError(f"unknown query {query!r}; choose one of {', '.join(QUERY_MODES)}")
        self.query = query
        self.instruction = instruction
        self.real_weights = bool(real_weights)
        self._check_layers()
        self._check_token_ids()
        self.source = source or f"qwen2_5_vl layers {_layer_span(self.layers)}"

    # ------------------------------------------------------------------ checks

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """The language model's decoder layers (``model.model.language_model.layers``)."""
        return self.model.model.language_model.layers

    def _check_layers(self) -> None:
        count = len(self.decoder_layers)
        if not self.layers:
            raise InputError("need at least one decoder layer to read attention from")
        bad = [i for i in self.layers if not 0 <= i < count]
        if bad:
            raise InputError(f"decoder layers {bad} do not exist: this model has {count} layers (valid 0..{count - 1})")
        if len(self.layer_weights) != len(self.layers):
            raise InputError(f"need one weight per layer: layers {self.layers}, weights {self.layer_weights}")
        if any(w < 0 for w in self.layer_weights) or sum(self.layer_weights) <= 0:
            raise InputError(f"layer weights must be non-negative with a positive sum: {self.layer_weights}")

    def _check_token_ids(self) -> None:
        tokenizer = self.processor.tokenizer
        image_id = int(self.model.config.image_token_id)
        processor_id = tokenizer.convert_tokens_to_ids(self.processor.image_token)
        if processor_id != image_id:
            raise InputError(
                f"the processor's image token {self.processor.image_token!r} has id {processor_id}, "
                f"the model expects {image_id}: tokenizer and model do not belong together"
            )
        merge = int(self.model.config.vision_config.spatial_merge_size)
        if int(self.processor.image_processor.merge_size) != merge:
            got = self.processor.image_processor.merge_size
            raise InputError(f"processor merge size {got} != model's spatial_merge_size {merge}")

    # ------------------------------------------------------------------ prompt

    def prompt(self, expression: str) -> str:
        """The rendered chat prompt (image placeholder not yet expanded) for ``expression``."""
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.instruction + expression}]}
        ]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _expression_end(self, text: str, expression: str, input_ids: torch.Tensor, n_image: int) -> int:
        """Sequence index (after image expansion) of the expression's last token in ``input_ids``.

        The rendered prompt is tokenised without the image, whole and up to the end of the
        expression; the latter must be a prefix of the former (no token straddles the expression's
        end), and every position after the ``<|image_pad|>`` placeholder shifts by ``n_image - 1``.
        """
        end = text.rfind(self.instruction + expression)
        if end < 0:
            raise RuntimeError("the chat template dropped the expression from the prompt")
        end += len(self.instruction + expression)
        tokenizer = self.processor.tokenizer
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        prefix = tokenizer(text[:end], add_special_tokens=False)["input_ids"]
        if full[: len(prefix)] != prefix:
            raise RuntimeError("the expression's last token merges with the text after it; cannot locate it")
        image_id = int(self.model.config.image_token_id)
        if full.count(image_id) != 1 or prefix.count(image_id) != 1:
            raise RuntimeError("expected one image placeholder before the expression in the prompt")
        index = len(prefix) - 1 + (n_image - 1)
        expanded = input_ids[0].tolist()
        if len(expanded) != len(full) + n_image - 1 or expanded[index] != prefix[-1]:
            raise RuntimeError("the processor's tokens differ from the tokenizer's: cannot locate the expression")
        return index

    # ------------------------------------------------------------------ forward

    def _inputs(self, image: np.ndarray, text: str) -> dict[str, torch.Tensor]:
        inputs = self.processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt")
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        out = {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        out["pixel_values"] = out["pixel_values"].to(dtype)
        return out

    @torch.inference_mode()
    def cross_attention(self, image: np.ndarray, expression: str) -> CrossAttention:
        """Attention of the query position to the image, on the processor's merged grid ``(gh, gw)``.

        ``image``: ``(H, W, 3)`` uint8 RGB, any aspect ratio; the grid covers the whole image
        (the processor stretches each axis independently). ``expression``: runs of whitespace
        become one space; empty, or holding special tokens such as ``<|image_pad|>``, is an
        :class:`InputError`.
        """
        image = check_image(image)
        h, w = image.shape[:2]
        if max(h, w) / min(h, w) >= MAX_ASPECT:
            raise InputError(
                f"the image is {w} x {h}: Qwen2-VL's processor refuses aspect ratios of {MAX_ASPECT} and more; "
                "crop it to the area of interest"
            )
        expression = " ".join(str(expression).split())
        if not expression:
            raise InputError("the referring expression is empty")
        specials = [t for t in self.processor.tokenizer.get_added_vocab() if t in expression]
        if specials:
            raise InputError(f"the referring expression contains the model's special tokens {specials}")
        text = self.prompt(expression)
        inputs = self._inputs(np.ascontiguousarray(image), text)
        merge = int(self.model.config.vision_config.spatial_merge_size)
        positions, grid = image_token_layout(
            inputs["input_ids"].cpu(), inputs["image_grid_thw"].cpu(), int(self.model.config.image_token_id), merge
        )
        length = int(inputs["input_ids"].shape[1])
        if self.query == "expression_end":
            query = self._expression_end(text, expression, inputs["input_ids"].cpu(), positions.numel())
        else:
            query = length - 1
        modules = {i: self.decoder_layers[i].self_attn for i in self.layers}
        with capture_attention_rows(modules, query) as rows:
            self.model(**inputs, use_cache=False, logits_to_keep=1)
        missing = [i for i in self.layers if i not in rows]
        if missing:
            raise RuntimeError(f"no attention captured for layers {missing}")
        amap = text_to_image_attention([rows[i] for i in self.layers], query, positions, grid, self.layer_weights)
        return CrossAttention(np.clip(amap, 0.0, None), source=self.source, real_weights=self.real_weights)


@OVERVIEW_PROVIDERS.register("qwen2_5_vl")
def build_qwen_overview(cfg: OverviewConfig) -> QwenVLOverview:
    """The Qwen2.5-VL Overview provider from its config section.

    With ``cfg.path`` the local checkpoint is loaded (eager attention, ``cfg.dtype``, ``cfg.device``);
    without it a tiny **random** model is built (logged as a warning) with ``max(cfg.layers) + 1``
    decoder layers, so the paper's default layers exist.
    """
    if cfg.path is None:
        logger.warning("overview qwen2_5_vl: no model path, using a tiny RANDOM Qwen2.5-VL (maps are meaningless)")
        model, processor = tiny_qwen2_5_vl(
            num_layers=max(cfg.layers) + 1, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels
        )
        model.to(cfg.device)
        return QwenVLOverview(model, processor, cfg.layers, cfg.layer_weights, cfg.query, real_weights=False)
    model, processor = load_qwen2_5_vl(cfg.path, cfg.device, cfg.dtype, cfg.min_pixels, cfg.max_pixels)
    source = f"qwen2_5_vl {cfg.path.name} layers {_layer_span(cfg.layers)}"
    return QwenVLOverview(model, processor, cfg.layers, cfg.layer_weights, cfg.query, real_weights=True, source=source)

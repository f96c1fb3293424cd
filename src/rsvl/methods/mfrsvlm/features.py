"""MF-RSVLM multi-scale, multi-layer CLIP features: a global view plus Hann-blended detail stacks.

What it computes (for each image of a batch):

1. **Global view** -- the image resized to ``global_size`` (the tower's native input, 336) and
   encoded once; the tokens of hidden state ``global_layer`` with CLS dropped, exactly what LLaVA-1.5
   feeds its projector (``global_layer=-2``).
2. **Canvas** -- the image resized (bilinear) to ``canvas_size`` (672).
3. **Windows** -- for each window size (336, 168) the canvas is cut into windows at that size's
   stride, row-major; every window is resized (bilinear, ``align_corners=False``) to the tower input
   size, so a 168 px window is upsampled 2x, and all windows of all images go through the *real*
   ``transformers.CLIPVisionModel`` in chunks of ``chunk_size``; one forward pass with
   ``output_hidden_states=True`` serves every chosen layer (8, 16, 24) and the global view.
4. **Scatter** -- a window's ``T x T`` patch tokens (24 x 24) are average-pooled to its footprint on
   the canvas token grid (``window / patch``: 24 for 336 px windows, 12 for 168 px ones), multiplied
   by a 2-D Hann window, summed onto the canvas grid (``canvas / patch`` = 48 x 48) and divided by
   the summed weights, so overlapping windows blend and a constant feature stays constant.
5. **Stacks** -- each (window size, layer) canvas map is sampled to ``stack_grid x stack_grid`` tokens
   (24 x 24 = 576, like the global view) in one of two ways (``stack_mode``):
   ``phase`` (default, the authors' code): the ``f = canvas_tokens / stack_grid`` strided phases
   ``map[a::f, b::f]`` each become a stack, so no token is averaged away and each (size, layer) gives
   ``f**2`` stacks; ``pool``: one stack per (size, layer) by adaptive average pooling.

Stack order (the ``K`` axis of :attr:`MultiScaleFeatures.detail`): window sizes in config order,
then layers in config order, then phases ``(a, b)`` row-major -- the authors' loop order. With the
defaults K = 2 sizes x 3 layers x 4 phases = 24 stacks of 576 tokens; ``stack_mode="pool"`` gives 6.
:attr:`MultiScaleFeatures.labels` names every stack.

Choices against the authors' code (``Yunkaidang/RSVLM``, ``mfrsvlm/model/deepstack.py``):

* Strides: the authors derive each window's stride as half the window (``stride_tokens =
  tokens_side // 2``): 168 px for 336 px windows (3 x 3 windows) and **84 px** for 168 px windows
  (7 x 7), so the small windows overlap too; the paper's "stride 168" is only the first. We follow
  the code (``strides=(168, 84)``); ``strides=168`` gives the 3 x 3 and 4 x 4 grid instead.
* Hann window: the authors use ``torch.hann_window(n, periodic=False)``, which is zero on a window's
  outer ring, so the outermost canvas row and column get zero total weight and, after their
  ``clamp(1e-6)``, come out as all-zero features. We sample the Hann window at token centres,
  ``w_i = sin^2(pi (i + 1/2) / n)`` (= the odd taps of a symmetric Hann window of length
  ``2n + 1``): same bell shape, symmetric, strictly positive, so every canvas cell has weight > 0
  and the normalisation is exact everywhere.
* Global layer: LLaVA-1.5 uses -2 (our default); the authors' fine-tuning script passes
  ``--mm_vision_select_layer 24`` (the last layer), set ``global_layer=24`` to match.
* Input resolution: the authors feed the 336 px processor output and upsample *that* to the 672
  canvas (and letterbox the global view with ``image_aspect_ratio=pad``); :func:`extract` takes any
  normalised ``(B, 3, H, W)`` batch, so callers can give the full-resolution image (or a letterboxed
  one) and the canvas then holds real detail.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.nn import functional
from transformers import CLIPVisionConfig, CLIPVisionModel

from rsvl.errors import InputError
from rsvl.utils.config import CheckedModel

__all__ = [
    "AUTHOR_LAYER_FRACTIONS",
    "MultiScaleConfig",
    "MultiScaleFeatures",
    "StackLabel",
    "extract",
    "hann_weights",
    "layers_for_depth",
    "scaled_config",
    "scatter_windows",
    "split_stacks",
    "tiny_clip_vision",
    "window_positions",
]

logger = logging.getLogger(__name__)

#: The authors' default ``deepstack_detail_layers``: fractions of the tower depth (24 -> 8, 16, 24).
AUTHOR_LAYER_FRACTIONS = (0.33, 0.66, 1.0)


def window_positions(canvas_size: int, window_size: int, stride: int) -> list[int]:
    """Top-left offsets (one axis) of sliding windows that tile ``canvas_size`` exactly.

    Raises:
        InputError: the windows leave a gap (``stride > window_size``) or do not end on the border.
    """
    if window_size <= 0 or stride <= 0 or window_size > canvas_size:
        raise InputError(f"window {window_size} with stride {stride} does not fit a canvas of {canvas_size}")
    if stride > window_size:
        raise InputError(f"stride {stride} is larger than the window {window_size}: the windows would leave gaps")
    if (canvas_size - window_size) % stride:
        raise InputError(
            f"windows of {window_size} at stride {stride} do not tile a canvas of {canvas_size}: "
            f"(canvas - window) = {canvas_size - window_size} is not a multiple of the stride"
        )
    return list(range(0, canvas_size - window_size + 1, stride))


def layers_for_depth(depth: int, fractions: Sequence[float] = AUTHOR_LAYER_FRACTIONS) -> tuple[int, ...]:
    """Hidden-state indices for a tower of ``depth`` layers, by the authors' rule ``round(f * depth)``."""
    if depth < 1:
        raise InputError(f"tower depth must be at least 1, got {depth}")
    picked = sorted({max(1, min(depth, round(f * depth))) for f in fractions})
    return tuple(picked)


class StackLabel(NamedTuple):
    """Which detail stack this is: window size (canvas px), hidden-state layer, phase ``(row, col)``."""

    window_size: int
    layer: int
    phase: tuple[int, int]


class MultiScaleConfig(CheckedModel):
    """Geometry of the global view, the canvas, the sliding windows and the detail stacks.

    Attributes:
        global_size: side of the global view; also the tower input size every window is resized to
            (must equal the tower's ``image_size``).
        canvas_size: side of the high-resolution canvas the windows slide over.
        window_sizes: window sides on the canvas, in stack order.
        strides: one stride per window size (an integer applies to all); the windows must tile the
            canvas exactly and overlap or touch (``stride <= window``).
        layers: hidden-state indices of the detail features (0 = embeddings, ``i`` = after layer ``i``).
        global_layer: hidden-state index of the global tokens (negative counts from the end).
        stack_grid: side of each detail stack's token grid (24 -> 576 tokens, like the global view).
        stack_mode: ``phase`` (strided phases of the canvas map, the authors') or ``pool``.
        patch_size: the tower's patch size; every size and stride must be a multiple of it.
        chunk_size: windows per tower forward pass (bounds memory); None encodes all at once.
    """

    global_size: int = Field(default=336, ge=1)
    canvas_size: int = Field(default=672, ge=1)
    window_sizes: tuple[int, ...] = (336, 168)
    strides: tuple[int, ...] = (168, 84)
    layers: tuple[int, ...] = (8, 16, 24)
    global_layer: int = -2
    stack_grid: int = Field(default=24, ge=1)
    stack_mode: Literal["phase", "pool"] = "phase"
    patch_size: int = Field(default=14, ge=1)
    chunk_size: int | None = Field(default=32, ge=1)

    label: ClassVar[str] = "MF-RSVLM feature config"

    @model_validator(mode="before")
    @classmethod
    def _broadcast_stride(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("strides"), int):
            sizes = data.get("window_sizes", (336, 168))
            data = {**data, "strides": (data["strides"],) * len(tuple(sizes))}
        return data

    @model_validator(mode="after")
    def _check_geometry(self) -> MultiScaleConfig:
        p = self.patch_size
        if not self.window_sizes:
            raise ValueError("window_sizes is empty")
        if len(set(self.window_sizes)) != len(self.window_sizes):
            raise ValueError(f"window_sizes repeat a size: {self.window_sizes}")
        if len(self.strides) != len(self.window_sizes):
            raise ValueError(f"{len(self.strides)} strides for {len(self.window_sizes)} window sizes")
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 1:
            raise ValueError(f"layers must be distinct hidden-state indices >= 1, got {self.layers}")
        named = {"global_size": self.global_size, "canvas_size": self.canvas_size}
        named.update({f"window {w}": w for w in self.window_sizes})
        named.update({f"stride {s}": s for s in self.strides})
        for name, value in named.items():
            if value <= 0 or value % p:
                raise ValueError(f"{name} = {value} is not a positive multiple of the patch size {p}")
        for w, s in zip(self.window_sizes, self.strides, strict=True):
            if w > self.global_size or self.global_size % w:
                raise ValueError(
                    f"window {w} must divide the tower input size {self.global_size} "
                    "(its encoded tokens are pooled by an integer factor onto the canvas grid)"
                )
            try:
                window_positions(self.canvas_size, w, s)
            except InputError as exc:
                raise ValueError(exc.message) from None
        grid = self.canvas_tokens
        if self.stack_mode == "phase" and grid % self.stack_grid:
            raise ValueError(f"stack_grid {self.stack_grid} does not divide the canvas token grid {grid} (phase mode)")
        if self.stack_grid > grid:
            raise ValueError(f"stack_grid {self.stack_grid} is finer than the canvas token grid {grid}")
        return self

    @property
    def canvas_tokens(self) -> int:
        """Side of the canvas token grid (``canvas_size / patch_size``; 48 by default)."""
        return self.canvas_size // self.patch_size

    @property
    def phase_factor(self) -> int:
        """Canvas tokens per stack token along one axis in ``phase`` mode; 1 in ``pool`` mode."""
        return self.canvas_tokens // self.stack_grid if self.stack_mode == "phase" else 1

    @property
    def stack_tokens(self) -> int:
        """Tokens per detail stack (S)."""
        return self.stack_grid**2

    @property
    def num_stacks(self) -> int:
        """Number of detail stacks (K)."""
        return len(self.window_sizes) * len(self.layers) * self.phase_factor**2

    def window_grid(self, index: int) -> list[int]:
        """Window offsets along one axis for ``window_sizes[index]`` (3 for 336/168, 7 for 168/84)."""
        return window_positions(self.canvas_size, self.window_sizes[index], self.strides[index])

    def labels(self) -> tuple[StackLabel, ...]:
        """One label per detail stack, in the order of the K axis."""
        f = self.phase_factor
        return tuple(
            StackLabel(w, layer, (a, b))
            for w in self.window_sizes
            for layer in self.layers
            for a in range(f)
            for b in range(f)
        )

    def check_tower(self, config: Any) -> None:
        """Check this geometry against a vision tower's config (``CLIPVisionConfig`` or alike).

        Raises:
            InputError: patch size or input size differ, or a layer is outside the tower's depth.
        """
        patch, size, depth = int(config.patch_size), int(config.image_size), int(config.num_hidden_layers)
        if patch != self.patch_size:
            raise InputError(f"config patch_size {self.patch_size} but the vision tower's patch is {patch}")
        if size != self.global_size:
            raise InputError(f"config global_size {self.global_size} but the vision tower's input size is {size}")
        bad = [layer for layer in self.layers if layer > depth]
        if bad:
            raise InputError(f"detail layers {bad} exceed the vision tower's depth {depth} (valid: 1..{depth})")
        if not -(depth + 1) <= self.global_layer <= depth:
            raise InputError(f"global_layer {self.global_layer} is outside the tower's hidden states (depth {depth})")


def scaled_config(
    image_size: int, patch_size: int = 14, num_layers: int | None = None, **overrides: Any
) -> MultiScaleConfig:
    """The 336/672/(336, 168)/(168, 84)/24 geometry scaled to a tower of input ``image_size``.

    ``scaled_config(56)`` gives 56/112/(56, 28)/(28, 14)/stack grid 4 -- the same window counts and
    stack layout as the full model on a tiny tower. ``num_layers`` picks the detail layers by the
    authors' thirds rule (4 -> 1, 3, 4); ``overrides`` set any other field.

    Raises:
        InputError: the scaled sizes are not whole multiples of the patch size.
    """
    if image_size <= 0 or image_size % 4:
        raise InputError(f"image_size {image_size} must be a positive multiple of 4 to scale the 336 geometry")
    fields: dict[str, Any] = {
        "global_size": image_size,
        "canvas_size": 2 * image_size,
        "window_sizes": (image_size, image_size // 2),
        "strides": (image_size // 2, image_size // 4),
        "stack_grid": max(1, image_size // patch_size),
        "patch_size": patch_size,
    }
    if num_layers is not None:
        fields["layers"] = layers_for_depth(num_layers)
    fields.update(overrides)
    return MultiScaleConfig(**fields)


def tiny_clip_vision(seed: int = 0, image_size: int = 56, layers: int = 4, hidden: int = 32) -> CLIPVisionModel:
    """A randomly initialised, real ``CLIPVisionModel`` (patch 14) small enough for unit tests."""
    config = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=14,
        projection_dim=hidden,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModel(config)
    return model.eval()


def hann_weights(n: int) -> torch.Tensor:
    """Strictly positive 1-D Hann window of ``n`` taps sampled at token centres (float64).

    ``w_i = sin^2(pi (i + 1/2) / n)``: symmetric, peaks in the middle, smallest at the ends but never
    zero (``n = 1`` gives ``[1]``), so a window's border tokens still count where nothing else covers.
    """
    if n < 1:
        raise InputError(f"Hann window needs at least one tap, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    return torch.sin(math.pi * (i + 0.5) / n) ** 2


def scatter_windows(window_features: torch.Tensor, stride_tokens: int, canvas_tokens: int) -> torch.Tensor:
    """Blend a grid of window feature maps onto the canvas token grid with 2-D Hann weights.

    Args:
        window_features: ``(B, n, n, t, t, D)``: window ``(r, c)`` (row-major offsets
            ``r * stride_tokens``, ``c * stride_tokens``) with its ``t x t`` tokens.
        stride_tokens: window stride in canvas tokens.
        canvas_tokens: side of the output grid; must equal ``(n - 1) * stride_tokens + t``.

    Returns:
        ``(B, canvas_tokens, canvas_tokens, D)``: at each cell, ``sum_w h_w f_w / sum_w h_w`` over the
        windows covering it, ``h`` the outer product of :func:`hann_weights`.
    """
    if window_features.ndim != 6 or window_features.shape[1] != window_features.shape[2]:
        raise InputError(f"window features must be (B, n, n, t, t, D), got {tuple(window_features.shape)}")
    b, n, _, t, t2, d = window_features.shape
    if t != t2 or (n - 1) * stride_tokens + t != canvas_tokens:
        raise InputError(
            f"{n} x {n} windows of {t} x {t2} tokens at stride {stride_tokens} do not tile a {canvas_tokens} grid"
        )
    h = hann_weights(t)
    weight = torch.outer(h, h).to(device=window_features.device, dtype=window_features.dtype)
    weighted = window_features * weight[:, :, None]
    # fold wants (B, D * t * t, L): channels outer, kernel offsets row-major, blocks row-major.
    cols = weighted.permute(0, 5, 3, 4, 1, 2).reshape(b, d * t * t, n * n)
    size = (canvas_tokens, canvas_tokens)
    summed = functional.fold(cols, output_size=size, kernel_size=t, stride=stride_tokens)
    weight_cols = weight.reshape(1, t * t, 1).expand(1, t * t, n * n)
    total = functional.fold(weight_cols, output_size=size, kernel_size=t, stride=stride_tokens)
    # every cell is covered (windows tile the canvas) and h > 0, so total > 0; the clamp only guards rounding.
    blended = summed / total.clamp_min(torch.finfo(total.dtype).tiny)
    return blended.permute(0, 2, 3, 1)


def split_stacks(canvas_map: torch.Tensor, stack_grid: int, mode: Literal["phase", "pool"]) -> list[torch.Tensor]:
    """Sample a ``(B, H, H, D)`` canvas map into detail stacks of ``(B, stack_grid**2, D)`` tokens.

    ``phase``: the ``f**2`` strided phases ``map[:, a::f, b::f]`` (``f = H / stack_grid``), row-major
    in ``(a, b)``; ``pool``: one adaptive-average-pooled stack.
    """
    b, height, width, d = canvas_map.shape
    if mode == "pool":
        pooled = functional.adaptive_avg_pool2d(canvas_map.permute(0, 3, 1, 2), stack_grid)
        return [pooled.flatten(2).transpose(1, 2)]
    if height != width or height % stack_grid:
        raise InputError(f"phase stacks need a square map divisible by {stack_grid}, got {height} x {width}")
    f = height // stack_grid
    return [canvas_map[:, a::f, c::f, :].reshape(b, stack_grid * stack_grid, d) for a in range(f) for c in range(f)]


@dataclass
class MultiScaleFeatures:
    """Output of :func:`extract`.

    Attributes:
        global_tokens: ``(B, G, Dv)``: the LLaVA view (hidden state ``global_layer``, CLS dropped).
        detail: ``(B, K, S, Dv)``: the ordered detail stacks (see :attr:`labels`).
        labels: one :class:`StackLabel` per stack, in K order.
    """

    global_tokens: torch.Tensor
    detail: torch.Tensor
    labels: tuple[StackLabel, ...]


def _as_pixels(image: np.ndarray | torch.Tensor, channels: int) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if not np.issubdtype(image.dtype, np.floating):
            raise InputError(f"image must be a normalised float array, got dtype {image.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(image))
    elif not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise InputError(f"image must be a normalised float tensor, got dtype {image.dtype}")
    if image.ndim != 4 or image.shape[1] != channels or image.shape[0] == 0:
        raise InputError(f"image must be (B, {channels}, H, W) with B >= 1, got {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise InputError("image holds NaN or infinite values")
    return image


def _tower_place(vision: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(iter(vision.parameters()), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def _encode(
    vision: torch.nn.Module, pixels: torch.Tensor, indices: Sequence[int], chunk: int | None, tokens: int
) -> list[torch.Tensor]:
    """Run the tower over ``pixels`` in chunks; return the chosen hidden states, CLS dropped."""
    step = pixels.shape[0] if chunk is None else chunk
    per_layer: list[list[torch.Tensor]] = [[] for _ in indices]
    for start in range(0, pixels.shape[0], step):
        out = vision(pixel_values=pixels[start : start + step], output_hidden_states=True)
        hidden = out.hidden_states
        for slot, index in enumerate(indices):
            states = hidden[index][:, 1:]
            if states.shape[1] != tokens:
                raise InputError(f"vision tower gave {states.shape[1] + 1} tokens per image, expected {tokens} + CLS")
            per_layer[slot].append(states)
    return [torch.cat(parts) for parts in per_layer]


def extract(
    vision: CLIPVisionModel, image: np.ndarray | torch.Tensor, cfg: MultiScaleConfig | None = None
) -> MultiScaleFeatures:
    """Global tokens and Hann-blended multi-scale, multi-layer detail stacks of an image batch.

    Args:
        vision: a ``transformers.CLIPVisionModel`` (or any module with its ``config`` fields and its
            ``forward(pixel_values=..., output_hidden_states=True)`` output). Gradients flow unless
            the caller wraps the call in ``torch.no_grad()``.
        image: ``(B, 3, H, W)`` float batch, already normalised with the CLIP mean and std; any H, W.
        cfg: geometry (default: the paper's 336/672/(336, 168)/layers 8, 16, 24).

    Returns:
        :class:`MultiScaleFeatures` with ``global_tokens (B, (global/patch)**2, Dv)`` and
        ``detail (B, cfg.num_stacks, cfg.stack_tokens, Dv)``.

    Raises:
        InputError: a malformed image, or a config that does not fit the tower.
    """
    cfg = cfg if cfg is not None else MultiScaleConfig()
    cfg.check_tower(vision.config)
    device, dtype = _tower_place(vision)
    pixels = _as_pixels(image, int(getattr(vision.config, "num_channels", 3))).to(device=device, dtype=dtype)
    batch, channels = pixels.shape[:2]
    size = cfg.global_size
    tokens_side = size // cfg.patch_size

    def resize(x: torch.Tensor, side: int) -> torch.Tensor:
        if x.shape[-2:] == (side, side):
            return x
        return functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)

    canvas = resize(pixels, cfg.canvas_size)
    views = [resize(pixels, size)]
    grids: list[int] = []
    for w, s in zip(cfg.window_sizes, cfg.strides, strict=True):
        crops = canvas.unfold(2, w, s).unfold(3, w, s)  # (B, C, n, n, w, w)
        n = crops.shape[2]
        grids.append(n)
        views.append(resize(crops.permute(0, 2, 3, 1, 4, 5).reshape(batch * n * n, channels, w, w), size))
    logger.debug("encoding %d global views and %s windows per image", batch, [n * n for n in grids])

    indices = [*cfg.layers, cfg.global_layer]
    states = _encode(vision, torch.cat(views), indices, cfg.chunk_size, tokens_side**2)
    global_tokens = states[-1][:batch]
    detail_states = [layer_states[batch:] for layer_states in states[:-1]]

    stacks: list[torch.Tensor] = []
    offset = 0
    for w, s, n in zip(cfg.window_sizes, cfg.strides, grids, strict=True):
        count = batch * n * n
        t = w // cfg.patch_size
        for layer_states in detail_states:
            feats = layer_states[offset : offset + count]
            dim = feats.shape[-1]
            feats = feats.reshape(count, tokens_side, tokens_side, dim)
            if t != tokens_side:
                pooled = functional.avg_pool2d(feats.permute(0, 3, 1, 2), kernel_size=tokens_side // t)
                feats = pooled.permute(0, 2, 3, 1)
            canvas_map = scatter_windows(feats.reshape(batch, n, n, t, t, dim), s // cfg.patch_size, cfg.canvas_tokens)
            stacks.extend(split_stacks(canvas_map, cfg.stack_grid, cfg.stack_mode))
        offset += count
    detail = torch.stack(stacks, dim=1)
    return MultiScaleFeatures(global_tokens=global_tokens, detail=detail, labels=cfg.labels())

"""What every tile-reading VLM bundle shares: tile checks, batched encoding, text embedding, attention rows.

LRS-VQA drives a vision-language model through a small interface (encode square tiles into a token
grid, splice chosen tokens into a prompt, read one attention row, answer). :class:`TileBundle` holds
the parts that do not depend on the model family; :class:`~rsvl.models.llava.LlavaBundle` and
:class:`~rsvl.models.qwen_vl_tiles.QwenVLTileBundle` add how their model turns pixels into tokens
(:meth:`TileBundle._tile_features`) and where tokens sit in a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rsvl.errors import InputError

__all__ = ["TileBundle", "VQASequence"]


class _StopForward(Exception):  # noqa: N818 - control flow, not an error
    """Raised from a hook to end a forward pass once the wanted layer has run."""


@dataclass
class VQASequence:
    """A prompt ready for the language model: embeddings with the image tokens spliced in.

    Attributes:
        inputs_embeds: ``(1, T, D)`` embeddings (text tokens embedded by the model, image tokens as given).
        image_slice: positions ``T`` of the image tokens (``inputs_embeds[0, image_slice]`` are they).
        query_index: the last prompt token (``T - 1``), whose next-token prediction starts the answer.
        prompt: the rendered prompt text, with the image placeholder where the image tokens are.
    """

    inputs_embeds: torch.Tensor
    image_slice: slice
    query_index: int
    prompt: str

    @property
    def n_image_tokens(self) -> int:
        """How many image tokens the sequence holds."""
        return self.image_slice.stop - self.image_slice.start


class TileBundle:
    """Shared behaviour of tile bundles (subclasses are dataclasses holding ``model`` and a tokenizer).

    Subclasses provide ``tile_size``, ``grid_size``, ``tokenizer`` and :meth:`_tile_features`.
    """

    model: Any
    tokenizer: Any
    tile_size: int
    grid_size: int

    @property
    def hidden_size(self) -> int:
        """Width ``D`` of the language model (and of the image tokens it reads)."""
        return int(self.model.config.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Decoder layers of the language model."""
        return int(self.model.config.text_config.num_hidden_layers)

    @property
    def image_token(self) -> str:
        """The tokenizer's image placeholder (the token of ``config.image_token_id``)."""
        return str(self.tokenizer.convert_ids_to_tokens(int(self.model.config.image_token_id)))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ------------------------------------------------------------------ vision

    def _check_tiles(self, tiles: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        size = self.tile_size
        if isinstance(tiles, np.ndarray):
            if tiles.ndim == 3:
                raise InputError(f"tiles must be (N, {size}, {size}, 3); got one tile {tiles.shape}, add a batch axis")
            arrays = tiles
        else:
            items = list(tiles)
            for i, tile in enumerate(items):
                if not isinstance(tile, np.ndarray):
                    raise InputError(f"tile {i} is a {type(tile).__name__}, expected a numpy uint8 array")
                if tile.shape != (size, size, 3) or tile.dtype != np.uint8:
                    raise InputError(
                        f"tile {i} has shape {tile.shape} and dtype {tile.dtype}; expected ({size}, {size}, 3) uint8"
                    )
            arrays = np.stack(items) if items else np.zeros((0, size, size, 3), np.uint8)
        if arrays.ndim != 4 or arrays.shape[1:] != (size, size, 3):
            raise InputError(f"tiles have shape {arrays.shape}; expected (N, {size}, {size}, 3) for tile_size {size}")
        if arrays.dtype != np.uint8:
            raise InputError(f"tiles have dtype {arrays.dtype}; expected uint8 RGB")
        return arrays

    def _tile_features(self, tiles: np.ndarray) -> torch.Tensor:
        """``(n, S, S, 3)`` uint8 -> ``(n, g * g, D)`` tokens in raster order (the model's own path)."""
        raise NotImplementedError

    def encode_tiles(
        self,
        tiles: Sequence[np.ndarray] | np.ndarray,
        pool: int | None = None,
        batch_size: int = 8,
        grad: bool = False,
    ) -> torch.Tensor:
        """Square uint8 tiles -> ``(N, g, g, D)`` image tokens in the language model's space.

        ``batch_size`` tiles go through the model at a time (memory stays bounded). ``pool``
        bilinearly resizes each grid to ``pool x pool`` (LRS-VQA pools LLaVA's 24 x 24 to 12 x 12).
        Tiles of the wrong size or dtype raise :class:`InputError`. ``grad=True`` keeps the
        autograd graph (training a vision tower or projector); by default none is built.
        """
        arrays = self._check_tiles(tiles)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if pool is not None and int(pool) < 1:
            raise InputError(f"pool must be >= 1 (or None), got {pool}")
        g, d = self.grid_size, self.hidden_size
        side = g if pool is None else int(pool)
        if len(arrays) == 0:
            return torch.zeros((0, side, side, d), device=self.device, dtype=self.dtype)
        chunks = []
        with torch.set_grad_enabled(grad):
            for start in range(0, len(arrays), batch_size):
                feats = self._tile_features(arrays[start : start + batch_size])
                if feats.shape[1] != g * g:
                    raise InputError(f"the vision tower gave {feats.shape[1]} tokens per tile, expected {g}x{g}")
                grid = feats.reshape(len(feats), g, g, d)
                if side != g:
                    grid = torch.nn.functional.interpolate(
                        grid.permute(0, 3, 1, 2), size=(side, side), mode="bilinear", align_corners=False
                    ).permute(0, 2, 3, 1)
                chunks.append(grid)
            return torch.cat(chunks).contiguous()

    # ------------------------------------------------------------------ text

    def _embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        table = self.model.get_input_embeddings()
        return table(torch.tensor(list(ids), dtype=torch.long, device=table.weight.device))

    @torch.no_grad()
    def embed_text(self, text: str) -> torch.Tensor:
        """``(L, D)`` input embeddings of ``text``'s tokens, exactly as tokenised: no BOS, EOS or template."""
        return self._embed_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ attention

    def _attention_rows(
        self, seq: VQASequence, layers: Sequence[int], query_index: int | None, forward_kwargs: dict[str, Any]
    ) -> list[torch.Tensor]:
        """``(N,)`` head-mean attention of the query over ``seq.image_slice`` at each decoder layer of ``layers``.

        One eager forward of the language model (``forward_kwargs`` beside ``inputs_embeds``),
        stopped by a hook once the deepest of ``layers`` has run; a layer may be negative (from the end).
        """
        n_layers = self.num_layers
        if not layers:
            raise InputError("no decoder layer to read the attention of")
        bad = [str(layer) for layer in layers if not -n_layers <= layer < n_layers]
        if bad:
            raise InputError(f"layer {', '.join(bad)} out of range for a {n_layers}-layer language model")
        wanted = [layer % n_layers for layer in layers]
        deepest = max(wanted)
        query = seq.query_index if query_index is None else int(query_index)
        length = int(seq.inputs_embeds.shape[1])
        if not 0 <= query < length:
            raise InputError(f"query_index {query} outside the sequence of {length} tokens")
        lm = self.model.model.language_model
        captured: dict[int, torch.Tensor] = {}

        def hook_for(layer: int) -> Any:
            def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise RuntimeError(
                        f"layer {layer} returned no attention weights; the model must use eager attention "
                        f"(it uses {self.model.config.text_config._attn_implementation!r})"
                    )
                captured[layer] = weights[0, :, query, seq.image_slice].float().mean(0)
                if layer == deepest:
                    raise _StopForward

            return hook

        handles = [lm.layers[layer].self_attn.register_forward_hook(hook_for(layer)) for layer in set(wanted)]
        try:
            lm(
                inputs_embeds=seq.inputs_embeds.to(device=self.device, dtype=self.dtype),
                use_cache=False,
                **forward_kwargs,
            )
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if deepest not in captured:
            raise RuntimeError(f"layer {deepest} did not run")
        return [captured[layer] for layer in wanted]

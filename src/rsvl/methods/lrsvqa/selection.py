"""Coarse-to-fine tile selection and text-guided token pruning over a :class:`DynamicPyramid`.

At the base level every tile is encoded. At each level, the tokens of the tiles being looked at are
ranked by a :class:`TokenScorer` (their relevance to the question) and the top ``pruning_ratio``
share is kept. Above native resolution, each kept token votes for the finer tile under its centre
with its relevance (above the level's least relevant token); the ``next_level_max_select`` tiles
with the most relevance (ties: more votes, then reading order) are read and encoded at the next
level, and the search goes on. At native resolution (or after
``max_depth`` levels) the kept tokens, with the global view's tokens in front, are what the language
model reads.

Where the authors' release differs (it stops after one retrieval step, keeps every tile a kept
token hits and always keeps the grid's newline tokens), the choices here are documented in
``docs/lrsvqa.md``; the memory bound is that no level encodes more than
``max(max_block_num, next_level_max_select)`` tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from rsvl.errors import InputError
from rsvl.io.pyramid import PyramidTile
from rsvl.methods.lrsvqa.config import SelectionConfig
from rsvl.methods.lrsvqa.dip import DynamicPyramid

__all__ = ["LevelVisit", "Selection", "TileEncoder", "TokenScorer", "coarse_to_fine", "uniform_tokens"]


class TileEncoder(Protocol):
    """Vision tower + projector: square uint8 tiles -> a grid of LLM-space tokens per tile."""

    tile_size: int

    def encode_tiles(self, tiles: np.ndarray, pool: int | None = None) -> torch.Tensor:
        """``(N, S, S, 3)`` uint8 -> ``(N, g, g, D)``."""
        ...


class TokenScorer(Protocol):
    """Relevance of each vision token to the question (higher = more relevant)."""

    def score(
        self, global_tokens: torch.Tensor, tokens: torch.Tensor, question: str, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``global_tokens (G, D)``, candidate ``tokens (M, D)`` -> ``(M,)`` relevance.

        ``positions (G + M, 3)``: ``(image, row, col)`` of every token (see :class:`Selection`), for
        models whose position encoding follows the image grid (Qwen-VL's multimodal RoPE).
        """
        ...


@dataclass
class LevelVisit:
    """One level of the search: the tiles encoded, how many tokens they had and kept, and the votes."""

    level: int
    tiles: list[PyramidTile]
    tokens: int
    kept: int
    votes: dict[tuple[int, int], int] = field(default_factory=dict)
    chosen: list[PyramidTile] = field(default_factory=list)


@dataclass
class Selection:
    """What the language model will read, and how the search got there.

    Attributes:
        global_tokens: ``(G, D)`` tokens of the global view (never pruned).
        tokens: ``(K, D)`` kept tokens of the last level, in tile order then reading order.
        token_tiles: ``(K,)`` index into ``visits[-1].tiles`` of each kept token.
        visits: one entry per level, coarse to fine.
        positions: ``(G + K, 3)`` int64 ``(image, row, col)`` of every token the LLM reads: image 0
            is the global view, image ``1 + i`` the last level's tile ``i``; ``row, col`` the
            token's cell in its image's grid (pruned tokens keep their original cells).
    """

    global_tokens: torch.Tensor
    tokens: torch.Tensor
    token_tiles: np.ndarray
    visits: list[LevelVisit]
    positions: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Vision tokens entering the language model."""
        return int(self.global_tokens.shape[0] + self.tokens.shape[0])

    @property
    def tiles_encoded(self) -> int:
        """Tiles through the vision tower, the global view included."""
        return 1 + sum(len(v.tiles) for v in self.visits)

    def vision_tokens(self) -> torch.Tensor:
        """``(G + K, D)``: the global view's tokens, then the kept ones (``positions`` gives their cells)."""
        return torch.cat([self.global_tokens, self.tokens], dim=0)


def _encode(dip: DynamicPyramid, encoder: TileEncoder, tiles: list[PyramidTile], pool: int | None):
    """Tokens ``(N, g, g, D)`` of the tiles, ``g``, and which cells hold image content (not padding/nodata)."""
    images, pixel_valid = dip.read(tiles)
    grid_tokens = encoder.encode_tiles(images, pool=pool)
    if grid_tokens.ndim != 4 or grid_tokens.shape[0] != len(tiles) or grid_tokens.shape[1] != grid_tokens.shape[2]:
        raise InputError(f"the encoder returned tokens of shape {tuple(grid_tokens.shape)} for {len(tiles)} tiles")
    grid = int(grid_tokens.shape[1])
    valid = np.stack([dip.token_valid(t, grid, v) for t, v in zip(tiles, pixel_valid, strict=True)])
    return grid_tokens, grid, valid


def _top(scores: torch.Tensor, ratio: float) -> np.ndarray:
    """Indices of the top ``ceil(ratio * M)`` scores (at least one), in ascending index order."""
    m = int(scores.shape[0])
    k = max(1, min(m, math.ceil(round(ratio * m, 9))))  # round: 0.07 * 100 is 7.000000000000001
    idx = torch.topk(scores.float(), k, sorted=False).indices.cpu().numpy()
    return np.sort(idx)


def coarse_to_fine(
    dip: DynamicPyramid,
    question: str,
    encoder: TileEncoder,
    scorer: TokenScorer,
    config: SelectionConfig | None = None,
    *,
    pool: int | None = None,
    prune: bool = True,
    on_level: Callable[[LevelVisit], None] | None = None,
) -> Selection:
    """Search the pyramid for the tiles that answer ``question`` and keep their relevant tokens.

    Args:
        dip: the image's pyramid.
        question: the question text (passed to the scorer).
        encoder, scorer: the vision tower and the relevance source.
        config: pruning ratio, tiles per step, depth.
        pool: token grid side after pooling (None: the encoder's own grid).
        prune: False keeps every token of the last level's tiles (the no-pruning ablation; the tiles
            are still chosen by the top ``pruning_ratio`` tokens).
        on_level: called after each level (progress display).
    """
    cfg = config or SelectionConfig()
    if not question or not question.strip():
        raise InputError("the question is empty")
    global_tokens, global_positions = _global_tokens(dip, encoder)
    level = dip.base_level
    tiles = dip.base_tiles()
    stop = 0 if cfg.max_depth is None else max(0, dip.base_level - cfg.max_depth)
    visits: list[LevelVisit] = []
    while True:
        grid_tokens, grid, valid = _encode(dip, encoder, tiles, pool)
        dim = grid_tokens.shape[-1]
        flat_valid = torch.from_numpy(valid.reshape(-1))
        candidates = grid_tokens.reshape(-1, dim)[flat_valid]
        owner = np.repeat(np.arange(len(tiles)), grid * grid)[valid.reshape(-1)]
        if candidates.shape[0] == 0:
            raise InputError(f"no image content in the tiles of pyramid level {level}", dip.source.path)
        cells = _cells(len(tiles), grid)[valid.reshape(-1)]
        positions = torch.cat([global_positions, cells])
        scores = scorer.score(global_tokens, candidates, question, positions).reshape(-1)
        if scores.shape[0] != candidates.shape[0]:
            raise InputError(f"the scorer returned {scores.shape[0]} scores for {candidates.shape[0]} tokens")
        keep = _top(scores, cfg.pruning_ratio)
        last = level <= stop
        visit = LevelVisit(level, tiles, int(candidates.shape[0]), int(len(keep) if (prune or not last) else 0))
        if last:
            kept = keep if prune else np.arange(candidates.shape[0])
            visit.kept = len(kept)
            visits.append(visit)
            if on_level is not None:
                on_level(visit)
            kept_t = torch.from_numpy(kept)
            positions = torch.cat([global_positions, cells[kept_t]])
            return Selection(global_tokens, candidates[kept_t], owner[kept], visits, positions)
        children = np.concatenate([dip.token_child(t, grid)[valid[i]] for i, t in enumerate(tiles)])
        votes: dict[tuple[int, int], int] = {}
        mass: dict[tuple[int, int], float] = {}
        # relevance above the level's least relevant token, summed per child: a small, strongly
        # relevant object outranks a large area of lukewarm tokens (attention scores: ~ the mass)
        lifted = (scores.float() - scores.float().min()).cpu().numpy()
        for (r, c), s in zip(children[keep], lifted[keep], strict=True):
            key = (int(r), int(c))
            votes[key] = votes.get(key, 0) + 1
            mass[key] = mass.get(key, 0.0) + float(s)
        ranked = sorted(votes, key=lambda k: (-mass[k], -votes[k], k))[: cfg.next_level_max_select]
        finer = dip.level(level - 1)
        visit.votes = votes
        visit.chosen = [finer.tile(r, c) for r, c in sorted(ranked)]
        visits.append(visit)
        if on_level is not None:
            on_level(visit)
        tiles, level = visit.chosen, level - 1


def _cells(n_tiles: int, grid: int, first_image: int = 1) -> torch.Tensor:
    """``(n_tiles * grid * grid, 3)`` ``(image, row, col)`` of every cell, tile by tile, row-major."""
    image, row, col = np.meshgrid(np.arange(n_tiles) + first_image, np.arange(grid), np.arange(grid), indexing="ij")
    return torch.from_numpy(np.stack([image, row, col], axis=-1).reshape(-1, 3).astype(np.int64))


def _global_tokens(dip: DynamicPyramid, encoder: TileEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, D)`` tokens of the global view (never pooled, never pruned, as the authors do), and cells."""
    global_image, valid = dip.global_view()
    if not valid.any():
        raise InputError("the image has no valid pixel (all nodata or NaN)", dip.source.path)
    tokens = encoder.encode_tiles(global_image[None], pool=None)[0]
    return tokens.reshape(-1, tokens.shape[-1]), _cells(1, int(tokens.shape[0]), first_image=0)


def uniform_tokens(
    dip: DynamicPyramid, encoder: TileEncoder, pool: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniform-downsample baseline: the global view plus every token of the base level.

    Returns the tokens ``(N, D)`` and their ``(image, row, col)`` positions (as :class:`Selection`).
    """
    global_tokens, global_positions = _global_tokens(dip, encoder)
    tiles = dip.base_tiles()
    grid_tokens, grid, valid = _encode(dip, encoder, tiles, pool)
    keep = torch.from_numpy(valid.reshape(-1))
    flat = grid_tokens.reshape(-1, grid_tokens.shape[-1])[keep]
    return torch.cat([global_tokens, flat], dim=0), torch.cat([global_positions, _cells(len(tiles), grid)[keep]])

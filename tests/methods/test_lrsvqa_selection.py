"""LRS-VQA's Dynamic Image Pyramid and coarse-to-fine search, with a planted object and scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from rsvl.errors import InputError
from rsvl.methods.lrsvqa.config import SelectionConfig
from rsvl.methods.lrsvqa.dip import DynamicPyramid
from rsvl.methods.lrsvqa.selection import coarse_to_fine, uniform_tokens

TILE = 56
PATCH = 14  # a 56 px tile -> 4 x 4 tokens, like CLIP ViT-L/14 on 336 px -> 24 x 24
RED_XY = (1000, 300)  # native top-left of the planted 12 x 12 red square


class MeanColourEncoder:
    """Each token is the mean colour of its 14 x 14 patch (a transparent stand-in for CLIP)."""

    tile_size = TILE

    def __init__(self):
        self.calls: list[int] = []

    def encode_tiles(self, tiles: np.ndarray, pool: int | None = None) -> torch.Tensor:
        self.calls.append(len(tiles))
        n = len(tiles)
        g = TILE // PATCH
        t = torch.from_numpy(tiles).float() / 255.0
        grid = t.reshape(n, g, PATCH, g, PATCH, 3).mean(dim=(2, 4))
        if pool is not None:
            grid = torch.nn.functional.interpolate(grid.permute(0, 3, 1, 2), size=(pool, pool), mode="bilinear")
            grid = grid.permute(0, 2, 3, 1)
        return grid


class RednessScorer:
    """Relevance = how much redder than grey a token is (the question is ignored)."""

    def score(self, global_tokens, tokens, question, positions=None):
        if positions is not None:  # every token, global view first, has its (image, row, col) cell
            assert positions.shape == (global_tokens.shape[0] + tokens.shape[0], 3)
        return tokens[:, 0] - 0.5 * (tokens[:, 1] + tokens[:, 2])


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    """1,344 x 1,100 grey GeoTIFF with one small red square: levels 1344, 672, 336, 168, 84, 42 px."""
    path = tmp_path_factory.mktemp("big") / "big.tif"
    h, w = 1100, 1344
    img = np.full((3, h, w), 120, dtype=np.uint8)
    x, y = RED_XY
    img[:, y : y + 12, x : x + 12] = np.array([230, 30, 30], dtype=np.uint8)[:, None, None]
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32631", tiled=True)
    profile.update(blockxsize=256, blockysize=256, transform=Affine(0.5, 0, 400000.0, 0, -0.5, 5000000.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return path


def test_levels_base_and_global(big_image):
    with DynamicPyramid(big_image, TILE, 2, max_block_num=9) as dip:
        base = dip.level(dip.base_level)
        assert len(base) <= 9 and len(dip.level(dip.base_level - 1)) > 9
        assert (base.width, base.height) == (168, 138)  # ceil(1344 / 8), ceil(1100 / 8)
        image, valid = dip.global_view()
        assert image.shape == (TILE, TILE, 3)
        top = dip.level(dip.global_level)
        assert max(top.width, top.height) <= TILE and valid.sum() == top.width * top.height


def test_token_child_contains_the_token_centre(big_image):
    with DynamicPyramid(big_image, TILE, 2) as dip:
        for level in range(1, dip.global_level + 1):
            for tile in dip.level(level).tiles():
                children = dip.token_child(tile, 4)
                valid = dip.token_valid(tile, 4)
                centres = dip.token_centres(tile, 4) * dip.level(level).downsample  # native pixels
                rows = zip(children.reshape(-1, 2), valid.reshape(-1), centres.reshape(-1, 2), strict=True)
                w, h = dip.source.width, dip.source.height
                for (r, c), ok, (x, y) in rows:
                    if not ok:
                        continue
                    nat = dip.level(level - 1).tile(int(r), int(c)).native
                    # an edge cell whose centre falls past the content goes to the last child
                    x, y = min(x, w - 0.5), min(y, h - 0.5)
                    assert nat.col_off <= x < nat.col_off + nat.width and nat.row_off <= y < nat.row_off + nat.height
        with pytest.raises(InputError):
            dip.token_child(dip.level(0).tile(0, 0), 4)
        with pytest.raises(InputError, match="multiple of 2"):  # a cell would straddle two children
            dip.token_child(dip.level(1).tile(0, 0), 3)


def test_nodata_cells_are_not_content_and_all_nodata_is_refused(tmp_path):
    profile = dict(driver="GTiff", width=300, height=200, count=1, dtype="float32", nodata=float("nan"))
    profile.update(crs="EPSG:32631", transform=Affine(1, 0, 400000.0, 0, -1, 5000000.0))
    data = np.full((1, 200, 300), np.nan, dtype=np.float32)
    with rasterio.open(tmp_path / "nan.tif", "w", **profile) as dst:
        dst.write(data)
    with DynamicPyramid(tmp_path / "nan.tif", TILE, 2) as dip:
        with pytest.raises(InputError, match="no valid pixel") as err:
            coarse_to_fine(dip, "q", MeanColourEncoder(), RednessScorer())
        assert "nan.tif" in str(err.value)
    data[:, :, :150] = 100.0  # the right half stays nodata
    with rasterio.open(tmp_path / "half.tif", "w", **profile) as dst:
        dst.write(data)
    with DynamicPyramid(tmp_path / "half.tif", TILE, 2) as dip:
        sel = coarse_to_fine(dip, "q", MeanColourEncoder(), RednessScorer(), SelectionConfig(pruning_ratio=1.0))
        for tile in sel.visits[-1].tiles:  # the search never walks into the nodata half
            assert tile.native.col_off < 150
        level = dip.level(0)
        _, valid = dip.read([level.tile(0, 2)])  # native x 112..168: nodata from 150 on
        cells = dip.token_valid(level.tile(0, 2), 4, valid[0])
        assert cells[:, :3].all() and not cells[:, 3].any()


def test_padding_tokens_are_not_content(big_image):
    with DynamicPyramid(big_image, TILE, 2) as dip:
        level = dip.level(dip.base_level)  # 168 x 138: the bottom row of tiles holds 26 px
        edge = level.tile(level.rows - 1, 0)
        assert edge.window.height == 138 - 2 * TILE
        valid = dip.token_valid(edge, 4)
        assert valid[:2].all() and not valid[2:].any()  # token centres at 7, 21 px are in; 35, 49 are out


def test_search_walks_down_to_the_planted_object(big_image):
    enc = MeanColourEncoder()
    cfg = SelectionConfig(pruning_ratio=0.25, next_level_max_select=2)
    with DynamicPyramid(big_image, TILE, 2, max_block_num=9) as dip:
        sel = coarse_to_fine(dip, "what colour is the square?", enc, RednessScorer(), cfg)
        assert [v.level for v in sel.visits] == list(range(dip.base_level, -1, -1))
        x, y = RED_XY
        for visit in sel.visits[:-1]:  # every step fetched the tile holding the object
            assert any(t.native.col_off <= x < t.native.col_off + t.native.width for t in visit.chosen)
            assert any(t.native.row_off <= y < t.native.row_off + t.native.height for t in visit.chosen)
            assert len(visit.chosen) <= 2
        last = sel.visits[-1]
        assert last.level == 0 and sel.tokens.shape[0] == math.ceil(0.25 * last.tokens)
        # at native resolution the square fills half a 14 px patch (redness ~0.4); at the base level
        # (8x coarser) it was ~1 % of a patch
        assert RednessScorer().score(None, sel.tokens, "").max() > 0.25
        assert sel.n_tokens == 16 + sel.tokens.shape[0] and sel.global_tokens.shape == (16, 3)
        # positions: the global view is image 0 on its 4 x 4 grid; kept tokens keep their tile and cell
        pos = sel.positions
        assert pos.shape == (sel.n_tokens, 3) and pos[:16].tolist() == [[0, r, c] for r in range(4) for c in range(4)]
        assert (pos[16:, 0] - 1).tolist() == sel.token_tiles.tolist()
        images, _ = dip.read(sel.visits[-1].tiles)
        grid = MeanColourEncoder().encode_tiles(images)
        for token, (image, r, c) in zip(sel.tokens, pos[16:].tolist(), strict=True):
            assert torch.equal(token, grid[image - 1, r, c])
        assert max(enc.calls) <= 9 and sel.tiles_encoded == sum(enc.calls)


class RecencyBiasedRednessScorer:
    """Attention with a causal LLM's habit: tokens later in the sequence (nearer the text) get far more,
    whatever is asked; the question adds a factor for red tokens. A generic prompt adds nothing."""

    generic = "Write a general description of the image."

    def score(self, global_tokens, tokens, question, positions=None):
        recency = torch.exp(torch.arange(tokens.shape[0], dtype=torch.float32) / 8.0)
        redness = (tokens[:, 0] - 0.5 * (tokens[:, 1] + tokens[:, 2])).clamp_min(0.0)
        asked = 1.0 + 4.0 * redness if question != self.generic else torch.ones_like(redness)
        return recency * asked


def test_relative_calibration_cancels_a_question_free_bias(big_image):
    from rsvl.methods.lrsvqa.pipeline import RelativeScorer

    cfg = SelectionConfig(pruning_ratio=0.25, next_level_max_select=2)
    x, y = RED_XY

    def holds_square(tile):
        box = tile.native
        return box.col_off <= x < box.col_off + box.width and box.row_off <= y < box.row_off + box.height

    biased = RecencyBiasedRednessScorer()
    with DynamicPyramid(big_image, TILE, 2, max_block_num=9) as dip:
        raw = coarse_to_fine(dip, "what colour is the square?", MeanColourEncoder(), biased, cfg)
        relative = RelativeScorer(biased, biased.generic)
        calibrated = coarse_to_fine(dip, "what colour is the square?", MeanColourEncoder(), relative, cfg)
    # the raw ranking follows the bias to the last tiles and loses the square; the calibrated one finds it
    assert not any(holds_square(t) for t in raw.visits[-1].tiles)
    assert all(any(holds_square(t) for t in v.chosen) for v in calibrated.visits[:-1])
    assert any(holds_square(t) for t in calibrated.visits[-1].tiles)
    assert RednessScorer().score(None, calibrated.tokens, "").max() > 0.25


def test_no_pruning_keeps_every_token_of_the_chosen_tiles_and_depth_stops_early(big_image):
    cfg = SelectionConfig(pruning_ratio=0.25, next_level_max_select=2)
    with DynamicPyramid(big_image, TILE, 2) as dip:
        pruned = coarse_to_fine(dip, "q", MeanColourEncoder(), RednessScorer(), cfg)
        full = coarse_to_fine(dip, "q", MeanColourEncoder(), RednessScorer(), cfg, prune=False)
        assert [t.native for t in full.visits[-1].tiles] == [t.native for t in pruned.visits[-1].tiles]
        assert full.tokens.shape[0] == full.visits[-1].tokens > pruned.tokens.shape[0]
        one_step = cfg.model_copy(update={"max_depth": 1})
        shallow = coarse_to_fine(dip, "q", MeanColourEncoder(), RednessScorer(), one_step)
        assert [v.level for v in shallow.visits] == [dip.base_level, dip.base_level - 1]
        pooled = coarse_to_fine(dip, "q", MeanColourEncoder(), RednessScorer(), cfg, pool=2)
        assert pooled.visits[0].tokens <= 9 * 4


def test_uniform_baseline_has_every_base_token(big_image):
    with DynamicPyramid(big_image, TILE, 2) as dip:
        tokens, positions = uniform_tokens(dip, MeanColourEncoder())
        base = dip.level(dip.base_level)
        content = sum(int(dip.token_valid(t, 4).sum()) for t in base.tiles())
        assert tokens.shape == (16 + content, 3) and positions.shape == (16 + content, 3)
        assert positions[:16, 0].eq(0).all() and set(positions[16:, 0].tolist()) == set(range(1, 1 + len(base)))


def test_bad_inputs(big_image):
    with DynamicPyramid(big_image, TILE, 2) as dip:
        with pytest.raises(InputError, match="question is empty"):
            coarse_to_fine(dip, "  ", MeanColourEncoder(), RednessScorer())

        class Short(RednessScorer):
            def score(self, g, tokens, q, positions=None):
                return super().score(g, tokens, q)[:-1]

        with pytest.raises(InputError, match="scores for"):
            coarse_to_fine(dip, "q", MeanColourEncoder(), Short())
    with pytest.raises(InputError):
        DynamicPyramid(big_image, TILE, 2, max_block_num=0)

"""RSVG-ZeroOV's LLaVA Overview provider: token layout onto the image grid, and real runs on a tiny LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvl.errors import InputError

pytest.importorskip("transformers")
from rsvl.methods.zeroov.overview_llava import LlavaOverview
from rsvl.models.llava import tiny_llava

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle():
    return tiny_llava(seed=0, tile_size=56)


def test_map_covers_a_mosaic_of_tiles_and_is_a_distribution(bundle):
    overview = LlavaOverview(bundle, [0, 1], [0.5, 0.5], tiles=2)
    image = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    cross = overview.cross_attention(image, "the red roof")
    g = bundle.grid_size
    assert cross.grid == (2 * g, 2 * g) and (cross.map >= 0).all()
    assert 0 < cross.map.sum() <= 1 + 1e-5  # attention over image tokens, a share of the whole row
    assert "llava" in cross.source and cross.real_weights is False


def test_map_is_the_weighted_mean_of_the_layers_attention(bundle):
    from PIL import Image

    overview = LlavaOverview(bundle, [0, 2], [1.0, 3.0], tiles=2)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cross = overview.cross_attention(image, "the pond")
    size, g = bundle.tile_size, bundle.grid_size
    mosaic = np.asarray(Image.fromarray(image).resize((2 * size, 2 * size), Image.BILINEAR))
    tiles = np.stack([mosaic[r * size : (r + 1) * size, c * size : (c + 1) * size] for r in (0, 1) for c in (0, 1)])
    tokens = bundle.encode_tiles(tiles)
    seq = bundle.build_sequence(tokens.reshape(-1, tokens.shape[-1]), "Where is the pond in the image?")
    rows = [bundle.text_to_image_attention(seq, layer).numpy() for layer in (0, 2)]
    want = (0.25 * rows[0] + 0.75 * rows[1]).reshape(2, 2, g, g).transpose(0, 2, 1, 3).reshape(2 * g, 2 * g)
    np.testing.assert_allclose(cross.map, want, rtol=1e-5, atol=1e-7)


def test_each_token_lands_on_its_tile_and_patch(bundle, monkeypatch):
    overview = LlavaOverview(bundle, [0], [1.0], tiles=2)
    g = bundle.grid_size
    hot = 1 * g * g + 2 * g + 3  # tile 1 (top right), patch row 2, column 3

    def one_hot(seq, layers, query_index=None):
        row = torch.zeros(4 * g * g)
        row[hot] = 1.0
        return [row for _ in layers]

    monkeypatch.setattr(bundle, "text_to_image_attentions", one_hot)
    cross = overview.cross_attention(np.zeros((64, 64, 3), np.uint8), "x")
    assert np.argwhere(cross.map == 1.0).tolist() == [[2, g + 3]]


def test_bad_layers_and_expressions_are_refused(bundle):
    with pytest.raises(InputError, match="do not exist"):
        LlavaOverview(bundle, [99], [1.0])
    with pytest.raises(InputError, match="empty"):
        LlavaOverview(bundle, [0], [1.0]).cross_attention(np.zeros((8, 8, 3), np.uint8), "  ")

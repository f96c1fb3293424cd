"""Evolve stage: seeds, region growing (against a plain BFS) and recovery of a planted object."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsvl.errors import InputError
from rsvl.methods.zeroov.evolve import evolve, grow_regions, grow_regions_bfs, mask_box, top_k_seeds


@settings(max_examples=60, deadline=None)
@given(
    st.integers(4, 24),
    st.integers(4, 24),
    st.integers(0, 2**31 - 1),
    st.floats(0.05, 0.95),
    st.integers(1, 6),
)
def test_grow_regions_equals_breadth_first_search(h, w, seed, tau, k):
    rng = np.random.default_rng(seed)
    response = rng.random((h, w)).astype(np.float32)
    seeds = np.stack([rng.integers(0, h, k), rng.integers(0, w, k)], axis=1)
    np.testing.assert_array_equal(grow_regions(response, seeds, tau), grow_regions_bfs(response, seeds, tau))


def test_growth_is_eight_connected_not_four():
    response = np.zeros((5, 5), dtype=np.float32)
    response[1, 1] = response[2, 2] = response[3, 3] = 1.0  # a diagonal chain
    grown = grow_regions(response, np.array([[1, 1]]), 0.5)
    assert grown[3, 3] and grown.sum() == 3


def planted(shape=(128, 160), box=(40, 30, 90, 70), seed=0):
    """A fused map with a bright rectangle + noise + a bright distractor blob elsewhere."""
    rng = np.random.default_rng(seed)
    fused = rng.random(shape).astype(np.float32) * 0.25
    x1, y1, x2, y2 = box
    fused[y1:y2, x1:x2] = 0.7 + 0.3 * rng.random((y2 - y1, x2 - x1))
    fused[100:120, 120:150] = 0.9  # distractor, not connected to the seeds
    truth = np.zeros(shape, dtype=bool)
    truth[y1:y2, x1:x2] = True
    return fused, truth


def test_evolve_recovers_a_planted_object_and_drops_the_distractor():
    fused, truth = planted()
    cross = np.zeros((8, 10), dtype=np.float32)
    cross[3, 4] = 1.0  # cell centre (x=72, y=56) lies inside the object
    cross[2, 3] = 0.5
    result = evolve(fused, cross, top_k=7, tau=0.3, alpha=0.4)
    iou = (result.mask & truth).sum() / (result.mask | truth).sum()
    assert iou > 0.9
    assert not result.mask[100:120, 120:150].any()
    assert mask_box(result.mask) == (40.0, 30.0, 90.0, 70.0)


def test_evolve_without_seed_inside_returns_empty_mask():
    fused, _ = planted()
    cross = np.zeros((8, 10), dtype=np.float32)
    cross[0, 0] = 1.0  # seed on background noise (<= tau)
    assert not evolve(fused, cross).mask.any()


def test_top_k_seeds_are_cell_centres_of_the_highest_cells():
    cross = np.zeros((4, 8), dtype=np.float32)
    cross[1, 2], cross[3, 7], cross[0, 0] = 3.0, 2.0, 1.0
    seeds = top_k_seeds(cross, 7, (40, 80))
    # only positive cells seed; centres at ((r + .5) * 10, (c + .5) * 10)
    np.testing.assert_array_equal(seeds, [[15, 25], [35, 75], [5, 5]])
    assert top_k_seeds(cross, 1, (40, 80)).tolist() == [[15, 25]]
    assert top_k_seeds(np.zeros((2, 2)), 3, (4, 4)).shape == (1, 2)


def test_bad_inputs_raise():
    with pytest.raises(InputError):
        top_k_seeds(np.zeros((3, 3)), 0, (3, 3))
    with pytest.raises(InputError):
        top_k_seeds(np.zeros((0, 3)), 1, (3, 3))
    with pytest.raises(InputError):
        evolve(np.zeros(5), np.ones((2, 2)))


def test_mask_box_uses_pixel_edges():
    m = np.zeros((6, 6), dtype=bool)
    m[2, 3] = True
    assert mask_box(m) == (3.0, 2.0, 4.0, 3.0)
    assert mask_box(np.zeros((3, 3), dtype=bool)) is None

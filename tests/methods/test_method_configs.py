"""Every settings file shipped under configs/ validates against its method's schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsvl.methods.lrsvqa.config import LRSVQAConfig
from rsvl.methods.mfrsvlm.recipe import MFRSVLMRecipe
from rsvl.methods.zeroov.config import ZeroOVConfig
from rsvl.utils.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SCHEMAS = {"zeroov": ZeroOVConfig, "lrsvqa": LRSVQAConfig, "mfrsvlm": MFRSVLMRecipe}


@pytest.mark.parametrize(
    "path", sorted(p for method in SCHEMAS for p in (CONFIGS / method).glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_settings_validate(path):
    cfg = load_config(SCHEMAS[path.parent.name], path, [])
    assert cfg.model_dump()  # every key known, every value of the right type


def test_each_method_ships_the_papers_settings():
    lrs = load_config(LRSVQAConfig, CONFIGS / "lrsvqa" / "paper.yaml", [])
    assert (lrs.selection.pruning_ratio, lrs.selection.next_level_max_select, lrs.pyramid.tile_size) == (0.25, 6, 336)
    zov = load_config(ZeroOVConfig, CONFIGS / "zeroov" / "paper.yaml", [])
    assert (zov.evolve.top_k, zov.evolve.tau, zov.evolve.alpha) == (7, 0.3, 0.4)
    assert zov.overview.layers == [16, 17, 18, 19] and zov.overview.layer_weights == [0.1, 0.1, 0.3, 0.5]

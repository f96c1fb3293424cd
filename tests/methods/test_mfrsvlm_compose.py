"""MF-RSVLM's two pieces compose on a real LLaVA: multi-scale detail stacks -> projector -> gated injection."""

from __future__ import annotations

import torch

from rsvl.methods.mfrsvlm.features import extract, scaled_config
from rsvl.methods.mfrsvlm.injection import DetailInjector, InjectionConfig, inject
from rsvl.models.llava import tiny_llava


def test_detail_stacks_from_the_llava_tower_inject_into_its_language_model():
    bundle = tiny_llava(tile_size=56)
    model = bundle.model
    vision = model.model.vision_tower
    cfg = scaled_config(56, num_layers=vision.config.num_hidden_layers)
    image = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = extract(vision, image, cfg)
        detail = model.model.multi_modal_projector(feats.detail)  # every stack through the same projector
        global_tokens = model.model.multi_modal_projector(feats.global_tokens[:, -(bundle.grid_size**2) :])
    assert detail.shape == (1, cfg.num_stacks, bundle.grid_size**2, bundle.hidden_size)
    seq = bundle.build_sequence(global_tokens[0], "Is there a ship?")
    injector = DetailInjector(bundle.hidden_size, InjectionConfig(layers=(2, 4)))
    lm = model.model.language_model

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return model.lm_head(lm(inputs_embeds=seq.inputs_embeds).last_hidden_state)

    base = logits()
    with inject(model, injector, detail, seq.image_slice) as state:
        closed = logits()
    assert torch.equal(base, closed) and state.applied  # gates start closed: the LLaVA is unchanged
    with torch.no_grad():
        for name, p in injector.named_parameters():
            if "alpha" in name:
                p.fill_(1.0)
    with inject(model, injector, detail, seq.image_slice):
        opened = logits()
    start = seq.image_slice.start
    assert torch.equal(base[:, :start], opened[:, :start])  # causal: text before the image unchanged
    assert not torch.allclose(base[:, -1], opened[:, -1])  # the answer position reads the details

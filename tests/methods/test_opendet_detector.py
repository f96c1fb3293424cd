"""Open-Det detector (ODR), aligner (BVLA-M) and distiller (VLD-M) on tiny configs."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from rsvl.errors import InputError
from rsvl.methods.opendet.align import BidirectionalAligner
from rsvl.methods.opendet.config import OpenDetConfig
from rsvl.methods.opendet.detector import (
    CrossAttentionLayer,
    OpenDetDetector,
    box_sine_embedding,
    inverse_sigmoid,
    select_queries,
)
from rsvl.methods.opendet.vld import VLDistiller


@pytest.fixture(scope="module")
def detector() -> OpenDetDetector:
    torch.manual_seed(0)
    return OpenDetDetector(OpenDetConfig.tiny()).eval()


def test_select_queries_keeps_every_token_above_the_threshold():
    scores = torch.tensor([[0.9, 0.01, 0.5, 0.2, 0.03, 0.06], [0.01, 0.02, 0.04, 0.01, 0.0, 0.07]])
    idx = select_queries(scores, threshold=0.05, min_queries=2, max_queries=5)
    # image 0 has 4 tokens >= 0.05, so Q = 4 for the batch; each image takes its 4 best
    assert idx.shape == (2, 4)
    assert idx[0].tolist() == [0, 2, 3, 5]
    assert set(idx[1].tolist()) == {5, 2, 1, 0} or set(idx[1].tolist()) == {5, 2, 1, 3}
    assert select_queries(scores, 0.05, min_queries=5, max_queries=9).shape == (2, 5)  # filled up
    assert select_queries(scores, 0.05, min_queries=1, max_queries=3).shape == (2, 3)  # capped
    assert select_queries(scores, 0.05, min_queries=50, max_queries=90).shape == (2, 6)  # no more than tokens
    with pytest.raises(InputError):
        select_queries(scores[0], 0.05, 1, 2)


def test_box_sine_embedding_matches_dino_layout():
    boxes = torch.tensor([[0.25, 0.5, 0.1, 0.2]])
    emb = box_sine_embedding(boxes, 8)
    assert emb.shape == (1, 32)
    # DINO orders y, x, w, h; the first feature of each block is sin(2 pi v), the second cos(2 pi v)
    for block, value in enumerate((0.5, 0.25, 0.1, 0.2)):
        angle = torch.tensor(2 * torch.pi * value)
        assert emb[0, 8 * block] == pytest.approx(float(angle.sin()), abs=1e-6)
        assert emb[0, 8 * block + 1] == pytest.approx(float(angle.cos()), abs=1e-6)


def test_inverse_sigmoid_inverts_sigmoid():
    x = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(inverse_sigmoid(x).sigmoid(), x, atol=1e-6)
    assert torch.isfinite(inverse_sigmoid(torch.tensor([0.0, 1.0]))).all()


def test_detector_outputs_and_decoupled_layers(detector):
    cfg = detector.config
    out = detector(torch.randn(2, 3, 128, 128))
    q = out.encoder.boxes.shape[1]
    assert cfg.min_queries <= q <= cfg.max_queries
    assert len(out.layers) == cfg.decoder_layers
    assert [layer.one_to_many for layer in out.layers] == [True, True, False]
    for stage in [out.encoder, *out.layers]:
        assert stage.boxes.shape == (2, q, 4) and stage.objectness.shape == (2, q)
        assert ((stage.boxes > 0) & (stage.boxes < 1)).all()
    # one-to-many layers: cross-attention + FFN, no self-attention; one-to-one layers have it
    assert isinstance(detector.layers[0], CrossAttentionLayer)
    assert not any("self_attn" in n for n, _ in detector.layers[0].named_parameters())
    assert any("self_attn" in n for n, _ in detector.layers[-1].named_parameters())
    assert out.maps.shapes_list == [(16, 16), (8, 8), (4, 4), (2, 2)]  # strides 8, 16, 32, 64


def test_threshold_selection_follows_the_encoder_scores(detector):
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        low = detector(x)
        assert not low.query_valid.any()  # focal prior 0.01 < lambda: only the minimum, filled
        assert low.encoder.boxes.shape[1] == detector.config.min_queries
        bias = detector.enc_objectness.bias.clone()
        detector.enc_objectness.bias.fill_(10.0)
        try:
            high = detector(x)
        finally:
            detector.enc_objectness.bias.copy_(bias)
    assert high.encoder.boxes.shape[1] == detector.config.max_queries
    assert high.query_valid.all()


def test_one_to_one_layers_do_not_train_the_one_to_many_layers():
    torch.manual_seed(1)
    det = OpenDetDetector(OpenDetConfig.tiny())
    out = det(torch.randn(1, 3, 96, 96))
    (out.final.boxes.sum() + out.final.objectness.sum()).backward()
    first = det.layers[0].cross_attn.value_proj.weight.grad
    assert first is None or not first.any()
    assert det.layers[-1].encoder_attn.value_proj.weight.grad.abs().sum() > 0
    assert det.backbone.conv_stem.weight.grad.abs().sum() > 0  # memory still trains the encoder


def test_aligner_is_the_sum_of_both_directions():
    torch.manual_seed(2)
    align = BidirectionalAligner(hidden=16, text_dim=24)
    q, t = torch.randn(5, 16), torch.randn(3, 24)
    got = align(q, t)
    cos = functional.normalize(align.vision_to_language(q), dim=-1) @ functional.normalize(t, dim=-1).T
    dot = align.query_proj(q) @ align.language_to_vision(t).T / 4.0
    assert got.shape == (5, 3)
    assert torch.allclose(got, cos + dot, atol=1e-6)
    # the V->L term is a cosine: scaling a name embedding leaves it unchanged
    dot2 = align.query_proj(q) @ align.language_to_vision(2 * t).T / 4.0
    assert torch.allclose(align(q, 2 * t) - dot2, cos, atol=1e-5)
    with pytest.raises(InputError):
        align(q[None], t)


def test_distiller_gives_text_width_prompts_without_training_the_detector(detector):
    torch.manual_seed(3)
    cfg = detector.config
    vld = VLDistiller(cfg, detector.hf_config)
    out = detector(torch.randn(2, 3, 96, 96))
    hidden = out.final.hidden.detach().requires_grad_(True)
    prompts = vld(hidden, out.final.boxes, out.maps)
    assert prompts.shape == (2, hidden.shape[1], cfg.text_dim)
    prompts.sum().backward()
    assert hidden.grad is None  # VLD-M reads detached queries
    assert vld.fuse.weight.grad.abs().sum() > 0

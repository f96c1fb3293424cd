"""Open-Det as one model: per-stage matching, the joint training losses, vocabulary-free prediction."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from rsvl.errors import InputError
from rsvl.methods.opendet.config import LossConfig, OpenDetConfig
from rsvl.methods.opendet.criterion import ImageTargets, stage_losses
from rsvl.methods.opendet.detector import LayerOutput
from rsvl.methods.opendet.model import OpenDet
from rsvl.methods.opendet.names import tiny_t5

TERMS = {"bce", "align", "bbox", "giou", "distill", "lm", "lm_denoise", "total"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _targets(cfg: OpenDetConfig) -> list[ImageTargets]:
    gen = torch.Generator().manual_seed(0)
    text = functional.normalize(torch.randn(3, cfg.text_dim, generator=gen), dim=-1)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3], [0.5, 0.8, 0.3, 0.1]])
    return [
        ImageTargets(boxes[:2], ["storage tank", "ship"], text[:2]),
        ImageTargets(boxes[2:], ["plane"], text[2:]),
    ]


def _model(**loss: object) -> OpenDet:
    torch.manual_seed(0)
    cfg = OpenDetConfig.tiny(loss=LossConfig(**loss))
    return OpenDet(cfg, tiny_t5(prompt_dim=cfg.text_dim))


def test_training_losses_fall_on_a_fixed_batch():
    model = _model()
    pixels = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = _targets(model.config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for step in range(12):
        terms = model(pixels, targets, generator=torch.Generator().manual_seed(step))
        assert set(terms) == TERMS and all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    assert history[-1]["total"] < 0.8 * history[0]["total"]
    for name in ("bbox", "lm", "distill"):
        assert history[-1][name] < history[0][name], name


def test_images_without_objects_train_without_nans():
    model = _model()
    cfg = model.config
    empty = [ImageTargets(torch.zeros(0, 4), [], torch.zeros(0, cfg.text_dim))]
    terms = model(torch.randn(1, 3, 96, 96), empty)
    assert torch.isfinite(terms["total"])
    terms["total"].backward()  # the objectness still learns "no object"
    assert model.detector.objectness[-1].bias.grad.abs().sum() > 0


def _stage(q: int = 10) -> LayerOutput:
    gen = torch.Generator().manual_seed(3)
    boxes = torch.rand(1, q, 4, generator=gen) * 0.5 + 0.25
    return LayerOutput(torch.randn(1, q, 8, generator=gen), boxes, torch.randn(1, q, generator=gen), True)


def test_one_to_many_layers_give_each_object_k_queries_unless_decoupling_is_off():
    tgt = [ImageTargets(torch.tensor([[0.4, 0.4, 0.2, 0.2], [0.6, 0.6, 0.1, 0.1]]), ["a", "b"], torch.eye(2, 4))]
    logits = [torch.zeros(10, 2)]
    decoupled = stage_losses(_stage(), logits, tgt, LossConfig(), one_to_many=True)
    assert sorted(decoupled.matches[0].gt_idx.tolist()) == [0, 0, 1, 1]
    assert len(set(decoupled.matches[0].query_idx.tolist())) == 4
    one_to_one = stage_losses(_stage(), logits, tgt, LossConfig(), one_to_many=False)
    assert sorted(one_to_one.matches[0].gt_idx.tolist()) == [0, 1]
    ablation = stage_losses(_stage(), logits, tgt, LossConfig(decoupled_matching=False), one_to_many=True)
    assert sorted(ablation.matches[0].gt_idx.tolist()) == [0, 1]


def test_masked_alignment_treats_same_name_objects_as_positives():
    same = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])  # two objects with one name
    tgt = [ImageTargets(torch.tensor([[0.4, 0.4, 0.2, 0.2], [0.6, 0.6, 0.1, 0.1]]), ["car", "car"], same)]
    logits = [torch.randn(10, 2, generator=torch.Generator().manual_seed(4))]
    masked = stage_losses(_stage(), logits, tgt, LossConfig(), one_to_many=False).terms["align"]
    plain = stage_losses(_stage(), logits, tgt, LossConfig(masked_alignment=False), one_to_many=False).terms["align"]
    assert float(masked) != pytest.approx(float(plain))
    different = [ImageTargets(tgt[0].boxes, ["car", "ship"], torch.eye(2, 4))]
    masked_diff = stage_losses(_stage(), logits, different, LossConfig(), one_to_many=False).terms["align"]
    plain_diff = stage_losses(_stage(), logits, different, LossConfig(masked_alignment=False), one_to_many=False)
    assert float(masked_diff) == pytest.approx(float(plain_diff.terms["align"]))


def test_predict_returns_boxes_scores_and_generated_names():
    model = _model()
    pixels = torch.randn(2, 3, 96, 96)
    out = model.predict(pixels, score_threshold=0.0, max_detections=4, max_new_tokens=4)
    assert len(out) == 2
    for det in out:
        assert det.boxes.shape == (4, 4) and ((det.boxes >= 0) & (det.boxes <= 1)).all()
        assert (det.boxes[:, 2:] >= det.boxes[:, :2]).all()
        assert torch.all(det.scores[:-1] >= det.scores[1:])  # best first
        assert len(det.names) == 4 and all(isinstance(n, list) for n in det.names)
        assert det.prompts.shape == (4, model.config.text_dim)
    assert model.predict(pixels, score_threshold=1.0)[0].boxes.shape == (0, 4)
    quiet = model.predict(pixels, score_threshold=0.0, max_detections=2, name=False)
    assert quiet[0].names == [[], []]
    assert model.training  # predict restores the mode


def test_mismatched_inputs_are_input_errors():
    cfg = OpenDetConfig.tiny()
    with pytest.raises(InputError, match="prompts"):
        OpenDet(cfg, tiny_t5(prompt_dim=cfg.text_dim + 1))
    model = _model()
    with pytest.raises(InputError, match="targets"):
        model(torch.randn(2, 3, 96, 96), _targets(cfg)[:1])
    with pytest.raises(InputError):
        OpenDetConfig.tiny(one_to_many_layers=9)
    with pytest.raises(InputError, match="at least 65 px"):
        model.predict(torch.randn(1, 3, 64, 48))

"""VLM4RSDet's VLM branch on a tiny real Florence-2: tokens, GLCA, LHPS, targets, loss, generation."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
import torch

from rsvl.errors import InputError
from rsvl.geometry.boxes import obb_to_poly
from rsvl.geometry.codecs import Florence2Codec
from rsvl.methods.vlm4rsdet.vlm_branch import LHPS, FeatureTokens, VLMBranch, box_target_text, glca
from rsvl.models.florence2 import build_loc_tokenizer, tiny_florence2

NAMES = ["plane", "small vehicle", "ship"]
SIZES = (32, 16, 8, 4, 2)  # P3..P7 of a 256-px image


@pytest.fixture(scope="module")
def tok():
    return build_loc_tokenizer(NAMES)


def _branch(tok, seed: int = 0, **kw) -> VLMBranch:
    torch.manual_seed(seed)
    kw = {"in_channels": 8, "visual_dim": 16, "grid": 4, "max_target_tokens": 64, **kw}
    return VLMBranch(tiny_florence2(tok, d_model=32), tok, **kw)


def _features(batch: int = 1, seed: int = 1, grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 8, s, s, generator=g).requires_grad_(grad) for s in SIZES]


def _target(boxes=None, names=None) -> dict:
    if boxes is None:
        boxes, names = [[10.0, 10, 50, 40], [100, 100, 120, 130], [5, 60, 200, 250]], NAMES
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "names": names, "image_size": (256, 256)}


# --------------------------------------------------------------------------- tokens and GLCA


@pytest.mark.parametrize("size", [(7, 9), (32, 32), (1, 1)])
def test_feature_tokens_shapes(size):
    ft = FeatureTokens(in_channels=8, visual_dim=16, grid=4, d_model=24)
    out = ft(torch.randn(3, 8, *size))
    assert out.shape == (3, 16, 24)
    assert ft.conv.kernel_size == (1, 1) and ft.conv.out_channels == 16


def test_glca_equals_the_formula_row_by_row():
    torch.manual_seed(0)
    d = 6
    tokens = [torch.randn(2, 5, d) for _ in range(5)]
    out = glca(tokens)
    n5 = tokens[-1]
    for i in range(4):
        for b in range(2):
            for q in range(5):
                scores = [float(tokens[i][b, q] @ n5[b, k]) / math.sqrt(d) for k in range(5)]
                e = [math.exp(s - max(scores)) for s in scores]
                expected = sum(e[k] / sum(e) * n5[b, k] for k in range(5)) + tokens[i][b, q]
                torch.testing.assert_close(out[i][b, q], expected)
    assert torch.equal(out[4], n5)


def test_glca_known_values_for_identical_levels():
    v = torch.tensor([1.0, -2.0, 0.5, 3.0])
    same = v.expand(1, 9, 4).clone()  # every token equal: attention is uniform over equal values
    out = glca([same] * 5)
    for t in out[:4]:
        torch.testing.assert_close(t, 2 * same)
    assert torch.equal(out[4], same)
    eye = 100.0 * torch.eye(4).unsqueeze(0)  # orthogonal, large: attention ~ identity -> T = 2N
    for t in glca([eye] * 5)[:4]:
        torch.testing.assert_close(t, 2 * eye)


# --------------------------------------------------------------------------- LHPS


def _expected_counts(props, m: int) -> list[int]:
    left, out = m, []
    for i, p in enumerate(props):
        n = left if i == len(props) - 1 else min(math.ceil(p * m - 1e-9 * max(m, 1)), left)
        out.append(n)
        left -= n
    return out


@pytest.mark.parametrize("m", [0, 1, 3, 4, 5, 7, 50, 333])
def test_lhps_split_partitions_by_size(m):
    torch.manual_seed(m)
    lhps = LHPS(5)
    with torch.no_grad():
        lhps.beta.copy_(torch.randn(5))
    sizes = torch.rand(m) * 1000
    groups = lhps.split(sizes)
    assert len(groups) == 5 and all(g.dtype == torch.long for g in groups)
    flat = torch.cat(groups).tolist()
    assert sorted(flat) == list(range(m))  # every object exactly once
    assert [len(g) for g in groups] == _expected_counts(torch.softmax(lhps.beta.detach().double(), 0).tolist(), m)
    filled = [sizes[g] for g in groups if len(g)]
    for a, b in itertools.pairwise(filled):
        assert a.max() <= b.min()  # smallest objects on the finest level


def test_lhps_known_counts_with_equal_beta():
    lhps = LHPS(5)
    torch.testing.assert_close(lhps.weights(), torch.full((5,), 0.2))
    assert [len(g) for g in lhps.split(torch.tensor([3.0, 1.0, 2.0]))] == [1, 1, 1, 0, 0]
    assert [g.tolist() for g in lhps.split(torch.tensor([3.0, 1.0, 2.0]))][:3] == [[1], [2], [0]]
    # M = 7: ceil(1.4) = 2 per level over-counts; the fourth level gets the 1 left, the fifth none
    assert [len(g) for g in lhps.split(torch.arange(7.0))] == [2, 2, 2, 1, 0]
    assert [len(g) for g in lhps.split(torch.arange(10.0))] == [2, 2, 2, 2, 2]  # no round-off ceil
    assert [len(g) for g in lhps.split(torch.zeros(0))] == [0] * 5
    ties = lhps.split(torch.ones(5))
    assert [g.tolist() for g in ties] == [[0], [1], [2], [3], [4]]  # ties keep input order


# --------------------------------------------------------------------------- target text


def test_box_target_text_known_answer_and_hw_order():
    text = box_target_text(torch.tensor([[0.0, 0, 200, 100]]), ["small vehicle"], (200, 400), obb=False)
    assert text == "small vehicle<loc_0><loc_0><loc_500><loc_500>"  # image_size is (H, W)
    two = box_target_text(np.array([[0.0, 0, 4, 4], [1, 1, 3, 3]]), ["a", "b"], (8, 8), obb=False)
    assert two == "a<loc_0><loc_0><loc_500><loc_500><sep>b<loc_125><loc_125><loc_375><loc_375>"
    assert box_target_text(torch.zeros(0, 4), [], (8, 8), obb=False) == ""


def test_box_target_text_decodes_back_within_bound():
    rng = np.random.default_rng(0)
    h, w = 300, 500
    xy = rng.uniform(0, 1, (20, 2)) * [w - 60, h - 60]
    boxes = np.concatenate([xy, xy + rng.uniform(2, 60, (20, 2))], 1)
    names = [NAMES[k % 3] for k in range(20)]
    objs = Florence2Codec(obb=False).decode(box_target_text(boxes, names, (h, w), obb=False), (w, h))
    assert [o.label for o in objs] == names
    bound = np.array([w, h, w, h]) * 0.5 / 1000 + 1e-9
    assert np.all(np.abs(np.stack([o.box for o in objs]) - boxes) <= bound)

    obb = np.concatenate([xy + 30, rng.uniform(5, 40, (20, 2)), rng.uniform(-1.5, 1.5, (20, 1))], 1)
    text = box_target_text(torch.tensor(obb), names, (h, w), obb=True)
    objs = Florence2Codec(obb=True).decode(text, (w, h))
    assert len(objs) == 20 and text.count("<loc_") == 160
    vb = math.hypot(w, h) * 0.5 / 1000 + 1e-9
    for o, box in zip(objs, obb, strict=True):
        got, want = o.box.reshape(4, 2), np.asarray(obb_to_poly(box)).reshape(4, 2)
        dist = np.linalg.norm(want[:, None] - got[None], axis=-1).min(1)
        assert np.all(dist <= vb)
    hbb_text = box_target_text(torch.tensor(obb[:1]), names[:1], (h, w), obb=False)
    assert hbb_text.count("<loc_") == 4  # le90 boxes become their enclosing xyxy box for HBB text


# --------------------------------------------------------------------------- the branch


def test_level_texts_with_and_without_lhps(tok):
    target = _target()
    texts = _branch(tok).level_texts(target)
    assert texts[0].startswith("small vehicle") and texts[1].startswith("plane") and texts[2].startswith("ship")
    assert texts[3:] == ["", ""]
    everything = box_target_text(target["boxes"], NAMES, (256, 256), obb=False)
    assert _branch(tok, use_lhps=False).level_texts(target) == [everything] * 5


def test_labels_pad_with_minus_100_and_empty_levels_get_bos_eos(tok):
    br = _branch(tok)
    labels = br.labels([_target(), _target(np.zeros((0, 4)), [])])
    assert labels.shape[0] == 10
    assert labels[3].tolist()[:3] == [0, 2, -100] and (labels[3, 2:] == -100).all()
    assert (labels[5:][:, :2] == torch.tensor([0, 2])).all()
    row = labels[0][labels[0] != -100].tolist()
    assert row[0] == 0 and row[-1] == 2
    assert tok.decode(row[1:-1]) == br.level_texts(_target())[0]


def test_forward_is_finite_and_reaches_the_features(tok):
    br = _branch(tok)
    feats = _features(batch=2, grad=True)
    loss = br(feats, [_target(), _target(np.zeros((0, 4)), [])])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    assert br.tokens.conv.weight.grad.abs().sum() > 0
    assert br.lhps.beta.grad is not None and br.lhps.beta.grad.abs().sum() > 0
    assert all(p.grad is None for p in br.florence.model.vision_tower.parameters())


def test_loss_is_the_weighted_sum_of_level_losses(tok):
    br = _branch(tok)
    feats, targets = _features(), [_target()]
    level = br.level_losses(feats, targets)
    torch.testing.assert_close(br(feats, targets), level.mean())  # equal beta: plain mean
    with torch.no_grad():
        br.lhps.beta.copy_(torch.tensor([1.0, 0.0, -1.0, 0.5, 0.0]))
    level = br.level_losses(feats, targets)
    torch.testing.assert_close(br(feats, targets), (torch.softmax(br.lhps.beta, 0) * level).sum())


def test_glca_changes_the_inputs_and_the_loss(tok):
    br = _branch(tok)
    feats, targets = _features(), [_target()]
    with torch.no_grad():
        on_inputs, on = br.encoder_inputs(feats), br(feats, targets)
        br.use_glca = False
        off_inputs, off = br.encoder_inputs(feats), br(feats, targets)
        levels = [br.tokens(f) for f in feats]
    torch.testing.assert_close(on_inputs[:, :16], torch.cat(glca(levels)))
    torch.testing.assert_close(off_inputs[:, :16], torch.cat(levels))
    assert torch.equal(on_inputs[4], off_inputs[4]) and torch.equal(on_inputs[:, 16:], off_inputs[:, 16:])
    assert torch.isfinite(off) and on.item() != off.item()


@pytest.mark.parametrize("use_glca", [True, False])
def test_glca_routes_level_5_context_into_level_1(tok, use_glca):
    br = _branch(tok, use_glca=use_glca)
    feats = _features(grad=True)
    br.level_losses(feats, [_target()])[0].backward()  # the finest level's loss only
    assert feats[0].grad.abs().sum() > 0
    reaches_top = feats[4].grad is not None and feats[4].grad.abs().sum() > 0
    assert reaches_top == use_glca


def test_truncation_keeps_whole_objects_and_warns_once(tok, caplog):
    boxes = [[i * 10.0, i * 10, i * 10 + 8, i * 10 + 8] for i in range(20)]
    target = _target(boxes, ["ship"] * 20)
    br = _branch(tok, use_lhps=False, max_target_tokens=24)
    with caplog.at_level(logging.WARNING, logger="rsvl.methods.vlm4rsdet.vlm_branch"):
        labels = br.labels([target, target])
    assert labels.shape[1] <= 24
    row = labels[0][labels[0] != -100].tolist()
    assert row[0] == 0 and row[-1] == 2
    objs = Florence2Codec().decode(tok.decode(row[1:-1]), (256, 256))
    assert len(objs) == 3  # 'ship' + 4 locs, <sep> between: 3 objects = 17 tokens, 4 would be 23 > 22
    assert sum("max_target_tokens" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(("limit", "kept"), [(19, 3), (18, 2), (7, 1), (6, 0), (3, 0)])
def test_truncation_cuts_only_between_objects(tok, limit, kept):
    """17 body tokens hold 3 objects exactly (limit 19 = <s> + 17 + </s>); an object never gets cut."""
    boxes = [[i * 10.0, i * 10, i * 10 + 8, i * 10 + 8] for i in range(5)]
    br = _branch(tok, use_lhps=False, max_target_tokens=limit)
    row = br.labels([_target(boxes, ["ship"] * 5)])[0]
    row = row[row != -100].tolist()
    assert row[0] == 0 and row[-1] == 2 and len(row) <= limit
    assert len(Florence2Codec().decode(tok.decode(row[1:-1]), (256, 256))) == kept


def test_grid_32_extends_positions_and_runs(tok):
    br = _branch(tok, grid=32)
    assert br.florence.config.text_config.max_position_embeddings >= 32 * 32 + len(br.prompt_ids)
    inputs = br.encoder_inputs(_features())
    assert inputs.shape == (5, 1024 + 3, 32)  # 32x32 tokens + <s> <OD> </s>
    assert torch.isfinite(br(_features(), [_target()]))


def test_bad_inputs_raise_input_error(tok):
    br = _branch(tok)
    with pytest.raises(InputError, match="feature levels"):
        br(_features()[:4], [_target()])
    with pytest.raises(InputError, match="names"):
        br(_features(), [_target(_target()["boxes"], ["ship"])])
    with pytest.raises(InputError, match="targets"):
        br(_features(batch=2), [_target()])
    bare = type("NoLocs", (), {"get_vocab": lambda self: {"<s>": 0}})()
    with pytest.raises(InputError, match="<sep>"):
        VLMBranch(tiny_florence2(tok, d_model=32), bare)


def test_overfit_one_image_then_generate_the_target(tok):
    br = _branch(tok, use_lhps=False)
    feats, targets = _features(), [_target()]
    opt = torch.optim.Adam(br.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = br(feats, targets)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.1 * first
    assert br.training
    texts = br.generate_text(feats, max_new_tokens=40)
    assert br.training  # mode restored
    assert len(texts) == 1 and len(texts[0]) == 5
    expected = br.level_texts(targets[0])[0]
    assert texts[0] == [expected] * 5  # every level writes the whole target, <loc_k>/<sep> kept
    objs = Florence2Codec().decode(texts[0][0], (256, 256))
    assert [o.label for o in objs] == ["plane", "small vehicle", "ship"]

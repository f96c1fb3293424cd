"""The Region Focus Module: exact reproduction of the LLM's attention, distillation, save/load."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rsvl.errors import InputError
from rsvl.methods.lrsvqa.rfm import (
    AttentionQuery,
    RegionFocusModule,
    attention_rows,
    distill_step,
    distillation_loss,
    load_rfm,
    save_rfm,
    teacher_attention,
)

KEYS = AttentionQuery(query_index=29, keys=slice(4, 24))  # 20 "vision tokens", question after them


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=256,
        initializer_range=0.1,  # peaked attention, so layers differ (0.02 gives near-uniform rows)
    )
    cfg._attn_implementation = "eager"
    return LlamaForCausalLM(cfg).eval()


def sequence(seed: int) -> torch.Tensor:
    return torch.randn(1, 30, 64, generator=torch.Generator().manual_seed(seed))


def test_rows_equal_the_models_own_output_attentions(llm):
    x = sequence(1)
    with torch.no_grad():
        out = llm.model(inputs_embeds=x, output_attentions=True)
    rows = teacher_attention(llm, x, KEYS, [0, 2, 4])
    for layer in (0, 2, 4):
        ref = out.attentions[layer][0, :, KEYS.query_index, KEYS.keys]
        ref = ref / ref.sum(-1, keepdim=True)
        assert torch.allclose(rows[layer].exp(), ref, atol=1e-5)


def test_consecutive_initialisation_reproduces_the_teacher_exactly(llm):
    rfm = RegionFocusModule(llm, [1, 2])  # student layers = LLM layers 0, 1, 2
    x = sequence(2)
    teacher = teacher_attention(llm, x, KEYS, [1, 2])
    student = rfm.log_attention(x, KEYS)
    assert torch.allclose(student[0], teacher[1], atol=1e-5) and torch.allclose(student[1], teacher[2], atol=1e-5)
    assert float(distillation_loss(student, [teacher[1], teacher[2]]).detach()) == pytest.approx(0.0, abs=1e-5)
    relevance = rfm.relevance(x, KEYS)
    assert relevance.shape == (20,) and torch.allclose(relevance, teacher[2].exp().mean(0), atol=1e-5)
    assert float(relevance.sum()) == pytest.approx(1.0, abs=1e-5)


def test_layers_are_copies_not_shared(llm):
    rfm = RegionFocusModule(llm, [3])
    assert rfm.source_layers == [2, 3]
    with torch.no_grad():
        rfm.layers[0].self_attn.q_proj.weight.add_(1.0)
    assert not torch.equal(rfm.layers[0].self_attn.q_proj.weight, llm.model.layers[2].self_attn.q_proj.weight)


def test_distillation_brings_a_shallow_student_to_the_deep_teacher(llm):
    torch.manual_seed(0)
    rfm = RegionFocusModule(llm, [4])  # 2 layers (LLM 3, 4) must mimic layer 4 of the 5-layer stack
    data = [sequence(10 + i) for i in range(4)]
    teacher = [teacher_attention(llm, x, KEYS, [4])[4] for x in data]

    def loss() -> float:
        with torch.no_grad():
            pairs = zip(data, teacher, strict=True)
            return sum(float(distillation_loss(rfm.log_attention(x, KEYS), [t])) for x, t in pairs)

    before = loss()
    assert before > 0.1
    opt = torch.optim.Adam(rfm.parameters(), lr=3e-3)
    for step in range(40):
        distill_step(rfm, llm, opt, data[step % 4], KEYS)
    assert loss() < 0.1 * before
    assert not any(p.grad is not None and p.requires_grad for p in llm.parameters())  # the LLM is untouched


def test_save_load_round_trip_and_bad_files(llm, tmp_path):
    rfm = RegionFocusModule(llm, [1, 3])
    with torch.no_grad():
        rfm.layers[1].mlp.up_proj.weight.mul_(1.5)
    path = save_rfm(rfm, tmp_path / "rfm.safetensors")
    again = load_rfm(llm, path)
    assert again.teacher_layers == [1, 3]
    x = sequence(3)
    assert torch.allclose(again.relevance(x, KEYS), rfm.relevance(x, KEYS))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(InputError, match=r"bad\.safetensors"):
        load_rfm(llm, bad)
    with pytest.raises(InputError, match="not found"):
        load_rfm(llm, tmp_path / "missing.safetensors")
    small = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=100))  # fmt: skip
    with pytest.raises(InputError, match="do not fit"):
        load_rfm(small, path)


def test_bad_layer_plans_and_queries(llm):
    for layers in ([], [0], [2, 2], [5]):
        with pytest.raises(InputError):
            RegionFocusModule(llm, layers)
    text = llm.model
    with pytest.raises(InputError, match="must follow"):
        attention_rows(list(text.layers), text.rotary_emb, sequence(0), AttentionQuery(10, slice(4, 24)), [0])
    with pytest.raises(InputError, match="do not exist"):
        attention_rows(list(text.layers), text.rotary_emb, sequence(0), KEYS, [7])


def test_attention_only_rfm_trains_and_ships_its_attention_alone(llm, tmp_path):
    rfm = RegionFocusModule(llm, [3], trainable="attention")
    names = set(rfm.trainable_parameters())
    assert names and all(".self_attn." in n for n in names)
    assert not any(".mlp." in n or "layernorm" in n for n in names)
    opt = torch.optim.AdamW(rfm.trainable_parameters().values(), lr=1e-2)
    mlp_before = rfm.layers[1].mlp.up_proj.weight.clone()
    q_before = rfm.layers[1].self_attn.q_proj.weight.clone()
    for p in rfm.parameters():
        p.requires_grad_(False)
    for p in rfm.trainable_parameters().values():
        p.requires_grad_(True)
    for seed in range(3):
        distill_step(rfm, llm, opt, sequence(seed), KEYS)
    assert torch.equal(rfm.layers[1].mlp.up_proj.weight, mlp_before)  # frozen: still the LLM's layer 3
    assert not torch.equal(rfm.layers[1].self_attn.q_proj.weight, q_before)

    path = save_rfm(rfm, tmp_path / "rfm.safetensors", dtype=torch.float16, metadata={"note": "x"})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert set(fh.keys()) == names and fh.metadata()["note"] == "x"
        assert all(fh.get_tensor(k).dtype == torch.float16 for k in fh.keys())  # noqa: SIM118
    again = load_rfm(llm, path)
    assert again.trainable == "attention"
    assert torch.equal(again.layers[1].mlp.up_proj.weight, mlp_before)  # restored from the LLM
    x = sequence(7)
    assert torch.allclose(again.relevance(x, KEYS), rfm.relevance(x, KEYS), atol=1e-3)  # float16 file

    full = save_rfm(RegionFocusModule(llm, [3]), tmp_path / "full.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(full))
    save_file(state, str(tmp_path / "mixed.safetensors"), metadata={"format": "rsvl-rfm", "teacher_layers": "[3]",
                                                                    "trainable": "attention"})  # fmt: skip
    with pytest.raises(InputError, match="unexpected"):
        load_rfm(llm, tmp_path / "mixed.safetensors")
    with pytest.raises(InputError, match="trainable"):
        RegionFocusModule(llm, [3], trainable="mlp")

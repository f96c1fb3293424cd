"""MF-RSVLM prompts (exact label masking) and the trainable model on a real tiny LLaVA."""

from __future__ import annotations

import pytest
import torch

from rsvl.errors import InputError
from rsvl.methods.mfrsvlm.model import MFRSVLM, clip_injection_layers
from rsvl.methods.mfrsvlm.prompts import (
    IGNORE_INDEX,
    VICUNA_V1_SYSTEM,
    build_training_example,
    classification_prompt,
    match_class,
    pad_batch,
    render_generation_prompt,
    resolve_template,
    tokenize_prompt,
    vqa_prompt,
)
from rsvl.models.llava import tiny_llava

#: SmolLM2-Instruct's ChatML template (default system prompt included).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# answers that collide with template text ("ASSISTANT", "assistant") must still be masked exactly
CONVERSATION = [
    {"from": "human", "value": "How many planes? <image>"},
    {"from": "gpt", "value": "three planes"},
    {"from": "human", "value": "Who answers?"},
    {"from": "gpt", "value": "ASSISTANT assistant"},
]
ANSWERS = ["three planes", "ASSISTANT assistant"]


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 56, 56, generator=torch.Generator().manual_seed(seed))


def _batch(model: MFRSVLM, side: str = "right") -> dict[str, torch.Tensor]:
    tok = model.tokenizer
    convs = [CONVERSATION[:2], CONVERSATION]
    exs = [build_training_example(tok, c, template=model.template) for c in convs]
    return pad_batch([e.input_ids for e in exs], tok.pad_token_id, [e.labels for e in exs], side=side)


def _open_gates(model: MFRSVLM, value: float = 1.0) -> None:
    with torch.no_grad():
        for module in (model.fusion, model.injector):
            if module is not None:
                module.gate_alpha.fill_(value)


# --------------------------------------------------------------------------- prompts


def _check_masking(tok, ex, eos: str) -> None:
    runs = [tok.decode(r).strip() for r in ex.supervised_runs()]
    assert runs == [f"{a}{eos}" for a in ANSWERS]
    image_id = tok.convert_tokens_to_ids("<image>")
    assert ex.input_ids.count(image_id) == 1
    assert ex.labels[ex.input_ids.index(image_id)] == IGNORE_INDEX
    assert all(lab in (IGNORE_INDEX, tid) for lab, tid in zip(ex.labels, ex.input_ids, strict=True))


def test_vicuna_v1_masking_is_exact_for_a_multi_turn_conversation():
    tok = tiny_llava().tokenizer  # no chat template -> vicuna_v1
    ex = build_training_example(tok, CONVERSATION)
    eos = tok.eos_token
    assert ex.template == "vicuna_v1"
    assert ex.text == (
        f"{VICUNA_V1_SYSTEM} USER: <image>\nHow many planes? ASSISTANT: three planes{eos}"
        f"USER: Who answers? ASSISTANT: ASSISTANT assistant{eos}"
    )
    _check_masking(tok, ex, eos)
    # the inference prompt tokenises to exactly the training prefix before the first answer token
    prompt = tokenize_prompt(tok, render_generation_prompt(tok, CONVERSATION[:1]))
    assert ex.input_ids[: len(prompt)] == prompt
    assert set(ex.labels[: len(prompt)]) == {IGNORE_INDEX} and ex.labels[len(prompt)] != IGNORE_INDEX


def test_chatml_masking_is_exact_and_leaves_the_newline_after_im_end_unsupervised():
    tok = tiny_llava().tokenizer
    tok.chat_template = CHATML
    assert resolve_template(tok) == "chat"
    ex = build_training_example(tok, CONVERSATION)
    assert ex.template == "chat" and ex.text.startswith("<|im_start|>system\nYou are a helpful")
    _check_masking(tok, ex, "<|im_end|>")
    last = max(i for i, lab in enumerate(ex.labels) if lab != IGNORE_INDEX)
    assert ex.input_ids[last] == tok.eos_token_id and ex.labels[last + 1 :] == [IGNORE_INDEX]  # the final "\n"
    prompt = tokenize_prompt(tok, render_generation_prompt(tok, CONVERSATION[:3]))
    assert ex.input_ids[: len(prompt)] == prompt and ex.labels[len(prompt)] != IGNORE_INDEX


def test_llava_hf_template_without_end_of_turn_falls_back_to_vicuna_and_chat_refuses():
    tok = tiny_llava(text="llama").tokenizer  # llava-hf's LLaVA-1.5 chat template: no EOS after answers
    assert resolve_template(tok) == "vicuna_v1"
    with pytest.raises(InputError, match="end-of-turn"):
        build_training_example(tok, CONVERSATION, template="chat")


def test_bad_conversations_raise_input_error():
    tok = tiny_llava().tokenizer
    with pytest.raises(InputError, match="alternate"):
        build_training_example(tok, [{"role": "assistant", "content": "hi"}])
    with pytest.raises(InputError, match="end with an assistant"):
        build_training_example(tok, CONVERSATION[:3])
    with pytest.raises(InputError, match="unknown role"):
        build_training_example(tok, [{"role": "robot", "content": "x"}])


def test_task_prompts_and_class_matching():
    assert classification_prompt(["airport", "beach", "dense residential"]) == (
        "Classify the image into one of: airport, beach, dense residential. Answer with the class name."
    )
    assert vqa_prompt("Is there a ship?", ["yes", "no"]) == "Is there a ship?\nAnswer yes or no."
    assert vqa_prompt("How many cars?") == "How many cars?\nAnswer the question using a single word or phrase."
    classes = ["residential", "dense residential", "beach"]
    assert match_class("Dense_Residential.", classes) == "dense residential"
    assert match_class("It is a dense residential area", classes) == "dense residential"
    assert match_class("a beach next to residential blocks", classes) is None
    with pytest.raises(InputError, match="commas"):
        classification_prompt(["a, b", "c"])
    with pytest.raises(InputError, match="repeat"):
        classification_prompt(["Beach", "beach"])


# --------------------------------------------------------------------------- model


def test_baseline_loss_equals_the_llava_models_own_forward_with_pixel_values():
    model = MFRSVLM(tiny_llava(tile_size=56), variant="baseline")
    batch, images = _batch(model), _images()
    loss = model(images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
    ids, labels, mask = model.expand_image_tokens(batch["input_ids"], batch["labels"], batch["attention_mask"])
    assert int((labels != IGNORE_INDEX).sum()) == int((batch["labels"] != IGNORE_INDEX).sum())
    ref = model.llava(input_ids=ids, pixel_values=images, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(loss) and torch.allclose(loss, ref, atol=1e-6)


def test_variants_equal_baseline_at_initialisation_and_differ_once_gates_open():
    batch, images = _batch(MFRSVLM(tiny_llava(tile_size=56), variant="baseline")), _images()
    losses = {}
    models = {}
    for variant in ("baseline", "fusion", "fusion_injection"):
        models[variant] = MFRSVLM(tiny_llava(tile_size=56), variant=variant)
        with torch.no_grad():
            losses[variant] = models[variant](images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
    assert models["fusion_injection"].injection_layers == (2, 4)  # 2/4/6/8 clipped to the 4-layer LM
    assert torch.allclose(losses["fusion"], losses["baseline"], atol=1e-6)
    assert torch.allclose(losses["fusion_injection"], losses["baseline"], atol=1e-6)
    for variant in ("fusion", "fusion_injection"):
        _open_gates(models[variant])
        with torch.no_grad():
            opened = models[variant](images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
        assert not torch.allclose(opened, losses["baseline"], atol=1e-4)
    assert clip_injection_layers((2, 4, 6, 8), 1) == (1,)


def test_stage1_step_changes_only_projector_fusion_and_injector():
    model = MFRSVLM(tiny_llava(tile_size=56), variant="fusion_injection")
    _open_gates(model, 0.5)
    trainable = model.trainable_parameters(1)
    assert trainable and all(
        n.startswith(("llava.model.multi_modal_projector.", "fusion.", "injector.")) for n in trainable
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _batch(model)
    model.train()
    opt = torch.optim.SGD(list(trainable.values()), lr=0.1)
    model(_images(), batch["input_ids"], batch["labels"], batch["attention_mask"]).loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= set(trainable)
    for prefix in ("llava.model.multi_modal_projector.", "fusion.", "injector."):
        assert any(n.startswith(prefix) for n in changed), prefix


def test_stage2_adds_lora_to_the_language_model_only_and_lora_gets_gradients():
    model = MFRSVLM(tiny_llava(tile_size=56), variant="fusion")
    batch, images = _batch(model), _images()
    with torch.no_grad():
        base = model(images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
    trainable = model.trainable_parameters(2, rank=4, alpha=8)
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(n.startswith("llava.model.language_model.") for n in lora)
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "v_proj"}
    assert not any("vision_tower" in n for n in trainable)
    loss = model(images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
    assert torch.allclose(loss, base, atol=1e-6)  # LoRA B starts at zero
    loss.backward()
    assert all(trainable[n].grad is not None for n in lora)
    assert any(float(trainable[n].grad.abs().sum()) > 0 for n in lora if "lora_B" in n)
    assert isinstance(model.llava, type(tiny_llava().model))  # the bundle's model stays a LLaVA


def test_left_padded_batched_generate_and_forward_match_single_examples():
    model = MFRSVLM(tiny_llava(tile_size=56), variant="fusion_injection")
    _open_gates(model)  # injection active: per-row image starts matter
    images = _images()
    prompts = ["What is it?", "Is there a ship near the long pier in the harbour?"]
    batched = model.generate(images, prompts, max_new_tokens=6)
    single = [model.generate(images[i : i + 1], [p], max_new_tokens=6)[0] for i, p in enumerate(prompts)]
    assert batched == single
    right, left = _batch(model, "right"), _batch(model, "left")
    with torch.no_grad():
        lr = model(images, right["input_ids"], right["labels"], right["attention_mask"])
        ll = model(images, left["input_ids"], left["labels"], left["attention_mask"])
    assert torch.allclose(lr.loss, ll.loss, atol=1e-5)


def test_trainable_checkpoint_round_trip_and_mismatches(tmp_path):
    model = MFRSVLM(tiny_llava(tile_size=56), variant="fusion_injection")
    params = model.trainable_parameters(2, rank=4, alpha=8)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    path = model.save_trainable(tmp_path / "mf.safetensors")
    batch, images = _batch(model), _images()
    fresh = MFRSVLM(tiny_llava(tile_size=56), variant="fusion_injection")
    fresh.load_trainable(path)
    ours, theirs = model.trainable_state_dict(), fresh.trainable_state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        a = model(images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
        b = fresh(images, batch["input_ids"], batch["labels"], batch["attention_mask"]).loss
    assert torch.equal(a, b)
    with pytest.raises(InputError, match="variant"):
        MFRSVLM(tiny_llava(tile_size=56), variant="fusion").load_trainable(path)
    with pytest.raises(InputError, match="injection_layers"):
        MFRSVLM(tiny_llava(tile_size=56, num_text_layers=2), variant="fusion_injection").load_trainable(path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="readable"):
        fresh.load_trainable(broken)
    with pytest.raises(InputError, match="not found"):
        fresh.load_trainable(tmp_path / "missing.safetensors")

"""MF-RSVLM training data, resumable training and evaluation on a real tiny LLaVA and SynthRS data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rsvl.errors import DatasetError, InputError
from rsvl.methods.mfrsvlm.data import Collator, Source, TaskMix, model_image_size
from rsvl.methods.mfrsvlm.model import MFRSVLM
from rsvl.methods.mfrsvlm.prompts import IGNORE_INDEX
from rsvl.methods.mfrsvlm.train import CHECKPOINT, TRAINABLE, TrainConfig, evaluate, lr_factor, train
from rsvl.models.llava import CLIP_MEAN, CLIP_STD, tiny_llava
from rsvl.synth import generate_dataset
from rsvl.utils.checkpoint import read_torch_file


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mf_data")
    for fmt, n in (("captions", 3), ("rsvqa", 3), ("classification", 3)):
        generate_dataset(fmt, root / fmt, n, seed=0, size=112, progress=False)
    generate_dataset("classification", root / "two", 2, seed=1, size=112, progress=False)
    return root


def _sources(root):
    return [
        Source(format="captions", root=root / "captions", task="caption"),
        Source(format="rsvqa", root=root / "rsvqa", task="vqa", weight=2.0),
        Source(format="classification", root=root / "classification", task="classification"),
    ]


def _model(variant: str = "fusion_injection", sharp: bool = False) -> MFRSVLM:
    """A tiny MF-RSVLM (short system text keeps sequences short)."""
    model = MFRSVLM(tiny_llava(tile_size=56), variant=variant, system="A chat.")
    if sharp:  # a random LM head gives near-uniform logits (RMS-normed hidden states): sharpen it to learn
        with torch.no_grad():
            model.llava.lm_head.weight.mul_(20)
    return model


def _batch_loss(model: MFRSVLM, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(model(batch["images"], batch["input_ids"], batch["labels"], batch["attention_mask"]).loss)


# --------------------------------------------------------------------------- data


def test_collate_supervises_exactly_the_answers_and_normalises_images(data):
    mix = TaskMix(_sources(data), seed=3)
    model = _model()
    examples = mix.batch(0, 6)
    assert [e.item.key for e in examples] == [e.item.key for e in TaskMix(_sources(data), seed=3).batch(0, 6)]
    batch = Collator(model)(examples)
    tok = model.tokenizer
    image_id = model.image_token_id
    assert batch["images"].shape == (6, 3, 112, 112) and model_image_size(model) == 112
    for row, ex in enumerate(examples):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        assert int((ids == image_id).sum()) == 1 and int(labels[ids == image_id]) == IGNORE_INDEX
        supervised = ids[labels != IGNORE_INDEX].tolist()
        assert tok.decode(supervised).strip() == f"{ex.answer}{tok.eos_token}"
        assert bool((labels[mask == 0] == IGNORE_INDEX).all())
        assert ex.answer in ex.item.answers
    assert {e.item.task for e in examples} == {"caption", "vqa", "classification"}
    for item in mix.task_items("vqa"):
        closed = item.prompt.endswith("\nAnswer yes or no.")
        assert closed == (item.qtype == "presence") and (not closed or item.answers[0] in ("yes", "no"))
    # the image tensor is the file's pixels, CLIP-normalised (112 px file, no resampling)
    rgb = np.asarray(Image.open(examples[0].item.image_path).convert("RGB"), dtype=np.float32) / 255.0
    ref = (torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[
        :, None, None
    ]
    assert torch.allclose(batch["images"][0], ref, atol=1e-5)
    assert Collator(_model("baseline")).images([examples[0].item.image_path]).shape == (1, 3, 56, 56)


def test_mix_follows_weights_epochs_and_picks_captions_per_epoch(data):
    mix = TaskMix(_sources(data), seed=0)
    draws = [mix.draw(k) for k in range(400)]
    counts = {t: sum(d.item.task == t for d in draws) for t in ("caption", "vqa", "classification")}
    assert 170 < counts["vqa"] < 230 and 70 < counts["caption"] < 130  # weights 1 : 2 : 1
    captions = [d for d in draws if d.item.task == "caption"]
    for start in range(0, 30, 3):  # every epoch of the 3-image source visits each image once
        assert len({d.item.key for d in captions[start : start + 3]}) == 3
    chosen = {d.answer for d in captions if d.item.key == captions[0].item.key}
    assert 1 < len(chosen) <= len(captions[0].item.answers)  # references vary between epochs


def test_bad_sources_raise_clear_errors(data, tmp_path):
    with pytest.raises(DatasetError, match="no caption") as err:
        TaskMix([Source(format="classification", root=data / "classification", task="caption")])
    assert err.value.path is not None and err.value.path.endswith(".png")
    with pytest.raises(InputError, match="no usable"):
        TaskMix([Source(format="classification", root=data / "classification", task="caption", strict=False)])
    with pytest.raises(InputError, match="task"):
        TaskMix([("captions", data / "captions", "segmentation")])
    with pytest.raises(InputError, match="no samples of split 'nope'"):
        TaskMix([Source(format="captions", root=data / "captions", task="caption", split="nope")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "dataset_empty.json").write_text(json.dumps({"images": [], "dataset": "empty"}))
    with pytest.raises(InputError, match="no samples"):
        TaskMix([("captions", tmp_path / "empty", "caption")])
    with pytest.raises(InputError, match="no data sources"):
        TaskMix([])
    with pytest.raises(InputError, match="stage"):
        TrainConfig(stage=3)
    with pytest.raises(InputError, match="weight"):
        Source(format="captions", root=data, task="caption", weight=0)


# --------------------------------------------------------------------------- training


def test_training_overfits_two_examples(data, tmp_path):
    source = [("classification", data / "two", "classification")]
    model = _model("fusion", sharp=True)
    batch = Collator(model)(TaskMix(source).batch(0, 2))
    before = _batch_loss(model, batch)
    cfg = TrainConfig(stage=2, steps=10, lr=1e-2, batch_size=2, warmup=2, checkpoint_every=100)
    result = train(model, source, cfg, tmp_path / "run", progress=False)
    after = _batch_loss(model, batch)
    assert result.history[0]["loss"] == pytest.approx(before, rel=1e-5)  # every batch is the same two examples
    assert after < 0.5 * before
    assert [h["step"] for h in result.history] == list(range(1, 11))
    assert result.history[0]["lr"] == pytest.approx(5e-3) and result.history[1]["lr"] == pytest.approx(1e-2)
    assert lr_factor(9, cfg) == pytest.approx(0.0) and 0 < lr_factor(5, cfg) < 1
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history


def test_interrupted_and_resumed_run_ends_with_the_same_weights(data, tmp_path):
    sources = _sources(data)
    cfg = TrainConfig(
        stage=2, steps=4, lr=1e-3, batch_size=2, grad_accum=2, warmup=1, lora_dropout=0.1, checkpoint_every=3, seed=5
    )  # LoRA dropout draws from the torch RNG: the resumed run must restore it
    straight = _model()
    ref = train(straight, sources, cfg, tmp_path / "straight", progress=False)

    def stop_at_two(done: int, loss: float) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_model(), sources, cfg, tmp_path / "resumed", progress=False, on_step=stop_at_two)
    state = read_torch_file(tmp_path / "resumed" / CHECKPOINT)
    assert state["step"] == 2 and len(state["history"]) == 2
    resumed_model = _model()
    resumed = train(resumed_model, sources, cfg, tmp_path / "resumed", progress=False)
    a, b = straight.trainable_state_dict(), resumed_model.trainable_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == ref.history
    initial = _model().trainable_state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in initial)
    with pytest.raises(InputError, match="another config"):
        train(_model(), sources, cfg.model_copy(update={"lr": 2e-3}), tmp_path / "resumed", progress=False)


def test_stage2_trains_lora_and_leaves_the_base_model_frozen(data, tmp_path):
    source = [("classification", data / "two", "classification")]
    model = _model("fusion")
    frozen = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if not n.startswith(("fusion.", "llava.model.multi_modal_projector."))
    }
    cfg = TrainConfig(stage=2, steps=3, lr=5e-3, batch_size=2, lora_rank=4, lora_alpha=8, checkpoint_every=100)
    result = train(model, source, cfg, tmp_path / "s2", progress=False)
    named = {n.replace(".base_layer", ""): p.detach() for n, p in model.named_parameters()}  # peft's wrapping
    lora_b = [n for n in named if "lora_B" in n]
    assert lora_b and all(float(named[n].abs().sum()) > 0 for n in lora_b)  # LoRA B starts at zero
    assert {n.split(".")[-4] for n in lora_b} == {"q_proj", "v_proj"}
    assert all(torch.equal(named[n], p) for n, p in frozen.items())  # tower, LM weights, embeddings untouched
    fresh = _model("fusion")
    fresh.load_trainable(result.trainable_path)
    assert result.trainable_path.name == TRAINABLE and fresh.has_lora
    batch = Collator(model)(TaskMix(source).batch(0, 2))
    assert _batch_loss(fresh, batch) == pytest.approx(_batch_loss(model, batch), abs=1e-6)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_reports_each_task(data, monkeypatch):
    sources = _sources(data)
    model = _model()
    reports = evaluate(model, sources, max_new_tokens=3)
    assert set(reports) == {"caption", "vqa", "classification"}
    assert {"BLEU-1", "BLEU-4", "CIDEr"} <= set(reports["caption"].metrics)
    assert {"OA", "AA", "acc/presence", "acc/count"} <= set(reports["vqa"].metrics)
    assert {"OA", "AA"} <= set(reports["classification"].metrics)

    # known answers: the references (classes as free text) score perfectly
    mix = TaskMix(sources)
    truth = {(it.image_path, it.prompt): it.answers[0] for t in mix.tasks for it in mix.task_items(t)}

    def oracle(images, prompts, max_new_tokens=32):
        paths = oracle.paths[: len(prompts)]
        del oracle.paths[: len(prompts)]
        return [truth[(p, q)].replace("_", " ") + "." for p, q in zip(paths, prompts, strict=True)]

    oracle.paths = [it.image_path for t in mix.tasks for it in mix.task_items(t)]
    monkeypatch.setattr(model, "generate", oracle)
    perfect = evaluate(model, mix, batch_size=2)
    assert perfect["vqa"].metrics["OA"] == 1.0
    assert perfect["classification"].metrics["OA"] == 1.0 and not perfect["classification"].details["unmatched"]
    assert perfect["caption"].metrics["BLEU-1"] == pytest.approx(1.0)
    # the generated text of every item is kept, by item key, for subsets and error analysis
    for task, report in perfect.items():
        items = mix.task_items(task)
        assert set(report.details["predictions"]) == {it.key for it in items}
        first = items[0]
        assert report.details["predictions"][first.key] == first.answers[0].replace("_", " ") + "."

"""Florence-2 builders: in-memory tokenizer, tiny models, position extension, local loading."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Florence2ForConditionalGeneration, PreTrainedTokenizerFast

from rsvl.errors import InputError
from rsvl.models.florence2 import (
    FLORENCE2_TASK_PROMPTS,
    build_loc_tokenizer,
    extend_position_embeddings,
    load_florence2,
    task_prompt_text,
    tiny_florence2,
)

WORDS = ["plane", "small vehicle", "storage tank", "ship"]
TARGET = (
    "plane<loc_1><loc_2><loc_3><loc_4><sep>small vehicle<loc_10><loc_20><loc_300><loc_999>"
    "<sep>storage tank<loc_0><loc_5><loc_6><loc_7><sep>zebra crossing 2<loc_8><loc_9><loc_10><loc_11>"
)


@pytest.fixture(scope="module")
def tok():
    return build_loc_tokenizer(WORDS)


def test_round_trip_is_exact_including_spaces_and_unseen_words(tok):
    ids = tok(TARGET, add_special_tokens=False).input_ids
    assert tok.decode(ids, skip_special_tokens=False) == TARGET
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:5] == ["plane", "<loc_1>", "<loc_2>", "<loc_3>", "<loc_4>"]
    assert pieces[6:8] == ["small", "Ġvehicle"]  # known words are single tokens, the space kept in Ġ
    assert "zebra" not in pieces  # an unseen word still tokenises (byte by byte)


def test_loc_and_sep_tokens_are_single_ids(tok):
    locs = [f"<loc_{k}>" for k in range(1000)]
    loc_ids = tok.convert_tokens_to_ids(locs)
    assert len(set(loc_ids)) == 1000 and tok.unk_token_id not in loc_ids
    assert tok("".join(locs), add_special_tokens=False).input_ids == loc_ids
    sep = tok("<sep>", add_special_tokens=False).input_ids
    assert len(sep) == 1 and sep[0] == tok.convert_tokens_to_ids("<sep>")
    assert len(tok("<OD>", add_special_tokens=False).input_ids) == 1


def test_bart_special_ids_and_wrapping(tok):
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("plane").input_ids
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) == 3
    assert tok("").input_ids == [0, 2]


def test_task_prompt_text(tok):
    assert task_prompt_text("<OD>", tok) == "<OD>"  # a single token of this tokenizer stays
    bare = build_loc_tokenizer(WORDS, task_tokens=())
    assert task_prompt_text("<OD>", bare) == FLORENCE2_TASK_PROMPTS["<OD>"]
    assert task_prompt_text("find planes", bare) == "find planes"


def test_tiny_model_matches_tokenizer_and_trains_from_embeddings(tok):
    torch.manual_seed(0)
    model = tiny_florence2(tok, d_model=32)
    text_cfg = model.config.text_config
    assert text_cfg.vocab_size == len(tok) and text_cfg.d_model == 32
    assert (text_cfg.pad_token_id, text_cfg.bos_token_id, text_cfg.eos_token_id) == (1, 0, 2)
    assert text_cfg.decoder_start_token_id == 2
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    embeds = torch.randn(2, 7, 32, requires_grad=True)
    labels = torch.tensor([[0, 5, 6, 2], [0, 7, 2, -100]])
    out = model(inputs_embeds=embeds, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_extend_position_embeddings_keeps_trained_rows(tok):
    torch.manual_seed(0)
    model = tiny_florence2(tok, d_model=32, max_positions=16)
    table = model.model.language_model.encoder.embed_positions
    old = table.weight.detach().clone()  # 16 + 2 offset rows
    assert extend_position_embeddings(model, 40)
    assert not extend_position_embeddings(model, 40)
    for t in (table, model.model.language_model.decoder.embed_positions):
        assert t.weight.shape == (42, 32)
    new = table.weight.detach()
    assert torch.equal(new[:18], old)
    assert torch.equal(new[18 + 3], old[2 + 3])  # position 19 starts as position 19 mod 16 = 3
    assert model.config.text_config.max_position_embeddings == 40
    out = model(inputs_embeds=torch.randn(1, 40, 32), decoder_input_ids=torch.zeros(1, 40, dtype=torch.long))
    assert out.logits.shape == (1, 40, len(tok))


def test_load_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(InputError, match="no_such_model"):
        load_florence2(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty.*config\.json"):
        load_florence2(empty)
    (empty / "config.json").write_text(json.dumps({"model_type": "florence2"}))
    with pytest.raises(InputError, match=r"empty.*no weights"):
        load_florence2(empty)


def test_saved_tiny_model_loads_back_with_identical_logits(tok, tmp_path):
    torch.manual_seed(0)
    model = tiny_florence2(tok, d_model=32).eval()
    extend_position_embeddings(model, 1100)  # an extended table survives save/load
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = load_florence2(tmp_path)
    assert isinstance(loaded, Florence2ForConditionalGeneration)
    assert loaded.config.text_config.max_position_embeddings == 1100
    assert tok2(TARGET).input_ids == tok(TARGET).input_ids
    embeds = torch.randn(1, 6, 32)
    dec = torch.tensor([[2, 0, 5, 9]])
    with torch.no_grad():
        a = model(inputs_embeds=embeds, decoder_input_ids=dec).logits
        b = loaded.eval()(inputs_embeds=embeds, decoder_input_ids=dec).logits
    assert torch.equal(a, b)


def test_checkpoint_with_foreign_weight_names_is_refused(tok, tmp_path):
    """transformers would only log the missing weights and train a random LM; rsvl refuses it."""
    from safetensors.torch import load_file, save_file

    tiny_florence2(tok, d_model=32).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    renamed = {k.replace("model.language_model.", "language_model.model."): v for k, v in load_file(weights).items()}
    save_file(renamed, weights, metadata={"format": "pt"})
    with pytest.raises(InputError, match="does not fit") as err:
        load_florence2(tmp_path)
    assert str(tmp_path) in str(err.value)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot load the Florence-2 model"):
        load_florence2(tmp_path)


def _bare_bart_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without <sep> / <loc_k> (like a plain BART tokenizer)."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(["plane"], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_load_adds_missing_loc_tokens_and_resizes(tmp_path):
    bare = _bare_bart_tokenizer()
    assert "<loc_5>" not in bare.get_vocab()
    model = tiny_florence2(bare, d_model=32)
    model.save_pretrained(tmp_path)
    bare.save_pretrained(tmp_path)
    loaded, tok = load_florence2(tmp_path)
    assert len(tok) == len(bare) + 1001  # <sep> + 1000 locs
    assert loaded.get_input_embeddings().num_embeddings == len(tok)
    assert loaded.get_output_embeddings().weight.shape[0] == len(tok)
    ids = tok("plane<loc_5><sep>", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids)[-2:] == ["<loc_5>", "<sep>"]

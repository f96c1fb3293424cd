"""LRS-VQA end to end with a tiny random LLaVA: token budgets, scorers, files, benchmarks, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvl.errors import InputError
from rsvl.methods.lrsvqa.config import LRSVQAConfig
from rsvl.methods.lrsvqa.infer import answer_dataset, answer_file
from rsvl.methods.lrsvqa.pipeline import LargeImageVQA, LLMAttentionScorer, RelativeScorer, RFMScorer, check_weights
from rsvl.methods.lrsvqa.rfm import AttentionQuery, RegionFocusModule, teacher_attention
from rsvl.models.llava import tiny_llava


@pytest.fixture(scope="module")
def bundle():
    return tiny_llava(tile_size=56)


@pytest.fixture(scope="module")
def lrs_root(tmp_path_factory):
    from rsvl.synth import generate_dataset

    root = tmp_path_factory.mktemp("lrs")
    generate_dataset("lrsvqa", root, 2, seed=3, size=1024, progress=False)  # 7 questions
    return root


def first_image(root):
    return sorted((root / "LRS_VQA" / "image").glob("*.tif"))[0]


def test_modes_feed_the_llm_the_documented_token_budgets(bundle, lrs_root):
    vqa = LargeImageVQA(LRSVQAConfig(), bundle=bundle)
    image = first_image(lrs_root)
    q = "What is the color of the swimming pool?"
    pyramid = vqa.answer(image, q, "pyramid")
    full = vqa.answer(image, q, "no_prune")
    uniform = vqa.answer(image, q, "uniform")
    g = bundle.grid_size**2  # the global view's tokens
    last = pyramid.levels[-1]
    assert last["level"] == 0 and pyramid.n_tokens == g + math.ceil(0.25 * last["tokens"])
    assert [lv["tiles"] for lv in full.levels] == [lv["tiles"] for lv in pyramid.levels]  # same search
    assert full.n_tokens == g + full.levels[-1]["tokens"] > pyramid.n_tokens
    with vqa.open(image) as dip:
        base_tokens = sum(int(dip.token_valid(t, bundle.grid_size).sum()) for t in dip.base_tiles())
        native_tiles = len(dip.level(0))
    assert uniform.n_tokens == g + base_tokens and uniform.levels == []
    assert pyramid.full_resolution_tokens == g + native_tiles * g > 4 * pyramid.n_tokens
    assert all(len(lv["tiles"]) <= 9 for lv in pyramid.levels)
    assert isinstance(pyramid.answer, str) and pyramid.seconds.keys() == {"select", "generate"}


def rfm_expectation(bundle, g, tokens, question, cells, rope=True):
    """The LLM's own attention at layer 2 over the candidate tokens (per head renormalised, head mean)."""
    seq = bundle.build_sequence(torch.cat([g, tokens]), question, positions=cells)
    keys = slice(seq.image_slice.start + g.shape[0], seq.image_slice.stop)
    rope_ids = getattr(seq, "position_ids", None) if rope else None
    rows = teacher_attention(bundle.model, seq.inputs_embeds, AttentionQuery(seq.query_index, keys), [2], rope_ids)
    return rows[2].exp().mean(0)


def test_scorers_read_the_llms_attention(bundle):
    g = torch.randn(16, bundle.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens = torch.randn(30, bundle.hidden_size, generator=torch.Generator().manual_seed(1))
    llm = LLMAttentionScorer(bundle, layer=2).score(g, tokens, "Where is the ship?")
    seq = bundle.build_sequence(torch.cat([g, tokens]), "Where is the ship?")
    assert torch.equal(llm, bundle.text_to_image_attention(seq, 2)[16:])
    other = LLMAttentionScorer(bundle, layer=2).score(g, tokens, "How many cars are there?")
    assert not torch.allclose(llm, other)
    # an RFM initialised with the LLM's first three layers ranks exactly as the LLM's layer 2
    rfm = RFMScorer(bundle, RegionFocusModule(bundle.model, [1, 2]).eval()).score(g, tokens, "Where is the ship?")
    assert torch.allclose(rfm, rfm_expectation(bundle, g, tokens, "Where is the ship?", None), atol=1e-6)
    with pytest.raises(InputError, match="layer 9"):
        LLMAttentionScorer(bundle, layer=9)


def test_relative_calibration_divides_by_the_generic_prompts_attention(bundle, lrs_root):
    g = torch.randn(16, bundle.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens = torch.randn(30, bundle.hidden_size, generator=torch.Generator().manual_seed(1))
    llm = LLMAttentionScorer(bundle, layer=2)
    generic = "Describe the image."
    relative = RelativeScorer(llm, generic).score(g, tokens, "Where is the ship?")
    expected = llm.score(g, tokens, "Where is the ship?") / llm.score(g, tokens, generic)
    assert torch.allclose(relative, expected) and not torch.allclose(relative, torch.ones(30))
    # asking the generic prompt itself leaves nothing question-specific: every token scores 1
    assert torch.allclose(RelativeScorer(llm, generic).score(g, tokens, generic), torch.ones(30))
    cfg = LRSVQAConfig.model_validate({"selection": {"calibration": "relative", "generic_prompt": generic}})
    vqa = LargeImageVQA(cfg, bundle=bundle)
    assert isinstance(vqa.scorer, RelativeScorer) and vqa.describe()["scorer"] == "llm_attention/relative"
    assert vqa.answer(first_image(lrs_root), "What is the color of the swimming pool?").levels[-1]["level"] == 0


def test_qwen2_5_vl_family_answers_and_its_rfm_reads_the_multimodal_positions(lrs_root):
    from rsvl.methods.lrsvqa.pipeline import build_bundle

    cfg = LRSVQAConfig.model_validate({"model": {"family": "qwen2_5_vl"}})
    qwen = build_bundle(cfg)
    vqa = LargeImageVQA(cfg, bundle=qwen)
    image = first_image(lrs_root)
    pyramid = vqa.answer(image, "Where is the roundabout?")
    assert pyramid.n_tokens == qwen.grid_size**2 + math.ceil(0.25 * pyramid.levels[-1]["tokens"])
    assert vqa.answer(image, "Where is the roundabout?", "uniform").n_tokens > pyramid.n_tokens
    # the RFM places tokens with the model's multimodal RoPE (3-D positions), like the LLM does
    g = torch.randn(4, qwen.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens = torch.randn(8, qwen.hidden_size, generator=torch.Generator().manual_seed(1))
    cells = [[0, r, c] for r in range(2) for c in range(2)] + [[1, r, c] for r in range(2) for c in range(4)]
    cells = torch.tensor(cells)
    rfm = RFMScorer(qwen, RegionFocusModule(qwen.model, [1, 2]).eval()).score(g, tokens, "Where is the ship?", cells)
    assert torch.allclose(rfm, rfm_expectation(qwen, g, tokens, "Where is the ship?", cells), atol=1e-6)
    flat = rfm_expectation(qwen, g, tokens, "Where is the ship?", cells, rope=False)
    assert not torch.allclose(rfm, flat, atol=1e-6)


def test_answer_file_writes_json_and_the_tiles_picture(bundle, lrs_root, tmp_path):
    vqa = LargeImageVQA(LRSVQAConfig(), bundle=bundle)
    record = answer_file(vqa, first_image(lrs_root), "Where is the roundabout?", tmp_path, progress=False)
    saved = json.loads(Path(record["outputs"]["json"]).read_text())
    assert Path(record["outputs"]["json"]).name.startswith(f"{first_image(lrs_root).stem}.where-is-the-roundabout-")
    assert saved["answer"] == record["answer"] and saved["providers"]["real_weights"] is False
    picture = np.asarray(Image.open(record["outputs"]["tiles"]))
    assert picture.shape == (1024, 1024, 3)
    x0, y0, _, _ = saved["levels"][-1]["tiles"][0]  # the last level's tiles are outlined in red
    assert tuple(picture[y0 + 1, x0 + 1]) == (255, 40, 40)
    other = answer_file(vqa, first_image(lrs_root), "How many ships are there?", tmp_path, progress=False)
    assert other["outputs"]["json"] != record["outputs"]["json"]  # a second question keeps the first's files
    assert Path(record["outputs"]["json"]).is_file() and Path(record["outputs"]["tiles"]).is_file()


def test_question_slugs_are_readable_safe_and_distinct():
    from rsvl.methods.lrsvqa.infer import question_slug

    slug = question_slug("What is the color of the ship?")
    assert slug.startswith("what-is-the-color-of-") and len(slug) == len("what-is-the-color-of-") + 6
    assert question_slug("What is the color of the car?") != slug
    assert question_slug("../../etc/passwd").startswith("etc-passwd-")
    assert question_slug("???") and "/" not in question_slug("a/b")


def test_benchmark_answers_resume_and_score(bundle, lrs_root, tmp_path):
    vqa = LargeImageVQA(LRSVQAConfig(), bundle=bundle)
    out = tmp_path / "run"
    first = answer_dataset(vqa, lrs_root, out, limit=3, wordnet=False, progress=False)
    assert first["n"] == 3 and first["new"] == 3
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {"question_id", "prompt", "category", "text", "ground_truth"} <= rows[0].keys()
    rest = answer_dataset(vqa, lrs_root, out, wordnet=False, progress=False)
    assert rest["n"] == 7 and rest["new"] == 4
    categories = {json.loads(line)["category"] for line in (out / "predictions.jsonl").read_text().splitlines()}
    assert set(rest["report"]["metrics"]) == {"OA", "AA", *(f"acc/{c}" for c in categories)}
    from rsvl.metrics.vqa import evaluate_vqa, load_vqa_results

    again = load_vqa_results(out / "predictions.jsonl", "lrsvqa")
    report = evaluate_vqa(again.gt, again.pred, preset="lrsvqa", wordnet=False)
    assert report.metrics == pytest.approx(rest["report"]["metrics"])
    with pytest.raises(InputError, match="made with other mode"):
        answer_dataset(vqa, lrs_root, out, mode="uniform", wordnet=False, progress=False)
    # the same folder over a changed dataset (other questions under the same ids) is refused
    jsonl = lrs_root / "LRS_VQA" / "LRS_VQA_merged.jsonl"
    original = jsonl.read_text()
    try:
        jsonl.write_text(original.replace("What is the color", "What colour is", 1))
        with pytest.raises(InputError, match="dataset changed"):
            answer_dataset(vqa, lrs_root, out, wordnet=False, progress=False)
    finally:
        jsonl.write_text(original)


def test_built_models_follow_the_configured_dtype():
    from rsvl.methods.lrsvqa.pipeline import build_bundle

    bundle = build_bundle(LRSVQAConfig.model_validate({"model": {"dtype": "bfloat16"}}))
    assert bundle.dtype == torch.bfloat16 and next(bundle.model.parameters()).dtype == torch.bfloat16


def test_pruning_keeps_exactly_ceil_ratio_tokens():
    from rsvl.methods.lrsvqa.selection import _top

    for ratio, m, k in ((0.07, 100, 7), (0.55, 100, 55), (0.25, 10, 3), (0.01, 5, 1), (1.0, 9, 9)):
        assert len(_top(torch.arange(m, dtype=torch.float32), ratio)) == k
    assert _top(torch.tensor([0.1, 0.9, 0.5, 0.7]), 0.5).tolist() == [1, 3]


def test_weights_are_required_unless_tiny():
    with pytest.raises(InputError, match="--tiny"):
        check_weights(LRSVQAConfig())
    assert check_weights(LRSVQAConfig(), allow_random=True)
    cfg = LRSVQAConfig.model_validate({"model": {"path": "/models/llava"}})
    assert check_weights(cfg) == []


def test_bad_questions_modes_and_tile_sizes(bundle, lrs_root):
    vqa = LargeImageVQA(LRSVQAConfig(), bundle=bundle)
    with pytest.raises(InputError, match="question is empty"):
        vqa.answer(first_image(lrs_root), "  ")
    with pytest.raises(InputError, match="unknown mode"):
        vqa.answer(first_image(lrs_root), "q", "everything")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tile_size"):
        LargeImageVQA(LRSVQAConfig.model_validate({"pyramid": {"tile_size": 336}}), bundle=bundle)

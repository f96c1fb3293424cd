"""VQA presets: normalisation, RSVQA / LRS-VQA / VRSBench rules against transcriptions of their scorers."""

from __future__ import annotations

import json

import pytest

from rsvl.datasets.sample import QA, Sample
from rsvl.errors import InputError
from rsvl.metrics import wordnet as wordnet_mod
from rsvl.metrics.vqa import (
    evaluate_vqa,
    load_vqa_results,
    normalize_answer,
    normalize_rsvqa,
    vqa_from_samples,
    wordnet_synonyms,
)


@pytest.fixture(scope="module")
def wn(tmp_path_factory):
    """WordNet from the system database, built into a private cache (no network)."""
    cache = tmp_path_factory.mktemp("nltk_data")
    wordnet_mod.build_nltk_wordnet(cache_dir=cache)
    return cache, wordnet_mod.load_wordnet(cache)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Two.", "2"),
        ("  A red car!  ", "red car"),
        ("1,000 ships", "1000 ships"),
        ("2.5 km", "2.5 km"),
        ("tennis-court", "tennis court"),
        ("an apple, the pear", "apple pear"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "lr", "expected"),
    [
        ("Yes.", False, "yes"),
        ("Rural?", False, "rural"),
        ("25m2", False, "between 10m2 and 100m2"),
        ("0m2", False, "0m2"),
        ("1500m2", True, "more than 1000m2"),
        ("7", False, "7"),
        ("7", True, "between 0 and 10"),
        ("0", True, "0"),
        ("150", True, "between 100 and 1000"),
        ("m2", False, "m2"),
    ],
)
def test_normalize_rsvqa(text, lr, expected):
    assert normalize_rsvqa(text, lr) == expected


def test_exact_preset_per_type_and_aa():
    gt = {
        1: QA("Is there a ship?", "Yes", type="presence"),
        2: QA("How many cars?", "three", type="count"),
        3: QA("How many planes?", "12", type="count"),
        4: QA("What color?", "red", type="color"),
    }
    pred = {1: "yes.", 2: "3", 3: "11", 4: "The red"}
    r = evaluate_vqa(gt, pred)
    assert r.metrics["OA"] == pytest.approx(3 / 4)
    assert r.metrics["acc/count"] == pytest.approx(1 / 2)
    assert r.metrics["AA"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert r.details["per_type"]["count"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    tol = evaluate_vqa(gt, pred, count_tolerance=1)
    assert tol.metrics["OA"] == 1.0 and tol.details["verdicts"]["tolerance"] == 1
    assert tol.protocol["count_tolerance"] == 1


def test_rsvqa_presets_match_computestats():
    gt = {
        "q1": QA("Is there a road?", "yes", type="presence"),
        "q2": QA("Is there a building?", "no", type="presence"),
        "q3": QA("How many buildings?", "7", type="count"),
        "q4": QA("How many roads?", "0", type="count"),
        "q5": QA("Are there more roads than water areas?", "yes", type="comp"),
        "q6": QA("What is the area covered by buildings?", "25m2", type="area"),
    }
    pred = {"q1": "Yes.", "q2": "no", "q3": "5", "q4": "2", "q5": "no", "q6": "40m2"}
    hr = evaluate_vqa(gt, pred, "rsvqa")
    # computeStats.py: per-type accuracies, AA = their mean, OA = trace / sum
    per = {"presence": 2 / 2, "count": 0 / 2, "comp": 0 / 1, "area": 1 / 1}
    assert hr.metrics["OA"] == pytest.approx(3 / 6)
    assert hr.metrics["AA"] == pytest.approx(sum(per.values()) / 4)
    for name, acc in per.items():
        assert hr.metrics[f"acc/{name}"] == pytest.approx(acc)
    lr = evaluate_vqa(gt, pred, "rsvqa_lr")
    assert lr.metrics["acc/count"] == pytest.approx(1 / 2)  # 5 and 7 share the bin (0, 10]
    assert not hr.warnings


def _official_lrsvqa(items, wn):
    """Transcription of VisionXLab/LRS-VQA Script/evaluation_LRSVQA.py evaluate_dataset (the oracle)."""

    def are_synonyms(word1, word2):
        for s1 in wn.synsets(word1):
            for s2 in wn.synsets(word2):
                if s1.path_similarity(s2) is not None and s1.path_similarity(s2) > 0.8:
                    return True
        return False

    cats = {item["category"] for item in items}
    correct = dict.fromkeys(cats, 0)
    total = dict.fromkeys(cats, 0)
    n_correct = 0
    for item in items:
        gt, answer = item["ground_truth"].lower(), item["text"].lower()
        ok = gt == answer or are_synonyms(gt, answer)
        n_correct += ok
        correct[item["category"]] += ok
        total[item["category"]] += 1
    accs = [correct[c] / total[c] for c in sorted(cats) if total[c]]
    return n_correct / len(items), sum(accs) / len(accs), {c: correct[c] / total[c] for c in cats}


LRS_ITEMS = [
    {"question_id": 1, "category": "color", "ground_truth": "Red", "text": "red"},
    {"question_id": 2, "category": "category", "ground_truth": "car", "text": "automobile"},
    {"question_id": 3, "category": "color", "ground_truth": "red", "text": "blue"},
    {"question_id": 4, "category": "count", "ground_truth": "3", "text": "three"},
    {"question_id": 5, "category": "shape", "ground_truth": "rectangle", "text": "Rectangle."},
    {"question_id": 6, "category": "status", "ground_truth": "parked", "text": "moving"},
    {"question_id": 7, "category": "background", "ground_truth": "swimming pool", "text": "pool"},
    {"question_id": 8, "category": "rural/urban", "ground_truth": "urban", "text": "urban"},
]


def test_lrsvqa_equals_official_scorer(wn):
    cache, reader = wn
    gt = {x["question_id"]: QA("", x["ground_truth"], type=x["category"]) for x in LRS_ITEMS}
    pred = {x["question_id"]: x["text"] for x in LRS_ITEMS}
    r = evaluate_vqa(gt, pred, "lrsvqa", nltk_data=cache)
    oa, aa, per = _official_lrsvqa(LRS_ITEMS, reader)
    assert r.metrics["OA"] == pytest.approx(oa)
    assert r.metrics["AA"] == pytest.approx(aa)
    for cat, acc in per.items():
        assert r.metrics[f"acc/{cat}"] == pytest.approx(acc)
    assert r.details["verdicts"]["wordnet"] >= 2  # automobile ~ car, three ~ 3
    assert r.protocol["wordnet"]["enabled"] is True
    assert not r.warnings
    off = evaluate_vqa(gt, pred, "lrsvqa", wordnet=False)
    assert off.metrics["OA"] < r.metrics["OA"]
    assert off.protocol["wordnet"]["enabled"] is False
    assert any("lower bound" in w for w in off.warnings)


def test_wordnet_synonyms_rule(wn):
    _, reader = wn
    assert wordnet_synonyms("car", "automobile", reader)
    assert not wordnet_synonyms("red", "blue", reader)
    assert not wordnet_synonyms("swimming pool", "pool", reader)  # multi-word strings have no synsets


def test_lrsvqa_unknown_categories_get_buckets(wn):
    cache, _ = wn
    gt = {1: QA("", "red", type="color"), 2: QA("", "yes", type="weather"), 3: QA("", "no", type=None)}
    r = evaluate_vqa(gt, {1: "red", 2: "yes", 3: "yes"}, "lrsvqa", nltk_data=cache)
    assert r.metrics["acc/weather"] == 1.0 and r.metrics["acc/(none)"] == 0.0
    assert r.metrics["AA"] == pytest.approx((1 + 1 + 0) / 3)  # like the official script, AA over all buckets
    assert any("'weather'" in w for w in r.warnings)
    assert any("without a type" in w for w in r.warnings)


def test_lrsvqa_without_wordnet_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("RSVL_NLTK_DATA", str(tmp_path))
    with pytest.raises(wordnet_mod.WordNetUnavailableError, match="apt-get install wordnet-base"):
        evaluate_vqa({1: "car"}, {1: "car"}, "lrsvqa")


def test_vrsbench_rule_matches_notebook():
    gt = {
        1: QA("How many?", "2", type="object quantity"),
        2: QA("Is there?", "yes", type="object existence"),
        3: QA("Is there?", "no", type="object existence"),
        4: QA("How many?", "3", type="object quantity"),
        5: QA("What?", "tennis court", type="object category"),
        6: QA("What?", "playground", type="object category"),
        7: QA("Scene?", "urban", type="rural or urban"),
        8: QA("Other?", "x", type="weird"),
    }
    pred = {
        1: "12",
        2: "Yes, there is",
        3: "not sure",
        4: "three",
        5: "A Tennis Court",
        6: "ground track field",
        7: "urban",
        8: "x",
    }
    r = evaluate_vqa(gt, pred, "vrsbench")
    # notebook: '2' in '12' and 'no' in 'not sure' are matches; '3' vs 'three' is not; 'playground' needs GPT
    assert r.metrics["OA"] == pytest.approx(6 / 8)
    assert r.metrics["acc/object quantity"] == 0.5
    assert r.metrics["acc/scene type"] == 1.0
    assert r.details["verdicts"]["judge_needed"] == 1
    known = [1.0, 0.5, 0.5, 1.0]  # existence, quantity, category, scene type; 'weird' is not averaged
    assert r.metrics["AA"] == pytest.approx(sum(known) / 4)
    assert any("GPT judge" in w for w in r.warnings)
    assert any("'weird'" in w and "kept out of AA" in w for w in r.warnings)


def test_missing_unknown_and_groups():
    gt = {"a_1": "yes", "a_2": "no", "b_1": "yes"}
    r = evaluate_vqa(gt, {"a_1": "yes", "b_1": "no"}, groups={"a_1": "a", "a_2": "a", "b_1": "b"})
    assert r.metrics["OA"] == pytest.approx(1 / 3)
    assert r.metrics["a/OA"] == 0.5 and r.metrics["b/OA"] == 0.0
    assert "AA" not in r.metrics  # no types given
    assert any("no prediction" in w for w in r.warnings)
    with pytest.raises(InputError, match="no prediction"):
        evaluate_vqa(gt, {"a_1": "yes"}, missing="error")
    with pytest.raises(InputError, match="absent from the ground truth"):
        evaluate_vqa(gt, {"c": "yes"})
    with pytest.raises(InputError, match="non-empty answer"):
        evaluate_vqa({1: ""}, {})
    with pytest.raises(InputError, match="answer string"):
        evaluate_vqa({1: "yes"}, {1: 1})
    with pytest.raises(InputError, match="unknown VQA preset"):
        evaluate_vqa(gt, {}, "nope")


def test_from_samples_and_answer_files(tmp_path):
    sample = Sample("i.png", qas=[QA("q?", "yes", type="presence"), QA("q2?", "no", id="k")])
    assert set(vqa_from_samples([sample])) == {"i.png#0", "k"}
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps({**x, "id": f"FAIR_{x['question_id']}"}) for x in LRS_ITEMS[:3]))
    res = load_vqa_results(path, "lrsvqa")
    assert res.gt["2"].answer == "car" and res.gt["2"].type == "category" and res.pred["2"] == "automobile"
    assert set(res.groups.values()) == {"FAIR"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "ground_truth": "a", "text": "a"}\n{"question_id": 1, "ground_truth": "b"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: .*duplicate"):
        load_vqa_results(bad)

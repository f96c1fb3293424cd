"""Caption metrics equal pycocoevalcap run directly (its PTBTokenizer + scorers) on a tiny set."""

from __future__ import annotations

import json

import pytest

from rsvl.datasets.sample import Sample
from rsvl.errors import InputError
from rsvl.metrics.caption import captions_from_samples, evaluate_captions, load_coco_captions, ptb_tokenize

GT = {
    1: ["A plane is parked at the airport.", "An airplane on the runway, next to a terminal."],
    2: ["Many cars in a parking lot.", "A parking lot full of cars"],
    "3": ["A river crossing green farmland.", "a winding river"],
    4: ["Two tennis courts beside a road."],
}
PRED = {1: "A plane parked at an airport.", 2: "Cars are parked in a lot.", "3": "", 4: "two tennis courts near a road"}


def _reference(metric_names):
    """pycocoevalcap as COCOEvalCap.evaluate runs it: PTBTokenizer on gts and res, then the scorers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {str(k): [{"caption": c} for c in v] for k, v in GT.items()}
    res = {str(k): [{"caption": v}] for k, v in PRED.items()}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    out = {}
    if "BLEU" in metric_names:
        scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out.update({f"BLEU-{i + 1}": s for i, s in enumerate(scores)})
    if "METEOR" in metric_names:
        out["METEOR"] = Meteor().compute_score(gts, res)[0]
    if "ROUGE-L" in metric_names:
        out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    if "CIDEr" in metric_names:
        out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out, gts, res


def test_tokenizer_equals_ptbtokenizer():
    _, gts, res = _reference(())
    assert ptb_tokenize({str(k): v for k, v in GT.items()}) == gts
    assert ptb_tokenize({str(k): [v] for k, v in PRED.items()}) == res


def test_bleu_rouge_cider_equal_pycocoevalcap():
    families = ("BLEU", "ROUGE-L", "CIDEr")
    expected, _, _ = _reference(families)
    r = evaluate_captions(GT, PRED, metrics=families, per_image=True)
    assert set(r.metrics) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    for name, value in expected.items():
        assert r.metrics[name] == pytest.approx(float(value), rel=1e-12, abs=1e-15)
    assert r.metrics["CIDEr"] > 0.1 and r.metrics["BLEU-1"] > 0.3  # a real signal, not all zeros
    assert r.details["per_image"]["3"]["CIDEr"] == 0.0  # the empty prediction
    assert any("empty predicted caption" in w for w in r.warnings)
    assert r.protocol["reference"]["package"] == "pycocoevalcap"


@pytest.mark.slow
def test_meteor_equals_pycocoevalcap():
    expected, _, _ = _reference(("METEOR",))
    r = evaluate_captions(GT, PRED)
    assert list(r.metrics) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert r.metrics["METEOR"] == pytest.approx(expected["METEOR"], rel=1e-9)


def test_input_errors_before_any_java():
    with pytest.raises(InputError, match=r"2 of 4 images have no predicted caption"):
        evaluate_captions(GT, {1: "a plane", 2: "cars"})
    with pytest.raises(InputError, match="absent from the ground truth"):
        evaluate_captions(GT, {**PRED, 99: "x"})
    with pytest.raises(InputError, match="empty reference"):
        evaluate_captions({1: ["a", "  "]}, {1: "a"})
    with pytest.raises(InputError, match="expected one caption"):
        evaluate_captions({1: ["a"]}, {1: ["a", "b"]})
    with pytest.raises(InputError, match="unknown caption metric"):
        evaluate_captions(GT, PRED, metrics=["SPICE"])


def test_samples_and_coco_files(tmp_path):
    samples = [Sample("a.png", image_id=5, captions=["x y", "z"]), Sample("b.png", captions=["w"])]
    assert captions_from_samples(samples) == {"5": ["x y", "z"], "b.png": ["w"]}
    ann = tmp_path / "captions_val.json"
    ann.write_text(
        json.dumps({"images": [], "annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]})
    )
    assert load_coco_captions(ann) == {"1": ["a", "b"]}
    res = tmp_path / "results.json"
    res.write_text(json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": 3}]))
    with pytest.raises(InputError, match=r"results.json: \[1\].caption"):
        load_coco_captions(res)

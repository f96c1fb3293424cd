"""Classification metrics on hand-computed cases; the shared id/JSON helpers."""

from __future__ import annotations

import json

import pytest

from rsvl.datasets.sample import Sample
from rsvl.errors import InputError
from rsvl.metrics.classification import evaluate_classification, labels_from_samples
from rsvl.metrics.records import load_id_mapping

GT = {1: "beach", 2: "beach", 3: "forest", 4: "forest", 5: "forest", 6: "port"}
PRED = {1: "beach", 2: "forest", 3: "forest", 4: "forest", 5: "harbour", 6: "port"}


def test_hand_computed():
    r = evaluate_classification(GT, PRED)
    assert r.metrics["OA"] == pytest.approx(4 / 6)
    assert r.metrics["acc/beach"] == pytest.approx(1 / 2)
    assert r.metrics["acc/forest"] == pytest.approx(2 / 3)
    assert r.metrics["acc/port"] == 1.0
    assert r.metrics["AA"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    cm = r.details["confusion_matrix"]
    assert cm["rows"] == ["beach", "forest", "port"]
    assert cm["columns"] == ["beach", "forest", "port", "(unknown)", "(missing)"]
    assert cm["matrix"] == [[1, 1, 0, 0, 0], [0, 2, 0, 1, 0], [0, 0, 1, 0, 0]]
    assert r.details["unknown_labels"] == {"harbour": 1}
    assert any("'harbour' x1" in w for w in r.warnings)


def test_given_classes_missing_predictions_and_case():
    classes = ["port", "forest", "beach", "desert"]
    pred = {k: v.upper() for k, v in PRED.items() if k != 6}
    r = evaluate_classification(GT, pred, classes=classes, ignore_case=True)
    assert r.details["confusion_matrix"]["rows"] == classes
    assert r.metrics["acc/desert"] == -1.0  # no ground-truth image: undefined, out of AA
    assert r.metrics["acc/port"] == 0.0  # its only image has no prediction
    assert r.metrics["AA"] == pytest.approx((0 + 2 / 3 + 1 / 2) / 3)
    assert r.details["confusion_matrix"]["matrix"][0] == [0, 0, 0, 0, 0, 1]
    assert any("no prediction" in w for w in r.warnings)
    assert any("'desert'" in w for w in r.warnings)
    exact_case = evaluate_classification(GT, pred, classes=classes)
    assert exact_case.metrics["OA"] == 0.0
    with pytest.raises(InputError, match="no prediction"):
        evaluate_classification(GT, pred, missing="error")


def test_bad_inputs():
    with pytest.raises(InputError, match="missing from the class list"):
        evaluate_classification(GT, PRED, classes=["beach", "forest"])
    with pytest.raises(InputError, match="absent from the ground truth"):
        evaluate_classification(GT, {**PRED, 7: "beach"})
    with pytest.raises(InputError, match="label string"):
        evaluate_classification(GT, {1: 3})
    with pytest.raises(InputError, match="duplicates"):
        evaluate_classification(GT, PRED, classes=["beach", "beach", "forest", "port"])
    with pytest.raises(InputError, match="empty"):
        evaluate_classification({}, {})


def test_samples_and_json(tmp_path):
    samples = [Sample("a/1.png", image_id=1, label="beach"), Sample("b/2.png", label="forest")]
    assert labels_from_samples(samples) == {"1": "beach", "b/2.png": "forest"}
    with pytest.raises(InputError, match="no scene label"):
        labels_from_samples([Sample("x.png")])
    path = tmp_path / "pred.jsonl"
    path.write_text('{"image_id": 1, "label": "beach"}\n\n{"id": "b/2.png", "label": "port"}\n')
    pred = load_id_mapping(path, "label")
    assert pred == {"1": "beach", "b/2.png": "port"}
    r = evaluate_classification(labels_from_samples(samples), pred)
    assert r.metrics["OA"] == 0.5
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"image_id": 1, "label": "x"}, {"label": "y"}]))
    with pytest.raises(InputError, match=r"broken.json: \[1\]: record has none of the id fields"):
        load_id_mapping(broken, "label")
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"id": 1, "label": "x"}\n{"id": 2, "label": NaN}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2"):
        load_id_mapping(bad_line, "label")

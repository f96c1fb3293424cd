"""Open-ended detections scored through the name -> class mapping (AP, name accuracy, novel recall)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvl.datasets import Instance, Sample
from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.methods.opendet import evaluate as ev
from rsvl.models.text_encoders import tiny_text_encoder

CLASSES = ["plane", "small-vehicle", "storage-tank"]


def _samples(tmp_path) -> list[Sample]:
    from PIL import Image

    out = []
    for i in range(2):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (100, 80)).save(path)
        insts = [
            Instance("plane", bbox=(10.0, 10.0, 40.0, 30.0)),
            Instance("storage-tank", bbox=(50.0, 40.0, 90.0, 70.0)),
        ]
        out.append(Sample(path.name, root=tmp_path, image_id=i + 1, width=100, height=80, instances=insts))
    return out


def _fake_predictions(names):
    def predict(_loaded, rgb):
        assert rgb.shape == (80, 100, 3)
        boxes = np.array([[10.0, 10.0, 40.0, 30.0], [50.0, 40.0, 90.0, 70.0]])
        return Detections(boxes, np.array([0.9, 0.8]), np.zeros(2, dtype=np.int64), names=tuple(names))

    return predict


def test_open_instances_score_every_candidate():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]])
    insts = ev.open_instances(boxes, np.array([0.64]), torch.tensor([[2, 0]]), torch.tensor([[1.0, 0.25]]), CLASSES)
    assert [(i.category, round(i.score, 6)) for i in insts] == [("storage-tank", 0.8), ("plane", 0.4)]


def test_right_names_score_perfectly(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "predict_image", _fake_predictions(["plane", "storage tank"]))
    # top-1: a tiny random encoder finds every pair of texts similar, so wider candidate lists would
    # add confident wrong-class boxes (the mapping itself is tested with the real MiniLM)
    result = ev.evaluate_open(None, _samples(tmp_path), CLASSES, tiny_text_encoder(), novel=["storage-tank"],
                              top_k=1, progress=False)  # fmt: skip
    m = result.metrics
    assert m["AP"] == pytest.approx(1.0) and m["AP/novel"] == pytest.approx(1.0)
    assert m["name_accuracy"] == 1.0 and m["name_exact"] == 1.0
    assert m["recall/seen"] == 1.0 and m["recall/novel"] == 1.0
    assert "top-1 " in result.report.protocol["open_ended"]["mapping"]


def test_wrong_names_lose_ap_but_keep_box_recall(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "predict_image", _fake_predictions(["storage tank", "plane"]))
    result = ev.evaluate_open(None, _samples(tmp_path), CLASSES, tiny_text_encoder(), novel=["storage-tank"],
                              top_k=1, progress=False)  # fmt: skip
    m = result.metrics
    assert m["name_accuracy"] == 0.0 and m["name_exact"] == 0.0
    assert m["recall/novel"] == 1.0  # boxes found, names wrong
    assert m["AP"] == pytest.approx(0.0)


def test_unknown_novel_class_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="novel"):
        ev.evaluate_open(None, _samples(tmp_path), CLASSES, tiny_text_encoder(), novel=["ship"], progress=False)


def test_lvis_preset_reads_the_category_frequencies(tmp_path, monkeypatch):
    from rsvl.datasets.sample import Category

    monkeypatch.setattr(ev, "predict_image", _fake_predictions(["plane", "storage tank"]))
    cats = [Category(i + 1, name, {"frequency": f}) for i, (name, f) in enumerate(zip(CLASSES, "rcf", strict=True))]
    samples = _samples(tmp_path)
    for sample in samples:  # LVIS's federated labels: which classes were checked absent / not exhaustively
        sample.meta.update(neg_categories=["small-vehicle"], not_exhaustive_categories=[])
    result = ev.evaluate_open(None, samples, cats, tiny_text_encoder(), top_k=1, preset="lvis", progress=False)
    assert result.report.preset == "lvis"
    assert result.report.metrics["APr"] == pytest.approx(1.0)  # plane is the rare class here
    assert result.report.metrics["APf"] == pytest.approx(1.0)  # storage-tank the frequent one

"""Texts: referring expressions pick exactly one object; VQA answers and caption facts follow from labels.

The checks re-derive everything from the labels with their own code (centres, 3 x 3 cells with the
documented 4 % margin, counts, areas), not with the generator's matcher.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from rsvl.synth import (
    CLASS_NAMES,
    CLASSES,
    SceneConfig,
    TextView,
    captions,
    generate_scene,
    referring_expressions,
    vqa_pairs,
)
from rsvl.synth.language import NUMBER_WORDS, URBAN_SCENES
from rsvl.synth.layouts import RECIPES

SIZE = 256
MARGIN = 0.04
CELLS = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "center": (1, 1), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}  # fmt: skip


def _views():
    out = []
    for i, label in enumerate(sorted(RECIPES) * 3):
        sc = generate_scene(21, i, SceneConfig(width=SIZE, height=SIZE, scene_weights={label: 1.0}))
        view = TextView(SIZE, SIZE, sc.label, sc.labelled, CLASS_NAMES, sc.cover, sc.features)
        out.append((sc, view, np.random.default_rng(i)))
    return out


@pytest.fixture(scope="module")
def views():
    return _views()


def centre(obj):
    b = obj.label.bbox
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def in_cell(obj, cell, margin):
    r, c = CELLS[cell]
    x, y = centre(obj)
    return (c / 3 - margin) * SIZE <= x < ((c + 1) / 3 + margin) * SIZE and (r / 3 - margin) * SIZE <= y < (
        (r + 1) / 3 + margin
    ) * SIZE


def matches(objects, attrs):
    out = [
        i
        for i, o in enumerate(objects)
        if o.category == attrs["category"]
        and (not attrs.get("color") or o.color == attrs["color"])
        and (not attrs.get("position") or in_cell(o, attrs["position"], MARGIN))
    ]
    return out


def test_referring_expressions_pick_exactly_one_object(views):
    total = 0
    for _, view, rng in views:
        for ref in referring_expressions(view, rng, max_refs=6):
            total += 1
            objs = view.objects
            target = objs[ref.target]
            assert ref.bbox == target.label.bbox
            assert not target.label.truncated
            attrs = ref.attrs
            assert attrs["category"] == target.category
            found = matches(objs, attrs)
            assert ref.target in found
            if attrs.get("superlative"):
                assert len(found) >= 2
                areas = sorted((objs[i].label.area for i in found), reverse=attrs["superlative"] == "largest")
                assert target.label.area == areas[0]
                if attrs["superlative"] == "largest":
                    assert areas[0] >= 1.25 * areas[1]
                else:
                    assert areas[1] >= 1.25 * areas[0]
            else:
                assert found == [ref.target], (ref.sentences, found)
            if attrs.get("position"):  # described only when clear of the cell borders
                assert in_cell(target, attrs["position"], -MARGIN)
            for sentence in ref.sentences:
                assert CLASSES[target.category].noun in sentence
                if attrs.get("color"):
                    assert attrs["color"] in sentence
                if attrs.get("superlative"):
                    assert attrs["superlative"] in sentence
    assert total > 60


def test_some_objects_are_skipped_when_not_unique(views):
    skipped = 0
    for _, view, rng in views:
        targets = {r.target for r in referring_expressions(view, rng, max_refs=10_000)}
        skipped += len(view.objects) - len(targets)
    assert skipped > 0


def _relation(a, b):
    (ax, ay), (bx, by) = centre(a), centre(b)
    dx, dy = ax - bx, ay - by
    if abs(dx) > 2 * abs(dy) and abs(dx) > 0.08 * SIZE:
        return "left of" if dx < 0 else "right of"
    if abs(dy) > 2 * abs(dx) and abs(dy) > 0.08 * SIZE:
        return "above" if dy < 0 else "below"
    return None


def _bucket(area):
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def test_vqa_answers_follow_from_the_labels(views):
    types = Counter()
    for sc, view, rng in views:
        objs = view.objects
        counts = Counter(o.category for o in objs)
        for qa in vqa_pairs(view, rng, max_questions=20):
            types[qa.type] += 1
            a = qa.attrs
            if qa.type == "presence":
                assert qa.answer == ("yes" if counts[a["object"]] else "no")
            elif qa.type == "count":
                n = sum(1 for o in objs if o.category == a["object"] and (not a.get("color") or o.color == a["color"]))
                assert qa.answer == str(n)
            elif qa.type == "comparison":
                assert counts[a["object"]] != counts[a["other"]]
                assert qa.answer == ("yes" if counts[a["object"]] > counts[a["other"]] else "no")
            elif qa.type == "scene":
                assert qa.answer == sc.label.replace("_", " ")
            elif qa.type == "color":
                assert qa.answer == objs[a["target"]].color
                assert matches(objs, a["described_as"]) == [a["target"]] or a["described_as"].get("superlative")
            elif qa.type == "position":
                assert qa.answer == objs[a["target"]].label.position
                assert in_cell(objs[a["target"]], qa.answer, -MARGIN)
            elif qa.type == "size":
                assert qa.answer == _bucket(objs[a["target"]].label.area)
            elif qa.type == "relative_position":
                rel = _relation(objs[a["a"]], objs[a["b"]])
                assert rel is not None
                if qa.answer in ("yes", "no"):
                    assert qa.answer == ("yes" if rel == a["relation"] else "no")
                else:
                    assert qa.answer == rel == a["relation"]
            else:
                raise AssertionError(f"unexpected type {qa.type}")
    assert {"presence", "count", "comparison", "scene", "color", "position", "size", "relative_position"} <= set(types)
    assert types["presence"] > 20


def test_rsvqa_style_answers(views):
    seen = set()
    for sc, view, rng in views:
        objs = view.objects
        for qa in vqa_pairs(view, rng, style="rsvqa"):
            seen.add(qa.type)
            assert qa.type in ("presence", "count", "comp", "area", "rural_urban")
            if qa.type == "area":
                m2 = sum(o.label.area for o in objs if o.category == qa.attrs["object"]) * view.gsd**2
                lo_hi = {"0m2": (0, 0), "more than 1000m2": (1000, float("inf"))}
                if qa.answer in lo_hi:
                    lo, hi = lo_hi[qa.answer]
                else:
                    lo, hi = (int(v) for v in re.findall(r"(\d+)m2", qa.answer))
                assert lo < m2 <= hi or (lo == hi == 0 and m2 == 0)
            if qa.type == "rural_urban":
                assert qa.answer == ("urban" if sc.label in URBAN_SCENES else "rural")
    assert seen == {"presence", "count", "comp", "area", "rural_urban"}
    with pytest.raises(ValueError):
        vqa_pairs(views[0][1], np.random.default_rng(0), style="nope")


def _is_number(text):
    return text in NUMBER_WORDS or text.isdigit()


def _number(text):
    return NUMBER_WORDS.index(text) if text in NUMBER_WORDS else int(text)


def test_captions_state_facts_that_hold(views):
    kinds = Counter()
    for sc, view, rng in views:
        objs = view.objects
        caps = captions(view, rng, n=5)
        assert len(caps) == 5 and len({c.text for c in caps}) >= 2
        for cap in caps:
            for fact in cap.facts:
                kinds[fact["kind"]] += 1
                if fact["kind"] == "scene":
                    assert fact["label"] == sc.label
                elif fact["kind"] == "count":
                    sel = [o for o in objs if o.category == fact["category"]]
                    if fact.get("color"):
                        sel = [o for o in sel if o.color == fact["color"]]
                    assert len(sel) == fact["count"]
                    spec = CLASSES[fact["category"]]
                    noun = spec.noun if fact["count"] == 1 else spec.plural
                    colour = f"{fact['color']} " if fact.get("color") else ""
                    said = [m.group(1).lower() for m in re.finditer(rf"(\w+) {colour}{noun}\b", cap.text, re.I)]
                    assert fact["count"] in [_number(w) for w in said if _is_number(w)], cap.text
                elif fact["kind"] == "color":
                    sel = [o for o in objs if o.category == fact["category"]]
                    assert len(sel) == 1 and sel[0].color == fact["color"]
                elif fact["kind"] == "majority_color":
                    sel = [o.color for o in objs if o.category == fact["category"]]
                    assert sel.count(fact["color"]) * 2 > len(sel)
                elif fact["kind"] == "position":
                    assert any(
                        o.category == fact["category"] and o.color == fact["color"] and in_cell(o, fact["position"], 0)
                        for o in objs
                    )
                elif fact["kind"] == "count_in_feature":
                    feat = next(f for f in view.features if f.bbox == fact["feature"])
                    n = sum(1 for o in objs if o.category == "small-vehicle" and feat.contains(o.cx, o.cy))
                    assert n == fact["count"]
                elif fact["kind"] == "ground":
                    assert max(view.cover, key=view.cover.get) == fact["ground"]
                elif fact["kind"] == "feature":
                    assert any(f.kind == fact["feature"] for f in view.features)
    assert {"scene", "count", "position", "ground"} <= set(kinds)


def test_texts_are_deterministic():
    sc = generate_scene(3, 1, SceneConfig(width=SIZE, height=SIZE))
    view = TextView(SIZE, SIZE, sc.label, sc.labelled, CLASS_NAMES, sc.cover, sc.features)
    a = [c.text for c in captions(view, np.random.default_rng(4))] + [
        q.question for q in vqa_pairs(view, np.random.default_rng(4))
    ]
    b = [c.text for c in captions(view, np.random.default_rng(4))] + [
        q.question for q in vqa_pairs(view, np.random.default_rng(4))
    ]
    assert a == b

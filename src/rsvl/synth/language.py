"""Texts about a scene, computed from its labels: captions, VQA pairs and referring expressions.

Every sentence states facts that hold for the labelled objects of the image, and each text keeps
those facts in machine-readable form (``Caption.facts``, ``QA.attrs``, ``Referring.attrs``) so
that tests — and users — can recompute the answer from the labels.

Shared vocabulary and rules:

* categories are named by :attr:`ClassSpec.noun` / ``plural``; colours by the palette names;
* positions are the 3 x 3 cells of the image (``top left`` ... ``bottom right``) of an object's
  box centre; an object *matches* a position when its centre lies in that cell grown by
  ``CELL_MARGIN`` (4 %) of the image size on every side, and an object is only *described* by a
  position when its centre lies in the cell shrunk by the same margin — so nobody reading "the
  red vehicle at the top left" can hesitate about an object sitting on a cell border;
* ``largest``/``smallest`` compare visible mask areas among the objects matching the rest of the
  description, and are only used when the winner beats the runner-up by 25 %;
* relative positions (``left of``, ``right of``, ``above``, ``below``) compare box centres and are
  only asked when one axis dominates (``|d_major| > 2 |d_minor|`` and more than 8 % of the image).

A referring expression is kept only when its constraints match exactly one labelled object;
objects that cannot be described uniquely are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsvl.datasets.sample import QA, Referring
from rsvl.synth.layouts import Feature
from rsvl.synth.objects import CLASSES, SceneObject
from rsvl.synth.scene import CELL_MARGIN, CELL_NAMES, size_bucket

__all__ = [
    "NUMBER_WORDS",
    "URBAN_SCENES",
    "Caption",
    "TextView",
    "captions",
    "describe_matches",
    "referring_expressions",
    "vqa_pairs",
]

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
)  # fmt: skip
"""Counts up to twelve are written as words, larger ones as digits."""

URBAN_SCENES = frozenset(
    {"airport", "harbor", "industrial", "parking_lot", "residential", "roundabout", "sports_field"}
)
"""Scene classes answered ``urban`` by the RSVQA rural/urban question (the others are ``rural``)."""

_SCENE_PHRASES: dict[str, tuple[str, ...]] = {
    "airport": ("an airport", "an airport with a runway and an apron", "part of an airport"),
    "bare_land": ("bare land", "an area of bare land", "a barren area"),
    "bridge": ("a bridge over a river", "a river crossed by a bridge", "a road bridge across a river"),
    "farmland": ("farmland", "agricultural fields", "a patchwork of farm fields"),
    "forest": ("a forest edge", "a forest next to open grassland", "woodland"),
    "harbor": ("a harbor", "a port with ships", "a harbor area"),
    "industrial": ("an industrial area", "an industrial site with storage tanks", "a tank farm in an industrial zone"),
    "parking_lot": ("a parking lot", "a large car park", "a parking area"),
    "residential": ("a residential area", "a neighbourhood of houses", "a residential district"),
    "river": ("a river", "a river winding through the land", "a river landscape"),
    "roundabout": ("a roundabout", "a road junction with a roundabout", "an intersection with a roundabout"),
    "sports_field": ("sports facilities", "a sports ground with courts", "playing fields"),
    "wind_farm": ("a wind farm", "wind turbines in open land", "a wind park"),
}

_OPENERS = ("An aerial image of", "A remote sensing image of", "This image shows", "A top view of")

_GROUND_WORDS = {
    "grass": "grass",
    "field": "fields",
    "forest": "forest",
    "water": "water",
    "urban": "built-up land",
    "pavement": "pavement",
    "road": "roads",
    "bare soil": "bare soil",
    "sand": "sand",
}


# --------------------------------------------------------------------------- views and helpers


@dataclass
class TextView:
    """What the texts of one image may talk about.

    ``objects`` are the labelled objects in the order of ``Sample.instances`` (indices in texts
    refer to it); ``vocabulary`` lists the categories questions may name (absent ones give
    ``no`` answers); ``gsd`` converts pixel areas to square metres for RSVQA's area questions.
    """

    width: int
    height: int
    label: str
    objects: list[SceneObject]
    vocabulary: Sequence[str]
    cover: dict[str, float] = field(default_factory=dict)
    features: list[Feature] = field(default_factory=list)
    gsd: float = 0.5


@dataclass
class Caption:
    """A caption and the facts it states (``kind`` plus the values to check)."""

    text: str
    facts: list[dict[str, Any]]


def _count_phrase(n: int, noun: str, plural: str, color: str | None = None) -> str:
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    thing = noun if n == 1 else plural
    return f"{word} {color} {thing}" if color else f"{word} {thing}"


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _centre(obj: SceneObject) -> tuple[float, float]:
    b = obj.label.bbox
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _cell_index(name: str) -> tuple[int, int]:
    for r, row in enumerate(CELL_NAMES):
        if name in row:
            return r, row.index(name)
    raise ValueError(f"unknown position {name!r}")


def in_cell(x: float, y: float, position: str, width: float, height: float, margin: float) -> bool:
    """Whether ``(x, y)`` lies in the 3 x 3 cell ``position`` grown by ``margin`` (share of the size)."""
    r, c = _cell_index(position)
    x0, x1 = c * width / 3 - margin * width, (c + 1) * width / 3 + margin * width
    y0, y1 = r * height / 3 - margin * height, (r + 1) * height / 3 + margin * height
    return x0 <= x < x1 and y0 <= y < y1


def _position_phrase(position: str, rng: np.random.Generator) -> str:
    if position == "center":
        return str(rng.choice(["in the center", "in the middle of the image", "at the center of the image"]))
    if " " in position:
        return str(rng.choice([f"at the {position}", f"in the {position} corner", f"in the {position} of the image"]))
    if position in ("left", "right"):
        return str(rng.choice([f"on the {position}", f"on the {position} side", f"on the {position} of the image"]))
    return str(rng.choice([f"at the {position}", f"at the {position} of the image", f"near the {position} edge"]))


def describe_matches(view: TextView, constraints: dict[str, Any]) -> list[int]:
    """Indices of the objects that satisfy ``category``/``color``/``position`` (grown cells) and,
    if given, the ``superlative`` (``largest``/``smallest`` by a 25 % margin, else no match)."""
    out = []
    for i, obj in enumerate(view.objects):
        if obj.category != constraints["category"]:
            continue
        if constraints.get("color") and obj.color != constraints["color"]:
            continue
        if constraints.get("position"):
            x, y = _centre(obj)
            if not in_cell(x, y, constraints["position"], view.width, view.height, CELL_MARGIN):
                continue
        out.append(i)
    sup = constraints.get("superlative")
    if sup and len(out) >= 2:
        areas = sorted(((view.objects[i].label.area, i) for i in out), reverse=sup == "largest")
        first, second = areas[0][0], areas[1][0]
        clear = first >= 1.25 * second if sup == "largest" else 1.25 * first <= second
        return [areas[0][1]] if clear else out
    return out


def _describable_position(view: TextView, obj: SceneObject) -> str | None:
    """The object's cell, if its centre is clear of the cell borders by the margin."""
    x, y = _centre(obj)
    pos = obj.label.position
    r, c = _cell_index(pos)
    m = CELL_MARGIN
    inner_x = c * view.width / 3 + m * view.width <= x < (c + 1) * view.width / 3 - m * view.width
    inner_y = r * view.height / 3 + m * view.height <= y < (r + 1) * view.height / 3 - m * view.height
    return pos if inner_x and inner_y else None


def _unique_description(
    view: TextView, index: int, allow_position: bool = True, allow_color: bool = True
) -> dict[str, Any] | None:
    """The simplest constraints that single out object ``index`` (None when there are none)."""
    obj = view.objects[index]
    if obj.label.truncated or obj.label.area < 4:
        return None
    cat = obj.category
    pos = _describable_position(view, obj) if allow_position else None
    colours: list[str | None] = [None, obj.color] if allow_color else [None]
    options: list[dict[str, Any]] = [{"category": cat, "color": c} for c in colours]
    if pos:
        options += [{"category": cat, "color": c, "position": pos} for c in colours]
    for sup in ("largest", "smallest"):
        options += [{"category": cat, "color": c, "superlative": sup} for c in colours]
    for cons in options:
        cons = {k: v for k, v in cons.items() if v is not None}
        if describe_matches(view, cons) != [index]:
            continue
        if cons.get("superlative"):
            rest = {k: v for k, v in cons.items() if k != "superlative"}
            if len(describe_matches(view, rest)) < 2:
                continue
        return cons
    return None


def _phrase(cons: dict[str, Any], rng: np.random.Generator, article: str = "the") -> str:
    spec = CLASSES[cons["category"]]
    words = []
    if cons.get("superlative"):
        words.append(cons["superlative"])
    if cons.get("color"):
        words.append(cons["color"])
    words.append(spec.noun)
    text = f"{article} {' '.join(words)}"
    if cons.get("position"):
        text += " " + _position_phrase(cons["position"], rng)
    return text


# --------------------------------------------------------------------------- referring expressions


def referring_expressions(view: TextView, rng: np.random.Generator, max_refs: int = 5) -> list[Referring]:
    """Up to ``max_refs`` expressions, each naming exactly one labelled object (several phrasings)."""
    candidates = []
    for i in range(len(view.objects)):
        cons = _unique_description(view, i)
        if cons is not None:
            candidates.append((i, cons))
    if not candidates:
        return []
    order = rng.permutation(len(candidates))
    # prefer variety: first one object per category, then the rest
    seen: set[str] = set()
    picked: list[tuple[int, dict[str, Any]]] = []
    for k in order:
        i, cons = candidates[k]
        if cons["category"] not in seen:
            picked.append((i, cons))
            seen.add(cons["category"])
    for k in order:
        if candidates[k] not in picked:
            picked.append(candidates[k])
    refs = []
    for i, cons in picked[:max_refs]:
        obj = view.objects[i]
        base = _phrase(cons, rng)
        spec = CLASSES[cons["category"]]
        sentences = [base]
        alt = _phrase(cons, rng)
        if alt != base:
            sentences.append(alt)
        desc = [w for w in (cons.get("superlative"), cons.get("color")) if w]
        tail = f" {_position_phrase(cons['position'], rng)}" if cons.get("position") else ""
        if desc:
            sentences.append(f"the {spec.noun} that is {' and '.join(_sup_word(w) for w in desc)}{tail}")
        attrs = {k: cons.get(k) for k in ("category", "color", "position", "superlative")}
        refs.append(Referring(sentences=sentences, target=i, bbox=obj.label.bbox, attrs=attrs))
    return refs


def _sup_word(word: str) -> str:
    return {"largest": "the largest one", "smallest": "the smallest one"}.get(word, word)


# --------------------------------------------------------------------------- captions


def captions(view: TextView, rng: np.random.Generator, n: int = 5) -> list[Caption]:
    """``n`` captions: a scene sentence plus one or two sentences of counts, colours, positions."""
    counts = Counter(o.category for o in view.objects)
    pool: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}

    def put(group: str, text: str, fact: dict[str, Any]) -> None:
        pool.setdefault(group, []).append((text, [fact]))

    for cat, k in counts.most_common(3):
        spec = CLASSES[cat]
        fact = {"kind": "count", "category": cat, "count": k}
        verb = "is" if k == 1 else "are"
        phrase = _count_phrase(k, spec.noun, spec.plural)
        put("count", f"There {verb} {phrase} in the image.", fact)
        put("count", f"The image shows {phrase}.", fact)
        colours = Counter(o.color for o in view.objects if o.category == cat)
        colour, ck = colours.most_common(1)[0]
        if k == 1:
            put("color", f"The {spec.noun} is {colour}.", {"kind": "color", "category": cat, "color": colour})
        elif ck * 2 > k and k >= 3:
            fact = {"kind": "majority_color", "category": cat, "color": colour}
            put("color", f"Most of the {spec.plural} are {colour}.", fact)
        if 1 < ck < k:
            cfact = {"kind": "count", "category": cat, "color": colour, "count": ck}
            put("color", f"{_count_phrase(ck, spec.noun, spec.plural, colour).capitalize()} can be seen.", cfact)
    for i, obj in enumerate(view.objects):
        pos = _describable_position(view, obj) if not obj.label.truncated else None
        if pos is None:
            continue
        spec = CLASSES[obj.category]
        fact = {"kind": "position", "category": obj.category, "color": obj.color, "position": pos, "index": i}
        put("position", f"{_a(obj.color).capitalize()} {spec.noun} is {_position_phrase(pos, rng)}.", fact)
    lots = [f for f in view.features if f.kind == "parking lot"]
    for feat in lots:
        k = sum(1 for o in view.objects if o.category == "small-vehicle" and feat.contains(o.cx, o.cy))
        if k:
            fact = {"kind": "count_in_feature", "category": "small-vehicle", "count": k, "feature": feat.bbox}
            where = "the parking lot" if len(lots) == 1 else "one of the parking lots"
            verb = "is" if k == 1 else "are"
            put(
                "feature",
                f"{_count_phrase(k, 'small vehicle', 'small vehicles').capitalize()} {verb} parked in {where}.",
                fact,
            )
    if any(f.kind == "river" for f in view.features):
        put("feature", "A river runs through the image.", {"kind": "feature", "feature": "river"})
    if view.cover:
        top = max(view.cover, key=lambda g: view.cover[g])
        if view.cover[top] >= 0.5:
            put(
                "ground",
                f"Most of the ground is covered by {_GROUND_WORDS.get(top, top)}.",
                {"kind": "ground", "ground": top},
            )
    if not view.objects:
        put("count", "No objects of interest are visible.", {"kind": "count_total", "count": 0})
    out = []
    scene_phrases = _SCENE_PHRASES.get(view.label, (view.label.replace("_", " "),))
    groups = sorted(pool)
    for k in range(n):
        scene = scene_phrases[int(rng.integers(len(scene_phrases)))]
        parts = [f"{rng.choice(_OPENERS)} {scene}."]
        facts: list[dict[str, Any]] = [{"kind": "scene", "label": view.label}]
        if groups:
            chosen = rng.choice(len(groups), size=min(len(groups), 1 + int(k % 2 == 0)), replace=False)
            for g in sorted(chosen.tolist()):
                options = pool[groups[g]]
                text, f = options[int(rng.integers(len(options)))]
                parts.append(text)
                facts.extend(f)
        out.append(Caption(" ".join(parts), facts))
    return out


# --------------------------------------------------------------------------- VQA


def _relation(view: TextView, a: SceneObject, b: SceneObject) -> str | None:
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    dx, dy = ax - bx, ay - by
    if abs(dx) > 2 * abs(dy) and abs(dx) > 0.08 * view.width:
        return "left of" if dx < 0 else "right of"
    if abs(dy) > 2 * abs(dx) and abs(dy) > 0.08 * view.height:
        return "above" if dy < 0 else "below"
    return None


def _area_m2_bucket(m2: float) -> str:
    if m2 <= 0:
        return "0m2"
    for hi in (10, 100, 1000):
        if m2 <= hi:
            lo = hi // 10 if hi > 10 else 0
            return f"between {lo}m2 and {hi}m2"
    return "more than 1000m2"


def vqa_pairs(view: TextView, rng: np.random.Generator, style: str = "generic", max_questions: int = 10) -> list[QA]:
    """Question/answer pairs whose answers follow from the labels (``QA.attrs`` holds the query).

    ``style="generic"`` types: ``presence``, ``count``, ``color``, ``position``,
    ``relative_position``, ``size``, ``comparison``, ``scene``. ``style="rsvqa"`` asks RSVQA's
    types instead: ``presence``, ``count``, ``comp``, ``area`` (total area of a class in m^2,
    RSVQA-HR buckets) and ``rural_urban``.

    ``QA.attrs``: ``object`` (+ ``color``) for presence/count/area, ``object``/``other`` for
    comparisons, ``target`` (index into ``view.objects``) and ``described_as`` (the constraints
    of the phrase naming it) for color/position/size, ``a``/``b``/``relation`` for relative
    positions, ``scene`` for scene and rural/urban questions.
    """
    if style not in ("generic", "rsvqa"):
        raise ValueError(f"unknown VQA style {style!r}; use 'generic' or 'rsvqa'")
    counts = Counter(o.category for o in view.objects)
    vocab = [c for c in view.vocabulary if c in CLASSES]
    present = sorted(counts)
    absent = [c for c in vocab if c not in counts]
    qas: list[QA] = []

    def add(question: str, answer: str, qtype: str, **attrs: Any) -> None:
        qas.append(QA(question=question, answer=answer, type=qtype, attrs=attrs))

    def pick(seq: Sequence[str]) -> str | None:
        return str(seq[int(rng.integers(len(seq)))]) if seq else None

    yes_cat, no_cat = pick(present), pick(absent)
    if yes_cat:
        add(f"Is there {_a(CLASSES[yes_cat].noun)} in the image?", "yes", "presence", object=yes_cat)
    if no_cat:
        add(f"Is there {_a(CLASSES[no_cat].noun)} in the image?", "no", "presence", object=no_cat)
    for cat in rng.permutation(present)[:2].tolist() if present else []:
        spec = CLASSES[cat]
        add(f"How many {spec.plural} are there in the image?", str(counts[cat]), "count", object=cat)
    if present:
        cat = pick(present)
        assert cat is not None
        colours = sorted({o.color for o in view.objects if o.category == cat})
        colour = pick(colours)
        k = sum(1 for o in view.objects if o.category == cat and o.color == colour)
        add(f"How many {colour} {CLASSES[cat].plural} are there?", str(k), "count", object=cat, color=colour)
    if len(vocab) >= 2:
        a_cat, b_cat = (str(c) for c in rng.choice(vocab, size=2, replace=False))
        if counts[a_cat] != counts[b_cat]:
            ans = "yes" if counts[a_cat] > counts[b_cat] else "no"
            q = f"Are there more {CLASSES[a_cat].plural} than {CLASSES[b_cat].plural}?"
            add(q, ans, "comp" if style == "rsvqa" else "comparison", object=a_cat, other=b_cat)
    if style == "rsvqa":
        if present:
            cat = pick(present)
            assert cat is not None
            m2 = sum(o.label.area for o in view.objects if o.category == cat) * view.gsd**2
            add(f"What is the area covered by {CLASSES[cat].plural}?", _area_m2_bucket(m2), "area", object=cat,
                gsd=view.gsd)  # fmt: skip
        add("Is it a rural or an urban area?", "urban" if view.label in URBAN_SCENES else "rural", "rural_urban",
            scene=view.label)  # fmt: skip
        return qas[:max_questions]
    add("What type of scene is shown in the image?", view.label.replace("_", " "), "scene", scene=view.label)
    described = [(i, _unique_description(view, i, allow_position=False)) for i in range(len(view.objects))]
    described = [(i, c) for i, c in described if c is not None]
    order = rng.permutation(len(described)).tolist()
    uncoloured = [(i, c) for i, c in described if "color" not in c]
    if uncoloured:
        i, cons = uncoloured[int(rng.integers(len(uncoloured)))]
        add(f"What color is {_phrase(cons, rng)}?", view.objects[i].color, "color", target=i, **_cons(cons))
    for k in order[1:2]:
        i, cons = described[k]
        pos = _describable_position(view, view.objects[i])
        if pos:
            add(f"Where is {_phrase(cons, rng)} located?", pos, "position", target=i, **_cons(cons))
    for k in order[2:3]:
        i, cons = described[k]
        area = view.objects[i].label.area
        if all(abs(area - edge) > 0.15 * edge for edge in (32**2, 96**2)):
            add(f"Is {_phrase(cons, rng)} small, medium or large?", size_bucket(area), "size", target=i, **_cons(cons))
    if len(described) >= 2:
        for _ in range(4):
            ka, kb = rng.choice(len(described), size=2, replace=False)
            (ia, ca), (ib, cb) = described[int(ka)], described[int(kb)]
            rel = _relation(view, view.objects[ia], view.objects[ib])
            if rel is None:
                continue
            if rng.random() < 0.5:
                q = f"Where is {_phrase(ca, rng)} relative to {_phrase(cb, rng)}?"
                add(q, rel, "relative_position", a=ia, b=ib, relation=rel)
            else:
                opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
                asked = rel if rng.random() < 0.5 else opposite[rel]
                q = f"Is {_phrase(ca, rng)} {_rel_words(asked)} {_phrase(cb, rng)}?"
                add(q, "yes" if asked == rel else "no", "relative_position", a=ia, b=ib, relation=asked)
            break
    return qas[:max_questions]


def _rel_words(rel: str) -> str:
    return {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)


def _cons(cons: dict[str, Any]) -> dict[str, Any]:
    return {"described_as": dict(cons)}

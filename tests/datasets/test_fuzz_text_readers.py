"""Fuzzing the text/json/pickle readers: corrupted files must parse or raise DatasetError, nothing else.

Each case starts from a valid dataset written by the format's own writer, corrupts one file —
a JSON value replaced/deleted at a random location (wrong types, NaN, huge numbers, missing keys),
truncated bytes, flipped bytes, invalid UTF-8 — and reads it strictly and leniently. The only
acceptable outcomes are samples or :class:`~rsvl.errors.DatasetError` (``UnsafeDataError`` is one).
For the refs pickle, random byte corruption must end the same way and never run code.
"""

from __future__ import annotations

import copy
import functools
import json
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsvl.datasets import QA, Category, Instance, Referring, Sample, get_format
from rsvl.datasets.safe_pickle import safe_loads_pickle
from rsvl.errors import DatasetError
from rsvl.geometry import masks

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "../../../etc/passwd", "/abs.png", "{<1><2><3><4>}", "{<1><2>", "\x00", "a/b.png"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=6,
)


# ----------------------------------------------------------------------------- valid starting points


def _samples(name: str) -> tuple[list[Sample], dict[str, Any]]:
    if name == "rrsisd":
        m = np.zeros((8, 10), bool)
        m[2:5, 3:7] = True
        img = "images/rrsisd/JPEGImages"
        return [
            Sample(
                image=f"{img}/a.jpg",
                image_id=1,
                width=10,
                height=8,
                split="train",
                instances=[
                    Instance("car", bbox=(3, 2, 7, 5), mask=masks.encode(m), id=10),
                    Instance("ship", bbox=(0, 0, 4, 4), mask=[[0, 0, 4, 0, 4, 4]], id=11),
                ],
                refs=[
                    Referring(["the car"], target=0, id=0),
                    Referring(["the ship", "a boat"], target=1, id=1, attrs={"raw": ["The ship", "a boat"]}),
                ],
            ),
            Sample(
                image=f"{img}/b.jpg",
                image_id=2,
                width=10,
                height=8,
                split="val",
                instances=[Instance("car", bbox=(1, 1, 2, 2), id=12)],
                refs=[Referring(["x"], target=0, id=2)],
            ),
        ], {"categories": [Category(1, "car"), Category(2, "ship")]}
    if name == "vrsbench":
        return [
            Sample(
                image="Images_val/P1.png",
                captions=["a port"],
                qas=[QA("what?", "ship", type="object category")],
                refs=[Referring(["the ship"], bbox=(128.0, 204.8, 168.96, 307.2), attrs={"unique": True})],
            ),
            Sample(image="Images_val/P2.png", width=800, height=600, qas=[QA("how many?", "2", type="quantity")]),
        ], {}
    if name == "lrsvqa":
        return [
            Sample(
                image="LRS_VQA/image/a.tif",
                qas=[QA("color?", "red", type="color", attrs={"hbox": [1, 2, 3, 4]}), QA("count?", "3", type="count")],
            ),
            Sample(image="LRS_VQA/image/b.tif", qas=[QA("rural?", "urban", type="rural/urban")]),
        ], {}
    if name == "rsvqa":
        return [
            Sample(
                image="Images_LR/0.tif",
                split="train",
                qas=[QA("road?", "yes", type="presence", id=0), QA("n?", "3", type="count", id=1)],
            ),
            Sample(image="Images_LR/2.tif", split="val", qas=[QA("rural?", "rural", type="rural_urban", id=3)]),
        ], {}
    if name == "captions":
        return [
            Sample(image="images/a.jpg", image_id=0, split="train", captions=["A plane .", "two planes"]),
            Sample(
                image="images/b.jpg",
                image_id=1,
                split="test",
                captions=["a beach"],
                meta={"karpathy_sentences": [{"tokens": ["beach"]}]},
            ),
        ], {"meta": {"dataset": "rsicd"}}
    if name == "classification":
        return [
            Sample(image="airport/a.jpg", label="airport", split="train"),
            Sample(image="beach/b.png", label="beach", split="test"),
            Sample(image="beach/c.png", label="beach"),
        ], {}
    raise AssertionError(name)


@functools.cache
def _base_files(name: str) -> dict[str, bytes]:
    samples, kwargs = _samples(name)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        get_format(name).write(root, samples, **kwargs)
        for s in samples:
            (root / s.image).parent.mkdir(parents=True, exist_ok=True)
            (root / s.image).write_bytes(b"\x89PNG")
        assert get_format(name).open(root).load()  # the starting point is valid
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _annotation_files(name: str) -> list[str]:
    suffixes = (".json", ".jsonl", ".txt", ".p")
    return sorted(k for k in _base_files(name) if k.endswith(suffixes))


def _assert_reads_back_or_fails_cleanly(name: str, files: dict[str, bytes]) -> None:
    """Materialise ``files`` and read them strictly and leniently; only DatasetError may escape."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        fmt = get_format(name)
        for strict in (True, False):
            try:
                ds = fmt.open(root, strict=strict)
                samples = ds.load()
            except DatasetError:
                continue
            # parsed consistently: every sample is a Sample whose image stays inside the root
            for s in samples:
                assert isinstance(s, Sample)
                assert (root / s.image).resolve().is_relative_to(root.resolve())


# ----------------------------------------------------------------------------- mutations


def _mutate(data: st.DataObject, value: Any) -> Any:
    """Replace or delete something at a random depth of a JSON-like value."""
    if isinstance(value, (list, dict)) and value and data.draw(st.integers(0, 4)) > 0:
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        key = data.draw(st.sampled_from(keys))
        action = data.draw(st.sampled_from(["descend", "descend", "descend", "replace", "delete"]))
        if action == "descend":
            value[key] = _mutate(data, value[key])
        elif action == "replace":
            value[key] = data.draw(JSON_VALUES)
        else:
            del value[key]
        return value
    return data.draw(JSON_VALUES)


def _corrupt_bytes(data: st.DataObject, raw: bytes) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "utf8"]))
    if not raw:
        return b"\xff"
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "truncate":
        return raw[:pos]
    if kind == "flip":
        return raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1 :]
    if kind == "insert":
        return raw[:pos] + data.draw(st.binary(min_size=1, max_size=4)) + raw[pos:]
    return raw[:pos] + b"\xc3\x28\xff" + raw[pos:]


TEXT_FORMATS = ["rrsisd", "vrsbench", "lrsvqa", "rsvqa", "captions", "classification"]


@pytest.mark.parametrize("name", TEXT_FORMATS)
@FUZZ
@given(data=st.data())
def test_byte_corruption_of_any_annotation_file(name: str, data: st.DataObject) -> None:
    files = dict(_base_files(name))
    target = data.draw(st.sampled_from(_annotation_files(name)))
    files[target] = _corrupt_bytes(data, files[target])
    _assert_reads_back_or_fails_cleanly(name, files)


def _json_mutator(name: str, target: str) -> Callable[[st.DataObject, bytes], bytes]:
    if target.endswith(".jsonl"):

        def mutate_lines(data: st.DataObject, raw: bytes) -> bytes:
            lines = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
            lines = _mutate(data, lines)
            if not isinstance(lines, list):
                lines = [lines]
            return "".join(json.dumps(x) + "\n" for x in lines).encode()

        return mutate_lines

    def mutate_json(data: st.DataObject, raw: bytes) -> bytes:
        return json.dumps(_mutate(data, json.loads(raw))).encode()

    return mutate_json


JSON_TARGETS = [
    (name, target)
    for name in ("rrsisd", "vrsbench", "lrsvqa", "rsvqa", "captions")
    for target in _annotation_files(name)
    if target.endswith((".json", ".jsonl"))
]


@pytest.mark.parametrize(("name", "target"), JSON_TARGETS)
@FUZZ
@given(data=st.data())
def test_json_values_replaced_or_deleted(name: str, target: str, data: st.DataObject) -> None:
    files = dict(_base_files(name))
    files[target] = _json_mutator(name, target)(data, files[target])
    _assert_reads_back_or_fails_cleanly(name, files)


@FUZZ
@given(data=st.data())
def test_refs_pickle_structure_mutations(data: st.DataObject) -> None:
    files = dict(_base_files("rrsisd"))
    target = "rrsisd/refs(unc).p"
    refs = _mutate(data, copy.deepcopy(pickle.loads(files[target])))  # our own trusted bytes
    files[target] = pickle.dumps(refs, protocol=2)
    _assert_reads_back_or_fails_cleanly("rrsisd", files)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_refs_pickle_byte_corruption_never_escapes(data: st.DataObject) -> None:
    raw = _base_files("rrsisd")["rrsisd/refs(unc).p"]
    corrupted = _corrupt_bytes(data, raw)
    try:
        value = safe_loads_pickle(corrupted, "refs(unc).p")
    except DatasetError:
        return
    # what did parse is plain builtin data, never an object a global could have built
    stack = [value]
    while stack:
        item = stack.pop()
        assert item is None or isinstance(item, (dict, list, tuple, set, frozenset, str, bytes, int, float)), type(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


@FUZZ
@given(lines=st.lists(st.text(max_size=20), max_size=5))
def test_classification_list_files_with_random_lines(lines: list[str]) -> None:
    files = dict(_base_files("classification"))
    text = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    for target in ("classes.txt", "train.txt"):
        _assert_reads_back_or_fails_cleanly("classification", {**files, target: text})

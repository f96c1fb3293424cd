"""The restricted unpickler: plain refs data loads, code never runs, broken files are DatasetErrors."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsvl.datasets.safe_pickle import MAX_DEPTH, MAX_PREDICTABLE_KEYS, safe_load_pickle, safe_loads_pickle
from rsvl.errors import DatasetError, UnsafeDataError

REFS = [
    {
        "sent_ids": [0, 1],
        "file_name": "COCO_train2014_000000581857_16.jpg",
        "ann_id": 1719310,
        "ref_id": 0,
        "image_id": 581857,
        "split": "train",
        "sentences": [
            {"tokens": ["the", "lady"], "raw": "THE LADY", "sent_id": 0, "sent": "the lady"},
            {"tokens": ["woman"], "raw": "woman", "sent_id": 1, "sent": "woman"},
        ],
        "category_id": 1,
    }
]


class _RunsCode:
    """Unpickling this object would run ``touch <marker>`` (the classic pickle exploit)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_refs_round_trip_through_protocol_2(tmp_path: Path) -> None:
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(REFS, protocol=2))
    assert safe_load_pickle(path) == REFS


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_protocol_of_plain_data_loads(protocol: int) -> None:
    data = {"a": [1, 2.5, None, True], "b": ("x", "y"), "c": {3, 4}, "d": frozenset({5})}
    assert safe_loads_pickle(pickle.dumps(data, protocol=protocol)) == data


def test_python2_byte_strings_are_decoded_as_utf8() -> None:
    # Python 2 protocol 2: {'raw': 'caf\xc3\xa9', u'sent': u'caf\xe9'} - a py2 str (SHORT_BINSTRING)
    # holding UTF-8 bytes and a py2 unicode (BINUNICODE); both must come back as the same text.
    data = (
        b"\x80\x02}q\x00(U\x03rawq\x01U\x05caf\xc3\xa9q\x02"
        b"X\x04\x00\x00\x00sentq\x03X\x05\x00\x00\x00caf\xc3\xa9q\x04u."
    )
    assert safe_loads_pickle(data) == {"raw": "café", "sent": "café"}


def test_python2_non_utf8_bytes_fall_back_to_latin1_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = b"\x80\x02]q\x00U\x04caf\xe9q\x01a."  # ['caf\xe9'] written by Python 2 from a Latin-1 source
    with caplog.at_level(logging.WARNING, logger="rsvl.datasets.safe_pickle"):
        assert safe_loads_pickle(data, "refs(unc).p") == ["café"]
    assert "Latin-1" in caplog.text and "refs(unc).p" in caplog.text


def test_python2_set_and_ordered_dict_are_allowed() -> None:
    py2_set = b"\x80\x02c__builtin__\nset\nq\x00]q\x01(K\x01K\x02e\x85q\x02Rq\x03."
    assert safe_loads_pickle(py2_set) == {1, 2}
    from collections import OrderedDict

    assert safe_loads_pickle(pickle.dumps(OrderedDict([("b", 1), ("a", 2)]), protocol=2)) == {"b": 1, "a": 2}


def test_os_system_via_reduce_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0, "evil": _RunsCode(marker)}], protocol=2))
    with pytest.raises(UnsafeDataError) as info:
        safe_load_pickle(path)
    assert str(path) in str(info.value)
    assert "system" in str(info.value)  # names the refused global (posix.system / nt.system)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cos\nsystem\n(S'touch MARKER'\ntR.",  # protocol 0 GLOBAL + REDUCE
        b"(S'touch MARKER'\nios\nsystem\n.",  # protocol 0 INST
        b"\x80\x02cbuiltins\neval\nq\x00X\x0c\x00\x00\x00print('hi')q\x01\x85q\x02Rq\x03.",  # builtins.eval
        pickle.dumps(subprocess.Popen, protocol=4),  # STACK_GLOBAL in a protocol 4 frame
        b"\x80\x02ccopy_reg\n_reconstructor\nq\x00.",  # how Python 2 pickles arbitrary objects
    ],
)
def test_any_global_outside_the_allow_list_is_refused(payload: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    payload = payload.replace(b"MARKER", str(marker).encode())
    with pytest.raises(UnsafeDataError, match="refused to load"):
        safe_loads_pickle(payload, "x.p")
    assert not marker.exists()


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(UnsafeDataError, match="persistent id"):
        safe_loads_pickle(b"\x80\x02X\x01\x00\x00\x00aQ.")


@pytest.mark.parametrize("cut", [1, 5, 20, -1])
def test_truncated_pickles_are_dataset_errors(cut: int) -> None:
    data = pickle.dumps(REFS, protocol=2)
    with pytest.raises(DatasetError, match="not a readable pickle") as info:
        safe_loads_pickle(data[:cut], "refs(unc).p")
    assert not isinstance(info.value, UnsafeDataError)
    assert "refs(unc).p" in str(info.value)


def test_empty_missing_and_trailing_garbage(tmp_path: Path) -> None:
    empty = tmp_path / "empty.p"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty file"):
        safe_load_pickle(empty)
    with pytest.raises(DatasetError, match="cannot open"):
        safe_load_pickle(tmp_path / "missing.p")
    with pytest.raises(DatasetError, match="trailing bytes"):
        safe_loads_pickle(pickle.dumps(REFS, protocol=2) + b"junk")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        safe_loads_pickle(b"this is not a pickle at all")


def test_deep_nesting_and_cycles_are_refused() -> None:
    deep: list = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(DatasetError, match="deeper"):
        safe_loads_pickle(pickle.dumps(deep, protocol=2))
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(DatasetError, match=r"deeper|cycle"):
        safe_loads_pickle(pickle.dumps(cyclic, protocol=2))
    # very deep nesting built by opcodes (200k levels) must not blow the interpreter's stack either
    very_deep = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
    with pytest.raises(DatasetError):
        safe_loads_pickle(very_deep)


def test_exponential_sharing_is_refused_quickly() -> None:
    node: list = ["x"]
    for _ in range(60):
        node = [node, node]  # 2**60 leaves once expanded, a few hundred bytes pickled
    data = pickle.dumps(node, protocol=2)
    assert len(data) < 2000
    with pytest.raises(DatasetError, match="too many times"):
        safe_loads_pickle(data)


def test_huge_integers_are_refused() -> None:
    with pytest.raises(DatasetError, match="integer"):
        safe_loads_pickle(pickle.dumps([1 << 10_000], protocol=2))


def _doubling_tuple(levels: int) -> bytes:
    """EMPTY_TUPLE, then DUP + TUPLE2 per level: ``levels`` levels of ``t = (t, t)``, 2**levels leaves, 2 bytes each."""
    return b")" + b"2\x86" * levels


def _hashing_bombs(levels: int) -> dict[str, bytes]:
    """Tiny pickles whose loading hashes a shared tuple DAG: the unpickler itself walks all 2**levels leaves."""
    bomb = _doubling_tuple(levels)
    return {
        "dict key via SETITEM": b"\x80\x02}" + bomb + b"K\x01s.",
        "dict key via DICT": b"\x80\x02(" + bomb + b"K\x01d.",
        "frozenset member": b"\x80\x04(" + bomb + b"\x91.",
        "set member via ADDITEMS": b"\x80\x04\x8f(" + bomb + b"\x90.",
        "set() argument via REDUCE": b"\x80\x02c__builtin__\nset\n](" + bomb + b"e\x85R.",
        # the same doubling through the memo (BINPUT 0 / BINGET 0) instead of DUP
        "memo gets": b"\x80\x02})q\x000" + b"h\x00h\x00\x86q\x000" * levels + b"h\x00K\x01s.",
    }


def test_hashing_bombs_are_real_pickles_of_doubling_tuples() -> None:
    # at 12 levels every bomb is an ordinary pickle: plain pickle loads a 2**12-leaf DAG from it
    leaf_count = 0
    for data in _hashing_bombs(12).values():
        value = pickle.loads(data)  # our own bytes, 60-odd of them: safe to load plainly
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, (dict, tuple, set, frozenset)) and item:
                stack.extend(item)
            elif item == ():
                leaf_count += 1
    assert leaf_count == 6 * 2**12


def test_hashing_bombs_are_refused_before_the_unpickler_hangs() -> None:
    # 40 levels: hashing the key would take hours inside Unpickler.load(). Run in a child process so that a
    # regression fails on the timeout instead of hanging the test run.
    child = (
        "import json, sys, time\n"
        "from rsvl.datasets.safe_pickle import safe_loads_pickle\n"
        "from rsvl.errors import DatasetError\n"
        "out = {}\n"
        "for name, data in json.load(sys.stdin).items():\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        safe_loads_pickle(bytes.fromhex(data), 'refs(unc).p')\n"
        "        out[name] = ['accepted', '', time.perf_counter() - start]\n"
        "    except DatasetError as exc:\n"
        "        out[name] = [type(exc).__name__, str(exc), time.perf_counter() - start]\n"
        "print(json.dumps(out))\n"
    )
    assert all(len(data) < 400 for data in _hashing_bombs(40).values())  # a few hundred bytes each
    bombs = {name: data.hex() for name, data in _hashing_bombs(40).items()}
    done = subprocess.run(
        [sys.executable, "-c", child], input=json.dumps(bombs), capture_output=True, text=True, timeout=60, check=True
    )
    results = json.loads(done.stdout)
    assert set(results) == set(bombs)
    for name, (kind, message, seconds) in results.items():
        assert kind == "DatasetError", name
        assert "refs(unc).p" in message and "too many times" in message, (name, message)
        assert seconds < 0.2, (name, seconds)


def test_hashing_one_heavy_key_over_and_over_is_refused() -> None:
    # a 2**12-leaf tuple is within budget once, but inserting it as a key again and again (each a fresh dict,
    # popped at once) costs 2**12 per insert: 7 bytes per repeat buy quadratic work
    data = b"\x80\x02" + _doubling_tuple(12) + b"q\x000" + b"}h\x00K\x01s0" * 200 + b"N."
    with pytest.raises(DatasetError, match="hash the same data too many times"):
        safe_loads_pickle(data)
    assert pickle.loads(data) is None  # the stream itself is well formed


def test_many_keys_with_colliding_hashes_are_refused() -> None:
    # ints that differ by a multiple of 2**61 - 1 share one hash: n of them make dict insertion O(n**2)
    modulus = sys.hash_info.modulus
    colliding = {1 + k * modulus: 0 for k in range(1, MAX_PREDICTABLE_KEYS + 2)}
    with pytest.raises(DatasetError, match="hash a file can choose"):
        safe_loads_pickle(pickle.dumps(colliding, protocol=2))
    # ordinary int keys (image ids) and string keys are not limited
    ids = {image_id: str(image_id) for image_id in range(5 * MAX_PREDICTABLE_KEYS)}
    assert safe_loads_pickle(pickle.dumps(ids, protocol=2)) == ids
    assert len(safe_loads_pickle(pickle.dumps(dict.fromkeys(map(str, ids)), protocol=2))) == len(ids)


def test_shared_strings_and_lists_in_real_sized_refs_still_load() -> None:
    # Python 2's cPickle memoizes every string and container: repeated keys come back as BINGETs
    token = "the"
    refs = [
        {**REFS[0], "ref_id": i, "split": "train", "sentences": [{"tokens": [token] * 3, "sent": token}] * 2}
        for i in range(3000)
    ]
    data = pickle.dumps(refs, protocol=2)
    assert data.count(b"h") > 3000  # plenty of memo gets
    assert safe_loads_pickle(data) == refs


def test_python2_protocol_0_with_escaped_non_ascii_bytes_loads() -> None:
    # Python 2 pickle.dump default (protocol 0): STRING 'caf\xc3\xa9' is a repr with escapes, L suffix on longs
    data = b"(lp0\nS'caf\\xc3\\xa9'\np1\nag1\na(dp2\nS'k'\np3\nI01\nsaL123L\na."
    assert safe_loads_pickle(data) == ["café", "café", {"k": True}, 123]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02\x86.",  # TUPLE2 on an empty stack
        b"\x80\x02K\x01(\x85.",  # TUPLE1 reaching below a MARK
        b"\x80\x02h\x05.",  # BINGET of a memo slot never stored
        b"\x80\x02(K\x01d.",  # DICT with an odd number of items
        b"\x80\x02K\x01K\x02e.",  # APPENDS without a MARK
    ],
)
def test_streams_the_scan_cannot_replay_are_dataset_errors(data: bytes) -> None:
    with pytest.raises(DatasetError, match="not a readable pickle") as info:
        safe_loads_pickle(data, "refs(unc).p")
    assert not isinstance(info.value, UnsafeDataError)
    with pytest.raises(Exception):  # noqa: B017 - the real unpickler refuses them as well
        pickle.loads(data)


_KEYS = st.one_of(st.text(max_size=6), st.integers(-(2**70), 2**70), st.tuples(st.integers(), st.text(max_size=3)))
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**600), 2**600), st.floats(allow_nan=False), st.text())
_PLAIN = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_KEYS, inner, max_size=4),
        st.frozensets(_KEYS, max_size=3),
        st.sets(_KEYS, max_size=3),
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(value=_PLAIN, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), shared=st.booleans())
def test_any_plain_data_in_any_protocol_round_trips(value: object, protocol: int, shared: bool) -> None:
    if shared:  # the same objects reached several times: memo gets of containers
        value = [value, value, {"again": value}]
    assert safe_loads_pickle(pickle.dumps(value, protocol=protocol)) == value

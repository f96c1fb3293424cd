"""The restricted unpickler: plain refs data loads, code never runs, broken files are DatasetErrors."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from rsvl.datasets.safe_pickle import MAX_DEPTH, safe_load_pickle, safe_loads_pickle
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

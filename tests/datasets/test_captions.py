"""Karpathy-style caption json (RSICD / UCM / Sydney): real file shape, round trips, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsvl.datasets import Sample, get_format
from rsvl.datasets.captions import CaptionsFormat, karpathy_tokens
from rsvl.errors import DatasetError, InputError, UnsafeDataError

RSICD = {
    "images": [
        {
            "filename": "airport_1.jpg",
            "imgid": 0,
            "sentences": [
                {
                    "tokens": [
                        "many",
                        "aircraft",
                        "are",
                        "parked",
                        "next",
                        "to",
                        "a",
                        "long",
                        "building",
                        "in",
                        "an",
                        "airport",
                    ],
                    "raw": "many aircraft are parked next to a long building in an airport .",
                    "imgid": 0,
                    "sentid": 0,
                },
                {
                    "tokens": ["many", "planes", "are", "parked", "near", "a", "building"],
                    "raw": "Many planes are parked near a building.",
                    "imgid": 0,
                    "sentid": 1,
                },
            ],
            "split": "train",
            "sentids": [0, 1],
        },
        {
            "filename": "bareland_3.jpg",
            "imgid": 1,
            "sentences": [
                {
                    "tokens": ["it", "'s", "a", "piece", "of", "bareland"],
                    "raw": "it's a piece of bareland .",
                    "imgid": 1,
                    "sentid": 2,
                }
            ],
            "split": "test",
            "sentids": [2],
        },
    ],
    "dataset": "rsicd",
}


def _write(root: Path, data: object, name: str = "dataset_rsicd.json", image_dir: str = "RSICD_images") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / image_dir).mkdir(exist_ok=True)
    (root / name).write_text(data if isinstance(data, str) else json.dumps(data))


def test_reads_the_rsicd_file(tmp_path: Path) -> None:
    _write(tmp_path, RSICD)
    ds = get_format("captions").open(tmp_path)
    a, b = ds.load()
    assert ds.meta == {"file": "dataset_rsicd.json", "dataset": "rsicd"}
    assert a.image == "RSICD_images/airport_1.jpg" and a.image_id == 0 and a.split == "train"
    assert a.captions == [
        "many aircraft are parked next to a long building in an airport .",
        "Many planes are parked near a building.",
    ]
    assert a.meta == {}  # tokens and ids are what the writer regenerates
    assert b.meta == {"karpathy_sentences": [{"tokens": ["it", "'s", "a", "piece", "of", "bareland"]}]}


def test_write_reproduces_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "src", RSICD)
    fmt = CaptionsFormat(image_dir="RSICD_images")
    ds = fmt.open(tmp_path / "src")
    fmt.write(tmp_path / "dst", ds.load(), meta=ds.meta)
    assert json.loads((tmp_path / "dst/dataset_rsicd.json").read_text()) == RSICD


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    samples = [
        Sample(
            image="images/a.tif",
            image_id=5,
            split="train",
            captions=["A b, c.", "d e"],
            meta={
                "karpathy": {"cocoid": 9, "sentids": [1, 2, 3]},
                "karpathy_sentences": [{"tokens": ["x"], "sentid": 40, "note": 1}, {"imgid": 6}],
            },
        ),
        Sample(
            image="images/val2014/b.jpg",
            image_id="b",
            captions=["only one"],
            meta={"karpathy": {"filepath": "val2014"}},
        ),
        Sample(image="images/c.tif", image_id=7),  # an image without captions
    ]
    fmt = get_format("captions")
    fmt.write(tmp_path, samples, meta={"dataset": "ucm"})
    assert (tmp_path / "dataset_ucm.json").is_file()
    assert fmt.open(tmp_path).load() == samples


def test_writer_defaults(tmp_path: Path) -> None:
    fmt = get_format("captions")
    fmt.write(tmp_path, [Sample(image="images/a.tif", captions=["Two  Planes, parked."]), Sample(image="images/b.tif")])
    data = json.loads((tmp_path / "dataset.json").read_text())
    assert data["images"][0] == {
        "filename": "a.tif",
        "imgid": 0,
        "sentids": [0],
        "sentences": [{"tokens": ["two", "planes", "parked"], "raw": "Two  Planes, parked.", "imgid": 0, "sentid": 0}],
    }
    assert [s.image_id for s in fmt.open(tmp_path).load()] == [0, 1]
    assert karpathy_tokens("It's a dog's life!") == ["it's", "a", "dog's", "life"]


def test_file_choice(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no dataset\.json"):
        get_format("captions").open(tmp_path)
    _write(tmp_path, RSICD)
    _write(tmp_path, RSICD, name="dataset_ucm.json")
    with pytest.raises(DatasetError, match="several caption files"):
        get_format("captions").open(tmp_path)
    assert len(CaptionsFormat(file="dataset_ucm.json").open(tmp_path).load()) == 2
    with pytest.raises(DatasetError, match="missing"):
        CaptionsFormat(file="nope.json").open(tmp_path)


# ----------------------------------------------------------------------------- errors


def _with(**change: object) -> dict:
    image = {**RSICD["images"][0], **change}
    return {"images": [image], "dataset": "rsicd"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(filename=3), r"images\[0\]\.filename: expected str, got int"),
        (_with(sentences={"raw": "x"}), r"images\[0\]\.sentences: expected list, got dict"),
        (_with(sentences=[{"tokens": []}]), r"images\[0\]\.sentences\[0\]: missing key 'raw'"),
        (_with(sentences=[{"raw": "a b", "tokens": ["a", 2]}]), r"sentences\[0\]\.tokens\[1\]: expected str"),
        (_with(imgid=1.5), r"imgid: expected int or str, got float"),
        ({"images": {"filename": "a"}}, r"top level\.images: expected list"),
        ([RSICD], r"top level: expected dict"),
    ],
)
def test_bad_entries(tmp_path: Path, data: object, message: str) -> None:
    _write(tmp_path, data)
    with pytest.raises(DatasetError, match=message) as info:
        get_format("captions").open(tmp_path).load()
    assert "dataset_rsicd.json" in str(info.value)


def test_file_level_errors(tmp_path: Path) -> None:
    _write(tmp_path, '{"images": [\n  {"filename": "a.jpg"\n  "imgid": 0}\n]}')
    with pytest.raises(DatasetError, match=r"dataset_rsicd\.json:3: invalid JSON"):
        get_format("captions").open(tmp_path)
    _write(tmp_path, "  \n")
    with pytest.raises(DatasetError, match="empty file"):
        get_format("captions").open(tmp_path)
    (tmp_path / "dataset_rsicd.json").write_bytes(b'{"images": [], "dataset": "\xff"}')
    with pytest.raises(DatasetError, match="not UTF-8"):
        get_format("captions").open(tmp_path)


def test_image_path_escaping_the_root_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, _with(filename="../../../../../../etc/passwd"))
    with pytest.raises(UnsafeDataError):
        get_format("captions").open(tmp_path).load()


def test_strict_false_skips_and_counts(tmp_path: Path) -> None:
    data = {"images": [RSICD["images"][0], {"imgid": 1}, RSICD["images"][1]], "dataset": "rsicd"}
    _write(tmp_path, data)
    ds = get_format("captions").open(tmp_path, strict=False)
    assert len(ds.load()) == 2 and ds.report.skipped == 1


def test_writer_input_errors(tmp_path: Path) -> None:
    fmt = get_format("captions")
    with pytest.raises(InputError, match="must lie in images/"):
        fmt.write(tmp_path, [Sample(image="RSICD_images/a.jpg")])
    with pytest.raises(InputError, match="one dict per caption"):
        fmt.write(tmp_path, [Sample(image="images/a.jpg", captions=["x"], meta={"karpathy_sentences": []})])
    with pytest.raises(InputError, match="unique"):
        fmt.write(tmp_path, [Sample(image="images/a.jpg", image_id=1), Sample(image="images/b.jpg", image_id=1)])

"""VRSBench eval json (captions, VQA, referring): real entry shapes, round trips, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsvl.datasets import QA, Referring, Sample, get_format
from rsvl.datasets.vrsbench import CAPTION_FILE, REFERRING_FILE, VQA_FILE, VRSBenchFormat
from rsvl.errors import DatasetError, InputError, UnsafeDataError

# Entries with the keys and values the authors' prepare_eval_all.ipynb writes.
CAPTIONS = [
    {
        "image_id": "P0003_0002.png",
        "ground_truth": "A harbor with two ships.",
        "question": "Describe the image in detail",
        "dataset": "RSBench",
        "question_id": 0,
        "type": "caption",
    },
    {
        "image_id": "P0060_0010.png",
        "ground_truth": "Two swimming pools.",
        "question": "Describe the image in detail",
        "dataset": "RSBench",
        "question_id": 1,
        "type": "caption",
    },
]
REFERRING = [
    {
        "image_id": "P0003_0002.png",
        "question": "The large yellow vehicle situated closest to the green area.",
        "ground_truth": "{<25><40><33><60>}",
        "dataset": "RSBench",
        "question_id": 0,
        "type": "ref",
        "unique": False,
        "obj_corner": [
            0.333984375,
            0.58984375,
            0.287109375,
            0.603515625,
            0.255859375,
            0.416015625,
            0.2890625,
            0.400390625,
        ],
        "obj_cls": "vehicle",
        "obj_ids": [0],
        "size_group": "",
    },
    {
        "image_id": "P0060_0010.png",
        "question": "The larger swimming pool.",
        "ground_truth": "{<85><79><93><91>}",
        "dataset": "RSBench",
        "question_id": 1,
        "type": "ref",
        "unique": True,
        "obj_corner": [0.87, 0.8, 0.85, 0.91],
        "obj_cls": "swimming-pool",
        "obj_ids": [0],
        "size_group": "small",
    },
]
VQA = [
    {
        "image_id": "P0003_0002.png",
        "question": "What is the color of the vehicle?",
        "ground_truth": "Yellow",
        "dataset": "RSBench",
        "question_id": 0,
        "type": "object color",
    },
    {
        "image_id": "P0060_0010.png",
        "question": "How many pools are there?",
        "ground_truth": "2",
        "dataset": "RSBench",
        "question_id": 1841,
        "type": "object quantity",
    },
]


def _files(root: Path, cap: object = CAPTIONS, ref: object = REFERRING, vqa: object = VQA) -> None:
    (root / "Images_val").mkdir(parents=True, exist_ok=True)
    for name, entries in ((CAPTION_FILE, cap), (REFERRING_FILE, ref), (VQA_FILE, vqa)):
        if entries is not None:
            (root / name).write_text(entries if isinstance(entries, str) else json.dumps(entries, indent=4))


def test_reads_the_eval_files_grouped_by_image(tmp_path: Path) -> None:
    _files(tmp_path)
    a, b = get_format("vrsbench").open(tmp_path).load()
    assert a.image == "Images_val/P0003_0002.png" and a.image_id == "P0003_0002.png"
    assert a.captions == ["A harbor with two ships."] and "vrsbench_captions" not in a.meta
    assert a.qas == [QA("What is the color of the vehicle?", "Yellow", type="object color", id=0)]
    ref = a.refs[0]
    assert ref.sentences == ["The large yellow vehicle situated closest to the green area."]
    assert ref.bbox == pytest.approx((128.0, 204.8, 168.96, 307.2))  # 0-100 grid on a 512 x 512 patch
    assert ref.target is None and ref.id == 0
    assert ref.attrs == {k: REFERRING[0][k] for k in ("unique", "obj_corner", "obj_cls", "obj_ids", "size_group")}
    assert b.qas[0].id == 1841 and b.refs[0].attrs["unique"] is True
    assert a.width is None and a.height is None  # the files do not state the size


def test_write_reproduces_the_eval_files(tmp_path: Path) -> None:
    _files(tmp_path / "src")
    fmt = get_format("vrsbench")
    fmt.write(tmp_path / "dst", fmt.open(tmp_path / "src").load())
    for name, entries in ((CAPTION_FILE, CAPTIONS), (REFERRING_FILE, REFERRING), (VQA_FILE, VQA)):
        assert json.loads((tmp_path / "dst" / name).read_text()) == entries


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    s1 = Sample(
        image="Images_val/P0003_0002.png",
        image_id="P0003_0002.png",
        captions=["first caption", "second caption"],
        qas=[
            QA("What is it?", "ship", type="object category", id=7, attrs={"note": [1, 2]}),
            QA("Untyped?", "yes", id="q-x"),
        ],
        refs=[
            Referring(
                ["the ship"],
                bbox=(128.0, 204.8, 168.96, 307.2),
                id=3,
                attrs={"unique": False, "obj_cls": "ship", "type": "ref-v2"},
            ),
            Referring(
                ["odd spacing"],
                bbox=(0.0, 0.0, 512.0, 512.0),
                id=4,
                attrs={"ground_truth": "{<0> <0> <100> <100>}", "dataset": "VRSBench"},
            ),
        ],
        meta={"vrsbench_captions": [{"question": "Describe", "question_id": 55}, {"type": "detailed"}]},
    )
    s2 = Sample(
        image="Images_val/sub/x.png",
        image_id="sub/x.png",
        width=1000,
        height=800,
        refs=[Referring(["big"], bbox=(100.0, 80.0, 500.0, 400.0), id=9)],
    )
    s3 = Sample(image="Images_val/y.png", image_id="y.png", qas=[QA("n?", "2", type="object quantity", id=8)])
    fmt = get_format("vrsbench")
    fmt.write(tmp_path, [s1, s2, s3])
    assert fmt.open(tmp_path).load() == [s1, s2, s3]
    entry = json.loads((tmp_path / REFERRING_FILE).read_text())[2]
    assert entry["image_size"] == [1000, 800] and entry["ground_truth"] == "{<10><10><50><50>}"


def test_writer_assigns_missing_ids(tmp_path: Path) -> None:
    s = Sample(
        image="Images_val/a.png",
        captions=["c"],
        qas=[QA("q", "a", id=5), QA("r", "b")],
        refs=[Referring(["x"], bbox=(0.0, 0.0, 256.0, 256.0))],
    )
    fmt = get_format("vrsbench")
    fmt.write(tmp_path, [s])
    (back,) = fmt.open(tmp_path).load()
    assert [q.id for q in back.qas] == [5, 6] and back.refs[0].id == 0 and back.image_id == "a.png"
    assert json.loads((tmp_path / REFERRING_FILE).read_text())[0]["ground_truth"] == "{<0><0><50><50>}"


def test_other_image_folders_and_single_files(tmp_path: Path) -> None:
    _files(tmp_path, cap=None, ref=None)
    (tmp_path / "Images_val").rmdir()
    (tmp_path / "images").mkdir()
    samples = get_format("vrsbench").open(tmp_path).load()
    assert [s.image for s in samples] == ["images/P0003_0002.png", "images/P0060_0010.png"]
    assert VRSBenchFormat(image_dir="Images_train").open(tmp_path).load()[0].image == "Images_train/P0003_0002.png"
    fmt = VRSBenchFormat(image_size=(1024, 1024))
    _files(tmp_path / "big", cap=None, vqa=None)
    assert fmt.open(tmp_path / "big").load()[0].refs[0].bbox == pytest.approx((256.0, 409.6, 337.92, 614.4))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("ref_change", "message"),
    [
        ({"ground_truth": "{<25><40><33><60>|<45>}"}, r"\[0\]\.ground_truth: .*angle"),
        ({"ground_truth": "{<25><40><33><160>}"}, r"out of range"),
        ({"ground_truth": "{<1><2><3><4>}<delim>{<5><6><7><8>}"}, r"expected one box .* found 2"),
        ({"ground_truth": "no box here"}, r"expected one box .* found 0"),
        ({"ground_truth": "{<25><40>"}, r"unterminated box"),
        ({"question": None}, r"\[0\]\.question: expected str, got NoneType"),
        ({"image_id": 17}, r"\[0\]\.image_id: expected str, got int"),
        ({"image_size": [512]}, r"image_size: expected \[width, height\]"),
    ],
)
def test_bad_referring_entries(tmp_path: Path, ref_change: dict, message: str) -> None:
    _files(tmp_path, ref=[{**REFERRING[0], **ref_change}])
    with pytest.raises(DatasetError, match=message) as info:
        get_format("vrsbench").open(tmp_path).load()
    assert REFERRING_FILE in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ground_truth": None}, r"\[0\]: question .* has no answer"),
        ({"ground_truth": "  "}, r"empty answer"),
        ({"type": 3}, r"\[0\]\.type: expected str"),
        ({"question_id": 1.5}, r"question_id: expected int or str, got float"),
    ],
)
def test_bad_questions(tmp_path: Path, change: dict, message: str) -> None:
    entry = {**VQA[0], **change}
    _files(tmp_path, vqa=[entry])
    with pytest.raises(DatasetError, match=message):
        get_format("vrsbench").open(tmp_path).load()
    entry.pop("ground_truth")
    _files(tmp_path, vqa=[entry])
    with pytest.raises(DatasetError, match="has no answer"):
        get_format("vrsbench").open(tmp_path).load()


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a vrsbench dataset"):
        get_format("vrsbench").open(tmp_path)
    _files(tmp_path, vqa='[\n  {"image_id": "a.png",\n   "question": "q" "ground_truth": "a"}\n]')
    with pytest.raises(DatasetError, match=rf"{VQA_FILE}:3: invalid JSON"):
        get_format("vrsbench").open(tmp_path).load()
    _files(tmp_path, vqa="")
    with pytest.raises(DatasetError, match="empty file"):
        get_format("vrsbench").open(tmp_path).load()
    _files(tmp_path, vqa={"image_id": "a.png"})
    with pytest.raises(DatasetError, match="top level: expected list"):
        get_format("vrsbench").open(tmp_path).load()


def test_strict_false_skips_and_counts(tmp_path: Path) -> None:
    _files(tmp_path, vqa=[VQA[0], {**VQA[1], "ground_truth": None}, {**VQA[1], "image_id": "Z.png", "type": 5}])
    ds = get_format("vrsbench").open(tmp_path, strict=False)
    samples = ds.load()
    assert sum(len(s.qas) for s in samples) == 1 and ds.report.skipped == 2
    assert "Z.png" not in {s.image_id for s in samples}  # an image only appears through an entry that parsed


def test_image_path_escaping_the_root_is_refused(tmp_path: Path) -> None:
    _files(tmp_path, vqa=[{**VQA[0], "image_id": "../../../../../etc/passwd"}])
    with pytest.raises(UnsafeDataError):
        get_format("vrsbench").open(tmp_path).load()


def test_writer_input_errors(tmp_path: Path) -> None:
    fmt = get_format("vrsbench")
    with pytest.raises(InputError, match="must lie in Images_val/"):
        fmt.write(tmp_path, [Sample(image="images/a.png")])
    with pytest.raises(InputError, match="one sentence"):
        fmt.write(tmp_path, [Sample(image="Images_val/a.png", refs=[Referring(["a", "b"], bbox=(0, 0, 1, 1))])])
    with pytest.raises(InputError, match=r"needs Referring\.bbox"):
        fmt.write(tmp_path, [Sample(image="Images_val/a.png", refs=[Referring(["a"])])])
    with pytest.raises(InputError, match="unique"):
        fmt.write(tmp_path, [Sample(image="Images_val/a.png", qas=[QA("a", "b", id=1), QA("c", "d", id=1)])])

"""RSVQA LR/HR split json: real file shapes (active flags, positional ids), round trips, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsvl.datasets import QA, Sample, get_format
from rsvl.datasets.rsvqa import RSVQAFormat
from rsvl.errors import DatasetError, InputError, UnsafeDataError


def _q(qid: int, img: int, qtype: str, text: str, aids: list[int], active: bool = True) -> dict:
    return {
        "id": qid,
        "date_added": 1586800000.5,
        "img_id": img,
        "people_id": 0,
        "type": qtype,
        "question": text,
        "answers_ids": aids,
        "active": active,
    }


def _a(aid: int, qid: int, text: str, active: bool = True) -> dict:
    return {"id": aid, "date_added": 1586800000.5, "question_id": qid, "people_id": 0, "answer": text, "active": active}


def _img(iid: int, qids: list[int], active: bool = True) -> dict:
    return {
        "id": iid,
        "date_added": 1586800000.5,
        "original_name": f"tile_{iid}.tif",
        "sensor": "Sentinel-2",
        "people_id": 0,
        "type": "Multispectral",
        "questions_ids": qids,
        "active": active,
    }


def _split(root: Path, split: str, images: list, questions: list, answers: list, prefix: str = "LR") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for kind, entries in (("images", images), ("questions", questions), ("answers", answers)):
        (root / f"{prefix}_split_{split}_{kind}.json").write_text(json.dumps({kind: entries}))


def _lr(root: Path) -> None:
    """Two splits over one id space, entries of the other split present but inactive."""
    questions = [
        _q(0, 0, "presence", "Is there a road?", [0]),
        _q(1, 0, "count", "How many buildings are there?", [1]),
        _q(2, 1, "rural_urban", "Is it a rural or an urban area?", [2]),
        _q(3, 0, "comp", "Are there more roads than water areas?", [3], active=False),
    ]
    answers = [_a(0, 0, "yes"), _a(1, 1, "12"), _a(2, 2, "rural"), _a(3, 3, "no", active=False)]
    train_images = [_img(0, [0, 1, 3]), _img(1, [2], active=False)]
    val_images = [_img(0, [0, 1, 3], active=False), _img(1, [2])]
    _split(root, "train", train_images, questions, answers)
    _split(
        root,
        "val",
        val_images,
        [{**q, "active": q["id"] == 2} for q in questions],
        [{**a, "active": a["id"] == 2} for a in answers],
    )


def test_reads_active_entries_and_counts_inactive_ones(tmp_path: Path) -> None:
    _lr(tmp_path)
    ds = get_format("rsvqa").open(tmp_path)
    a, b = ds.load()
    assert (a.image, a.image_id, a.split) == ("Images_LR/0.tif", 0, "train")
    assert [(q.question, q.answer, q.type, q.id) for q in a.qas] == [
        ("Is there a road?", "yes", "presence", 0),
        ("How many buildings are there?", "12", "count", 1),
    ]  # question 3 is inactive: skipped and counted
    assert a.qas[0].attrs == {
        "date_added": 1586800000.5,
        "people_id": 0,
        "answer_fields": {"date_added": 1586800000.5, "people_id": 0},
    }
    assert a.meta["rsvqa_image"]["original_name"] == "tile_0.tif"
    assert (b.image, b.split, b.qas[0].answer) == ("Images_LR/1.tif", "val", "rural")
    assert ds.meta["prefix"] == "LR"
    assert ds.meta["inactive"] == {
        "train": {"images": 1, "questions": 1, "answers": 1},
        "val": {"images": 1, "questions": 3, "answers": 3},
    }
    assert ds.meta["unreferenced"] == {"train": 1, "val": 0}  # question 2 is active in train, image 1 is not


def test_write_reproduces_the_active_entries(tmp_path: Path) -> None:
    _lr(tmp_path / "src")
    fmt = get_format("rsvqa")
    samples = fmt.open(tmp_path / "src").load()
    fmt.write(tmp_path / "dst", samples)
    for split in ("train", "val"):
        for kind in ("images", "questions", "answers"):
            old = json.loads((tmp_path / f"src/LR_split_{split}_{kind}.json").read_text())[kind]
            new = json.loads((tmp_path / f"dst/LR_split_{split}_{kind}.json").read_text())[kind]
            active_old = [e for e in old if e["active"] and (kind != "questions" or e["id"] != 2 or split == "val")]
            if kind == "images":
                active_old = [{**e, "questions_ids": [q for q in e["questions_ids"] if q != 3]} for e in active_old]
            if kind == "answers" and split == "train":
                active_old = [e for e in active_old if e["id"] != 2]
            assert [e for e in new if e["active"]] == active_old
            assert [e["id"] for e in new] == list(range(len(new)))  # positional, as VQALoader indexes them
    assert fmt.open(tmp_path / "dst").load() == samples


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    samples = [
        Sample(
            image="Images_LR/0.tif",
            image_id=0,
            split="train",
            qas=[
                QA(
                    "Is there a road?",
                    "yes",
                    type="presence",
                    id=0,
                    attrs={"date_added": 1.5, "answer_fields": {"people_id": 3, "question_id": 99}},
                ),
                QA("How many?", "3", type="count", id=4, attrs={"other_answers": ["4", "5"]}),
            ],
            meta={"rsvqa_image": {"sensor": "S2", "res-x": 10.0}},
        ),
        Sample(image="Images_LR/3.tif", image_id=3, split="val", qas=[QA("Rural?", "rural", type="rural_urban", id=2)]),
        Sample(image="Images_LR/5.tif", image_id=5, split="test_phili"),
    ]
    fmt = get_format("rsvqa")
    fmt.write(tmp_path, samples)
    assert fmt.open(tmp_path).load() == samples


def test_hr_prefix_and_missing_question_ids(tmp_path: Path) -> None:
    fmt = RSVQAFormat(prefix="USGS")
    assert fmt.image_relpath("0042") == "Data/42.tif"
    s = Sample(
        image="Data/7.tif",
        split="test",
        qas=[QA("Is there a house?", "no", type="presence"), QA("What is the area?", "0m2", type="area", id=0)],
    )
    fmt.write(tmp_path, [s])
    assert (tmp_path / "USGS_split_test_questions.json").is_file() and (tmp_path / "Data").is_dir()
    (back,) = get_format("rsvqa").open(tmp_path).load()  # the prefix is discovered
    assert back.image == "Data/7.tif" and back.image_id == 7 and [q.id for q in back.qas] == [1, 0]


# ----------------------------------------------------------------------------- errors


def _one(root: Path, question: dict | None = None, answer: dict | None = None, image: dict | None = None) -> None:
    _split(
        root,
        "train",
        [image or _img(0, [0])],
        [question or _q(0, 0, "presence", "Is there water?", [0])],
        [answer or _a(0, 0, "no")],
    )


@pytest.mark.parametrize(
    ("kwargs", "message", "file"),
    [
        (
            {"answer": _a(0, 0, "no", active=False)},
            r"question 0 \('Is there water\?'\) has no answer: answer 0 is "
            r"inactive",
            "questions",
        ),
        ({"answer": _a(5, 0, "no")}, r"answers_ids\[0\]: question 0 .* answer 0 is missing", "questions"),
        (
            {"question": _q(0, 0, "presence", "Is there water?", [])},
            r"has no answer \(empty answers_ids\)",
            "questions",
        ),
        ({"question": _q(0, 9, "presence", "Is there water?", [0])}, r"belongs to image 9, not 0", "questions"),
        ({"image": _img(0, [7])}, r"images\[0\]\.questions_ids\[0\]: image 0 lists unknown question id 7", "images"),
        ({"image": {**_img(0, [0]), "id": "0"}}, r"images\[0\]\.id: expected int, got str", "images"),
        (
            {"question": {**_q(0, 0, "presence", "q", [0]), "type": None}},
            r"questions\[0\]\.type: expected str",
            "questions",
        ),
        ({"answer": {**_a(0, 0, "x"), "answer": 3}}, r"answers\[0\]\.answer: expected str, got int", "answers"),
        ({"image": {**_img(0, [0]), "active": "yes"}}, r"images\[0\]\.active: expected bool", "images"),
    ],
)
def test_bad_entries(tmp_path: Path, kwargs: dict, message: str, file: str) -> None:
    _one(tmp_path, **kwargs)
    with pytest.raises(DatasetError, match=message) as info:
        get_format("rsvqa").open(tmp_path).load()
    assert f"LR_split_train_{file}.json" in str(info.value)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no <prefix>_split_<split>_questions\.json"):
        get_format("rsvqa").open(tmp_path)
    _one(tmp_path)
    (tmp_path / "LR_split_train_answers.json").unlink()
    with pytest.raises(DatasetError, match=r"LR_split_train_answers\.json is missing"):
        get_format("rsvqa").open(tmp_path)
    _one(tmp_path)
    _split(tmp_path, "train", [], [], [], prefix="USGS")
    with pytest.raises(DatasetError, match="several RSVQA variants"):
        get_format("rsvqa").open(tmp_path)
    assert RSVQAFormat(prefix="LR").open(tmp_path).load()[0].image == "Images_LR/0.tif"
    (tmp_path / "LR_split_train_images.json").write_text('{"images": [\n{"id": 0,\n"active": tru}]}')
    with pytest.raises(DatasetError, match=r"LR_split_train_images\.json:3: invalid JSON"):
        RSVQAFormat(prefix="LR").open(tmp_path).load()
    (tmp_path / "LR_split_train_images.json").write_text("")
    with pytest.raises(DatasetError, match="empty file"):
        RSVQAFormat(prefix="LR").open(tmp_path).load()
    (tmp_path / "LR_split_train_images.json").write_text('{"pictures": []}')
    with pytest.raises(DatasetError, match="missing key 'images'"):
        RSVQAFormat(prefix="LR").open(tmp_path).load()


def test_image_dir_escaping_the_root_is_refused(tmp_path: Path) -> None:
    _one(tmp_path)
    with pytest.raises(UnsafeDataError):
        RSVQAFormat(image_dir="../../../../../../tmp/elsewhere").open(tmp_path).load()


def test_strict_false_skips_and_counts(tmp_path: Path) -> None:
    questions = [_q(0, 0, "presence", "a?", [0]), _q(1, 0, "presence", "b?", [7])]
    _split(tmp_path, "train", [_img(0, [0, 1])], questions, [_a(0, 0, "yes")])
    ds = get_format("rsvqa").open(tmp_path, strict=False)
    (sample,) = ds.load()
    assert [q.id for q in sample.qas] == [0] and ds.report.skipped == 1


def test_writer_input_errors(tmp_path: Path) -> None:
    fmt = get_format("rsvqa")
    with pytest.raises(InputError, match="integer id"):
        fmt.image_relpath("airport_1")
    with pytest.raises(InputError, match=r"must be Images_LR/<integer id>\.tif"):
        fmt.write(tmp_path, [Sample(image="Images_LR/a.png", split="train")])
    with pytest.raises(InputError, match=r"Sample\.split must be set"):
        fmt.write(tmp_path, [Sample(image="Images_LR/1.tif")])
    with pytest.raises(InputError, match=r"QA\.type"):
        fmt.write(tmp_path, [Sample(image="Images_LR/1.tif", split="train", qas=[QA("q", "a")])])
    with pytest.raises(InputError, match="unique non-negative integers"):
        fmt.write(tmp_path, [Sample(image="Images_LR/1.tif", split="train", qas=[QA("q", "a", type="t", id="x")])])
    with pytest.raises(InputError, match="differs from its file"):
        fmt.write(tmp_path, [Sample(image="Images_LR/1.tif", image_id=2, split="train")])
    with pytest.raises(InputError, match="positional list"):
        fmt.write(tmp_path, [Sample(image="Images_LR/1.tif", split="train", qas=[QA("q", "a", type="t", id=10**9)])])

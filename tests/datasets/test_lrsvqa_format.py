"""LRS-VQA question file (JSON Lines): real line shapes, round trips, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsvl.datasets import QA, Sample, get_format
from rsvl.datasets.lrsvqa import QUESTION_FILE
from rsvl.errors import DatasetError, InputError, UnsafeDataError

# Keys as the authors' llava_eval_LRSVQA.py / model_rsvqa.py read them.
LINES = [
    {
        "question_id": 0,
        "image": "LRS_VQA/image/FAIR_0001.tif",
        "text": "What is the color of the largest ship?",
        "ground_truth": "white",
        "category": "color",
        "hbox": [10, 20, 30, 40],
    },
    {
        "question_id": 1,
        "image": "LRS_VQA/image/FAIR_0001.tif",
        "text": "How many planes are there?",
        "ground_truth": "3",
        "category": "count",
    },
    {
        "question_id": 2,
        "image": "LRS_VQA/image/STAR_0007.png",
        "text": "Is this area rural or urban?",
        "ground_truth": "urban",
        "category": "rural/urban",
        "rbox": [[1, 2], [3, 4]],
    },
]


def _write(root: Path, lines: list[object] | str) -> Path:
    path = root / QUESTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = lines if isinstance(lines, str) else "".join(json.dumps(x) + "\n" for x in lines)
    path.write_text(text)
    return path


def test_reads_lines_grouped_by_image(tmp_path: Path) -> None:
    _write(tmp_path, LINES)
    a, b = get_format("lrsvqa").open(tmp_path).load()
    assert a.image == "LRS_VQA/image/FAIR_0001.tif" and b.image == "LRS_VQA/image/STAR_0007.png"
    assert a.qas == [
        QA("What is the color of the largest ship?", "white", type="color", id=0, attrs={"hbox": [10, 20, 30, 40]}),
        QA("How many planes are there?", "3", type="count", id=1),
    ]
    assert b.qas[0].type == "rural/urban" and b.qas[0].attrs == {"rbox": [[1, 2], [3, 4]]}


def test_write_reproduces_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "src", LINES)
    fmt = get_format("lrsvqa")
    fmt.write(tmp_path / "dst", fmt.open(tmp_path / "src").load())
    lines = (tmp_path / "dst" / QUESTION_FILE).read_text().splitlines()
    assert [json.loads(x) for x in lines] == LINES


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    samples = [
        Sample(
            image="LRS_VQA/image/a.png",
            qas=[
                QA("q1", "yes", type="status", id="GLH_1", attrs={"hbox": [1.5, 2, 3, 4], "extra": None}),
                QA("q2 – ünïcode", "2", id=7),
            ],
        ),
        Sample(image="LRS_VQA/image/sub/b.tif", qas=[QA("q3", "no", type="reasoning", id=8)]),
    ]
    fmt = get_format("lrsvqa")
    fmt.write(tmp_path, samples)
    assert fmt.open(tmp_path).load() == samples


def test_missing_ids_are_assigned_and_blank_lines_skipped(tmp_path: Path) -> None:
    fmt = get_format("lrsvqa")
    fmt.write(tmp_path, [Sample(image="LRS_VQA/image/a.png", qas=[QA("a", "b", id=4), QA("c", "d")])])
    path = tmp_path / QUESTION_FILE
    path.write_text("\n" + path.read_text() + "\n\n")
    (back,) = fmt.open(tmp_path).load()
    assert [q.id for q in back.qas] == [4, 5]


def test_question_file_in_the_root_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "LRS_VQA_merged.jsonl").write_text(json.dumps(LINES[1]) + "\n")
    assert len(get_format("lrsvqa").open(tmp_path).load()) == 1


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"image": "a.png", "text": "q"}, r":2: question 'q' has no answer"),
        ({"image": "a.png", "text": "q", "ground_truth": None}, r":2: question 'q' has no answer"),
        ({"image": "a.png", "text": "q", "ground_truth": ""}, r":2: empty answer"),
        ({"image": "a.png", "text": "q", "ground_truth": 3}, r":2: ground_truth: expected str, got int"),
        ({"image": "a.png", "text": ["q"], "ground_truth": "a"}, r":2: text: expected str, got list"),
        ({"text": "q", "ground_truth": "a"}, r":2: missing key 'image'"),
        ({"image": "a.png", "text": "q", "ground_truth": "a", "question_id": 0}, r":2: question_id 0 appears twice"),
        ([1, 2], r":2: expected a JSON object, got list"),
    ],
)
def test_bad_lines_name_the_line(tmp_path: Path, line: object, message: str) -> None:
    _write(tmp_path, [LINES[0], line])
    with pytest.raises(DatasetError, match=message) as info:
        get_format("lrsvqa").open(tmp_path).load()
    assert "LRS_VQA_merged.jsonl:2" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"image": "a.png", "text": "q", "ground_truth": "a"}\n{"image": "a.png",\n', r":2: invalid JSON"),
        ('{"image": "a.png", "text": "q", "ground_truth": NaN}\n', r":1: invalid JSON: NaN is not valid JSON"),
        ('{"image": "a.png", "text": "q", "ground_truth": "a"}\n' + "[" * 100_000 + "\n", r":2: invalid JSON"),
    ],
)
def test_broken_json_lines(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(DatasetError, match=message):
        get_format("lrsvqa").open(tmp_path).load()


def test_non_utf8_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"LRS_VQA_merged\.jsonl is missing"):
        get_format("lrsvqa").open(tmp_path)
    path = _write(tmp_path, LINES)
    path.write_bytes(path.read_bytes() + b'{"text": "\xff"}\n')
    with pytest.raises(DatasetError, match=r":4: not UTF-8"):
        get_format("lrsvqa").open(tmp_path).load()


@pytest.mark.parametrize("image", ["/etc/passwd", "../../../../etc/passwd", "LRS_VQA/../../x.png"])
def test_image_paths_escaping_the_root_are_refused(tmp_path: Path, image: str) -> None:
    _write(tmp_path, [{"image": image, "text": "q", "ground_truth": "a"}])
    with pytest.raises(UnsafeDataError, match=":1: path"):
        get_format("lrsvqa").open(tmp_path).load()


def test_strict_false_skips_and_counts(tmp_path: Path) -> None:
    _write(tmp_path, [LINES[0], {"image": "a.png", "text": "q"}, LINES[2]])
    ds = get_format("lrsvqa").open(tmp_path, strict=False)
    assert sum(len(s.qas) for s in ds.load()) == 2
    assert ds.report.skipped == 1 and ds.report.problems[0].line == 2


def test_writer_input_errors(tmp_path: Path) -> None:
    fmt = get_format("lrsvqa")
    with pytest.raises(InputError, match="unique"):
        fmt.write(tmp_path, [Sample(image="a.png", qas=[QA("a", "b", id=1), QA("c", "d", id=1)])])
    with pytest.raises(InputError, match="not plain JSON"):
        fmt.write(tmp_path, [Sample(image="a.png", qas=[QA("a", "b", attrs={"x": float("nan")})])])
    assert not (tmp_path / QUESTION_FILE).exists()

"""DOTA labelTxt reader/writer and Task1/Task2 submission files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsvl.datasets import Instance, Sample, get_format
from rsvl.datasets.dota import (
    DOTA_V2_0_CLASSES,
    read_dota_task1,
    read_dota_task2,
    write_dota_task1,
    write_dota_task2,
)
from rsvl.errors import DatasetError, InputError

REAL_STYLE = (
    "imagesource:GoogleEarth\n"
    "gsd:0.146343590398\n"
    "2753.0 2408.0 2861.0 2385.0 2888.0 2468.0 2805.0 2502.0 plane 0\n"
    "3445.0 3391.0 3484.0 3409.0 3478.0 3422.0 3437.0 3402.0 large-vehicle 1\n"
    "10.5 20.25 30.0 20.25 30.0 40.0 10.5 40.0 container-crane 0\n"
)


def _dota(root: Path, files: dict[str, str | bytes], images: tuple[str, ...] = ()) -> Path:
    (root / "labelTxt").mkdir(parents=True)
    (root / "images").mkdir()
    for name, text in files.items():
        target = root / "labelTxt" / name
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    for name in images:
        (root / "images" / name).write_bytes(b"")
    return root


def test_reads_headers_polygons_difficult_and_finds_images(tmp_path):
    root = _dota(tmp_path, {"P0001.txt": REAL_STYLE, "P0002.txt": "1 2 3 2 3 4 1 4 ship 0\n"}, images=("P0001.jpg",))
    ds = get_format("dota").open(root)
    first, second = ds.load()
    assert first.image == "images/P0001.jpg" and first.image_id == "P0001"
    assert second.image == "images/P0002.png"  # no image: still a sample, with DOTA's default suffix
    assert not second.image_path.exists() and first.image_path.exists()
    assert first.meta == {"imagesource": "GoogleEarth", "gsd": 0.146343590398}
    plane, vehicle, crane = first.instances
    assert plane.polygon == (2753.0, 2408.0, 2861.0, 2385.0, 2888.0, 2468.0, 2805.0, 2502.0)
    assert plane.bbox == (2753.0, 2385.0, 2888.0, 2502.0)
    assert (plane.category, plane.difficult) == ("plane", False)
    assert (vehicle.category, vehicle.difficult) == ("large-vehicle", True)
    assert crane.bbox == (10.5, 20.25, 30.0, 40.0)
    assert ds.report.objects == 4 and ds.report.categories["plane"] == 1


def test_rewriting_a_real_style_file_reproduces_it(tmp_path):
    src = _dota(
        tmp_path / "src", {"P0001.txt": REAL_STYLE, "P0009.txt": "gsd:null\n1.0 2.0 3.0 2.0 3.0 4.0 1.0 4.0 ship\n"}
    )
    dataset = get_format("dota").open(src)
    get_format("dota").write(tmp_path / "out", dataset)
    for name in ("P0001.txt", "P0009.txt"):
        assert (tmp_path / "out" / "labelTxt" / name).read_text() == (src / "labelTxt" / name).read_text()


def test_missing_difficult_column_defaults_to_zero_and_is_remembered(tmp_path):
    root = _dota(tmp_path, {"a.txt": "1 2 3 2 3 4 1 4 ship\n5 6 7 6 7 8 5 8 plane\n"})
    (sample,) = get_format("dota").open(root).load()
    assert sample.meta == {"no_difficult": True}
    assert [i.difficult for i in sample.instances] == [False, False]


def test_round_trip_of_hand_made_samples(tmp_path):
    samples = [
        Sample(
            image="images/A.png",
            image_id="A",
            instances=[
                Instance("plane", bbox=(0.5, 1.0, 9.25, 7.0), polygon=(0.5, 1.0, 9.25, 1.0, 9.25, 7.0, 0.5, 7.0)),
                Instance(
                    "ship",
                    bbox=(-2.0, 0.0, 4.0, 6.0),
                    polygon=(-2.0, 3.0, 1.0, 0.0, 4.0, 3.0, 1.0, 6.0),
                    difficult=True,
                ),
                Instance(
                    "harbor",
                    bbox=(1.0, 1.0, 2.0, 2.0),
                    polygon=(1.0, 1.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0),
                    difficult=True,
                    attrs={"difficult_value": 2},
                ),
            ],
            meta={"imagesource": "GF-2", "gsd": None},
        ),
        Sample(image="images/B.png", image_id="B", meta={"gsd": 0.5}),
        Sample(
            image="images/C.png",
            image_id="C",
            instances=[
                Instance("helipad", bbox=(0.0, 0.0, 1e-3, 2.0), polygon=(0.0, 0.0, 1e-3, 0, 1e-3, 2.0, 0.0, 2.0))
            ],
            meta={"no_difficult": True},
        ),
    ]
    fmt = get_format("dota")
    root = tmp_path / "ds"
    for s in samples:
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / s.image).write_bytes(b"")
    fmt.write(root, samples)
    assert fmt.open(root).load() == samples
    assert (root / "labelTxt" / "C.txt").read_text() == "0.0 0.0 0.001 0.0 0.001 2.0 0.0 2.0 helipad\n"


def test_what_dota_cannot_hold(tmp_path, caplog):
    sample = Sample(
        image="images/x.png",
        instances=[Instance("car", bbox=(1, 2, 5, 8), score=0.5), Instance("crowd", bbox=(0, 0, 1, 1), ignore=True)],
    )
    get_format("dota").write(tmp_path, [sample])
    assert "1 prediction scores not written" in caplog.text
    car, crowd = get_format("dota").open(tmp_path).load()[0].instances
    assert car.score is None and crowd.difficult and not crowd.ignore  # DOTA's evaluation ignores difficult


def test_box_only_instances_are_written_as_their_corners(tmp_path):
    fmt = get_format("dota")
    fmt.write(tmp_path, [Sample(image="images/x.png", instances=[Instance("car", bbox=(1, 2, 5, 8))])])
    (inst,) = fmt.open(tmp_path).load()[0].instances
    assert inst.polygon == (1.0, 2.0, 5.0, 2.0, 5.0, 8.0, 1.0, 8.0) and inst.bbox == (1.0, 2.0, 5.0, 8.0)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("gsd:0.1\n1 2 3 4 5 6 7 plane 0\n", 2, "y4: expected a number, got 'plane'"),
        ("1 2 3 4 5 6 7 8 plane 0 extra\n", 1, "(9 or 10 fields), got 11"),
        ("1 2 3 4 5 6 7 8\n", 1, "got 8 fields"),
        ("1 2 3 4 x 6 7 8 plane 0\n", 1, "x3: expected a number, got 'x'"),
        ("\n\n1 2 3 4 5 nan 7 8 plane 0\n", 3, "y3: expected a finite number"),
        ("1 2 3 4 5 6 7 8 plane yes\n", 1, "difficult: expected a number"),
        ("1 2 3 4 5 6 7 8 plane -1\n", 1, "difficult: expected 0 or 1"),
        ("gsd:abc\n", 1, "gsd: expected a number"),
        ("gsd:0.1\ngsd:0.2\n", 2, "header 'gsd' given twice"),
        ("1 2 3 4 5 6 7 1e999 plane 0\n", 1, "y4: expected a finite number"),
    ],
)
def test_errors_name_path_and_line(tmp_path, text, line, expected):
    root = _dota(tmp_path, {"P7.txt": text})
    with pytest.raises(DatasetError) as info:
        get_format("dota").open(root).load()
    assert f"P7.txt:{line}: " in str(info.value) and expected in str(info.value)
    assert info.value.line == line


def test_non_utf8_bytes_give_the_line(tmp_path):
    root = _dota(tmp_path, {"P8.txt": b"1 2 3 2 3 4 1 4 ship 0\n1 2 3 2 \xff 4 1 4 ship 0\n"})
    with pytest.raises(DatasetError, match=r"P8.txt:2: not UTF-8"):
        get_format("dota").open(root).load()


def test_non_strict_counts_every_skipped_object(tmp_path):
    text = "1 2 3 2 3 4 1 4 ship 0\n1 2 3 2 3 4 1 ship 0\n5 6 7 6 7 8 5 8 plane 0\nbad\n"
    root = _dota(tmp_path, {"P1.txt": text, "P2.txt": b"\xff\xfe\n"})
    ds = get_format("dota").open(root, strict=False)
    samples = ds.load()
    assert [len(s.instances) for s in samples] == [2]  # P2 is unreadable: skipped and counted
    assert [(p.line, Path(p.path).name) for p in ds.report.problems] == [(2, "P1.txt"), (4, "P1.txt"), (1, "P2.txt")]
    assert ds.report.skipped == 3


def test_layout_and_writer_errors(tmp_path):
    with pytest.raises(DatasetError, match="no labelTxt/ folder"):
        get_format("dota").open(tmp_path)
    fmt = get_format("dota")
    with pytest.raises(InputError, match="cannot be written"):
        fmt.write(tmp_path / "a", [Sample(image="images/a.png", instances=[Instance("small car", bbox=(0, 0, 1, 1))])])
    with pytest.raises(InputError, match="share the image stem"):
        fmt.write(tmp_path / "b", [Sample(image="images/a.png"), Sample(image="images/a.jpg")])
    with pytest.raises(InputError, match="not directly inside images/"):
        fmt.write(tmp_path / "c", [Sample(image="pics/a.png")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_task1_and_task2_round_trip(tmp_path):
    predictions = {
        "P0001": [
            Instance("plane", polygon=(1.0, 2.0, 5.0, 2.0, 5.0, 6.0, 1.0, 6.0), bbox=(1.0, 2.0, 5.0, 6.0), score=0.9),
            Instance("ship", polygon=(0.5, 0.0, 2.0, 1.0, 1.5, 2.5, 0.0, 1.5), bbox=(0.0, 0.0, 2.0, 2.5), score=0.125),
        ],
        "P0002": [
            Instance("plane", polygon=(3.0, 3.0, 4.0, 3.0, 4.0, 4.0, 3.0, 4.0), bbox=(3.0, 3.0, 4.0, 4.0), score=1)
        ],
    }
    paths = write_dota_task1(tmp_path / "t1", predictions, categories=DOTA_V2_0_CLASSES)
    assert len(paths) == len(DOTA_V2_0_CLASSES)  # one file per class, empty ones included
    assert (tmp_path / "t1" / "Task1_plane.txt").read_text().splitlines()[0] == (
        "P0001 0.9 1.0 2.0 5.0 2.0 5.0 6.0 1.0 6.0"
    )
    back = read_dota_task1(tmp_path / "t1")
    assert {k: sorted(v, key=lambda i: i.category) for k, v in back.items()} == predictions

    boxes = {"img": [Instance("car", bbox=(1.0, 2.0, 3.5, 4.0), score=0.5)]}
    write_dota_task2(tmp_path / "t2", boxes)
    assert read_dota_task2(tmp_path / "t2") == boxes


def test_task1_errors(tmp_path):
    (tmp_path / "Task1_plane.txt").write_text("P1 0.9 1 2 3 4 5 6 7 8\nP1 0.8 1 2 3 4 5 6 7\n")
    with pytest.raises(DatasetError, match=r"Task1_plane.txt:2: expected '<image_id> <score> 8 coordinates'"):
        read_dota_task1(tmp_path)
    (tmp_path / "Task1_plane.txt").write_text("P1 nan 1 2 3 4 5 6 7 8\n")
    with pytest.raises(DatasetError, match=r"Task1_plane.txt:1: score: expected a finite number"):
        read_dota_task1(tmp_path)
    with pytest.raises(InputError, match="expected a finite score"):
        write_dota_task1(tmp_path / "out", {"P1": [Instance("plane", bbox=(0, 0, 1, 1))]})


BAD_FILE_CATEGORIES = ["../../escaped", "a/b", "a\\b", "..", "x..y", "", "nul\0byte", "c" * 300]


@pytest.mark.parametrize("category", BAD_FILE_CATEGORIES)
@pytest.mark.parametrize("task", [1, 2])
def test_submission_categories_that_are_not_plain_file_names_are_refused(tmp_path, category, task):
    writer = write_dota_task1 if task == 1 else write_dota_task2
    out = tmp_path / "deep" / "out"
    good = Instance("plane", polygon=(1.0, 2.0, 5.0, 2.0, 5.0, 6.0, 1.0, 6.0), bbox=(1.0, 2.0, 5.0, 6.0), score=0.9)
    # as an empty class file requested through `categories` (no whitespace check applies there)
    with pytest.raises(InputError) as info:
        writer(out, {"P0001": [good]}, categories=["plane", category])
    assert repr(category) in str(info.value)
    assert f"Task{task}_<category>.txt" in str(info.value)
    # nothing was written: not the valid class before it, not anything outside the folder
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == []
    if category and not any(ch.isspace() for ch in category):
        # as the category of a prediction, after a valid one
        bad = Instance(category, polygon=good.polygon, bbox=good.bbox, score=0.5)
        with pytest.raises(InputError, match="DOTA submissions store each category"):
            writer(out, {"P0001": [good], "P0002": [bad]})
        assert sorted(tmp_path.rglob("*")) == []


def test_unusual_but_plain_category_names_round_trip(tmp_path):
    # dots and punctuation are fine as long as the file name stays plain and reads back as the same class
    boxes = {"img": [Instance(name, bbox=(1.0, 2.0, 3.5, 4.0), score=0.5) for name in (".", "a.b", "x.txt", "c-1_2")]}
    paths = write_dota_task2(tmp_path, boxes)
    assert all(p.parent == tmp_path for p in paths)
    back = read_dota_task2(tmp_path)
    assert sorted(back["img"], key=lambda i: i.category) == sorted(boxes["img"], key=lambda i: i.category)

"""VisDrone2019-DET annotation and result files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsvl.datasets import Category, Instance, Sample, get_format
from rsvl.datasets.visdrone import VISDRONE_CATEGORIES, read_visdrone_results, write_visdrone_results
from rsvl.errors import DatasetError, InputError

# Lines in the official layout: an ignored region (score 0, category 0), a considered car, a truncated
# and occluded pedestrian (on the line with the trailing comma some official files have), an "others"
# object and a van the evaluation ignores (score 0).
OFFICIAL = "684,8,273,116,0,0,0,0\n406,119,265,70,1,4,0,1\n255,22,119,128,1,1,1,2,\n1,2,3,4,1,11,0,0\n5,6,7,8,0,5,0,0\n"


def _visdrone(root: Path, files: dict[str, str | bytes], images: tuple[str, ...] = ()) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for name, text in files.items():
        (root / "annotations" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for name in images:
        (root / "images" / name).write_bytes(b"")
    return root


def test_reads_official_lines(tmp_path):
    root = _visdrone(tmp_path, {"0000002_00005_d_0000014.txt": OFFICIAL}, images=("0000002_00005_d_0000014.jpg",))
    ds = get_format("visdrone").open(root)
    (sample,) = ds.load()
    assert sample.image == "images/0000002_00005_d_0000014.jpg" and sample.image_path.exists()
    ignored, car, pedestrian, other, van = sample.instances
    assert ignored == Instance(
        "ignored regions",
        bbox=(684.0, 8.0, 957.0, 124.0),
        ignore=True,
        attrs={"visdrone_score": 0, "truncation": 0, "occlusion": 0},
    )
    assert (car.category, car.bbox, car.ignore) == ("car", (406.0, 119.0, 671.0, 189.0), False)
    assert pedestrian.attrs == {"visdrone_score": 1, "truncation": 1, "occlusion": 2}
    assert (other.category, other.ignore) == ("others", False)
    # score 0 on an object: the toolkit's ignore ground truth
    assert van == Instance("van", bbox=(5.0, 6.0, 12.0, 14.0), ignore=True, attrs=ignored.attrs)
    assert [c.name for c in ds.categories][:2] == ["ignored regions", "pedestrian"] and ds.categories[
        10
    ].name == "motor"


def test_rewrite_reproduces_the_file_except_trailing_commas(tmp_path):
    src = _visdrone(tmp_path / "src", {"a.txt": OFFICIAL})
    get_format("visdrone").write(tmp_path / "out", get_format("visdrone").open(src))
    assert (tmp_path / "out" / "annotations" / "a.txt").read_text() == OFFICIAL.replace("2,\n", "2\n")


def test_round_trip_keeps_exact_fractional_numbers(tmp_path):
    # 0.1 + 0.2 - 0.1 != 0.2 in floating point: the file's numbers are kept so nothing changes.
    root = _visdrone(tmp_path / "src", {"f.txt": "0.1,0.7,0.2,0.1,0.87,4,-1,-1\n"})
    (sample,) = get_format("visdrone").open(root).load()
    (inst,) = sample.instances
    assert inst.bbox == (0.1, 0.7, 0.1 + 0.2, 0.7 + 0.1)
    assert inst.attrs["bbox_xywh"] == [0.1, 0.7, 0.2, 0.1]
    get_format("visdrone").write(tmp_path / "out", [sample])
    assert (tmp_path / "out" / "annotations" / "f.txt").read_text() == "0.1,0.7,0.2,0.1,0.87,4,-1,-1\n"


def test_round_trip_of_hand_made_samples(tmp_path):
    samples = [
        Sample(
            image="images/s1.jpg",
            image_id="s1",
            instances=[
                Instance(
                    "ignored regions",
                    bbox=(0.0, 0.0, 10.0, 5.0),
                    ignore=True,
                    attrs={"visdrone_score": 0, "truncation": 0, "occlusion": 0},
                ),
                Instance(
                    "awning-tricycle",
                    bbox=(2.5, 3.0, 8.0, 9.5),
                    attrs={"visdrone_score": 1, "truncation": 1, "occlusion": 2},
                ),
                Instance(
                    "bus",
                    bbox=(1.0, 1.0, 4.0, 4.0),
                    ignore=True,
                    attrs={"visdrone_score": 0, "truncation": 0, "occlusion": 0},
                ),
            ],
        ),
        Sample(image="images/s2.jpg", image_id="s2"),
    ]
    fmt = get_format("visdrone")
    fmt.write(tmp_path, samples)
    assert fmt.open(tmp_path).load() == samples


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1,2,0,4,1,4,0,0", "bbox_width and bbox_height must be > 0, got 0 x 4"),
        ("1,2,3,-4,1,4,0,0", "must be > 0, got 3 x -4"),
        ("1,2,3,4,1,12,0,0", "object_category: expected one of"),
        ("1,2,3,4,1,4,0", "expected 8 comma-separated fields"),
        ("1,2,3,4,1,4,0,0,,", "expected 8 comma-separated fields"),
        ("1,2,nan,4,1,4,0,0", "bbox_width: expected a finite number"),
        ("1,2,3,4,1,car,0,0", "object_category: expected a number"),
        ("1e308,2,1e308,4,1,4,0,0", "overflows"),
    ],
)
def test_errors_name_path_and_line(tmp_path, line, expected):
    root = _visdrone(tmp_path, {"v.txt": f"1,1,1,1,1,1,0,0\n\n{line}\n"})
    with pytest.raises(DatasetError) as info:
        get_format("visdrone").open(root).load()
    assert "v.txt:3: " in str(info.value) and expected in str(info.value)


def test_non_strict_counts_skipped_boxes(tmp_path):
    root = _visdrone(tmp_path, {"v.txt": "1,1,1,1,1,1,0,0\n1,2,0,4,1,4,0,0\n5,5,5,5,1,4,0,0\n", "w.txt": b"1,1\xff\n"})
    ds = get_format("visdrone").open(root, strict=False)
    assert [len(s.instances) for s in ds.load()] == [2]
    assert [(Path(p.path).name, p.line) for p in ds.report.problems] == [("v.txt", 2), ("w.txt", 1)]


def test_names_map_to_the_official_ids_whatever_categories_say(tmp_path):
    sample = Sample(image="images/a.jpg", instances=[Instance("car", bbox=(0, 0, 2, 2), attrs={"visdrone_score": 1})])
    get_format("visdrone").write(tmp_path, [sample], categories=[Category(1, "car")])  # e.g. a COCO file's ids
    assert (tmp_path / "annotations" / "a.txt").read_text() == "0,0,2,2,1,4,0,0\n"
    assert get_format("visdrone").open(tmp_path).load()[0].instances[0].category == "car"


def test_writer_refuses_what_visdrone_cannot_hold(tmp_path):
    fmt = get_format("visdrone")
    with pytest.raises(InputError, match="not a VisDrone category"):
        fmt.write(tmp_path, [Sample(image="images/a.jpg", instances=[Instance("plane", bbox=(0, 0, 1, 1))])])
    contradictions = [
        Instance("car", bbox=(0, 0, 1, 1), ignore=True, attrs={"visdrone_score": 1}),
        Instance("car", bbox=(0, 0, 1, 1), attrs={"visdrone_score": 0}),
    ]
    for inst in contradictions:  # written as is, the flag would read back with the other `ignore`
        with pytest.raises(InputError, match=r"instance 0: .*visdrone_score"):
            fmt.write(tmp_path, [Sample(image="images/a.jpg", instances=[inst])])
    with pytest.raises(InputError, match="cannot mark a detection ignored"):
        write_visdrone_results(tmp_path, {"a": [Instance("car", bbox=(0, 0, 1, 1), score=0.5, ignore=True)]})
    with pytest.raises(InputError, match="width and height > 0"):
        fmt.write(tmp_path, [Sample(image="images/a.jpg", instances=[Instance("car", bbox=(0, 0, 0, 1))])])
    assert not (tmp_path / "annotations").exists()


def test_results_round_trip(tmp_path):
    predictions = {
        "img1": [
            Instance("car", bbox=(1.0, 2.0, 11.0, 22.0), score=0.875),
            Instance("bus", bbox=(0.0, 0.0, 3.0, 4.0), score=0.5),
        ],
        "img2": [],
    }
    write_visdrone_results(tmp_path, predictions)
    assert (tmp_path / "img1.txt").read_text().splitlines()[0] == "1,2,10,20,0.875,4,-1,-1"
    assert read_visdrone_results(tmp_path) == predictions
    assert len(VISDRONE_CATEGORIES) == 12


def test_ignored_objects_are_written_with_score_zero(tmp_path):
    # e.g. COCO crowds converted to VisDrone: the score column is the toolkit's ignore flag
    samples = [
        Sample(
            image="images/a.jpg",
            image_id="a",
            instances=[
                Instance("car", bbox=(0, 0, 2, 2), ignore=True),
                Instance("car", bbox=(1, 1, 3, 3)),
                Instance("ignored regions", bbox=(4, 4, 9, 9), ignore=True),
            ],
        )
    ]
    fmt = get_format("visdrone")
    fmt.write(tmp_path, samples)
    assert (tmp_path / "annotations" / "a.txt").read_text() == "0,0,2,2,0,4,0,0\n1,1,2,2,1,4,0,0\n4,4,5,5,0,0,0,0\n"
    assert [i.ignore for i in fmt.open(tmp_path).load()[0].instances] == [True, False, True]


def test_region_flags_and_fractional_zero_scores(tmp_path):
    # category 0 is ignored whatever its score column says; "0.0" is a score of 0 too
    text = "1,1,5,5,1,0,0,0\n2,2,5,5,0.0,4,0,0\n3,3,5,5,0.5,4,0,0\n"
    root = _visdrone(tmp_path / "src", {"r.txt": text})
    (sample,) = get_format("visdrone").open(root).load()
    assert [(i.ignore, i.attrs["visdrone_score"]) for i in sample.instances] == [(True, 1), (True, 0.0), (False, 0.5)]
    get_format("visdrone").write(tmp_path / "out", [sample])
    assert (
        tmp_path / "out" / "annotations" / "r.txt"
    ).read_text() == "1,1,5,5,1,0,0,0\n2,2,5,5,0,4,0,0\n3,3,5,5,0.5,4,0,0\n"


def test_zero_confidence_detections_are_not_ignored(tmp_path):
    (tmp_path / "a.txt").write_text("1,1,5,5,0,4,-1,-1\n")
    (inst,) = read_visdrone_results(tmp_path)["a"]
    assert (inst.score, inst.ignore, inst.attrs) == (0.0, False, {})

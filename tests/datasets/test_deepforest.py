"""deepforest CSV reader/writer, on the bundled real sample and hand-made files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from rsvl.data import sample_path
from rsvl.datasets import Category, Instance, Sample, get_format
from rsvl.errors import DatasetError, UnsafeDataError

HEADER = "image_path,xmin,ymin,xmax,ymax,label\n"


def _csv(root: Path, text: str | bytes, name: str = "annotations.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def test_real_sample_csv_loads_every_row(tmp_path):
    csv_path = sample_path("deepforest/OSBS_029.csv")
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    ds = get_format("deepforest").open(csv_path)
    (sample,) = ds.load()
    assert len(rows) == 61 and len(sample.instances) == len(rows)
    assert sample.image == "OSBS_029.tif" and sample.image_path.is_file() and sample.image_id == "OSBS_029"
    assert [(i.category, *i.bbox) for i in sample.instances] == [
        (r["label"], *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))) for r in rows
    ]
    assert sample.instances[0] == Instance("Tree", bbox=(203.0, 67.0, 227.0, 90.0))
    assert ds.meta == {"columns": ["image_path", "xmin", "ymin", "xmax", "ymax", "label"]}
    assert ds.report.objects == 61


def test_real_sample_rewrites_byte_for_byte(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_path("deepforest/OSBS_029.csv"), src / "annotations.csv")
    ds = get_format("deepforest").open(src)
    get_format("deepforest").write(tmp_path / "out", ds, meta=ds.meta)
    assert (tmp_path / "out" / "annotations.csv").read_bytes() == sample_path("deepforest/OSBS_029.csv").read_bytes()


def test_negative_samples_scores_extra_columns_and_scattered_rows(tmp_path):
    text = (
        "xmin,ymin,xmax,ymax,label,score,image_path,site\n"
        "1,2,10,20,Tree,0.9,a.png,OSBS\n"
        "0,0,0,0,Tree,,empty.png,SOAP\n"
        "5.5,6,7,8.25,Snag,0.25,b.png,\n"
        "3,3,4,4,Tree,0.5,a.png,OSBS\n"
        ",,,,Tree,,blank.png,\n"
    )
    ds = get_format("deepforest").open(_csv(tmp_path, text))
    a, empty, b, blank = ds.load()
    assert [i.bbox for i in a.instances] == [(1.0, 2.0, 10.0, 20.0), (3.0, 3.0, 4.0, 4.0)]
    assert [i.score for i in a.instances] == [0.9, 0.5] and a.instances[0].attrs == {"site": "OSBS"}
    assert empty.instances == [] and empty.meta == {"empty_row": {"label": "Tree", "site": "SOAP"}}
    assert b.instances == [Instance("Snag", bbox=(5.5, 6.0, 7.0, 8.25), score=0.25)]
    assert blank.instances == [] and blank.meta == {"empty_row": {"label": "Tree"}}
    assert ds.report.samples == 4 and ds.report.objects == 3


def test_round_trip_of_hand_made_samples(tmp_path):
    samples = [
        Sample(
            image="tiles/t1.png",
            image_id="t1",
            instances=[
                Instance("Tree", bbox=(0.5, 1.0, 3.0, 4.0)),
                Instance("Dead", bbox=(10.0, 10.0, 12.0, 13.0), difficult=True, attrs={"site": "NIWO"}),
                Instance("Tree", bbox=(1.0, 1.0, 2.0, 2.0), ignore=True),
            ],
        ),
        Sample(image="t2.tif", image_id="t2", meta={"empty_row": {"label": "Alive"}}),
        Sample(image="t3.tif", image_id="t3", instances=[Instance("Alive", bbox=(0.0, 0.0, 1.0, 1.0), score=0.125)]),
    ]
    fmt = get_format("deepforest")
    fmt.write(tmp_path, samples)
    assert fmt.open(tmp_path).load() == samples


def test_empty_sample_without_record_uses_first_category(tmp_path):
    fmt = get_format("deepforest")
    fmt.write(tmp_path, [Sample(image="x.png")], categories=[Category(0, "Dead"), Category(1, "Alive")])
    assert (tmp_path / "annotations.csv").read_text() == HEADER + "x.png,0,0,0,0,Dead\n"
    fmt.write(tmp_path, [Sample(image="x.png")])
    assert (tmp_path / "annotations.csv").read_text() == HEADER + "x.png,0,0,0,0,Tree\n"


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (HEADER + "a.png,1,2,3,4,Tree\na.png,1,2,x,4,Tree\n", 3, "xmax: expected a number, got 'x'"),
        (HEADER + "a.png,5,2,3,4,Tree\n", 2, "expected xmax > xmin and ymax > ymin"),
        (HEADER + "a.png,1,2,3,inf,Tree\n", 2, "ymax: expected a finite number"),
        (HEADER + "a.png,1,2,3,4\n", 2, "expected 6 cells"),
        (HEADER + "a.png,1,2,3,4,\n", 2, "label: expected a class name"),
        (HEADER + "\n\na.png,1,,3,4,Tree\n", 4, "ymin: expected a number, got ''"),
        ("image_path,xmin,ymin,xmax,label\n", 1, "header lacks ymax"),
        ("image_path,geometry,label\n", 1, "geometry-only CSV is not supported"),
        (HEADER + 'a.png,1,2,3,4,"Tr\nee\n', 2, "malformed CSV record: unexpected end of data"),
    ],
)
def test_errors_name_path_and_line(tmp_path, text, line, expected):
    root = _csv(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        get_format("deepforest").open(root).load()
    assert f"annotations.csv:{line}: " in str(info.value) and expected in str(info.value)


def test_non_utf8_bytes_give_their_line(tmp_path):
    root = _csv(tmp_path, HEADER.encode() + b"a.png,1,2,3,4,Tree\na.png,1,2,3,4,Tr\xe9e\n")
    with pytest.raises(DatasetError, match=r"annotations\.csv:3: not UTF-8"):
        get_format("deepforest").open(root).load()


def test_non_strict_counts_skipped_rows(tmp_path):
    root = _csv(tmp_path, HEADER + "a.png,1,2,3,4,Tree\na.png,9,2,3,4,Tree\nb.png,1,1,2,2\nb.png,1,1,2,2,Tree\n")
    ds = get_format("deepforest").open(root, strict=False)
    assert [len(s.instances) for s in ds.load()] == [1, 1]
    assert [p.line for p in ds.report.problems] == [3, 4] and ds.report.skipped == 2


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd"])
def test_image_paths_leaving_the_folder_are_refused(tmp_path, path):
    root = _csv(tmp_path, HEADER + f"{path},1,2,3,4,Tree\n")
    for strict in (True, False):
        with pytest.raises(UnsafeDataError):
            get_format("deepforest").open(root, strict=strict).load()


def test_missing_csv_names_the_candidates(tmp_path):
    shutil.copy(sample_path("deepforest/classes.csv"), tmp_path / "classes.csv")
    with pytest.raises(DatasetError, match=r"pass one of these CSVs: classes\.csv"):
        get_format("deepforest").open(tmp_path)
    _csv(tmp_path, HEADER + "a.png,1,2,3,4,Tree\n", name="train.csv")
    assert len(get_format("deepforest").open(tmp_path, csv_file="train.csv").load()) == 1

"""RRSIS-D / RefCOCO (REFER layout): reading the real file shapes, round trips, and bad input."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from rsvl.datasets import Category, Instance, Referring, Sample, get_format
from rsvl.datasets.rrsisd import RRSISDFormat
from rsvl.errors import DatasetError, InputError, UnsafeDataError
from rsvl.geometry import masks

IMG = "images/rrsisd/JPEGImages"


def _rle(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return masks.encode(m)


def _real_files(root: Path, refs: list | None = None, instances: dict | None = None) -> None:
    """Files shaped like the RRSIS-D release: [rle] segmentations, RefCOCO-style refs, protocol 2."""
    rle = _rle(8, 10, 2, 5, 3, 7)
    instances = instances or {
        "info": {"description": "rrsisd"},
        "images": [
            {"file_name": "00001.jpg", "height": 8, "width": 10, "id": 1},
            {"file_name": "00002.jpg", "height": 8, "width": 10, "id": 2},
        ],
        "annotations": [
            {
                "segmentation": [rle],
                "area": 12,
                "iscrowd": 0,
                "image_id": 1,
                "bbox": [3, 2, 4, 3],
                "category_id": 1,
                "id": 100,
            },
            {
                "segmentation": [[0, 0, 4, 0, 4, 4]],
                "area": 8.0,
                "iscrowd": 1,
                "image_id": 2,
                "bbox": [0, 0, 4, 4],
                "category_id": 2,
                "id": 101,
            },
        ],
        "categories": [{"supercategory": "vehicle", "id": 1, "name": "vehicle"}, {"id": 2, "name": "ship"}],
    }
    refs = (
        refs
        if refs is not None
        else [
            {
                "sent_ids": [0, 1],
                "file_name": "00001.jpg",
                "ann_id": 100,
                "ref_id": 0,
                "image_id": 1,
                "split": "train",
                "sentences": [
                    {"tokens": ["the", "vehicle"], "raw": "The vehicle.", "sent_id": 0, "sent": "the vehicle"},
                    {"tokens": ["a", "car"], "raw": "a car", "sent_id": 1, "sent": "a car"},
                ],
                "category_id": 1,
            },
            {
                "sent_ids": [2],
                "file_name": "00002.jpg",
                "ann_id": 101,
                "ref_id": 1,
                "image_id": 2,
                "split": "test",
                "sentences": [{"tokens": ["ship"], "raw": "ship", "sent_id": 2, "sent": "ship"}],
                "category_id": 2,
            },
        ]
    )
    (root / "rrsisd").mkdir(parents=True, exist_ok=True)
    (root / "rrsisd" / "instances.json").write_text(json.dumps(instances))
    (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))


def test_reads_the_release_layout(tmp_path: Path) -> None:
    _real_files(tmp_path)
    ds = get_format("rrsisd").open(tmp_path)
    samples = ds.load()
    assert [c.name for c in ds.categories] == ["vehicle", "ship"]
    assert ds.categories[0].attrs == {"supercategory": "vehicle"}
    assert ds.meta == {"info": {"description": "rrsisd"}}
    a, b = samples
    assert a.image == f"{IMG}/00001.jpg" and a.image_id == 1 and (a.width, a.height) == (10, 8)
    assert a.split == "train" and b.split == "test"
    inst = a.instances[0]
    assert inst.category == "vehicle" and inst.bbox == (3, 2, 7, 5) and inst.id == 100
    assert isinstance(inst.mask, dict) and masks.area(inst.mask, 8, 10) == 12  # RLE unwrapped from its list
    assert inst.attrs == {}  # area equals the mask's pixel count: nothing to keep
    assert b.instances[0].ignore and b.instances[0].mask == [[0, 0, 4, 0, 4, 4]]
    ref = a.refs[0]
    assert ref.sentences == ["the vehicle", "a car"] and ref.target == 0 and ref.id == 0
    assert ref.attrs == {"raw": ["The vehicle.", "a car"]}  # tokens and ids are the defaults
    assert a.image_path == tmp_path / IMG / "00001.jpg"


def test_write_reproduces_the_release_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _real_files(src)
    fmt = get_format("rrsisd")
    ds = fmt.open(src)
    fmt.write(dst, ds.load(), categories=ds.categories, meta=ds.meta)
    assert pickle.loads((dst / "rrsisd/refs(unc).p").read_bytes()) == pickle.loads(
        (src / "rrsisd/refs(unc).p").read_bytes()
    )
    old = json.loads((src / "rrsisd/instances.json").read_text())
    new = json.loads((dst / "rrsisd/instances.json").read_text())
    assert new == old


def _hand_made() -> tuple[list[Sample], list[Category]]:
    cats = [Category(3, "car", {"supercategory": "vehicle"}), Category(7, "ship")]
    s1 = Sample(
        image=f"{IMG}/a.jpg",
        image_id=1,
        width=10,
        height=8,
        split="train",
        instances=[
            Instance("car", bbox=(3.0, 2.0, 7.0, 5.0), mask=_rle(8, 10, 2, 5, 3, 7), id=10),
            Instance(
                "ship",
                bbox=(0.5, 1.0, 2.0, 3.25),
                mask=[[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]],
                id=11,
                ignore=True,
                difficult=True,
                attrs={"area": 3.5, "truncation": [1, 2]},
            ),
            Instance("car", bbox=(1.0, 1.0, 2.0, 2.0), id=12, score=0.75),
        ],
        refs=[
            Referring(["the car"], target=0, id=0),
            Referring(
                ["the ship", "a boat"],
                target=1,
                id=1,
                attrs={
                    "raw": ["The ship.", "a boat"],
                    "tokens": [["ship"], ["a", "boat"]],
                    "sent_ids": [10, 11],
                    "extra": {"note": "x"},
                    "category_id": 3,
                    "file_name": "a_11.jpg",
                },
            ),
        ],
        meta={"coco_image": {"license": 2, "date_captured": ""}},
    )
    s2 = Sample(
        image=f"{IMG}/sub/b.jpg",
        image_id=2,
        instances=[Instance("ship", bbox=(1.0, 1.0, 3.0, 2.0), id=13)],
        refs=[
            Referring(["x"], target=0, id=5, attrs={"split": "val"}),
            Referring(["y"], target=0, id=6, attrs={"split": "test"}),
        ],
    )
    s3 = Sample(image=f"{IMG}/c.jpg", image_id=3, width=4, height=4)  # no objects, no refs
    return [s1, s2, s3], cats


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    samples, cats = _hand_made()
    fmt = get_format("rrsisd")
    fmt.write(tmp_path, samples, categories=cats, meta={"info": {"year": 2024}})
    ds = fmt.open(tmp_path)
    assert ds.load() == samples
    assert ds.categories == cats and ds.meta == {"info": {"year": 2024}}
    assert ds.report.samples == 3 and ds.report.objects == 4 and not ds.report.problems


def test_writer_fills_ids_and_categories(tmp_path: Path) -> None:
    s = Sample(
        image=f"{IMG}/a.jpg",
        instances=[Instance("b", bbox=(0, 0, 1, 1)), Instance("a", bbox=(0, 0, 2, 2))],
        refs=[Referring(["first"], target=1)],
        split="train",
    )
    fmt = get_format("rrsisd")
    fmt.write(tmp_path, [s])
    ds = fmt.open(tmp_path)
    (back,) = ds.load()
    assert [c.name for c in ds.categories] == ["a", "b"] and [c.id for c in ds.categories] == [1, 2]
    assert back.image_id == 0 and [i.id for i in back.instances] == [0, 1] and back.refs[0].id == 0
    assert back.refs[0].sentences == ["first"] and back.refs[0].target == 1 and back.split == "train"


def test_written_pickle_is_protocol_2_with_builtins_only(tmp_path: Path) -> None:
    samples, cats = _hand_made()
    get_format("rrsisd").write(tmp_path, samples, categories=cats)
    data = (tmp_path / "rrsisd/refs(unc).p").read_bytes()
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert ops[0] == "PROTO" and data[1] == 2
    assert not {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "BUILD"} & set(ops)


def test_writer_refuses_objects_that_need_globals(tmp_path: Path) -> None:
    s = Sample(
        image=f"{IMG}/a.jpg",
        instances=[Instance("a", bbox=(0, 0, 1, 1))],
        refs=[Referring(["x"], target=0, attrs={"extra": {"v": np.int64(3)}})],
    )
    with pytest.raises(InputError, match="int64"):
        get_format("rrsisd").write(tmp_path, [s])
    assert not (tmp_path / "rrsisd/refs(unc).p").exists()


def test_flat_layout_and_refcoco_options(tmp_path: Path) -> None:
    _real_files(tmp_path)
    for name in ("instances.json", "refs(unc).p"):
        os.replace(tmp_path / "rrsisd" / name, tmp_path / name)
    assert len(get_format("rrsisd").open(tmp_path).load()) == 2
    fmt = RRSISDFormat(dataset="refcoco", split_by="google", image_dir="images/mscoco/images/train2014")
    samples, cats = _hand_made()
    samples = [s for s in samples if s.image.count("/") == 3]
    for s in samples:
        s.image = s.image.replace(IMG, fmt.image_dir)
    fmt.write(tmp_path / "rc", samples, categories=cats)
    assert (tmp_path / "rc/refcoco/refs(google).p").is_file()
    assert fmt.open(tmp_path / "rc").load() == samples


# ----------------------------------------------------------------------------- errors


def _refs(**change: object) -> list[dict]:
    ref = {
        "sent_ids": [0],
        "file_name": "00001.jpg",
        "ann_id": 100,
        "ref_id": 7,
        "image_id": 1,
        "split": "train",
        "sentences": [{"tokens": ["x"], "raw": "x", "sent_id": 0, "sent": "x"}],
        "category_id": 1,
    }
    ref.update(change)
    return [ref]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ann_id": 999}, r"ref_id 7.*ann_id: unknown annotation id 999"),
        ({"image_id": 5}, r"ref_id 7.*image_id: unknown image id 5"),
        ({"image_id": 2}, r"ref_id 7.*annotation 100 belongs to image 1, not 2"),
        ({"sentences": []}, r"at least one sentence"),
        ({"sentences": [{"raw": "x"}]}, r"sentences\[0\]: missing key 'sent'"),
        ({"ann_id": "100"}, r"ann_id: expected int, got str"),
    ],
)
def test_bad_refs_are_errors_naming_the_ref(tmp_path: Path, change: dict, message: str) -> None:
    _real_files(tmp_path, refs=_refs(**change))
    with pytest.raises(DatasetError, match=message) as info:
        get_format("rrsisd").open(tmp_path).load()
    assert "refs(unc).p" in str(info.value)


def test_strict_false_skips_and_counts_bad_refs(tmp_path: Path) -> None:
    refs = (
        _refs() + _refs(ref_id=8, ann_id=999) + _refs(ref_id=9, sent_ids=[1], sentences=[{"sent": "y", "sent_id": 1}])
    )
    _real_files(tmp_path, refs=refs)
    ds = get_format("rrsisd").open(tmp_path, strict=False)
    samples = ds.load()
    assert [r.id for r in samples[0].refs] == [7, 9]
    assert samples[0].refs[1].attrs == {}  # sent_id 1 is the running count despite the skipped ref
    assert ds.report.skipped == 1 and "unknown annotation id 999" in ds.report.problems[0].message


def _instances(**change: object) -> dict:
    data = {
        "images": [{"file_name": "00001.jpg", "height": 8, "width": 10, "id": 1}],
        "annotations": [
            {
                "segmentation": [],
                "area": 4,
                "iscrowd": 0,
                "image_id": 1,
                "bbox": [0, 0, 2, 2],
                "category_id": 1,
                "id": 100,
            }
        ],
        "categories": [{"id": 1, "name": "vehicle"}],
    }
    for key, value in change.items():
        section, _, field = key.partition("__")
        if field:
            data[section][0][field] = value
        else:
            data[section] = value
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"annotations__bbox": [0, 0, 2]}, r"annotations\[0\]\.bbox: expected \[x, y, w, h\]"),
        ({"annotations__bbox": [0, 0, "2", 2]}, r"annotations\[0\]\.bbox\[2\]: expected int or float, got str"),
        ({"annotations__bbox": [0, 0, -1, 2]}, r"width and height must be >= 0"),
        ({"annotations__category_id": 4}, r"annotations\[0\]\.category_id: unknown category id 4"),
        ({"annotations__image_id": 9}, r"unknown image 9"),
        ({"annotations__segmentation": [{"size": [8, 10], "counts": "\x7f\x7f"}]}, r"not a valid compressed RLE"),
        ({"annotations__segmentation": [{"size": [4, 4], "counts": [16]}]}, r"does not match the image size"),
        ({"annotations__segmentation": [[0, 0, 1]]}, r"even number"),
        ({"annotations__iscrowd": 2}, r"iscrowd: expected 0 or 1"),
        ({"images__width": "10"}, r"images\[0\]\.width: expected int, got str"),
        ({"categories": "vehicle"}, r"top level\.categories: expected list"),
    ],
)
def test_bad_instances_json(tmp_path: Path, change: dict, message: str) -> None:
    _real_files(tmp_path, refs=_refs(), instances=_instances(**change))
    with pytest.raises(DatasetError, match=message) as info:
        get_format("rrsisd").open(tmp_path).load()
    assert "instances.json" in str(info.value)


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    _real_files(tmp_path)
    (tmp_path / "rrsisd/instances.json").write_text('{\n"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DatasetError, match=r"instances\.json:3: invalid JSON"):
        get_format("rrsisd").open(tmp_path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not an rrsisd dataset"):
        get_format("rrsisd").open(tmp_path)
    _real_files(tmp_path)
    (tmp_path / "rrsisd/instances.json").write_text("")
    with pytest.raises(DatasetError, match="empty file"):
        get_format("rrsisd").open(tmp_path)
    _real_files(tmp_path)
    (tmp_path / "rrsisd/refs(unc).p").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty file"):
        get_format("rrsisd").open(tmp_path).load()


def test_image_path_escaping_the_root_is_refused(tmp_path: Path) -> None:
    inst = _instances(images__file_name="../../../../etc/passwd")
    _real_files(tmp_path, refs=_refs(), instances=inst)
    with pytest.raises(UnsafeDataError, match="outside the dataset root"):
        get_format("rrsisd").open(tmp_path).load()


def test_malicious_refs_pickle_is_refused(tmp_path: Path) -> None:
    _real_files(tmp_path)
    marker = tmp_path / "ran"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (tmp_path / "rrsisd/refs(unc).p").write_bytes(payload)
    with pytest.raises(UnsafeDataError, match=r"os\.system"):
        get_format("rrsisd").open(tmp_path).load()
    assert not marker.exists()


def test_writer_input_errors(tmp_path: Path) -> None:
    fmt = get_format("rrsisd")
    with pytest.raises(InputError, match="must lie in"):
        fmt.write(tmp_path, [Sample(image="elsewhere/a.jpg")])
    with pytest.raises(InputError, match="target"):
        fmt.write(tmp_path, [Sample(image=f"{IMG}/a.jpg", refs=[Referring(["x"])])])
    with pytest.raises(InputError, match="not among the categories"):
        fmt.write(
            tmp_path,
            [Sample(image=f"{IMG}/a.jpg", instances=[Instance("z", bbox=(0, 0, 1, 1))])],
            categories=[Category(1, "a")],
        )
    with pytest.raises(InputError, match="unique"):
        fmt.write(tmp_path, [Sample(image=f"{IMG}/a.jpg", image_id=1), Sample(image=f"{IMG}/b.jpg", image_id=1)])


def test_rle_string_parser_matches_pycocotools() -> None:
    from pycocotools import mask as coco_mask

    from rsvl.datasets.rrsisd import _rle_runs

    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = rng.integers(1, 60, size=2)
        m = rng.random((h, w)) < rng.random()
        if trial % 5 == 0:
            m[:] = trial % 2 == 0  # all-empty / all-full masks
        rle = masks.encode(m)
        runs = _rle_runs(rle["counts"])
        assert runs is not None and sum(runs) == h * w
        assert sum(runs[1::2]) == int(m.sum()) == int(coco_mask.area({**rle, "counts": rle["counts"].encode()}))
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        assert np.array_equal(flat, m.flatten(order="F"))
    assert _rle_runs("0") == [0] and _rle_runs("\x7f") is None and _rle_runs("0h") is None  # 'h' continues, ends

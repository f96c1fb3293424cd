"""COCO / AI-TOD / LVIS JSON reader and writer, and COCO results files."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from rsvl.datasets import Category, Instance, Sample, get_format
from rsvl.datasets.coco import read_coco_results, write_coco_results, xywh_for_write, xyxy_from_xywh
from rsvl.errors import DatasetError, InputError, UnsafeDataError
from rsvl.geometry import masks

# A COCO file in the real shape: info, licenses, extra image keys, polygons, crowd with uncompressed
# RLE, fractional boxes like COCO's own (473.07 + 38.65 - 473.07 != 38.65 in floating point).
COCO_DOC = {
    "info": {"description": "tiny", "version": "1.0", "year": 2017},
    "licenses": [{"url": "http://x", "id": 1, "name": "CC"}],
    "images": [
        {"license": 1, "file_name": "000000397133.jpg", "coco_url": "http://images.cocodataset.org/val2017/000000397133.jpg",
         "height": 6, "width": 8, "date_captured": "2013-11-14 17:02:52", "flickr_url": "http://f", "id": 397133},
        {"file_name": "sub/empty.jpg", "height": 4, "width": 4, "id": 5},
    ],
    "annotations": [
        {"segmentation": [[1.5, 1.0, 6.0, 1.0, 6.0, 5.0]], "area": 9.0, "iscrowd": 0, "image_id": 397133,
         "bbox": [473.07, 395.93, 38.65, 28.67], "category_id": 18, "id": 1768},
        {"segmentation": {"size": [6, 8], "counts": [10, 4, 34]}, "area": 4, "iscrowd": 1, "image_id": 397133,
         "bbox": [1, 4, 1, 4], "category_id": 1, "id": 900100397133},
        {"segmentation": [], "area": 0.0, "iscrowd": 0, "image_id": 397133, "bbox": [2, 2, 0, 0], "category_id": 1,
         "id": 3, "attributes": {"occluded": True}},
    ],
    "categories": [{"supercategory": "person", "id": 1, "name": "person"},
                   {"supercategory": "animal", "id": 18, "name": "dog"}],
}  # fmt: skip


def _write_doc(root: Path, doc, name: str = "annotations.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(doc))
    return root


def _error(root: Path, doc, fmt: str = "coco") -> str:
    _write_doc(root, doc)
    with pytest.raises(DatasetError) as info:
        get_format(fmt).open(root).load()
    return str(info.value)


def test_reads_every_field(tmp_path):
    ds = get_format("coco").open(_write_doc(tmp_path, COCO_DOC))
    first, empty = ds.load()
    assert ds.meta == {"info": COCO_DOC["info"], "licenses": COCO_DOC["licenses"]}
    assert ds.categories == [
        Category(1, "person", {"supercategory": "person"}),
        Category(18, "dog", {"supercategory": "animal"}),
    ]
    assert (first.image, first.image_id, first.width, first.height) == ("images/000000397133.jpg", 397133, 8, 6)
    assert first.meta["coco_url"].endswith("000000397133.jpg") and first.meta["license"] == 1
    dog, crowd, point = first.instances
    assert dog.category == "dog" and dog.id == 1768 and dog.bbox == (473.07, 395.93, 473.07 + 38.65, 395.93 + 28.67)
    assert dog.attrs == {"area": 9.0, "bbox_xywh": [473.07, 395.93, 38.65, 28.67]}
    assert dog.mask == [[1.5, 1.0, 6.0, 1.0, 6.0, 5.0]] and not dog.ignore
    assert crowd.ignore and crowd.mask == {"size": [6, 8], "counts": [10, 4, 34]} and crowd.bbox == (1.0, 4.0, 2.0, 8.0)
    assert point.bbox == (2.0, 2.0, 2.0, 2.0) and point.attrs == {"area": 0.0, "attributes": {"occluded": True}}
    assert (empty.image, empty.instances) == ("images/sub/empty.jpg", [])


def test_rewrite_reproduces_the_document(tmp_path):
    fmt = get_format("coco")
    ds = fmt.open(_write_doc(tmp_path / "src", COCO_DOC))
    fmt.write(tmp_path / "out", ds, categories=ds.categories, meta=ds.meta)
    assert json.loads((tmp_path / "out" / "annotations.json").read_text()) == COCO_DOC


def test_round_trip_of_hand_made_samples(tmp_path):
    rle = masks.encode(masks.decode([[1, 1, 5, 1, 5, 4]], 6, 8))
    samples = [
        Sample(
            image="images/a.png",
            image_id=7,
            width=8,
            height=6,
            meta={"license": 2, "gsd": 0.3},
            instances=[
                Instance("car", bbox=(1.0, 1.0, 5.0, 4.0), mask=rle, id=1, attrs={"area": 12}),
                Instance(
                    "car",
                    bbox=(0.25, 0.5, 1.75, 2.5),
                    mask=[[0.25, 0.5, 1.75, 0.5, 1.75, 2.5]],
                    id=2,
                    difficult=True,
                    attrs={"area": 1.5},
                ),
                Instance("crowd", bbox=(0.0, 0.0, 8.0, 6.0), ignore=True, id=5, attrs={"area": 48, "note": [1, "x"]}),
                Instance("car", bbox=(2.0, 2.0, 3.0, 3.0), score=0.5, id=6, attrs={"area": 1}),
            ],
        ),
        Sample(image="images/b.png", image_id=8, width=4, height=4),
    ]
    cats = [Category(3, "car", {"supercategory": "vehicle"}), Category(9, "crowd")]
    fmt = get_format("coco")
    fmt.write(tmp_path, samples, categories=cats, meta={"info": {"year": 2024}, "licenses": []})
    back = fmt.open(tmp_path)
    assert back.load() == samples
    assert back.categories == cats and back.meta == {"info": {"year": 2024}, "licenses": []}


def test_writer_fills_ids_and_area(tmp_path):
    samples = [Sample(image="images/a.png", image_id="not-an-int", instances=[Instance("ship", bbox=(1, 1, 4, 3))])]
    get_format("coco").write(tmp_path, samples)
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "ship"}]
    assert doc["images"] == [{"id": 1, "file_name": "a.png"}]
    assert doc["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0}
    ]


def test_polygon_only_instance_becomes_a_segmentation(tmp_path):
    poly = (1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0)
    get_format("coco").write(
        tmp_path, [Sample(image="images/a.png", instances=[Instance("ship", bbox=(1, 1, 4, 3), polygon=poly)])]
    )
    (inst,) = get_format("coco").open(tmp_path).load()[0].instances
    assert inst.mask == [list(poly)] and inst.polygon is None


def test_exact_xywh_helpers():
    bbox, raw = xyxy_from_xywh(0.1, 0.7, 0.2, 0.1)
    assert raw == [0.1, 0.7, 0.2, 0.1] and xywh_for_write(bbox, raw) == raw
    assert xyxy_from_xywh(1.0, 2.0, 3.0, 4.0) == ((1.0, 2.0, 4.0, 6.0), None)
    # A stale raw box (the instance was moved) is ignored.
    assert xywh_for_write((10.0, 10.0, 13.0, 14.0), raw) == [10.0, 10.0, 3.0, 4.0]


LVIS_DOC = {
    "info": {"description": "lvis tiny"},
    "licenses": [],
    "images": [
        {"date_captured": "2013-11-14", "neg_category_ids": [2], "id": 1, "license": 1, "height": 20, "width": 30,
         "flickr_url": "http://f", "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg",
         "not_exhaustive_category_ids": [1]},
        {"neg_category_ids": [], "id": 2, "height": 20, "width": 30, "not_exhaustive_category_ids": [],
         "coco_url": "http://images.cocodataset.org/val2017/000000000002.jpg"},
    ],
    "annotations": [
        {"area": 50.0, "id": 1, "segmentation": [[2, 2, 12, 2, 12, 7, 2, 7]], "image_id": 1, "bbox": [2, 2, 10, 5],
         "category_id": 1},
        {"area": 16.0, "id": 2, "segmentation": [[5, 5, 9, 5, 9, 9, 5, 9]], "image_id": 2, "bbox": [5, 5, 4, 4],
         "category_id": 2},
    ],
    "categories": [
        {"frequency": "f", "id": 1, "synset": "aerosol.n.02", "image_count": 1, "instance_count": 1,
         "synonyms": ["aerosol_can", "spray_can"], "def": "a dispenser", "name": "aerosol_can"},
        {"frequency": "r", "id": 2, "synset": "alarm.n.01", "image_count": 1, "instance_count": 1,
         "synonyms": ["alarm_clock"], "def": "a clock", "name": "alarm_clock"},
    ],
}  # fmt: skip


def test_lvis_fields_round_trip_and_the_output_evaluates_as_lvis(tmp_path):
    import faster_coco_eval
    from lvis import LVIS, LVISResults

    fmt = get_format("lvis")
    ds = fmt.open(_write_doc(tmp_path / "src", LVIS_DOC))
    first, second = ds.load()
    assert first.image == "images/train2017/000000000001.jpg" and second.image == "images/val2017/000000000002.jpg"
    assert first.meta["neg_category_ids"] == [2] and first.meta["not_exhaustive_category_ids"] == [1]
    assert ds.categories[1].attrs["frequency"] == "r" and ds.categories[0].attrs["synonyms"] == [
        "aerosol_can",
        "spray_can",
    ]
    assert first.instances[0].ignore is False
    fmt.write(tmp_path / "out", ds, categories=ds.categories, meta=ds.meta)
    out = tmp_path / "out" / "annotations.json"
    assert json.loads(out.read_text()) == LVIS_DOC  # no file_name, no iscrowd added

    predictions = {
        s.image_id: [Instance(i.category, bbox=i.bbox, score=0.9) for i in s.instances] for s in (first, second)
    }
    results = write_coco_results(tmp_path / "res.json", predictions, ds)
    # The reference LVIS API loads both files (its evaluator needs numpy < 1.24: np.float); the
    # federated evaluation itself runs in faster-coco-eval's LVIS mode.
    logging.getLogger("lvis").setLevel(logging.WARNING)
    gt = LVIS(str(out))
    assert len(LVISResults(gt, str(results)).get_ann_ids()) == 2
    coco_gt = faster_coco_eval.COCO(str(out))
    evaluator = faster_coco_eval.COCOeval_faster(coco_gt, coco_gt.loadRes(str(results)), "bbox", lvis_style=True)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_aitod_is_plain_coco_under_its_own_name(tmp_path):
    ds = get_format("aitod").open(_write_doc(tmp_path, COCO_DOC))
    assert ds.format == "aitod" and len(ds.load()[0].instances) == 3


def test_pycocotools_scores_written_gt_and_results(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cars = [Instance("car", bbox=(4.0 * k, 3.0, 4.0 * k + 20, 30.5)) for k in range(3)]
    samples = [
        Sample(image=f"images/{k}.png", image_id=k + 1, width=64, height=64,
               instances=[car, Instance("bus", bbox=(30, 30, 60, 62))])
        for k, car in enumerate(cars)
    ]  # fmt: skip
    fmt = get_format("coco")
    fmt.write(tmp_path, samples)
    ds = fmt.open(tmp_path)
    predictions = {s.image_id: [Instance(i.category, bbox=i.bbox, score=0.8) for i in s.instances] for s in ds}
    write_coco_results(tmp_path / "results.json", predictions, ds)
    assert read_coco_results(tmp_path / "results.json", ds) == predictions
    gt = COCO(str(tmp_path / "annotations.json"))
    evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "results.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def _mutated(path: str, value, doc=COCO_DOC):
    doc = copy.deepcopy(doc)
    keys = path.split(".")
    target = doc
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is _DELETE:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("annotations.1.bbox", [1, 2, -3, 4], "annotations[1].bbox: expected 4 finite numbers with w, h >= 0"),
        ("annotations.1.bbox", [1, 2, 3], "annotations[1].bbox: expected 4 finite numbers with w, h >= 0"),
        ("annotations.2.bbox", [1, 2, "3", 4], "annotations[2].bbox: expected 4 finite numbers"),
        ("annotations.2.bbox", [1e308, 2, 1e308, 4], "annotations[2].bbox: box [1e+308"),
        ("annotations.0.category_id", 77, "annotations[0].category_id: category id 77 is not declared in categories"),
        ("annotations.0.image_id", 4, "annotations[0].image_id: no image has id 4"),
        ("annotations.0.iscrowd", 2, "annotations[0].iscrowd: expected 0 or 1, got 2"),
        ("annotations.0.area", -1, "annotations[0].area: expected a number >= 0"),
        ("annotations.0.segmentation", [[1, 2, 3]], "annotations[0].segmentation[0]: expected a polygon"),
        ("annotations.1.segmentation", {"size": [6], "counts": "abc"}, "annotations[1].segmentation.size"),
        ("annotations.2.id", 1768, "annotations[2].id: annotation id 1768 is used twice"),
        ("images.1.id", 397133, "images[1].id: image id 397133 is used twice"),
        ("images.1.width", 0, "images[1].width: expected a positive integer"),
        ("images.0.file_name", 12, "images[0].file_name: expected str"),
        ("categories.1.id", 1, "categories[1].id: category id 1 is declared twice"),
        ("categories.1.name", "person", "categories[1].name: category name 'person' is declared twice"),
        ("images", {"a": 1}, "images: expected list"),
    ],
)
def test_errors_name_the_json_location(tmp_path, path, value, expected):
    message = _error(tmp_path, _mutated(path, value))
    assert "annotations.json: " in message and expected in message


def test_lvis_category_lists_are_checked(tmp_path):
    message = _error(tmp_path, _mutated("images.0.neg_category_ids", [2, 99], LVIS_DOC), "lvis")
    assert "images[0].neg_category_ids[1]: category id 99 is not declared" in message


def test_json_syntax_and_nan_errors(tmp_path):
    (tmp_path / "annotations.json").write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DatasetError, match=r"annotations.json:2: invalid JSON"):
        get_format("coco").open(tmp_path)
    (tmp_path / "annotations.json").write_text('{"images": [], "annotations": [{"bbox": [NaN, 1, 2, 3]}]}')
    with pytest.raises(DatasetError, match="NaN is not valid JSON"):
        get_format("coco").open(tmp_path)
    (tmp_path / "annotations.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(DatasetError):
        get_format("coco").open(tmp_path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/../../../x.jpg"])
def test_file_name_leaving_the_root_is_refused(tmp_path, name):
    _write_doc(tmp_path, _mutated("images.1.file_name", name))
    with pytest.raises(UnsafeDataError):
        get_format("coco").open(tmp_path).load()
    with pytest.raises(UnsafeDataError):  # not even the lenient mode skips it
        get_format("coco").open(tmp_path, strict=False).load()


def test_non_strict_counts_skipped_annotations(tmp_path):
    doc = _mutated("annotations.0.bbox", [0, 0, -1, 1])
    doc["annotations"].append({"id": 50, "image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1]})
    ds = get_format("coco").open(_write_doc(tmp_path, doc), strict=False)
    first, _ = ds.load()
    assert len(first.instances) == 2
    assert [p.message.split(":")[0] for p in ds.report.problems] == ["annotations[3].image_id", "annotations[0].bbox"]


def test_open_takes_a_json_path_or_ann_file(tmp_path):
    _write_doc(tmp_path, COCO_DOC, name="instances_val.json")
    assert len(get_format("coco").open(tmp_path / "instances_val.json").load()) == 2
    assert len(get_format("coco").open(tmp_path, ann_file="instances_val.json").load()) == 2
    with pytest.raises(DatasetError, match=r"no annotation file annotations\.json"):
        get_format("coco").open(tmp_path)


def test_writer_errors(tmp_path):
    fmt = get_format("coco")
    with pytest.raises(InputError, match="category 'ship' is not among"):
        fmt.write(
            tmp_path,
            [Sample(image="images/a.png", instances=[Instance("ship", bbox=(0, 0, 1, 1))])],
            categories=[Category(1, "car")],
        )
    with pytest.raises(InputError, match="not inside the COCO image folder"):
        fmt.write(tmp_path, [Sample(image="pics/a.png")])
    with pytest.raises(InputError, match="collides with the COCO field"):
        fmt.write(
            tmp_path,
            [Sample(image="images/a.png", instances=[Instance("car", bbox=(0, 0, 1, 1), attrs={"image_id": 3})])],
        )
    with pytest.raises(InputError, match="image id 4 is used by two samples"):
        fmt.write(tmp_path, [Sample(image="images/a.png", image_id=4), Sample(image="images/b.png", image_id=4)])
    assert not (tmp_path / "annotations.json").exists()


def _results_error(tmp_path, detections, gt) -> str:
    (tmp_path / "res.json").write_text(json.dumps(detections))
    with pytest.raises(DatasetError) as info:
        read_coco_results(tmp_path / "res.json", gt)
    return str(info.value)


def test_results_validation(tmp_path):
    ds = get_format("coco").open(_write_doc(tmp_path / "gt", COCO_DOC))
    ok = {"image_id": 5, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5}
    assert "[1].bbox: expected 4 finite numbers with w, h >= 0" in _results_error(
        tmp_path, [ok, {**ok, "bbox": [0, 0, -2, 2]}], ds
    )
    assert "[0].category_id: category id 3 is not declared in the ground truth" in _results_error(
        tmp_path, [{**ok, "category_id": 3}], ds
    )
    assert "[0].image_id: no ground-truth image has id 6" in _results_error(tmp_path, [{**ok, "image_id": 6}], ds)
    assert "[0].score: missing" in _results_error(tmp_path, [{k: v for k, v in ok.items() if k != "score"}], ds)
    assert "[0].score: expected int or float" in _results_error(tmp_path, [{**ok, "score": "high"}], ds)
    (tmp_path / "res.json").write_text('[{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": NaN}]')
    with pytest.raises(DatasetError, match="NaN is not valid JSON"):
        read_coco_results(tmp_path / "res.json", ds.categories)
    assert "top level (a list of detections): expected list" in _results_error(tmp_path, {"a": 1}, ds)


def test_results_round_trip_with_masks_and_categories_only(tmp_path):
    cats = [Category(1, "person"), Category(18, "dog")]
    rle = masks.encode(masks.decode([[0, 0, 3, 0, 3, 3]], 5, 5))
    predictions = {
        1: [
            Instance(
                "dog", bbox=(0.1, 0.7, 0.1 + 0.2, 0.7 + 0.1), score=0.25, attrs={"bbox_xywh": [0.1, 0.7, 0.2, 0.1]}
            )
        ],
        2: [
            Instance("person", mask=rle, score=0.75),
            Instance("person", bbox=(1.0, 1.0, 2.0, 2.0), mask=rle, score=1.0),
        ],
    }
    write_coco_results(tmp_path / "r.json", predictions, cats)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written[0] == {"image_id": 1, "category_id": 18, "bbox": [0.1, 0.7, 0.2, 0.1], "score": 0.25}
    assert read_coco_results(tmp_path / "r.json", cats, image_ids=[1, 2]) == predictions
    with pytest.raises(DatasetError, match="no ground-truth image has id 2"):
        read_coco_results(tmp_path / "r.json", cats, image_ids=[1])
    with pytest.raises(InputError, match="expected a finite score"):
        write_coco_results(tmp_path / "x.json", {1: [Instance("dog", bbox=(0, 0, 1, 1))]}, cats)
    with pytest.raises(InputError, match="category 'cat' is not among"):
        write_coco_results(tmp_path / "x.json", {1: [Instance("cat", bbox=(0, 0, 1, 1), score=1)]}, cats)


def _without(doc, index: int, *keys: str):
    doc = copy.deepcopy(doc)
    for key in keys:
        del doc["annotations"][index][key]
    return doc


@pytest.mark.parametrize(
    ("index", "keys"),
    [
        (0, ("bbox", "segmentation")),  # neither key at all
        (2, ("bbox",)),  # only an empty polygon list left
    ],
)
def test_annotation_without_geometry_is_an_error_or_a_counted_skip(tmp_path, index, keys):
    doc = _without(COCO_DOC, index, *keys)
    message = _error(tmp_path, doc)
    assert f"annotations.json: annotations[{index}]: expected a bbox or a non-empty segmentation" in message

    ds = get_format("coco").open(tmp_path, strict=False)
    first, second = ds.load()
    assert [p.message.split(":")[0] for p in ds.report.problems] == [f"annotations[{index}]"]
    kept = [a["id"] for a in COCO_DOC["annotations"] if a["id"] != COCO_DOC["annotations"][index]["id"]]
    assert [inst.id for inst in first.instances] == kept and second.instances == []


def test_annotation_with_only_a_box_or_only_a_segmentation_is_kept(tmp_path):
    doc = _without(_without(COCO_DOC, 0, "bbox"), 1, "segmentation")
    (first, _) = get_format("coco").open(_write_doc(tmp_path, doc)).load()
    assert [(inst.bbox is None, inst.mask is None) for inst in first.instances] == [
        (True, False),
        (False, True),
        (False, False),
    ]


def test_writer_refuses_an_instance_without_geometry(tmp_path):
    samples = [Sample(image="images/a.png", instances=[Instance("ship", bbox=(1, 1, 4, 3)), Instance("ship")])]
    with pytest.raises(InputError, match=r"images/a\.png: a 'ship' instance has neither a box, a polygon nor a mask"):
        get_format("coco").write(tmp_path, samples)
    assert not (tmp_path / "annotations.json").exists()

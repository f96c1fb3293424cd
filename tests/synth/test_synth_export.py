"""generate_dataset: every format written through the registry and read back, resume, splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rsvl.datasets import get_format
from rsvl.errors import InputError
from rsvl.synth import FORMATS, generate_dataset, generate_scene, scene_config_for, split_of
from rsvl.synth.export import MANIFEST
from rsvl.synth.layouts import SCENE_CLASSES

SIZE = 96
EXPECTED_FORMATS = {
    "aitod", "captions", "classification", "coco", "deepforest", "dota", "lrsvqa", "lvis", "rrsisd", "rsvqa",
    "visdrone", "voc", "vrsbench",
}  # fmt: skip
INSTANCE_FORMATS = ("coco", "aitod", "lvis", "dota", "voc", "visdrone", "deepforest", "rrsisd")


def _generate(fmt: str, root: Path, n: int = 4, **kw):
    size = kw.pop("size", 512 if fmt == "lrsvqa" else SIZE)
    return generate_dataset(fmt, root, n, seed=kw.pop("seed", 1), size=size, progress=False, workers=1, **kw)


def test_every_requested_format_is_supported():
    assert set(FORMATS) == EXPECTED_FORMATS


@pytest.mark.parametrize("fmt", sorted(EXPECTED_FORMATS))
def test_export_reads_back_through_the_registry(fmt, tmp_path):
    summary = _generate(fmt, tmp_path / fmt)
    ds = get_format(fmt).open(tmp_path / fmt)
    samples = ds.load()
    assert len(samples) == 4 and summary.images == 4 and summary.written == 4
    for s in samples:
        assert s.image_path.is_file(), s.image
    read_classes = Counter(i.category for s in samples for i in s.instances)
    assert read_classes == Counter(summary.per_class)
    assert sum(len(s.qas) for s in samples) == summary.texts["qas"]
    assert sum(len(s.refs) for s in samples) == summary.texts["refs"]
    assert sum(len(s.captions) for s in samples) == summary.texts["captions"]
    if fmt in INSTANCE_FORMATS:
        assert summary.instances > 0
    if fmt in ("captions", "vrsbench"):
        assert all(s.captions for s in samples)
    if fmt in ("vrsbench", "rsvqa", "lrsvqa"):
        assert all(s.qas for s in samples)
    if fmt in ("vrsbench", "rrsisd"):
        assert summary.texts["refs"] > 0
    if fmt == "classification":
        assert {s.label for s in samples} <= set(SCENE_CLASSES)
        for s in samples:
            assert s.image.split("/")[0] == s.label


@pytest.mark.parametrize("fmt", ["coco", "dota", "visdrone", "voc", "deepforest", "aitod"])
def test_boxes_read_back_equal_the_generated_labels(fmt, tmp_path):
    _generate(fmt, tmp_path, n=3)
    config = scene_config_for(fmt, SIZE)
    samples = get_format(fmt).open(tmp_path).load()
    by_index = {int(Path(s.image).stem.split("_")[-1]): s for s in samples}
    for index, sample in by_index.items():
        scene = generate_scene(1, index, config)
        expected = sorted(o.label.bbox for o in scene.labelled)
        got = [i.bbox for i in sample.instances if not i.ignore]
        if fmt == "deepforest":
            expected = sorted(o.label.bbox for o in scene.labelled if o.category == "tree")
        if fmt == "aitod":
            keep = {"plane", "bridge", "storage-tank", "ship", "swimming-pool", "small-vehicle", "large-vehicle",
                    "person", "wind-mill"}  # fmt: skip
            expected = sorted(o.label.bbox for o in scene.labelled if o.category in keep)
        if fmt == "visdrone":
            expected = sorted(
                o.label.bbox for o in scene.labelled if o.category in ("small-vehicle", "large-vehicle", "person")
            )
        got = sorted(got)
        assert len(got) == len(expected)
        if fmt == "dota":  # DOTA stores the OBB polygon only; its reader's box encloses the polygon
            polys = sorted(i.polygon for i in sample.instances)
            assert polys == sorted(o.label.polygon for o in scene.labelled)
            continue
        assert np.allclose(np.array(got).reshape(-1, 4), np.array(expected).reshape(-1, 4), atol=1e-6)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    for name in ("a", "b"):
        _generate("coco", tmp_path / name, n=3)
    _generate("coco", tmp_path / "c", n=3, seed=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a/annotations.json").read_bytes() != (tmp_path / "c/annotations.json").read_bytes()
    img = "images/synth_000000.png"
    assert (tmp_path / "a" / img).read_bytes() != (tmp_path / "c" / img).read_bytes()


def test_two_workers_give_the_same_dataset(tmp_path):
    one = generate_dataset("dota", tmp_path / "one", 16, seed=3, size=64, progress=False, workers=1)
    two = generate_dataset("dota", tmp_path / "two", 16, seed=3, size=64, progress=False, workers=2)
    assert one.per_class == two.per_class
    for p in sorted((tmp_path / "one").rglob("*.txt")):
        assert p.read_bytes() == (tmp_path / "two" / p.relative_to(tmp_path / "one")).read_bytes()
    for p in sorted((tmp_path / "one").rglob("*.png")):
        assert p.read_bytes() == (tmp_path / "two" / p.relative_to(tmp_path / "one")).read_bytes()


def test_resume_skips_existing_images_and_rewrites_annotations(tmp_path):
    first = _generate("coco", tmp_path, n=3)
    ann = (tmp_path / "annotations.json").read_bytes()
    (tmp_path / "images/synth_000001.png").unlink()
    kept = tmp_path / "images/synth_000002.png"
    kept.write_bytes(kept.read_bytes())  # untouched content, new mtime: must be skipped, not redrawn
    (tmp_path / "annotations.json").write_text("{}")
    again = _generate("coco", tmp_path, n=3)
    assert (again.written, again.skipped) == (1, 2)
    assert (tmp_path / "annotations.json").read_bytes() == ann
    assert again.per_class == first.per_class
    more = _generate("coco", tmp_path, n=5)  # extending n keeps images 0..2 and adds 3, 4
    assert (more.written, more.skipped) == (2, 3)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["status"] == "complete" and manifest["n"] == 5


def test_rerun_with_other_arguments_is_refused(tmp_path):
    _generate("coco", tmp_path, n=2)
    with pytest.raises(InputError, match="seed"):
        _generate("coco", tmp_path, n=2, seed=9)
    with pytest.raises(InputError, match="format"):
        _generate("dota", tmp_path, n=2)


def test_novel_classes_split_seen_and_novel(tmp_path):
    summary = _generate("coco", tmp_path, n=24, novel_classes=["small-vehicle", "tree"])
    assert summary.novel_classes == ("small-vehicle", "tree")
    train = get_format("coco").open(tmp_path / "train")
    test = get_format("coco").open(tmp_path / "test")
    train_samples, test_samples = train.load(), test.load()
    assert len(train_samples) + len(test_samples) == 24
    assert train_samples and test_samples
    assert not {"small-vehicle", "tree"} & set(train.category_names())
    assert {"small-vehicle", "tree"} <= set(test.category_names())
    assert not any(i.category in ("small-vehicle", "tree") for s in train_samples for i in s.instances)
    assert any(i.category in ("small-vehicle", "tree") for s in test_samples for i in s.instances)
    ids = {c.name: c.id for c in test.categories}
    assert all(ids[c.name] == c.id for c in train.categories)
    for s in train_samples:
        assert split_of(1, int(Path(s.image).stem.split("_")[-1]), novel=True) == "train"


def test_novel_classes_default_set_and_texts(tmp_path):
    summary = _generate("vrsbench", tmp_path, n=12, novel_classes=True)
    assert "helicopter" in summary.novel_classes
    train = get_format("vrsbench").open(tmp_path / "train").load()
    words = " ".join([*(c for s in train for c in s.captions), *(q.question for s in train for q in s.qas)])
    for noun in ("helicopter", "roundabout", "swimming pool", "basketball court", "wind turbine"):
        assert noun not in words


def test_lvis_categories_and_federated_image_fields(tmp_path):
    _generate("lvis", tmp_path, n=12)
    raw = json.loads((tmp_path / "annotations.json").read_text())
    assert {c["frequency"] for c in raw["categories"]} <= {"r", "c", "f"}
    by_id = {c["id"]: c for c in raw["categories"]}
    present = Counter()
    for ann in raw["annotations"]:
        present[(ann["image_id"], ann["category_id"])] += 1
    for img in raw["images"]:
        assert isinstance(img["neg_category_ids"], list) and isinstance(img["not_exhaustive_category_ids"], list)
        for cid in img["neg_category_ids"]:
            assert cid in by_id and present[(img["id"], cid)] == 0
    for cat in raw["categories"]:
        n_img = len({img for img, cid in present if cid == cat["id"]})
        assert cat["image_count"] == n_img
    from lvis import LVIS  # the reference API accepts the file

    LVIS(str(tmp_path / "annotations.json"))


def test_aitod_objects_are_tiny(tmp_path):
    _generate("aitod", tmp_path, n=4, size=256)
    raw = json.loads((tmp_path / "annotations.json").read_text())
    sides = np.sqrt([a["area"] for a in raw["annotations"]])
    assert len(sides) > 50 and (sides <= 32).mean() > 0.9
    assert [c["name"] for c in raw["categories"]][:2] == ["airplane", "bridge"]


def test_visdrone_has_ignored_regions(tmp_path):
    _generate("visdrone", tmp_path, n=6)
    samples = get_format("visdrone").open(tmp_path).load()
    ignored = [i for s in samples for i in s.instances if i.ignore]
    assert ignored and all(i.category == "ignored regions" for i in ignored)
    lines = [ln for p in (tmp_path / "annotations").glob("*.txt") for ln in p.read_text().splitlines()]
    assert any(ln.split(",")[5] == "0" for ln in lines)


def test_rsvqa_splits_and_types(tmp_path):
    _generate("rsvqa", tmp_path, n=10)
    samples = get_format("rsvqa").open(tmp_path).load()
    assert {s.split for s in samples} <= {"train", "val", "test"}
    assert {q.type for s in samples for q in s.qas} <= {"presence", "count", "comp", "area", "rural_urban"}
    for s in samples:
        assert s.split == split_of(1, s.image_id)


def test_lrsvqa_large_images_and_evidence(tmp_path):
    _generate("lrsvqa", tmp_path, n=2, size=768)
    samples = get_format("lrsvqa").open(tmp_path).load()
    for s in samples:
        assert s.image.endswith(".tif")
        with s.open() as src:
            assert src.shape == (768, 768)
        for qa in s.qas:
            box = qa.attrs["evidence_bbox"]
            assert len(box) == 4 and 0 <= box[0] < box[2] <= 768


def test_bad_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown dataset format"):
        generate_dataset("nope", tmp_path, 1, progress=False)
    with pytest.raises(InputError, match="n must be"):
        generate_dataset("coco", tmp_path, -1, progress=False)
    with pytest.raises(InputError, match="size"):
        generate_dataset("coco", tmp_path, 1, size=8, progress=False)
    with pytest.raises(InputError, match="unknown novel class"):
        generate_dataset("coco", tmp_path, 1, novel_classes=["unicorn"], progress=False)
    with pytest.raises(InputError, match="classification"):
        generate_dataset("classification", tmp_path, 1, novel_classes=True, progress=False)


def test_progress_bar_runs(tmp_path):
    summary = generate_dataset("captions", tmp_path, 2, size=64, progress=True, workers=1)
    assert summary.images == 2 and summary.to_dict()["format"] == "captions"


def test_coco_annotations_evaluate_perfectly_against_themselves(tmp_path):
    """pycocotools reads the boxes, RLE masks and areas, and scores the labels as detections at AP 1."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _generate("coco", tmp_path, n=4, size=192)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "annotations.json"))
        dets = [{**a, "score": 1.0} for a in gt.dataset["annotations"]]
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, gt.loadRes(dets), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0)
    for ann in gt.dataset["annotations"]:
        assert gt.annToMask(ann).sum() == ann["area"]

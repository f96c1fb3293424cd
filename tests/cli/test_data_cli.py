"""`rsvl data synth | check | convert | formats`: the acceptance loop of the datasets issue."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.datasets import format_names, get_format

runner = CliRunner()

SYNTH_FORMATS = [name for name in format_names() if name != "geojson"]


def _run(*args: str):
    return runner.invoke(app, ["--quiet", *args], catch_exceptions=False)


@pytest.mark.parametrize("fmt", SYNTH_FORMATS)
def test_synth_then_check_is_clean(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / fmt
    result = _run("data", "synth", "--format", fmt, "--n", "3", "--out", str(out), "--seed", "7", "--size", "160")
    assert result.exit_code == 0, result.output
    checked = _run("data", "check", str(out), "--format", fmt)
    assert checked.exit_code == 0, checked.output
    assert "problems" in checked.output
    # the data really is there: the reader sees the 3 images (or more for one-image-per-question formats)
    samples = get_format(fmt).open(out).load()
    assert len(samples) >= 1
    assert all((out / s.image).is_file() for s in samples)


def test_check_without_format_guesses_the_layout(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert _run("data", "synth", "--format", "dota", "--n", "2", "--out", str(out), "--size", "128").exit_code == 0
    result = _run("data", "check", str(out))
    assert result.exit_code == 0, result.output
    assert "dota" in result.output


def test_check_reports_broken_data_with_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert _run("data", "synth", "--format", "dota", "--n", "3", "--out", str(out), "--size", "128").exit_code == 0
    labels = sorted((out / "labelTxt").glob("*.txt"))
    images = sorted((out / "images").iterdir())
    with labels[0].open("a") as handle:
        handle.write("1 2 3 4 5 six 7 8 plane 0\n")
    images[1].unlink()
    Image.new("RGB", (10, 10)).save(images[2])  # smaller than its labels say
    result = runner.invoke(app, ["--quiet", "data", "check", str(out), "--format", "dota"])
    assert result.exit_code == 2
    text = result.output
    assert f"{labels[0].name}:" in text and "six" in text
    assert "missing" in text
    assert "outside" in text or "annotation says" in text


def test_check_of_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope"), "--format", "dota"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synth", "--format", "pascal", "--n", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "dota" in result.output and "coco" in result.output


def test_formats_lists_every_registered_format() -> None:
    result = _run("data", "formats")
    assert result.exit_code == 0
    for name in format_names():
        assert name in result.output


def test_convert_dota_to_coco_keeps_boxes(tmp_path: Path) -> None:
    src, dst = tmp_path / "dota", tmp_path / "coco"
    assert _run("data", "synth", "--format", "dota", "--n", "3", "--out", str(src), "--size", "160").exit_code == 0
    result = _run("data", "convert", str(src), str(dst), "--from", "dota", "--to", "coco")
    assert result.exit_code == 0, result.output
    before = {Path(s.image).stem: s for s in get_format("dota").open(src).load()}
    after = {Path(s.image).stem: s for s in get_format("coco").open(dst).load()}
    assert before.keys() == after.keys()
    for stem, sample in before.items():
        got = sorted((i.category, *map(lambda v: round(v, 6), i.bbox)) for i in after[stem].instances)
        want = sorted((i.category, *map(lambda v: round(v, 6), i.bbox)) for i in sample.instances)
        assert got == want
    assert _run("data", "check", str(dst), "--format", "coco").exit_code == 0


def test_convert_keeps_plain_boxes_plain_and_images_apart(tmp_path: Path) -> None:
    """COCO -> VOC writes <bndbox> (no made-up rotated box); same-named images in two folders stay two images."""
    import json

    src = tmp_path / "coco"
    (src / "images" / "a").mkdir(parents=True)
    (src / "images" / "b").mkdir(parents=True)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(src / "images" / "a" / "x.png")
    Image.new("RGB", (64, 48), (200, 100, 0)).save(src / "images" / "b" / "x.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "a/x.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "b/x.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 15], "area": 300, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 6, 7, 8], "area": 56, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "car"}],
    }
    (src / "annotations.json").write_text(json.dumps(coco))
    dst = tmp_path / "voc"
    result = _run("data", "convert", str(src), str(dst), "--from", "coco", "--to", "voc")
    assert result.exit_code == 0, result.output
    xmls = sorted((dst / "Annotations").glob("*.xml"))
    assert len(xmls) == 2
    for xml in xmls:
        text = xml.read_text()
        assert "<bndbox>" in text and "robndbox" not in text
    images = sorted((dst / "JPEGImages").iterdir())
    assert len(images) == 2
    colours = sorted(Image.open(p).convert("RGB").getpixel((0, 0)) for p in images)
    assert colours == [(10, 20, 30), (200, 100, 0)]
    back = {i.bbox for s in get_format("voc").open(dst).load() for i in s.instances}
    assert back == {(10.0, 10.0, 30.0, 25.0), (5.0, 6.0, 12.0, 14.0)}


def test_convert_dota_to_coco_states_image_sizes(tmp_path: Path) -> None:
    src, dst = tmp_path / "dota", tmp_path / "coco"
    assert _run("data", "synth", "--format", "dota", "--n", "2", "--out", str(src), "--size", "128").exit_code == 0
    assert _run("data", "convert", str(src), str(dst), "--from", "dota", "--to", "coco").exit_code == 0
    samples = get_format("coco").open(dst).load()
    assert {(s.width, s.height) for s in samples} == {(128, 128)}


def test_failed_conversion_leaves_no_images_behind(tmp_path: Path) -> None:
    src, dst = tmp_path / "coco", tmp_path / "cls"
    assert _run("data", "synth", "--format", "coco", "--n", "2", "--out", str(src), "--size", "128").exit_code == 0
    result = runner.invoke(app, ["data", "convert", str(src), str(dst), "--from", "coco", "--to", "classification"])
    assert result.exit_code == 2
    assert not dst.exists() or not [p for p in dst.rglob("*") if p.is_file()]

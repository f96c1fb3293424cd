"""The rsvl command line: help, info, tiles (with resume), demo, and exit code 2 on bad input."""

from __future__ import annotations

import json

import numpy as np
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.data import sample_path

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "tiles", "demo", "bench"):
        assert command in result.output


def test_info_prints_size_bands_dtype_crs():
    result = runner.invoke(app, ["info", str(sample_path("solaris/sample_geotiff.tif")), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert (facts["width"], facts["height"], facts["bands"]) == (900, 900, 1)
    assert facts["dtypes"] == ["uint16"] and facts["crs"] == "EPSG:32616"
    table = runner.invoke(app, ["info", str(sample_path("deepforest/OSBS_029.tif"))])
    assert table.exit_code == 0 and "EPSG:32617" in table.output and "uint8" in table.output


def test_bad_input_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "nope.tif"
    result = runner.invoke(app, ["info", str(missing)])
    assert result.exit_code == 2
    assert "nope.tif" in result.output
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 this is not a tiff")
    result = runner.invoke(app, ["info", str(corrupt)])
    assert result.exit_code == 2 and "corrupt.tif" in result.output
    result = runner.invoke(
        app,
        [
            "tiles",
            str(sample_path("deepforest/OSBS_029.tif")),
            "--out",
            str(tmp_path / "t"),
            "--size",
            "100",
            "--overlap",
            "100",
        ],
    )
    assert result.exit_code == 2 and "overlap" in result.output


def test_tiles_writes_georeferenced_tiles_index_and_resumes(tmp_path):
    src_path = tmp_path / "scene.tif"
    data = np.arange(3 * 300 * 250, dtype=np.uint16).reshape(3, 300, 250)
    profile = dict(
        driver="GTiff",
        width=250,
        height=300,
        count=3,
        dtype="uint16",
        crs="EPSG:32616",
        transform=from_origin(1000.0, 5000.0, 0.5, 0.5),
    )
    with rasterio.open(src_path, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "tiles"
    args = ["--quiet", "tiles", str(src_path), "--out", str(out), "--size", "128", "--overlap", "28", "--format", "tif"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    index = json.loads((out / "index.json").read_text())
    assert index["crs"] == "EPSG:32616" and len(index["tiles"]) == 9  # 3 x 3 windows
    first = index["tiles"][4]
    col, row, w, h = first["window"]
    with rasterio.open(out / first["file"]) as tile:
        assert tile.crs.to_string() == "EPSG:32616"
        np.testing.assert_array_equal(tile.read(), data[:, row : row + h, col : col + w])
        # the tile's own transform puts its origin at the window's map position
        assert tile.transform.c == 1000.0 + 0.5 * col and tile.transform.f == 5000.0 - 0.5 * row
    assert "9 tiles written" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 tiles written, 9 already present" in again.output


def test_demo_runs_on_bundled_data_and_recovers_every_tree(tmp_path):
    result = runner.invoke(app, ["--quiet", "demo", "--out", str(tmp_path / "demo"), "--no-vlm"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    # the zoo detector ran on the real GeoTIFF and was scored by the harness, protocol recorded
    detected = {row["image"]: row for row in summary["detection"]["images"]}
    assert detected["OSBS_029.tif"]["detections (score >= 0.5)"] >= 10
    assert summary["detection"]["evaluation"]["preset"] == "coco"
    assert summary["detection"]["evaluation"]["metrics"]["AP50"] > 0.05
    osbs = json.loads((tmp_path / "demo" / "OSBS_029.detections.geojson").read_text())
    assert "32617" in json.dumps(osbs["crs"]) and len(osbs["features"]) >= 10
    page = (tmp_path / "demo" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "AP50" in page and "iou" in page.lower()
    assert "report.html" in result.output
    assert summary["trees"]["recovered_exactly"] == summary["trees"]["annotated"] == 61
    assert summary["trees"]["after_merge"] == 61 and summary["trees"]["boxes_over_all_tiles"] > 61
    assert summary["buildings"]["footprints"] == 43
    trees = json.loads((tmp_path / "demo" / "trees.geojson").read_text())
    assert len(trees["features"]) == 61 and "32617" in json.dumps(trees["crs"])
    # map coordinates, not pixels: NEON UTM eastings near 404,2xx m
    x = trees["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 404_000 < x < 404_300


def test_bench_lists_benchmarks():
    result = runner.invoke(app, ["bench"])
    assert result.exit_code == 0 and "rotated_iou" in result.output
    result = runner.invoke(app, ["bench", "no_such_bench"])
    assert result.exit_code == 2

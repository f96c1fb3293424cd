"""GeoTIFF + GeoJSON labels (solaris / SpaceNet style), on the bundled real solaris sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsvl.data import sample_path
from rsvl.datasets import get_format
from rsvl.errors import DatasetError, RasterError


@pytest.fixture
def solaris_root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    shutil.copy(sample_path("solaris/sample_geotiff.tif"), tmp_path / "images" / "tile.tif")
    shutil.copy(sample_path("solaris/geotiff_labels.geojson"), tmp_path / "labels" / "tile.geojson")
    return tmp_path


def test_real_solaris_buildings_map_to_pixels(solaris_root: Path) -> None:
    dataset = get_format("geojson").open(solaris_root)
    (sample,) = dataset.load()
    labels = json.loads(sample_path("solaris/geotiff_labels.geojson").read_text())
    assert len(sample.instances) == len(labels["features"]) == 43
    assert (sample.width, sample.height) == (900, 900)
    with rasterio.open(solaris_root / "images" / "tile.tif") as src:
        transform = src.transform
    # every vertex maps back onto the file's map coordinates through the image geotransform
    for inst, feature in zip(sample.instances, labels["features"], strict=True):
        ring = np.array(feature["geometry"]["coordinates"][0][:-1])
        pixels = np.array(inst.polygon).reshape(-1, 2)
        back = np.array([transform @ tuple(p) for p in pixels])
        np.testing.assert_allclose(back, ring, atol=1e-6)
        assert inst.bbox == (pixels[:, 0].min(), pixels[:, 1].min(), pixels[:, 0].max(), pixels[:, 1].max())
        assert inst.attrs["properties"]["osm_id"] == feature["properties"]["osm_id"]
    # buildings lie inside the 900 x 900 tile (the sample's labels were cut to it)
    boxes = np.array([i.bbox for i in sample.instances])
    assert boxes.min() >= -1 and boxes.max() <= 901


def test_round_trip(solaris_root: Path, tmp_path: Path) -> None:
    fmt = get_format("geojson")
    samples = fmt.open(solaris_root).load()
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    shutil.copy(solaris_root / "images" / "tile.tif", out / "images" / "tile.tif")
    fmt.write(out, samples)
    again = fmt.open(out).load()
    assert len(again[0].instances) == len(samples[0].instances)
    for a, b in zip(again[0].instances, samples[0].instances, strict=True):
        assert a.category == b.category and a.attrs == b.attrs
        np.testing.assert_allclose(a.polygon, b.polygon, atol=1e-6)


def test_labels_in_another_crs_are_reprojected(solaris_root: Path) -> None:
    from rasterio.warp import transform_geom

    path = solaris_root / "labels" / "tile.geojson"
    labels = json.loads(path.read_text())
    reference = get_format("geojson").open(solaris_root).load()[0]
    for feature in labels["features"]:
        feature["geometry"] = transform_geom("EPSG:32616", "EPSG:4326", feature["geometry"])
    del labels["crs"]  # RFC 7946: WGS 84
    path.write_text(json.dumps(labels))
    sample = get_format("geojson").open(solaris_root).load()[0]
    for a, b in zip(sample.instances, reference.instances, strict=True):
        np.testing.assert_allclose(a.polygon, b.polygon, atol=1e-3)


def test_bad_geometry_names_the_feature(solaris_root: Path) -> None:
    path = solaris_root / "labels" / "tile.geojson"
    labels = json.loads(path.read_text())
    labels["features"][5]["geometry"] = {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
    labels["features"][7]["geometry"]["coordinates"][0][1] = ["x", 3]
    path.write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match=r"tile\.geojson: features\[5\]\.geometry\.type"):
        get_format("geojson").open(solaris_root).load()
    dataset = get_format("geojson").open(solaris_root, strict=False)
    (sample,) = dataset.load()
    assert len(sample.instances) == 41
    assert [p.message.split(":")[0] for p in dataset.report.problems] == [
        "features[5].geometry.type",
        "features[7].geometry.coordinates[0][1][0]",
    ]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_image_without_crs_is_refused(solaris_root: Path) -> None:
    src = solaris_root / "images" / "tile.tif"
    with rasterio.open(src) as s:
        data, profile = s.read(), s.profile
    profile.pop("crs")
    profile.pop("transform")
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(RasterError, match="no CRS"):
        get_format("geojson").open(solaris_root).load()


def test_missing_labels_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no labels/ folder"):
        get_format("geojson").open(tmp_path)

"""Vector output: GeoJSON / GeoPackage round trips through geopandas, CRS, pixel fallback."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from rsvl.data import sample_path
from rsvl.errors import InputError
from rsvl.geometry import hbb_to_poly, obb_to_poly
from rsvl.io import Detections, GeoRef, RasterSource, detections_to_geojson, write_detections, write_geojson, write_gpkg
from rsvl.io.vector import PIXEL_CRS_WKT, detection_rings

gpd = pytest.importorskip("geopandas")
pyproj = pytest.importorskip("pyproj")

SOLARIS = sample_path("solaris/sample_geotiff.tif")


@pytest.fixture
def hbb() -> Detections:
    return Detections(
        np.array([[10.0, 20.0, 30.5, 45.25], [100.0, 100.0, 140.0, 120.0]]),
        np.array([0.9, 0.35]),
        np.array([2, 0]),
        ("ship", "plane"),
    )


@pytest.fixture
def obb() -> Detections:
    return Detections(np.array([[200.0, 150.0, 60.0, 20.0, 0.35], [50.0, 60.0, 30.0, 10.0, -1.2]]), [0.8, 0.6], [1, 1])


def _expected_map_rings(dets: Detections, src: RasterSource) -> np.ndarray:
    flat = hbb_to_poly(dets.boxes) if dets.kind == "hbb" else obb_to_poly(dets.boxes)
    return src.pixel_to_map(np.asarray(flat).reshape(-1, 4, 2))


def _same_ring(got: np.ndarray, expected: np.ndarray) -> None:
    """Closed ring ``got`` holds the 4 ``expected`` vertices in cyclic order (either direction)."""
    assert np.array_equal(got[0], got[-1]) and len(got) == 5
    ring = got[:-1]
    for cand in (expected, expected[::-1]):
        for shift in range(4):
            if np.allclose(ring, np.roll(cand, shift, axis=0), atol=1e-9, rtol=0):
                return
    raise AssertionError(f"{got} is not the ring {expected}")


@pytest.mark.parametrize("fmt", ["geojson", "gpkg"])
@pytest.mark.parametrize("kind", ["hbb", "obb"])
def test_round_trip_through_geopandas(tmp_path, hbb, obb, fmt, kind):
    dets = hbb if kind == "hbb" else obb
    out = tmp_path / f"dets.{fmt}"
    with RasterSource(SOLARIS) as src:
        write_detections(out, dets, src, class_names=["a", "b", "c"])
        expected = _expected_map_rings(dets, src)
        crs = src.crs
    frame = gpd.read_file(out)
    assert frame.crs == pyproj.CRS.from_epsg(32616)
    assert frame.crs == pyproj.CRS.from_wkt(crs.to_wkt())
    assert frame["label"].tolist() == dets.labels.tolist()
    np.testing.assert_allclose(frame["score"].to_numpy(), dets.scores, rtol=0, atol=1e-12)
    assert frame["name"].tolist() == (["ship", "plane"] if kind == "hbb" else ["b", "b"])
    assert set(frame["coordinate_space"]) == {"map"}
    for geom, ring in zip(frame.geometry, expected, strict=True):
        assert geom.geom_type == "Polygon" and geom.exterior.is_ccw
        _same_ring(np.asarray(geom.exterior.coords), ring)


def test_geojson_structure_and_legacy_crs(tmp_path, hbb):
    with RasterSource(SOLARIS) as src:
        path = write_geojson(tmp_path / "d.geojson", hbb, src)
        rings, on_map = detection_rings(hbb, src.georef)
    doc = json.loads(path.read_text())
    assert on_map and doc["type"] == "FeatureCollection"
    assert doc["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}
    feat = doc["features"][0]
    assert feat["properties"] == {"label": 2, "name": "ship", "score": 0.9, "coordinate_space": "map"}
    coords = np.array(feat["geometry"]["coordinates"][0])
    np.testing.assert_array_equal(coords, rings[0])
    # pixel (10, 20) -> map (733601 + 5, 3725139 - 10): exact through the affine
    assert [733606.0, 3725129.0] in coords.tolist()
    assert not list(tmp_path.glob(".*.tmp*"))


def test_non_georeferenced_image_writes_pixel_coordinates(tmp_path, rgb_png, hbb):
    with RasterSource(rgb_png[0]) as src:
        doc = detections_to_geojson(hbb, src)
        write_detections(tmp_path / "px.geojson", hbb, src)
        write_detections(tmp_path / "px.gpkg", hbb, src)
    # no Earth CRS is claimed: a GeoJSON without "crs" would be read as WGS 84 lon/lat
    assert doc["crs"]["properties"]["name"] == PIXEL_CRS_WKT
    assert doc["features"][0]["properties"]["coordinate_space"] == "pixel"
    for name in ("px.geojson", "px.gpkg"):
        frame = gpd.read_file(tmp_path / name)
        assert frame.crs.type_name == "Engineering CRS" and frame.crs.name == "image pixels (x right, y down)"
        assert set(frame["coordinate_space"]) == {"pixel"}
        ring = np.array([[10, 20], [30.5, 20], [30.5, 45.25], [10, 45.25]])
        _same_ring(np.asarray(frame.geometry[0].exterior.coords), ring)


def test_no_georef_at_all_and_no_names(tmp_path, obb):
    doc = detections_to_geojson(obb)
    assert doc["features"][1]["properties"]["name"] is None
    frame = gpd.read_file(write_gpkg(tmp_path / "n.gpkg", obb))
    assert frame["name"].isna().all() and len(frame) == 2


def test_custom_crs_without_epsg_is_written_as_wkt(tmp_path, hbb):
    from affine import Affine
    from rasterio.crs import CRS

    crs = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=-86.3 +k=0.9996 +x_0=500000 +y_0=0 +datum=WGS84 +units=m")
    ref = GeoRef(crs, Affine(1, 0, 1000, 0, -1, 5000), 200, 200)
    doc = detections_to_geojson(hbb, ref)
    assert doc["crs"]["properties"]["name"].startswith(("PROJCS", "PROJCRS"))
    for name in ("c.geojson", "c.gpkg"):
        write_detections(tmp_path / name, hbb, ref)
        frame = gpd.read_file(tmp_path / name)
        assert frame.crs.equals(pyproj.CRS.from_wkt(crs.to_wkt()))


def test_empty_detections_and_unknown_format(tmp_path):
    with RasterSource(SOLARIS) as src:
        path = write_geojson(tmp_path / "e.geojson", Detections.empty(), src)
        assert json.loads(path.read_text())["features"] == []
        write_gpkg(tmp_path / "e.gpkg", Detections.empty(), src)
        assert len(gpd.read_file(tmp_path / "e.gpkg")) == 0
        with pytest.raises(InputError, match=r"d\.shp: unknown vector format"):
            write_detections(tmp_path / "d.shp", Detections.empty(), src)


def test_gpkg_without_geo_extra_is_a_clear_error(tmp_path, hbb, monkeypatch):
    monkeypatch.setitem(sys.modules, "geopandas", None)
    with pytest.raises(InputError, match=r"x\.gpkg: .*\[geo\] extra"):
        write_gpkg(tmp_path / "x.gpkg", hbb)
    assert not (tmp_path / "x.gpkg").exists()


def test_failed_write_keeps_the_old_file(tmp_path, hbb, monkeypatch):
    target = tmp_path / "keep.gpkg"
    write_gpkg(target, hbb)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gpkg(target, hbb)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.gpkg"]

"""Overlays (pixels where they should be) and masks as GeoJSON MultiPolygons."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

from rsvl.io.georef import GeoRef
from rsvl.io.overlay import draw_overlay, heat_colours, save_png
from rsvl.io.vector import feature_collection, mask_geometry


def test_overlay_draws_mask_box_and_points():
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:20, 10:20] = True
    pic = np.asarray(draw_overlay(img, mask=mask, boxes=[(30, 5, 50, 25)], points=[(5, 35)]))
    assert pic.shape == (40, 60, 3)
    assert pic[15, 15, 1] > 100 and pic[15, 15, 0] == 0  # green mask fill
    assert tuple(pic[5, 40]) == (255, 40, 40)  # top edge of the box
    assert tuple(pic[15, 40]) == (0, 0, 0)  # box interior untouched
    assert pic[35, 8, 0] == 255 and pic[35, 8, 1] == 255  # yellow point ring
    assert not pic[30, 30].any()


def test_heat_colours_run_from_dark_blue_to_yellow():
    c = heat_colours(np.array([[0.0, 1.0, 2.0]]))
    assert tuple(c[0, 0]) == (0, 0, 127) and tuple(c[0, 1]) == (255, 255, 0) and tuple(c[0, 2]) == (255, 255, 0)


def test_save_png_bool_masks_are_0_255(tmp_path):
    m = np.zeros((3, 4), dtype=bool)
    m[1, 2] = True
    path = save_png(tmp_path / "m.png", m)
    back = np.asarray(Image.open(path))
    assert back.dtype == np.uint8 and back[1, 2] == 255 and back.sum() == 255
    assert not list(tmp_path.glob("*.tmp*"))


def ring_area(ring):
    r = np.asarray(ring)
    return 0.5 * float((r[:-1, 0] * r[1:, 1] - r[1:, 0] * r[:-1, 1]).sum())


def test_mask_geometry_traces_pixel_edges_with_holes_in_pixels():
    m = np.zeros((10, 10), dtype=bool)
    m[2:6, 2:7] = True
    m[3, 4] = False  # a hole
    m[8, 8] = True  # a second part
    geom, on_map = mask_geometry(m)
    assert not on_map and geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    areas = sorted(sum(ring_area(r) for r in poly) for poly in geom["coordinates"])
    assert areas == pytest.approx([1.0, 19.0])  # holes are oriented opposite to exteriors
    for poly in geom["coordinates"]:
        assert ring_area(poly[0]) > 0 and all(ring_area(h) < 0 for h in poly[1:])
    assert mask_geometry(np.zeros((3, 3), dtype=bool))[0] is None


def test_mask_geometry_on_the_map_with_a_pixel_scale():
    ref = GeoRef(CRS.from_epsg(32633), Affine(2.0, 0, 1000.0, 0, -2.0, 5000.0), 20, 20)
    m = np.zeros((5, 5), dtype=bool)
    m[1, 1] = True  # one mask pixel = 2 x 2 image pixels = 4 x 4 m
    geom, on_map = mask_geometry(m, ref, pixel_scale=(2.0, 2.0))
    assert on_map
    ring = np.asarray(geom["coordinates"][0][0])
    assert ring[:, 0].min() == 1004.0 and ring[:, 0].max() == 1008.0
    assert ring[:, 1].max() == 4996.0 and ring[:, 1].min() == 4992.0
    assert ring_area(ring) == pytest.approx(16.0)  # counter-clockwise on the map
    fc = feature_collection([], ref, name="x")
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633" and fc["name"] == "x"
    assert "LOCAL_CS" in feature_collection([])["crs"]["properties"]["name"]

"""RasterSource: windowed reads, metadata, masks, display RGB, bad input, huge-image memory."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from rsvl.data import sample_path
from rsvl.errors import InputError, RasterError
from rsvl.io import DisplayConfig, RasterSource, Window
from rsvl.io.display import DisplayStretch, default_bands

SOLARIS = sample_path("solaris/sample_geotiff.tif")
OSBS = sample_path("deepforest/OSBS_029.tif")


# --------------------------------------------------------------------------- metadata


def test_metadata_of_generated_geotiff(uint16_tif):
    path, _ = uint16_tif
    with RasterSource(path) as src:
        assert (src.width, src.height, src.count) == (200, 150, 5)
        assert src.dtypes == ("uint16",) * 5
        assert src.crs == CRS.from_epsg(32616)
        assert src.transform == Affine(0.5, 0.0, 733600.0, 0.0, -0.5, 3725000.0)
        assert src.nodata == 0
        assert src.is_georeferenced
        assert src.georef.crs_name == "EPSG:32616"
    assert src.closed


def test_real_geotiffs_metadata():
    with RasterSource(SOLARIS) as src:
        assert (src.width, src.height, src.count, src.dtypes) == (900, 900, 1, ("uint16",))
        assert src.crs.to_epsg() == 32616
        assert src.georef.bounds == (733601.0, 3724689.0, 734051.0, 3725139.0)
    with RasterSource(OSBS) as src:
        assert (src.width, src.height, src.count) == (400, 400, 3)
        assert src.crs.to_epsg() == 32617
        assert src.colorinterp == ("red", "green", "blue")


@pytest.mark.filterwarnings("error")
def test_png_and_jpeg_are_not_georeferenced_and_do_not_warn(rgb_png, rgb_jpeg):
    path, arr = rgb_png
    with RasterSource(path) as src:
        assert src.crs is None and src.transform.is_identity and not src.is_georeferenced
        np.testing.assert_array_equal(src.read(src.full_window).transpose(1, 2, 0), arr)
        with pytest.raises(RasterError, match=r"plain\.png: .*no CRS"):
            src.pixel_to_map([[0.0, 0.0]])
        with pytest.raises(RasterError, match=r"plain\.png"):
            src.georef.bounds  # noqa: B018
    with RasterSource(rgb_jpeg) as src:
        assert (src.width, src.height, src.count) == (64, 48, 3)
        assert not src.is_georeferenced
        rgb, valid = src.read_display(Window(0, 0, 64, 48))
        assert rgb.shape == (48, 64, 3) and valid.all()


def test_tif_with_transform_but_no_crs_is_not_georeferenced(make_tif, rng):
    path = make_tif("nocrs.tif", rng.integers(0, 9, (1, 10, 10), dtype=np.uint8), crs=None)
    with RasterSource(path) as src, pytest.raises(RasterError, match=r"nocrs\.tif"):
        src.map_to_pixel([733600.0, 3725000.0])


def test_pixel_map_round_trip_vectorised():
    with RasterSource(SOLARIS) as src:
        polys = np.array([[[0, 0], [900, 0], [900, 900], [0, 900]], [[10.5, 20.25], [11, 20], [12, 30], [10, 31]]])
        on_map = src.pixel_to_map(polys)
        assert on_map.shape == polys.shape
        np.testing.assert_allclose(on_map[0, 0], [733601.0, 3725139.0])
        np.testing.assert_allclose(on_map[0, 2], [734051.0, 3724689.0])
        np.testing.assert_allclose(src.map_to_pixel(on_map), polys, atol=1e-9)


# --------------------------------------------------------------------------- windowed reads


@pytest.mark.parametrize("window", [(0, 0, 200, 150), (7, 3, 64, 50), (150, 100, 50, 50), (199, 149, 1, 1)])
def test_windowed_read_equals_slice(uint16_tif, window):
    path, data = uint16_tif
    c, r, w, h = window
    with RasterSource(path) as src:
        np.testing.assert_array_equal(src.read(window), data[:, r : r + h, c : c + w])
        np.testing.assert_array_equal(src.read(Window(*window), bands=[4, 2]), data[[3, 1], r : r + h, c : c + w])
        np.testing.assert_array_equal(src.read(Window(*window), bands=5), data[[4], r : r + h, c : c + w])


def test_read_accepts_rasterio_window(rgb8_tif):
    from rasterio.windows import Window as RioWindow

    path, data = rgb8_tif
    with RasterSource(path) as src:
        np.testing.assert_array_equal(src.read(RioWindow(5, 6, 20, 10)), data[:, 6:16, 5:25])


def test_boundless_read_pads_with_nodata_and_masks(uint16_tif):
    path, data = uint16_tif
    with RasterSource(path) as src:
        with pytest.raises(RasterError, match=r"multi16\.tif: .*outside"):
            src.read((180, 140, 40, 40))
        out, valid = src.read_valid((180, 140, 40, 40), bands=[1], boundless=True)
        assert out.shape == (1, 40, 40)
        np.testing.assert_array_equal(out[0, :10, :20], data[0, 140:, 180:])
        assert (out[0, 10:] == 0).all() and (out[0, :, 20:] == 0).all()
        assert valid[:10, :20].all() and not valid[10:].any() and not valid[:, 20:].any()
        out, valid = src.read_valid((-10, -10, 20, 20), boundless=True)
        np.testing.assert_array_equal(out[:, 10:, 10:], data[:, :10, :10])
        assert not valid.any()  # top-left corner is nodata, the rest is outside


def test_decimated_read_shape_and_values(rgb8_tif):
    path, data = rgb8_tif
    with RasterSource(path) as src:
        small = src.read((0, 0, 160, 120), out_shape=(30, 40))
        assert small.shape == (3, 30, 40) and small.dtype == np.uint8
        # nearest decimation by exactly 4 samples one pixel of every 4x4 block
        blocks = data[:, :120, :160].reshape(3, 30, 4, 40, 4)
        hit = (small[:, :, None, :, None] == blocks).any(axis=(2, 4))
        assert hit.all()
        ov, valid = src.read_overview(max_size=50)
        assert ov.shape == (3, 38, 50) and valid.all()


def test_nodata_mask_follows_gdal_all_bands_rule(make_tif, rng):
    data = rng.integers(1, 100, (2, 20, 20), dtype=np.uint8)
    data[0, 0, 0] = 0  # one band nodata only: still valid
    data[:, 5, 5] = 0  # all bands nodata: invalid
    path = make_tif("nd.tif", data, nodata=0)
    with RasterSource(path) as src:
        _, valid = src.read_valid(src.full_window)
    expected = np.ones((20, 20), bool)
    expected[5, 5] = False
    np.testing.assert_array_equal(valid, expected)


def test_float_nan_nodata_mask(make_tif):
    data = np.ones((1, 8, 8), np.float32)
    data[0, 2, 3] = np.nan
    path = make_tif("nan.tif", data, nodata=float("nan"))
    with RasterSource(path) as src:
        _, valid = src.read_valid(src.full_window)
        rgb, _ = src.read_display(src.full_window)
    assert not valid[2, 3] and valid.sum() == 63
    assert (rgb[2, 3] == 0).all()


def test_alpha_png_mask(tmp_path):
    from PIL import Image

    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[:, :4, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with RasterSource(tmp_path / "alpha.png") as src:
        rgb, valid = src.read_display(src.full_window)
    assert not valid[:, :4].any() and valid[:, 4:].all()
    assert (rgb[:, :4] == 0).all() and (rgb[:, 4:] == 200).all()


# --------------------------------------------------------------------------- display RGB


def test_display_uint16_percentile_stretch_ignores_nodata(uint16_tif):
    path, data = uint16_tif
    with RasterSource(path) as src:
        stretch = src.display_stretch()
        assert stretch.bands == (1, 2, 3)
        valid = ~(data[:3] == 0).all(0)
        for k in range(3):
            lo, hi = np.percentile(data[k][valid], [2, 98])
            assert stretch.low[k] == pytest.approx(lo) and stretch.high[k] == pytest.approx(hi)
        rgb, mask = src.read_display(src.full_window)
    assert rgb.dtype == np.uint8 and rgb.shape == (150, 200, 3)
    np.testing.assert_array_equal(mask, valid)
    assert (rgb[:20, :30] == 0).all()
    scaled = np.clip((data[0].astype(np.float64) - stretch.low[0]) * 255 / (stretch.high[0] - stretch.low[0]), 0, 255)
    np.testing.assert_allclose(rgb[..., 0][valid], np.rint(scaled)[valid], atol=1)


def test_display_band_choice_and_grey(uint16_tif):
    path, data = uint16_tif
    with RasterSource(path) as src:
        rgb, _ = src.read_display((40, 40, 30, 30), stretch=DisplayConfig(bands=(5, 4, 1)))
        assert src.display_stretch(DisplayConfig(bands=(5, 4, 1))).bands == (5, 4, 1)
        red_from_band5, _ = src.read_display((40, 40, 30, 30), stretch=DisplayConfig(bands=(5,)))
        np.testing.assert_array_equal(rgb[..., 0], red_from_band5[..., 0])
        assert data[4, 40:70, 40:70].std() > 0
        grey, _ = src.read_display((40, 40, 30, 30), stretch=DisplayConfig(bands=(2,)))
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
        with pytest.raises(RasterError, match=r"multi16\.tif: band index 6 out of range"):
            src.display_stretch(DisplayConfig(bands=(6, 1, 2)))
        with pytest.raises(RasterError, match=r"band index 0 out of range"):
            src.read((0, 0, 5, 5), bands=[0])


def test_single_band_real_geotiff_is_grey_rgb():
    with RasterSource(SOLARIS) as src:
        rgb, valid = src.read_display((100, 100, 64, 64))
    assert rgb.shape == (64, 64, 3) and valid.all()
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.std() > 10


def test_uint8_passes_through_unless_asked(rgb8_tif):
    path, data = rgb8_tif
    with RasterSource(path) as src:
        rgb, _ = src.read_display((0, 0, 170, 130))
        np.testing.assert_array_equal(rgb, data.transpose(1, 2, 0))
        stretched, _ = src.read_display((0, 0, 170, 130), stretch=DisplayConfig(stretch_uint8=True))
        assert not np.array_equal(stretched, rgb)


def test_stretch_is_computed_once_and_shared_by_tiles(uint16_tif, monkeypatch):
    path, _ = uint16_tif
    with RasterSource(path) as src:
        calls = []
        original = src.read_overview
        monkeypatch.setattr(src, "read_overview", lambda *a, **k: calls.append(1) or original(*a, **k))
        whole, _ = src.read_display((0, 0, 200, 150))
        left, _ = src.read_display((0, 0, 100, 150))
        right, _ = src.read_display((100, 0, 100, 150))
        assert len(calls) == 1
    np.testing.assert_array_equal(np.concatenate([left, right], axis=1), whole)


def test_grey_uint8_png_passes_through_as_grey(tmp_path, rng):
    from PIL import Image

    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with RasterSource(tmp_path / "grey.png") as src:
        rgb, valid = src.read_display(src.full_window)
    assert valid.all()
    for k in range(3):
        np.testing.assert_array_equal(rgb[..., k], grey)


def test_display_config_from_lists_is_hashable(uint16_tif):
    config = DisplayConfig(bands=[3, 2, 1], percentiles=[1, 99])
    assert config == DisplayConfig(bands=(3, 2, 1), percentiles=(1.0, 99.0))
    with RasterSource(uint16_tif[0]) as src:
        assert src.display_stretch(config) is src.display_stretch(DisplayConfig((3, 2, 1), (1.0, 99.0)))


def test_display_config_rejects_bad_options():
    for kwargs in ({"percentiles": (98.0, 2.0)}, {"bands": (1, 2)}, {"max_size": 0}):
        with pytest.raises(InputError):
            DisplayConfig(**kwargs)


def test_constant_and_all_nodata_bands_do_not_divide_by_zero(make_tif):
    path = make_tif("const.tif", np.full((1, 16, 16), 700, np.uint16))
    with RasterSource(path) as src:
        rgb, valid = src.read_display(src.full_window)
    assert valid.all() and (rgb == 0).all()
    path = make_tif("allnd.tif", np.zeros((1, 16, 16), np.uint16), nodata=0)
    with RasterSource(path) as src:
        rgb, valid = src.read_display(src.full_window)
    assert not valid.any() and (rgb == 0).all()


def test_default_bands_prefers_colour_interpretation():
    assert default_bands(4, ("blue", "green", "red", "undefined")) == (3, 2, 1)
    assert default_bands(5, ()) == (1, 2, 3)
    assert default_bands(2, ("gray", "alpha")) == (1,)
    with pytest.raises(ValueError, match="bands"):
        DisplayStretch((1, 2, 3), (0, 0, 0), (1, 1, 1)).apply(np.zeros((1, 2, 2)))


# --------------------------------------------------------------------------- bad input


def test_bad_files_raise_raster_error_naming_the_file(tmp_path):
    with pytest.raises(RasterError, match=r"missing\.tif: file not found"):
        RasterSource(tmp_path / "missing.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(RasterError, match=r"empty\.tif: file is empty"):
        RasterSource(tmp_path / "empty.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + bytes(200))
    with pytest.raises(RasterError, match=r"junk\.tif: cannot open"):
        RasterSource(tmp_path / "junk.tif")
    with pytest.raises(RasterError, match="directory"):
        RasterSource(tmp_path)
    (tmp_path / "zero.vrt").write_text(
        '<VRTDataset rasterXSize="0" rasterYSize="0"><VRTRasterBand dataType="Byte" band="1"/></VRTDataset>'
    )
    with pytest.raises(RasterError, match=r"zero\.vrt: "):
        RasterSource(tmp_path / "zero.vrt")
    assert issubclass(RasterError, InputError)


def test_truncated_geotiff_fails_on_read_naming_the_file(tmp_path):
    raw = SOLARIS.read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RasterError, match=r"truncated\.tif"), RasterSource(path) as src:
        src.read((0, 800, 900, 100))


def test_closed_source_and_bad_windows(rgb8_tif):
    path, _ = rgb8_tif
    src = RasterSource(path)
    with pytest.raises(RasterError, match="empty window"):
        src.read((0, 0, 0, 5))
    src.close()
    src.close()
    with pytest.raises(RasterError, match=r"rgb8\.tif: raster is closed"):
        src.read((0, 0, 5, 5))


def test_gdal_cache_limit_is_given_in_bytes(rgb8_tif):
    """rasterio passes GDAL_CACHEMAX to GDALSetCacheMax64 as bytes: 256 would mean 256 *bytes*,
    a cache too small to hold one block, which makes decimated reads re-decode every block."""
    import rasterio

    with RasterSource(rgb8_tif[0], gdal_cache_mb=64) as src, src._env():
        assert int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")) == 64 * 2**20


def test_no_notgeoreferenced_warning_escapes(rgb_png):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with RasterSource(rgb_png[0]) as src:
            src.read_display((0, 0, 10, 10))
            assert src.transform == Affine.identity()


# --------------------------------------------------------------------------- huge image, small memory


def test_huge_geotiff_is_never_loaded_whole(huge_sparse_tif):
    """30,000 x 30,000 uint16 = 1.8 GB whole; windows, stats and overviews stay in a few MB."""
    tracemalloc.start()
    try:
        with RasterSource(huge_sparse_tif) as src:
            assert (src.width, src.height) == (30_000, 30_000)
            tile = src.read((15_360, 15_360, 512, 512))
            assert tile.shape == (1, 512, 512) and tile.max() > 0
            stretch = src.display_stretch()
            _, valid = src.read_display((15_000, 15_000, 1024, 1024))
            overview, ov_valid = src.read_overview(1024)
            with pytest.raises(RasterError, match=r"huge\.tif: refusing to read"):
                src.read(src.full_window)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert overview.shape == (1, 1024, 1024)
    assert stretch.high[0] > stretch.low[0] >= 1
    assert valid.sum() == 512 * 512 and ov_valid.any()
    assert peak < 40 * 2**20, f"peak traced allocation {peak / 2**20:.1f} MiB"

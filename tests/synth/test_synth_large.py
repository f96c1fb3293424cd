"""Large scenes: block-by-block GeoTIFF writing, bounded memory, seams, LRS-VQA evidence."""

from __future__ import annotations

import math
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rsvl.io import RasterSource
from rsvl.synth import LargeConfig, plan_large_scene, write_large_geotiff

CONFIG = LargeConfig(width=2048, height=2048, district=512, tile=256)


@pytest.fixture(scope="module")
def large():
    return plan_large_scene(3, 0, CONFIG)


def test_geotiff_blocks_equal_rendered_windows(large, tmp_path):
    calls = []
    path = write_large_geotiff(large, tmp_path / "big.tif", tile=256, on_block=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (64, 64) and len(calls) == 64
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (2048, 2048, 3)
        assert src.block_shapes == [(256, 256)] * 3
        assert src.crs is not None and src.transform.a == pytest.approx(0.5)
        for x0, y0 in ((0, 0), (768, 1280), (1792, 1792)):
            got = np.moveaxis(src.read(window=Window(x0, y0, 256, 256)), 0, 2)
            assert np.array_equal(got, large.render(x0, y0, 256, 256))
    with RasterSource(path) as src:  # the project's own reader opens it
        assert src.shape == (2048, 2048)


def test_blocks_are_seamless(large):
    whole = large.render(512, 512, 512, 512)
    assert np.array_equal(whole[100:400, 200:450], large.render(712, 612, 250, 300))


def test_writing_memory_is_bounded_by_the_block_not_the_image(large, tmp_path):
    large.objects_in(0, 0, 1, 1)  # build the bucket index outside the measurement
    tracemalloc.start()
    try:
        write_large_geotiff(large, tmp_path / "mem.tif", tile=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = 2048 * 2048 * 3
    assert peak < 0.35 * full, f"peak {peak / 1e6:.1f} MB for a {full / 1e6:.1f} MB image"


def test_same_seed_same_file(tmp_path):
    cfg = LargeConfig(width=768, height=768, district=384, tile=256)
    a = write_large_geotiff(plan_large_scene(9, 2, cfg), tmp_path / "a.tif")
    b = write_large_geotiff(plan_large_scene(9, 2, cfg), tmp_path / "b.tif")
    c = write_large_geotiff(plan_large_scene(10, 2, cfg), tmp_path / "c.tif")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_objects_are_labelled_against_the_whole_image(large):
    assert len(large.objects) > 50
    assert len(large.districts) == 16
    for obj in large.objects:
        x0, y0, x1, y1 = obj.label.bbox
        assert 0 <= x0 < x1 <= 2048 and 0 <= y0 < y1 <= 2048
        assert not obj.label.truncated
        assert obj.label.mask["size"] == [2048, 2048]


def test_lrs_questions_point_at_their_evidence():
    kinds = Counter()
    for index in range(3):
        sc = plan_large_scene(5, index, CONFIG)
        assert sc.qas, "every large image gets at least one question"
        for qa in sc.qas:
            kinds[qa.type] += 1
            x0, y0, x1, y1 = qa.attrs["evidence_bbox"]
            assert 0 <= x0 < x1 <= sc.width and 0 <= y0 < y1 <= sc.height
            assert (x1 - x0) * (y1 - y0) < 0.05 * sc.width * sc.height  # a small region answers it
            cls = qa.attrs["object"]
            if qa.type in ("color", "position"):
                only = [o for o in sc.objects if o.category == cls]
                assert len(only) == 1
                assert list(only[0].label.bbox) == qa.attrs["evidence_bbox"]
                assert qa.answer == (only[0].color if qa.type == "color" else only[0].label.position)
            elif qa.type == "count":
                feat = next(f for f in sc.features if list(f.bbox) == qa.attrs["evidence_bbox"])
                inside = [o for o in sc.objects if o.category == cls and feat.contains(o.cx, o.cy)]
                assert qa.answer == str(len(inside)) and inside
                for o in inside:  # the counted objects are inside the evidence box
                    assert x0 - 1 <= o.cx <= x1 + 1 and y0 - 1 <= o.cy <= y1 + 1
    assert kinds["color"] >= 1 and kinds["count"] >= 1


def test_config_validation():
    with pytest.raises(ValueError):
        LargeConfig(width=32, height=32)
    with pytest.raises(ValueError):
        LargeConfig(tile=100)


@pytest.mark.slow
def test_8192_image_streams_to_geotiff_with_bounded_memory(tmp_path):
    cfg = LargeConfig(width=8192, height=8192)
    sc = plan_large_scene(0, 0, cfg)
    sc.objects_in(0, 0, 1, 1)
    tracemalloc.start()
    try:
        path = write_large_geotiff(sc, tmp_path / "huge.tif")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = 8192 * 8192 * 3
    assert peak < 0.15 * full, f"peak {peak / 1e6:.1f} MB"
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (8192, 8192)
        assert src.block_shapes[0] == (512, 512)
        got = np.moveaxis(src.read(window=Window(4096, 4096, 512, 512)), 0, 2)
        assert np.array_equal(got, sc.render(4096, 4096, 512, 512))
    assert math.isclose(len(sc.districts), 64)


def test_a_scene_holding_every_plantable_class_still_gets_a_singleton(monkeypatch):
    import rsvl.synth.large as large
    from rsvl.synth.objects import CLASSES
    from rsvl.synth.palette import Ground
    from rsvl.synth.rng import rng_for

    scene = plan_large_scene(5, 0, CONFIG)
    counted = {cls for cls, _ in large._FEATURE_COUNTS.values()}
    counts = Counter(o.category for o in scene.objects)
    several = sorted(c for c, n in counts.items() if n >= 2 and c not in counted and len(CLASSES[c].colors) > 1)
    assert len(several) >= 2
    # every plantable class is present, none of them once: the case of 8,192 px scenes
    monkeypatch.setattr(large, "_PLANTABLE", {c: ("patch", Ground.PAVEMENT) for c in several})
    monkeypatch.setattr(large, "_SINGLETONS", tuple(several))
    large._plant_singleton(scene, rng_for(1, "singleton"))
    after = Counter(o.category for o in scene.objects)
    rarest = min(several, key=lambda c: (counts[c], c))
    assert after[rarest] == 1  # cleared, then planted once
    assert all(after[c] == counts[c] for c in counts if c != rarest)  # nothing else touched
    assert any(f.kind == "patch" for f in scene.features)

"""RSVG-ZeroOV pipeline and file/dataset grounding with planted attention sources (no big models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from rsvl.attention import CrossAttention, SelfAttention
from rsvl.errors import DatasetError, InputError
from rsvl.methods.zeroov.config import FocusConfig, ZeroOVConfig
from rsvl.methods.zeroov.infer import ground_dataset, ground_file, read_image
from rsvl.methods.zeroov.pipeline import ZeroOVGrounder
from rsvl.metrics.grounding import evaluate_grounding, load_grounding_json


class PointOverview:
    """Cross-attention: a Gaussian bump at a known pixel (per expression), on a 16 x 16 grid."""

    name = "planted"
    real_weights = False

    def __init__(self, points: dict[str, tuple[float, float]], sigma: float = 0.6):
        self.points, self.sigma = points, sigma

    def cross_attention(self, image: np.ndarray, expression: str) -> CrossAttention:
        h, w = image.shape[:2]
        x, y = self.points[expression]
        gy, gx = np.mgrid[0:16, 0:16]
        cy, cx = y / h * 16 - 0.5, x / w * 16 - 0.5
        bump = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * self.sigma**2))
        return CrossAttention(bump.astype(np.float32), "planted bump", False)


class BlockFocus:
    """Self-attention where every cell attends uniformly to the cells of its own block label."""

    name = "blocks"
    real_weights = False

    def __init__(self, labels: np.ndarray):
        flat = labels.reshape(-1)
        m = (flat[:, None] == flat[None, :]).astype(np.float32)
        self.attn = SelfAttention(m / m.sum(axis=1, keepdims=True), labels.shape, "blocks", False)

    def self_attention(self, image: np.ndarray) -> SelfAttention:
        return self.attn


def scene(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((h, w, 3), 40, dtype=np.uint8)
    truth = np.zeros((h, w), dtype=bool)
    truth[24:72, 32:80] = True
    img[truth] = (220, 220, 220)
    return img, truth


def no_focus() -> ZeroOVConfig:
    cfg = ZeroOVConfig()
    cfg.focus.provider = "none"
    return cfg


def test_focus_fills_the_object_the_overview_only_touched():
    img, truth = scene()
    labels = np.zeros((12, 16), dtype=int)
    labels[3:9, 4:10] = 1  # the object's cells on a 12 x 16 grid (8 px cells)
    overview = PointOverview({"the square": (34.0, 26.0)})  # a corner of the object
    with_focus = ZeroOVGrounder(ZeroOVConfig(), overview=overview, focus=BlockFocus(labels)).ground(img, "the square")
    iou = (with_focus.mask & truth).sum() / (with_focus.mask | truth).sum()
    assert iou > 0.9 and with_focus.fallback is None
    assert with_focus.providers["focus"] == {"name": "blocks", "real_weights": False, "source": "blocks"}
    without = ZeroOVGrounder(no_focus(), overview=overview).ground(img, "the square")
    assert (without.mask & truth).sum() < 0.5 * truth.sum()  # the bump alone covers a corner
    assert set(with_focus.seconds) == {"overview", "focus", "evolve"}


def test_fallbacks_are_recorded():
    img, _ = scene()
    labels = np.zeros((12, 16), dtype=int)
    labels[10:, 13:] = 1
    # every cell attends to the bottom-right block only, so the seeds' own cells stay dark
    m = np.zeros((192, 192), dtype=np.float32)
    m[:, (labels.reshape(-1) == 1)] = 1.0
    focus = BlockFocus(labels)
    focus.attn = SelfAttention(m / m.sum(axis=1, keepdims=True), (12, 16))
    res = ZeroOVGrounder(ZeroOVConfig(), overview=PointOverview({"x": (20.0, 20.0)}), focus=focus).ground(img, "x")
    assert res.fallback == "fused_peak" and res.mask[90, 120] and not res.mask[20, 20]

    class Flat(PointOverview):
        def cross_attention(self, image, expression):
            return CrossAttention(np.zeros((4, 4), dtype=np.float32))

    flat = ZeroOVGrounder(no_focus(), overview=Flat({})).ground(img, "x")
    assert flat.fallback == "whole_image" and flat.box == (0.0, 0.0, 128.0, 96.0) and flat.score == 0.0
    assert not flat.mask.any()


def test_without_evolve_the_fused_map_is_binarised_directly():
    img, _ = scene()
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview({"x": (50.0, 50.0)}), evolve_stage=False)
    res = grounder.ground(img, "x")
    np.testing.assert_array_equal(res.mask, res.fused > 0.4)
    assert grounder.describe()["evolve"] is None and grounder.describe()["fusion"] is None


def test_bad_inputs():
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview({"x": (1.0, 1.0)}))
    with pytest.raises(InputError, match="empty"):
        grounder.ground(scene()[0], "   ")
    with pytest.raises(InputError, match="uint8"):
        grounder.ground(np.zeros((8, 8, 3), dtype=np.float32), "x")
    with pytest.raises(InputError, match="empty"):
        grounder.ground(np.zeros((0, 8, 3), dtype=np.uint8), "x")
    with pytest.raises(InputError, match="unknown focus provider"):
        ZeroOVGrounder(ZeroOVConfig(focus=FocusConfig(provider="nope")), overview=PointOverview({}))


def test_lite0_affinity_provider_from_the_registry_is_real_and_row_stochastic():
    from rsvl.methods.zeroov.providers import FOCUS_PROVIDERS

    cfg = FocusConfig(provider="lite0_affinity", image_size=128, resolutions=[8, 16])
    provider = FOCUS_PROVIDERS.get("lite0_affinity")(cfg)
    img, _ = scene()
    attn = provider.self_attention(img)
    assert attn.grid == (16, 16) and attn.real_weights
    np.testing.assert_allclose(attn.matrix.sum(axis=1), 1.0, rtol=1e-4)
    # a query inside the bright square attends more to the square than a background query does
    inside = np.zeros((16, 16), dtype=bool)
    inside[5:11, 5:11] = True  # the square's cells after stretching 128 x 96 -> 128 x 128
    m = attn.matrix
    q_in, q_out = 8 * 16 + 8, 1 * 16 + 14
    assert m[q_in, inside.reshape(-1)].sum() > m[q_out, inside.reshape(-1)].sum()
    with pytest.raises(InputError, match="offers grid sides"):
        FOCUS_PROVIDERS.get("lite0_affinity")(FocusConfig(provider="lite0_affinity", image_size=128, resolutions=[5]))


def write_geotiff(path, img):
    transform = Affine(0.5, 0, 500000.0, 0, -0.5, 4100000.0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=img.shape[1],
        height=img.shape[0],
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=transform,
    ) as dst:
        dst.write(img.transpose(2, 0, 1))
    return transform


def test_ground_file_writes_mask_overlay_json_and_geojson(tmp_path):
    img, truth = scene()
    transform = write_geotiff(tmp_path / "scene.tif", img)
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview({"the square": (56.0, 48.0)}, sigma=2.0))
    record = ground_file(grounder, tmp_path / "scene.tif", "the square", tmp_path / "out")
    out = tmp_path / "out"
    mask = np.asarray(Image.open(out / "scene.mask.png")) > 0
    assert mask.shape == truth.shape and mask.any()
    assert Image.open(out / "scene.overlay.png").size == (128, 96)
    saved = json.loads((out / "scene.json").read_text())
    assert saved["box_xyxy"] == record["box_xyxy"] and saved["crs"] == "EPSG:32633"
    x1, y1, x2, y2 = saved["box_xyxy"]
    (left, top), (right, bottom) = transform @ (x1, y1), transform @ (x2, y2)  # north-up: y falls downwards
    assert saved["box_map"] == pytest.approx([left, bottom, right, top])
    gj = json.loads((out / "scene.geojson").read_text())
    assert gj["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    kinds = [f["properties"]["kind"] for f in gj["features"]]
    assert kinds == ["mask", "box"]
    ring = np.asarray(gj["features"][1]["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(transform.c + 0.5 * x1)
    # the mask polygon covers exactly the mask's pixel count in map units (0.25 m^2 per pixel)
    from shapely.geometry import shape

    assert shape(gj["features"][0]["geometry"]).area == pytest.approx(mask.sum() * 0.25)


def test_large_images_are_grounded_decimated_and_boxes_mapped_back(tmp_path):
    img, _ = scene(192, 256)
    Image.fromarray(img).save(tmp_path / "big.png")
    read = read_image(tmp_path / "big.png", max_side=64)
    assert read.image.shape == (48, 64, 3) and read.scale == (4.0, 4.0)
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview({"x": (30.0, 24.0)}, sigma=2.0))
    record = ground_file(grounder, tmp_path / "big.png", "x", tmp_path / "o", max_side=64)
    res = grounder.ground(read.image, "x")
    assert record["box_xyxy"] == pytest.approx([v * 4 for v in res.box])
    expected = [[(c + 0.5) * 4, (r + 0.5) * 4] for r, c in res.seeds]
    assert np.allclose(record["seeds_xy"], expected) and len(expected) > 0
    assert not (tmp_path / "o" / "big.geojson").exists() and "crs" not in record
    with pytest.raises(InputError):
        read_image(tmp_path / "missing.png")


@pytest.fixture(scope="module")
def synth_refs(tmp_path_factory):
    from rsvl.datasets import get_format
    from rsvl.synth import generate_dataset

    root = tmp_path_factory.mktemp("rr")
    generate_dataset("rrsisd", root, 3, seed=2, size=96, progress=False)
    samples = list(get_format("rrsisd").open(root))
    points = {}
    for s in samples:
        for r in s.refs:
            x1, y1, x2, y2 = s.instances[r.target].bbox
            for sentence in r.sentences:
                points[sentence] = ((x1 + x2) / 2, (y1 + y2) / 2)
    return root, points, sum(len(s.refs) for s in samples)


def test_ground_dataset_scores_and_resumes(tmp_path, synth_refs):
    root, points, n = synth_refs
    assert n >= 3
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview(points, sigma=0.5))
    out = tmp_path / "run"
    first = ground_dataset(grounder, "rrsisd", root, out, limit=2, progress=False)
    assert first["n"] == 2 and first["new"] == 2
    full = ground_dataset(grounder, "rrsisd", root, out, progress=False)
    assert full["n"] == n and full["new"] == n - 2
    assert full["box"]["protocol"]["comparison"] == "IoU > t"
    assert full["mask"] is not None and 0 < full["mask"]["metrics"]["mIoU"] <= 1
    # what `rsvl eval` would read gives the same numbers
    from rsvl.datasets import get_format
    from rsvl.metrics.grounding import grounding_from_samples

    gt = grounding_from_samples(list(get_format("rrsisd").open(root)), "box")
    again = evaluate_grounding(gt, load_grounding_json(out / "boxes.json"), preset="zeroov")
    assert again.metrics == pytest.approx(full["box"]["metrics"])
    # a torn last line (killed mid-write) is dropped and redone; nothing else is recomputed
    jsonl = out / "predictions.jsonl"
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    redo = ground_dataset(grounder, "rrsisd", root, out, progress=False)
    assert redo["new"] == 1 and len(jsonl.read_text().splitlines()) == n
    # a corrupt line in the middle is an error naming the file and line
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(DatasetError, match=r"predictions.jsonl:2"):
        ground_dataset(grounder, "rrsisd", root, out, progress=False)
    # --no-resume starts over
    assert ground_dataset(grounder, "rrsisd", root, out, resume=False, limit=1, progress=False)["new"] == 1
    assert not (out / "eval.json").exists() or json.loads((out / "eval.json").read_text())["n"] == 1


def test_resume_refuses_predictions_of_other_settings_items_or_expressions(tmp_path, synth_refs):
    root, points, _ = synth_refs
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview(points, sigma=0.5))
    out = tmp_path / "run"
    ground_dataset(grounder, "rrsisd", root, out, limit=2, progress=False)
    other = no_focus()
    other.evolve.tau = 0.9
    changed = ZeroOVGrounder(other, overview=PointOverview(points, sigma=0.5))
    with pytest.raises(InputError, match=r"made with other.*settings"):
        ground_dataset(changed, "rrsisd", root, out, progress=False)
    with pytest.raises(InputError, match="other all_sentences"):
        ground_dataset(grounder, "rrsisd", root, out, all_sentences=True, progress=False)
    with pytest.raises(InputError, match="other max_side"):
        ground_dataset(grounder, "rrsisd", root, out, max_side=64, progress=False)
    jsonl = out / "predictions.jsonl"
    good = jsonl.read_text()
    records = [json.loads(line) for line in good.splitlines()]
    records[0]["expression"] = "something else"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match="another expression"):
        ground_dataset(grounder, "rrsisd", root, out, progress=False)
    records[0]["id"] = "no-such-ref"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match="not items of this run"):
        ground_dataset(grounder, "rrsisd", root, out, progress=False)
    (out / "run.json").unlink()
    with pytest.raises(InputError, match="unknown settings"):
        ground_dataset(grounder, "rrsisd", root, out, progress=False)
    assert ground_dataset(changed, "rrsisd", root, out, resume=False, progress=False)["new"] > 2


def test_dataset_image_of_another_size_than_its_annotation_is_refused(tmp_path, synth_refs):
    import shutil

    from rsvl.datasets import get_format

    root, points, _ = synth_refs
    copy = tmp_path / "rr"
    shutil.copytree(root, copy)
    first = next(s for s in get_format("rrsisd").open(copy) if s.refs)
    Image.open(first.image_path).resize((40, 40)).save(first.image_path)
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview(points, sigma=0.5))
    with pytest.raises(DatasetError, match=r"40 x 40 but its annotation says") as err:
        ground_dataset(grounder, "rrsisd", copy, tmp_path / "o", progress=False)
    assert Path(first.image_path).name in str(err.value)


def test_nodata_pixels_stay_out_of_the_mask_and_all_nodata_is_refused(tmp_path):
    img, _ = scene()
    profile = dict(driver="GTiff", width=128, height=96, count=3, dtype="uint8", nodata=0, crs="EPSG:32633")
    profile["transform"] = Affine(0.5, 0, 500000.0, 0, -0.5, 4100000.0)
    img[:, 56:64] = 0  # a nodata stripe through the object
    with rasterio.open(tmp_path / "nd.tif", "w", **profile) as dst:
        dst.write(img.transpose(2, 0, 1))
    read = read_image(tmp_path / "nd.tif")
    assert read.valid is not None and not read.valid[:, 56:64].any()
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview({"x": (56.0, 48.0)}, sigma=3.0))
    record = ground_file(grounder, tmp_path / "nd.tif", "x", tmp_path / "o")
    mask = np.asarray(Image.open(tmp_path / "o" / "nd.mask.png")) > 0
    assert record["mask_pixels"] > 0 and not mask[:, 56:64].any()
    with rasterio.open(tmp_path / "empty.tif", "w", **profile) as dst:
        dst.write(np.zeros((3, 96, 128), dtype=np.uint8))
    with pytest.raises(InputError, match="no valid pixel") as err:
        read_image(tmp_path / "empty.tif")
    assert "empty.tif" in str(err.value)


def test_singular_geotransform_is_refused(tmp_path):
    img, _ = scene()
    with rasterio.open(
        tmp_path / "flat.tif", "w", driver="GTiff", width=128, height=96, count=3, dtype="uint8",
        crs="EPSG:32633", transform=Affine(0, 0, 500000.0, 0, 0, 4100000.0),
    ) as dst:  # fmt: skip
        dst.write(img.transpose(2, 0, 1))
    with pytest.raises(InputError, match="singular") as err:
        read_image(tmp_path / "flat.tif")
    assert "flat.tif" in str(err.value)


def test_all_sentences_are_separate_items(tmp_path, synth_refs):
    root, points, n = synth_refs
    grounder = ZeroOVGrounder(no_focus(), overview=PointOverview(points, sigma=0.5))
    res = ground_dataset(grounder, "rrsisd", root, tmp_path / "all", all_sentences=True, progress=False)
    assert res["n"] > n
    ids = json.loads((tmp_path / "all" / "boxes.json").read_text())
    assert all("/s" in k for k in ids)


def test_focus_map_is_computed_once_per_image():
    img, _ = scene()
    labels = np.zeros((12, 16), dtype=int)
    focus = BlockFocus(labels)
    calls = []
    inner = focus.self_attention
    focus.self_attention = lambda image: calls.append(1) or inner(image)
    grounder = ZeroOVGrounder(ZeroOVConfig(), overview=PointOverview({"a": (5.0, 5.0), "b": (50.0, 50.0)}), focus=focus)
    grounder.ground(img, "a")
    grounder.ground(img.copy(), "b")
    assert len(calls) == 1
    other = img.copy()
    other[0, 0] = 0
    grounder.ground(other, "a")
    assert len(calls) == 2

"""VLM4RSDet recipe, data, detector, training loop, resume and `rsvl detect` (baseline: no VLM branch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.datasets import Instance, Sample
from rsvl.datasets.training import DetectionTrainSet, ImageTargets, _crop_boxes, _flip, sample_targets
from rsvl.errors import InputError
from rsvl.geometry.boxes import obb_to_poly
from rsvl.methods.vlm4rsdet.config import DataConfig, DetectorConfig, VLM4RSDetConfig, load_recipe
from rsvl.methods.vlm4rsdet.detector import build_detector
from rsvl.methods.vlm4rsdet.train import train
from rsvl.synth import generate_dataset

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "rsvl" / "data" / "samples"


@pytest.fixture(scope="module")
def synth_aitod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aitod")
    generate_dataset("aitod", root, n=3, seed=0, size=128, progress=False)
    return root


def _recipe(root: Path, **optim: int) -> VLM4RSDetConfig:
    steps = {"steps": 4, "batch_size": 1, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 1, **optim}
    return VLM4RSDetConfig.model_validate(
        {
            "data": {"format": "aitod", "root": str(root), "crop_size": 96},
            "detector": {"backbone_weights": False, "detections_per_img": 20},
            "vlm": {"enabled": False},
            "optim": steps,
        }
    )


def test_recipe_rejects_unknown_keys_and_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {format: voc, root: x}\noptim: {stepz: 3}\n")
    with pytest.raises(InputError) as err:
        load_recipe(bad)
    assert "optim.stepz" in str(err.value) and "bad.yaml" in str(err.value)


def test_recipe_paths_resolve_next_to_the_file_and_overrides_apply() -> None:
    cfg = load_recipe(Path("configs/vlm4rsdet/trees.yaml"), ["optim.steps=7", "vlm.enabled=false"])
    assert Path(cfg.data.root).is_file() and Path(cfg.data.root).is_absolute()
    assert cfg.optim.steps == 7 and cfg.vlm.enabled is False
    assert cfg.vlm.alpha == 0.05 and cfg.vlm.grid == 32 and cfg.vlm.visual_dim == 1024


def test_obb_recipe_defaults_to_rotated_nms_threshold() -> None:
    cfg = VLM4RSDetConfig.model_validate({"data": {"format": "dota", "root": "x"}, "detector": {"box_type": "obb"}})
    assert cfg.detector.nms_thresh == 0.1 and cfg.preset == "dota"
    kept = VLM4RSDetConfig.model_validate(
        {"data": {"format": "dota", "root": "x"}, "detector": {"box_type": "obb", "nms_thresh": 0.7}}
    )
    assert kept.detector.nms_thresh == 0.7


def test_targets_from_polygons_bboxes_and_unknown_category() -> None:
    poly = tuple(obb_to_poly(np.array([[50.0, 40.0, 20.0, 10.0, 0.3]]))[0].tolist())
    sample = Sample(
        "a.png",
        instances=[
            Instance("ship", polygon=poly),
            Instance("car", bbox=(1, 2, 11, 12)),
            Instance("car", bbox=(0, 0, 5, 5), ignore=True),
        ],
    )
    obb = sample_targets(sample, "obb", ["car", "ship"])
    np.testing.assert_allclose(obb.boxes[0], [50, 40, 20, 10, 0.3], atol=1e-6)
    np.testing.assert_allclose(obb.boxes[1], [6, 7, 10, 10, 0], atol=1e-9)
    assert obb.labels.tolist() == [1, 0]
    hbb = sample_targets(sample, "hbb", ["car", "ship"])
    assert hbb.boxes.shape == (2, 4) and hbb.labels.tolist() == [1, 0]
    with pytest.raises(InputError, match=r"'ship'.*not among"):
        sample_targets(sample, "hbb", ["car"])


def test_crop_keeps_visible_boxes_and_clips_them() -> None:
    tgt = ImageTargets(np.array([[10.0, 10, 30, 30], [90, 90, 110, 110], [95, 10, 140, 20]]), np.array([0, 1, 2]))
    boxes, labels = _crop_boxes(tgt, 0, 0, 100, 100, 0.5)
    # box 1 is 25% inside (dropped), box 2 is 5/45 inside (dropped)
    assert labels.tolist() == [0]
    np.testing.assert_array_equal(boxes, [[10, 10, 30, 30]])
    boxes, labels = _crop_boxes(tgt, 80, 80, 100, 100, 0.2)
    assert labels.tolist() == [1]
    np.testing.assert_array_equal(boxes, [[10, 10, 30, 30]])


def test_flips_are_mirror_images_for_hbb_and_obb() -> None:
    hbb = np.array([[10.0, 20, 30, 50]])
    np.testing.assert_array_equal(_flip(hbb, 100, axis=0), [[70, 20, 90, 50]])
    np.testing.assert_array_equal(_flip(hbb, 80, axis=1), [[10, 30, 30, 60]])
    obb = np.array([[20.0, 30, 40, 10, 0.4]])
    flipped = _flip(obb, 100, axis=0)
    np.testing.assert_allclose(flipped, [[80, 30, 40, 10, -0.4]])
    # the mirrored polygon is the original polygon mirrored (as a set of vertices)
    a = obb_to_poly(obb)[0].reshape(4, 2)
    b = obb_to_poly(flipped)[0].reshape(4, 2)
    a[:, 0] = 100 - a[:, 0]
    assert sorted(map(tuple, np.round(a, 6))) == sorted(map(tuple, np.round(b, 6)))


def test_batches_are_a_function_of_seed_and_step(synth_aitod: Path) -> None:
    data = DetectionTrainSet(DataConfig(format="aitod", root=str(synth_aitod), crop_size=64), "hbb")
    a_img, a_tgt = data.batch(5, 2, seed=3)
    b_img, b_tgt = data.batch(5, 2, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a_img, b_img, strict=True))
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a_tgt, b_tgt, strict=True))
    assert a_img[0].shape == (3, 64, 64) and float(a_img[0].min()) >= 0 and float(a_img[0].max()) <= 1
    # every image appears once per epoch
    seen = [data.indices(s, 1, seed=3)[0] for s in range(len(data))]
    assert sorted(seen) == list(range(len(data)))


def test_hbb_detector_keeps_native_size() -> None:
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(backbone_weights=False, score_thresh=0.0), 3).eval()
    image = torch.rand(3, 100, 70)
    with torch.no_grad():
        out = model([image])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) > 0
    assert float(out["boxes"][:, 2].max()) <= 70 and float(out["boxes"][:, 3].max()) <= 100
    with torch.no_grad():
        features = model.backbone(model.transform([image])[0].tensors)
    assert list(features) == ["p3", "p4", "p5", "p6", "p7"]
    assert features["p3"].shape[-2:] == (16, 12)  # padded to 128 x 96 (multiple of 32), stride 8: not resized


def test_train_resume_equals_uninterrupted_run(tmp_path: Path, synth_aitod: Path) -> None:
    cfg = _recipe(synth_aitod)
    full = train(cfg, tmp_path / "full", progress=False, evaluate=False)

    def stop_after_two(step: int, _losses: dict[str, float]) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, evaluate=False, on_step=stop_after_two)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"] == 2
    resumed = train(cfg, tmp_path / "cut", progress=False, evaluate=False)
    a = torch.load(full.detector_path, weights_only=True)["state_dict"]
    b = torch.load(resumed.detector_path, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    assert all(np.isfinite(h["loss"]) for h in resumed.history)


def test_resume_refuses_a_different_recipe(tmp_path: Path, synth_aitod: Path) -> None:
    train(_recipe(synth_aitod, steps=1), tmp_path, progress=False, evaluate=False)
    with pytest.raises(InputError, match="different recipe"):
        train(_recipe(synth_aitod, steps=2), tmp_path, progress=False, evaluate=False)


def test_cli_train_then_detect_writes_coco_dota_geojson(tmp_path: Path, synth_aitod: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"data: {{format: aitod, root: {synth_aitod}, val_root: {synth_aitod}, crop_size: 96}}\n"
        "detector: {backbone_weights: false, score_thresh: 0.0, detections_per_img: 10}\n"
        "optim: {steps: 1, batch_size: 1, warmup_steps: 0}\n"
    )
    runner = CliRunner()
    res = runner.invoke(
        app, ["-q", "train", "vlm4rsdet", "-c", str(recipe), "-o", str(tmp_path / "run"), "--no-collab"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["preset"] == "coco" and "AP" in report["metrics"]
    tif = SAMPLES / "solaris" / "sample_geotiff.tif"
    out = tmp_path / "det"
    res = runner.invoke(
        app, ["-q", "detect", str(tif), "-m", str(tmp_path / "run" / "detector.pt"), "-o", str(out), "--tile", "256"]
    )
    assert res.exit_code == 0, res.output
    geo = json.loads((out / "sample_geotiff.geojson").read_text())
    assert "32616" in json.dumps(geo.get("crs", {})) and len(geo["features"]) > 0
    coco = json.loads((out / "detections.coco.json").read_text())
    assert {d["image_id"] for d in coco} == {1} and all(len(d["bbox"]) == 4 for d in coco)
    assert sorted(p.name for p in (out / "dota").iterdir())[0].startswith("Task2_")
    # results keyed by the ground truth's own image ids score directly with `rsvl eval`
    pngs = sorted(str(p) for p in (synth_aitod / "images").glob("*.png"))
    gt = synth_aitod / "annotations.json"
    model = str(tmp_path / "run" / "detector.pt")
    res = runner.invoke(app, ["-q", "detect", *pngs, "-m", model, "-o", str(tmp_path / "d2"), "--coco-gt", str(gt)])
    assert res.exit_code == 0, res.output
    ids = {im["id"] for im in json.loads(gt.read_text())["images"]}
    assert {d["image_id"] for d in json.loads((tmp_path / "d2" / "detections.coco.json").read_text())} <= ids
    res = runner.invoke(
        app,
        [
            "eval",
            "--task",
            "det",
            "--preset",
            "aitod",
            "--gt",
            str(gt),
            "--pred",
            str(tmp_path / "d2" / "detections.coco.json"),
        ],
    )
    assert res.exit_code == 0, res.output


def test_cli_detect_and_train_fail_cleanly(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["detect", str(tmp_path / "x.tif"), "-m", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "nope.pt" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {format: aitod, root: x}\ndetector: {box_type: circle}\n")
    res = runner.invoke(app, ["train", "vlm4rsdet", "-c", str(bad)])
    assert res.exit_code == 2 and "detector.box_type" in res.output


@pytest.mark.parametrize(("fmt", "box_type"), [("dota", "obb"), ("voc", "hbb"), ("visdrone", "hbb"), ("coco", "hbb")])
def test_trains_on_each_detection_format(tmp_path: Path, fmt: str, box_type: str) -> None:
    root = tmp_path / fmt
    generate_dataset(fmt, root, n=1, seed=2, size=96, progress=False)
    cfg = VLM4RSDetConfig.model_validate(
        {
            "data": {"format": fmt, "root": str(root), "val_root": str(root), "crop_size": 64},
            "detector": {
                "box_type": box_type,
                "backbone_weights": False,
                "topk_candidates": 50,
                "detections_per_img": 20,
            },
            "vlm": {"enabled": True, "grid": 2, "visual_dim": 8, "tiny": {"d_model": 16, "heads": 2, "ffn": 32}},
            "optim": {"steps": 1, "batch_size": 1, "warmup_steps": 0},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert np.isfinite(result.history[-1]["loss"]) and "llm" in result.history[-1]
    assert result.report is not None and result.report.preset == ("dota" if box_type == "obb" else "coco")

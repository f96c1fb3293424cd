"""Answering files and benchmarks: ``rsvl vqa IMAGE "question"`` and ``rsvl vqa --dataset lrsvqa``.

One image: the answer and what was looked at go to ``<stem>.<question>.vqa.json``; with
``show_tiles`` a picture ``<stem>.<question>.tiles.png`` draws, over a decimated view of the whole
image, the tiles encoded at each pyramid level (the last level in red, coarser ones orange, yellow,
green, cyan, blue going up). ``<question>`` (:func:`question_slug`) keeps the answers to several
questions about one image side by side; asking the same question again replaces its files.

A benchmark: questions are answered in dataset order and appended to ``predictions.jsonl`` in the
authors' answer layout (``question_id``, ``prompt``, ``category``, ``text`` = the answer,
``ground_truth``), so their scorer and ``rsvl eval --task vqa --preset lrsvqa`` read it; ``run.json``
makes an interrupted run resume only with the same settings; ``eval.json`` holds the scores.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rsvl.errors import InputError
from rsvl.io.overlay import save_png
from rsvl.io.raster import RasterSource
from rsvl.methods.lrsvqa.pipeline import LargeImageVQA, Mode, VQAAnswer
from rsvl.utils.atomic import write_json
from rsvl.utils.progress import progress_bar
from rsvl.utils.resume import RUN_FILE, append_record, check_run, read_done

__all__ = ["answer_dataset", "answer_file", "evidence_reached", "question_slug", "tiles_picture"]

LEVEL_COLOURS = [(255, 40, 40), (255, 160, 0), (255, 230, 0), (120, 220, 60), (0, 200, 255), (60, 90, 255)]


def tiles_picture(source: RasterSource, answer: VQAAnswer, max_side: int = 1024) -> Image.Image:
    """The whole image (decimated to ``max_side``) with every level's encoded tiles outlined."""
    image, _ = source.read_display(source.full_window, out_shape=source.overview_shape(max_side), resampling="average")
    picture = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(picture)
    sx, sy = picture.width / source.width, picture.height / source.height
    levels = answer.levels
    for rank, level in enumerate(levels):
        colour = LEVEL_COLOURS[min(len(levels) - 1 - rank, len(LEVEL_COLOURS) - 1)]
        width = 3 if rank == len(levels) - 1 else 1
        for x0, y0, x1, y1 in level["tiles"]:
            box = [x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)]
            draw.rectangle(box, outline=colour, width=width)
    return picture


def question_slug(question: str, words: int = 5) -> str:
    """A file-name part for ``question``: its first words and a short hash of the whole of it.

    ``"What is the color of the ship?"`` -> ``"what-is-the-color-of-1f0c2a"``: readable, safe on
    every file system, and distinct for distinct questions.
    """
    head = "-".join(re.findall(r"[a-z0-9]+", question.lower())[:words])
    digest = hashlib.sha1(question.strip().encode("utf-8")).hexdigest()[:6]
    return f"{head}-{digest}" if head else digest


def evidence_reached(levels: list[dict[str, Any]], evidence: list[float]) -> bool:
    """Whether the finest level the pyramid visited encoded a tile that meets the evidence box.

    ``levels`` is an answer's record (``tiles`` in native pixels ``xyxy``); the LLM can only read
    the evidence at that level's resolution if one of its tiles covers part of it.
    """
    if not levels:
        return False
    x0, y0, x1, y1 = evidence
    return any(a < x1 and c > x0 and b < y1 and d > y0 for a, b, c, d in levels[-1]["tiles"])


def answer_file(
    vqa: LargeImageVQA,
    path: str | os.PathLike[str],
    question: str,
    out_dir: str | os.PathLike[str],
    *,
    mode: Mode = "pyramid",
    show_tiles: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer one question about the image at ``path``; write ``<stem>.<question>.vqa.json`` (and the tiles picture)."""
    out = Path(out_dir)
    with RasterSource(path) as src:
        dip = vqa.open(src)
        total = dip.base_level + 1 if mode != "uniform" else 1
        with progress_bar(progress, label="[bold]vqa[/]") as bar:
            task = bar.add_task("pyramid levels", total=total)
            answer = vqa.answer(dip, question, mode, on_level=lambda _visit: bar.advance(task))
            bar.update(task, completed=total)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{Path(path).stem}.{question_slug(question)}"
        record = {"image": str(path), **answer.to_dict(), "providers": vqa.describe()}
        outputs: dict[str, str] = {}
        if show_tiles and answer.levels:
            outputs["tiles"] = str(save_png(out / f"{stem}.tiles.png", tiles_picture(src, answer)))
    outputs["json"] = str(out / f"{stem}.vqa.json")
    record["outputs"] = outputs
    write_json(out / f"{stem}.vqa.json", record)
    return record


def answer_dataset(
    vqa: LargeImageVQA,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    format_name: str = "lrsvqa",
    mode: Mode = "pyramid",
    limit: int | None = None,
    resume: bool = True,
    wordnet: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer every question of a VQA dataset, resumably, and score it with the ``lrsvqa`` rule.

    Returns ``{"n", "new", "report": EvalReport dict, "outputs": {...}}``.
    """
    from rsvl.datasets import get_format
    from rsvl.metrics.vqa import evaluate_vqa

    dataset = get_format(format_name).open(root)
    items = [(sample, qa) for sample in dataset for qa in sample.qas]
    if limit is not None:
        items = items[: max(0, limit)]
    if not items:
        raise InputError(f"no questions in {root}", Path(root))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "predictions.jsonl"
    if not resume:
        for old in (jsonl, out / RUN_FILE, out / "eval.json"):
            old.unlink(missing_ok=True)
    run = {
        "format": format_name,
        "root": str(Path(root).resolve()),
        "mode": mode,
        "providers": vqa.describe(),
    }
    check_run(out, run, jsonl.exists())
    done = read_done(jsonl, key="question_id")
    keys = [str(qa.id) if qa.id is not None else f"{sample.image}#{i}" for i, (sample, qa) in enumerate(items)]
    if len(set(keys)) != len(keys):
        raise InputError("two questions share a question_id", Path(root))
    stale = sorted(set(done) - set(keys))
    if stale:
        raise InputError(f"{len(stale)} earlier answers (e.g. {stale[0]!r}) are not questions of this run", jsonl)
    for key, (sample, qa) in zip(keys, items, strict=True):
        old = done.get(key)
        if old is not None and (old.get("prompt"), old.get("image"), old.get("ground_truth")) != (
            qa.question,
            sample.image,
            qa.answer,
        ):
            raise InputError(
                f"earlier answer {key!r} was to another question or image (the dataset changed); use --no-resume",
                jsonl,
            )
    new = 0
    with open(jsonl, "a", encoding="utf-8") as fh, progress_bar(progress, label="[bold]vqa[/]") as bar:
        task = bar.add_task("questions", total=len(items), completed=sum(k in done for k in keys))
        current: tuple[Any, Any] | None = None
        try:
            for key, (sample, qa) in zip(keys, items, strict=True):
                if key in done:
                    continue
                if current is None or current[0] is not sample:
                    if current is not None:
                        current[1].close()
                    current = (sample, vqa.open(sample.image_path))
                answer = vqa.answer(current[1], qa.question, mode)
                record = {
                    "question_id": qa.id if qa.id is not None else key,
                    "image": sample.image,
                    "prompt": qa.question,
                    "category": qa.type,
                    "text": answer.answer,
                    "ground_truth": qa.answer,
                    "vision_tokens": answer.n_tokens,
                    "full_resolution_tokens": answer.full_resolution_tokens,
                    "tiles_encoded": answer.tiles_encoded,
                    "levels": answer.levels,  # the tiles looked at, level by level (native pixels)
                    "seconds": answer.to_dict()["seconds"],
                }
                append_record(fh, record)
                done[key] = record
                new += 1
                bar.advance(task)
        finally:
            if current is not None:
                current[1].close()
    gt = {k: qa for k, (_, qa) in zip(keys, items, strict=True)}
    pred = {k: str(done[k]["text"]) for k in keys}
    report = evaluate_vqa(gt, pred, preset="lrsvqa", wordnet=wordnet)
    tokens = [done[k]["vision_tokens"] for k in keys]
    summary = {
        "n": len(keys),
        "new": new,
        "mode": mode,
        "mean_vision_tokens": float(np.mean(tokens)),
        "providers": vqa.describe(),
        "report": report.to_dict(),
    }
    write_json(out / "eval.json", summary)
    summary["outputs"] = {"predictions": str(jsonl), "eval": str(out / "eval.json")}
    return summary

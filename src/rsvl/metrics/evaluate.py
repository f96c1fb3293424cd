"""Evaluate files on disk: resolve ``--gt`` / ``--pred`` paths into the metric inputs and dispatch
to the task's evaluator. Backs ``rsvl eval``.

Accepted inputs, by task (a folder is read with the datasets module; its format is given with
``gt_format`` / ``pred_format`` or guessed from the layout):

- ``det``: GT = COCO annotation json or a dataset folder; predictions = COCO results json, a
  folder of DOTA Task1/Task2 files (``Task1_<class>.txt``), a folder of VisDrone result files,
  or a dataset folder whose objects carry scores. For ``dota`` a plain folder of DOTA txt files (no ``labelTxt/``) is
  accepted on both sides.
- ``grounding``: GT = dataset folder (referring expressions; boxes, or masks with ``kind="mask"``)
  or json ``{id: box | RLE}``; predictions = json ``{id: box | RLE}`` or a list of records. The
  ``vrsbench`` preset also reads VRSBench's answer file (``.jsonl`` holding both) as ``pred`` alone.
- ``vqa``: GT = dataset folder or an answer file holding ground truth and predictions (LRS-VQA /
  VRSBench ``.jsonl``); predictions = json ``{question_id: answer}`` or records with ``answer``.
- ``caption``: GT = dataset folder or COCO caption json; predictions = COCO caption results.
- ``classification``: GT = class folders or json ``{id: label}``; predictions = json ``{id: label}``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rsvl.datasets.sample import Sample
from rsvl.errors import InputError
from rsvl.metrics.report import EvalReport

TASKS = ("det", "grounding", "vqa", "caption", "classification")
DEFAULT_PRESETS = {
    "det": "coco",
    "grounding": "rrsisd",
    "vqa": "exact",
    "caption": "coco",
    "classification": "accuracy",
}


def _samples(root: Path, fmt: str | None) -> list[Sample]:
    from rsvl.datasets import get_format
    from rsvl.datasets.check import guess_format

    return get_format(fmt or guess_format(root)).open(root).load()


@contextmanager
def _dota_root(folder: Path) -> Iterator[Path]:
    """A DOTA dataset root for ``folder``: itself when it has ``labelTxt/``, else a temporary root
    whose ``labelTxt`` links to the folder of txt files."""
    if (folder / "labelTxt").is_dir():
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="rsvl-dota-") as tmp:
        (Path(tmp) / "labelTxt").symlink_to(folder.resolve(), target_is_directory=True)
        yield Path(tmp)


def _as_samples(found: dict[str, list[Any]]) -> list[Sample]:
    return [Sample(image=str(k), image_id=k, instances=list(v)) for k, v in sorted(found.items())]


def _prediction_folder(path: Path, preset: str, pred_format: str | None) -> list[Sample] | None:
    """Scored result files the datasets module writes: DOTA Task1/Task2 files (one per class) or
    VisDrone result txt files (one per image); None when ``path`` is a dataset folder instead."""
    from rsvl.datasets.dota import read_dota_task1, read_dota_task2
    from rsvl.datasets.visdrone import read_visdrone_results

    if any(path.glob("Task1_*.txt")):
        return _as_samples(read_dota_task1(path))
    if any(path.glob("Task2_*.txt")):
        return _as_samples(read_dota_task2(path))
    plain_txt = any(path.glob("*.txt")) and not any(p.is_dir() for p in path.iterdir())
    if pred_format == "visdrone" or (pred_format is None and preset == "visdrone" and plain_txt):
        return _as_samples(read_visdrone_results(path))
    return None


def _dota_side(path: Path, *, predictions: bool) -> list[Sample]:
    if not path.is_dir():
        raise InputError(f"the dota preset takes folders of DOTA txt files, got {path}")
    if predictions:
        found = _prediction_folder(path, "dota", None)
        if found is not None:
            return found
    labels = path / "labelTxt" if (path / "labelTxt").is_dir() else path
    if not any(labels.glob("*.txt")):
        raise InputError(f"no DOTA txt files in {labels} (expected <image>.txt label files or Task1_<class>.txt)")
    with _dota_root(path) as root:
        from rsvl.datasets import get_format

        return get_format("dota").open(root).load()


def _horizontal(samples: list[Sample]) -> list[Sample]:
    """DOTA Task2 scoring: every object as its axis-aligned box (dota_evaluation_task2.py compares
    the ground-truth polygons' enclosing boxes with the predicted boxes)."""
    return [
        dataclasses.replace(s, instances=[dataclasses.replace(i, polygon=None) for i in s.instances]) for s in samples
    ]


def _evaluate_dota_folders(gt: Path, pred: Path, strict: bool, options: dict[str, Any]) -> EvalReport:
    from rsvl.metrics.detection import evaluate_detection

    gt_samples = _dota_side(gt, predictions=False)
    pred_samples = _dota_side(pred, predictions=True)
    task2 = any(pred.glob("Task2_*.txt")) and not any(pred.glob("Task1_*.txt"))
    if task2:
        gt_samples = _horizontal(gt_samples)
    report = evaluate_detection(gt_samples, pred_samples, "dota", strict=strict, **options)
    report.protocol["dota_task"] = (
        "Task2: horizontal boxes, ground truth = enclosing boxes of the polygons (dota_evaluation_task2.py)"
        if task2
        else "Task1: oriented polygons (dota_evaluation_task1.py)"
    )
    return report


def _require(path: Path | None, what: str) -> Path:
    if path is None:
        raise InputError(f"{what} is required for this task/preset")
    if not path.exists():
        raise InputError(f"{what} does not exist: {path}")
    return path


def evaluate_files(
    task: str,
    preset: str | None,
    gt: Path | None,
    pred: Path,
    **kwargs: Any,
) -> EvalReport:
    """Load ``gt`` and ``pred`` for ``task`` and score them with ``preset`` (see the module docstring).

    Keyword arguments: ``gt_format``, ``pred_format``, ``box_type``, ``strict``, ``options``.
    Errors that do not name a file (e.g. ids present in the predictions but not in the ground
    truth) are re-raised naming both files.
    """
    try:
        return _evaluate_files(task, preset, gt, pred, **kwargs)
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(f"{exc.message} (--gt {gt}, --pred {pred})") from None


def _evaluate_files(
    task: str,
    preset: str | None,
    gt: Path | None,
    pred: Path,
    *,
    gt_format: str | None = None,
    pred_format: str | None = None,
    box_type: str = "hbb",
    strict: bool = True,
    options: dict[str, Any] | None = None,
) -> EvalReport:
    """Load ``gt`` and ``pred`` for ``task`` and score them with ``preset`` (see the module docstring)."""
    options = dict(options or {})
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    preset = (preset or DEFAULT_PRESETS[task]).lower()
    if task in ("caption", "classification") and preset != DEFAULT_PRESETS[task]:
        raise InputError(f"the {task} task has one protocol, preset {DEFAULT_PRESETS[task]!r}; got {preset!r}")
    pred = _require(pred, "--pred")
    if task == "det":
        from rsvl.metrics.detection import evaluate_detection

        gt = _require(gt, "--gt")
        if preset == "dota":
            return _evaluate_dota_folders(gt, pred, strict, options)
        gt_in: Any = gt
        categories = None
        if gt.is_dir():
            from rsvl.datasets import get_format
            from rsvl.datasets.check import guess_format
            from rsvl.datasets.images import with_image_sizes

            dataset = get_format(gt_format or guess_format(gt)).open(gt)
            gt_in = with_image_sizes(dataset.load())  # VisDrone/DOTA files do not state sizes
            categories = dataset.categories or None
        pred_in: Any = pred
        if pred.is_dir():
            pred_in = _prediction_folder(pred, preset, pred_format) or _samples(pred, pred_format)
        return evaluate_detection(gt_in, pred_in, preset, box_type, categories=categories, strict=strict, **options)
    if task == "grounding":
        from rsvl.metrics.grounding import (
            evaluate_grounding,
            grounding_from_samples,
            load_grounding_json,
            load_vrsbench_referring,
        )

        kind = options.pop("kind", "box")
        if gt is None and pred.suffix == ".jsonl":
            gt_map, pred_map = load_vrsbench_referring(pred)
        else:
            gt = _require(gt, "--gt")
            gt_map = grounding_from_samples(_samples(gt, gt_format), kind) if gt.is_dir() else load_grounding_json(gt)
            pred_map = load_grounding_json(pred)
        return evaluate_grounding(gt_map, pred_map, preset, **options)
    if task == "vqa":
        from rsvl.metrics.records import load_id_mapping
        from rsvl.metrics.vqa import evaluate_vqa, load_vqa_results, vqa_from_samples

        if gt is None:  # one answer file holding ground truth and predictions (LRS-VQA, VRSBench)
            layout = "vrsbench" if preset == "vrsbench" else "lrsvqa"
            results = load_vqa_results(pred, layout)
            return evaluate_vqa(results.gt, results.pred, preset, groups=results.groups, **options)
        gt_map = vqa_from_samples(_samples(gt, gt_format)) if gt.is_dir() else load_vqa_results(gt).gt
        # predictions: {id: answer}, or records with "answer", or "text" (the LLaVA / LRS-VQA answer layout)
        return evaluate_vqa(gt_map, load_id_mapping(pred, ("answer", "text")), preset, **options)
    if task == "caption":
        from rsvl.metrics.caption import captions_from_samples, evaluate_captions, load_coco_captions

        gt = _require(gt, "--gt")
        refs = captions_from_samples(_samples(gt, gt_format)) if gt.is_dir() else load_coco_captions(gt)
        return evaluate_captions(refs, load_coco_captions(pred), **options)
    from rsvl.metrics.classification import evaluate_classification, labels_from_samples
    from rsvl.metrics.records import load_id_mapping

    gt = _require(gt, "--gt")
    labels = labels_from_samples(_samples(gt, gt_format)) if gt.is_dir() else load_id_mapping(gt, "label")
    return evaluate_classification(labels, load_id_mapping(pred, "label"), **options)

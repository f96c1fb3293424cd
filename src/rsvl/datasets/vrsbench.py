"""VRSBench evaluation files: captions, VQA and referring (visual grounding), grouped by image.

Layout (the Hugging Face release ``xiang709/VRSBench``)::

    root/
      Images_val/P0003_0002.png          512 x 512 patches (``Images_train/`` / ``images/`` also found)
      VRSBench_EVAL_Cap.json             [{"image_id", "ground_truth": caption, "question": "Describe the
                                           image in detail", "dataset": "RSBench", "question_id", "type": "caption"}]
      VRSBench_EVAL_vqa.json             [{"image_id", "question", "ground_truth": answer, "dataset",
                                           "question_id", "type": "object category" | ...}]
      VRSBench_EVAL_referring.json       [{"image_id", "question": expression, "ground_truth": "{<x1><y1><x2><y2>}",
                                           "dataset", "question_id", "type": "ref", "unique", "obj_corner",
                                           "obj_cls", "obj_ids", "size_group"}]

(keys as written by the authors' ``prepare_eval_all.ipynb``; at least one of the three files must
exist). ``image_id`` is the image file name inside the image folder.

Entries are grouped by image into :class:`Sample` (in order of first appearance, reading the
caption, referring and VQA files in that order): captions in ``Sample.captions``, questions in
``Sample.qas`` (``QA.type`` = ``type``, ``QA.id`` = ``question_id``), expressions in
``Sample.refs`` (one sentence each, ``Referring.id`` = ``question_id``, no ``target``: the box is
``Referring.bbox``). The referring ground truth is a box on VRSBench's 0-100 grid, decoded with
``rsvl.geometry.codecs.get_codec("vrsbench")`` to xyxy pixels of a 512 x 512 image — the size of
every VRSBench patch; the files do not record it. A sample whose ``width``/``height`` is set is
written with an extra ``"image_size": [w, h]`` key on its entries (rsvl's extension; the official
scripts ignore unknown keys) and its boxes encoded at that size, so such samples round-trip too.

What the writer cannot regenerate is kept: ``Referring.attrs`` holds ``unique``, ``obj_corner``,
``obj_cls``, ``obj_ids``, ``size_group`` and any other key, plus ``ground_truth`` when the file's
text differs from what the codec writes for the decoded box; ``QA.attrs`` holds unknown keys;
``Sample.meta["vrsbench_captions"]`` (one dict per caption) holds caption entries' ``question_id``
when it is not the entry's index and unknown keys. ``dataset`` (``"RSBench"``), ``type``
(``"caption"``/``"ref"``) and the caption prompt are kept only when they differ from those
defaults. Missing ids are assigned on writing (caption entries: their index; questions and
expressions: the next free integer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    as_dict,
    assign_ids,
    check_type,
    get_field,
    load_json,
    register_format,
    resolve_inside,
)
from rsvl.datasets.sample import QA, Category, Referring, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.geometry.codecs import get_codec
from rsvl.utils.atomic import write_text

log = logging.getLogger(__name__)

__all__ = ["CAPTION_FILE", "REFERRING_FILE", "VQA_FILE", "VRSBenchFormat"]

CAPTION_FILE = "VRSBench_EVAL_Cap.json"
REFERRING_FILE = "VRSBench_EVAL_referring.json"
VQA_FILE = "VRSBench_EVAL_vqa.json"
IMAGE_SIZE = (512, 512)
"""Width and height of every VRSBench patch (the grid the 0-100 boxes refer to)."""

_DATASET = "RSBench"
_CAPTION_PROMPT = "Describe the image in detail"
_IMAGE_DIRS = ("Images_val", "Images_train", "images")
_BASE_KEYS = ("image_id", "question", "ground_truth", "question_id", "image_size")


def _non_default(entry: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Keys of ``entry`` other than the base ones, minus those equal to their default."""
    return {k: v for k, v in entry.items() if k not in _BASE_KEYS and not (k in defaults and defaults[k] == v)}


@register_format
class VRSBenchFormat(DatasetFormat):
    """VRSBench caption / VQA / referring evaluation json; see the module docstring.

    Args:
        image_dir: image folder relative to the root. ``None`` (default) picks the first of
            ``Images_val``, ``Images_train``, ``images`` that exists when reading, and
            ``Images_val`` when writing.
        image_size: ``(width, height)`` the 0-100 boxes are decoded against when an entry has no
            ``image_size`` key.
    """

    name = "vrsbench"
    tasks = ("caption", "vqa", "referring")
    layout = "Images_val/ + VRSBench_EVAL_Cap.json, VRSBench_EVAL_vqa.json, VRSBench_EVAL_referring.json"
    image_dir = "Images_val"

    def __init__(self, image_dir: str | None = None, image_size: tuple[int, int] = IMAGE_SIZE):
        self._image_dir = image_dir
        if image_dir is not None:
            self.image_dir = image_dir
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._codec = get_codec("vrsbench")

    def _read_image_dir(self, root: Path) -> str:
        if self._image_dir is not None:
            return self._image_dir
        return next((d for d in _IMAGE_DIRS if (root / d).is_dir()), _IMAGE_DIRS[0])

    # ------------------------------------------------------------------------- reading

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        files = [root / name for name in (CAPTION_FILE, REFERRING_FILE, VQA_FILE)]
        if not any(f.is_file() for f in files):
            raise DatasetError(
                f"not a {self.name} dataset: none of {CAPTION_FILE}, {REFERRING_FILE}, {VQA_FILE} is in the root", root
            )
        image_dir = self._read_image_dir(root)

        def samples(report: ReadReport) -> Iterator[Sample]:
            yield from self._samples(root, image_dir, files, report, strict)

        return Dataset(root, self.name, samples)

    def _samples(
        self, root: Path, image_dir: str, files: list[Path], report: ReadReport, strict: bool
    ) -> Iterator[Sample]:
        by_image: dict[str, Sample] = {}
        cap_extra: dict[str, list[dict[str, Any]]] = {}
        readers = (self._caption, self._referring, self._question)
        for path, read in zip(files, readers, strict=True):
            if not path.is_file():
                continue
            entries = load_json(path)
            check_type(entries, list, "top level", path)
            for k, entry in enumerate(entries):
                where = f"[{k}]"
                try:
                    check_type(entry, dict, where, path)
                    sample = self._sample_for(root, image_dir, entry, where, path, by_image)
                    read(sample, entry, k, where, path, cap_extra)
                    by_image.setdefault(str(sample.image_id), sample)  # a new image counts once an entry parsed
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(exc)
        for image_id, sample in by_image.items():
            extras = cap_extra.get(image_id)
            if extras and any(extras):
                sample.meta["vrsbench_captions"] = extras
            yield sample

    def _sample_for(
        self, root: Path, image_dir: str, entry: dict[str, Any], where: str, path: Path, by_image: dict[str, Sample]
    ) -> Sample:
        image_id = get_field(entry, "image_id", str, where, path)
        size = None
        if "image_size" in entry:
            raw = get_field(entry, "image_size", list, where, path)
            if len(raw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31 for v in raw):
                raise DatasetError(f"{where}.image_size: expected [width, height] positive integers below 2**31", path)
            size = (raw[0], raw[1])
        sample = by_image.get(image_id)
        if sample is None:
            rel = f"{image_dir}/{image_id}"
            resolve_inside(root, rel, path)
            sample = Sample(image=rel, image_id=image_id)
            if size is not None:
                sample.width, sample.height = size
        elif size != ((sample.width, sample.height) if sample.width is not None else None):
            raise DatasetError(f"{where}.image_size: differs from an earlier entry of image {image_id!r}", path)
        return sample

    @staticmethod
    def _caption(
        sample: Sample, entry: dict[str, Any], k: int, where: str, path: Path, cap_extra: dict[str, list[dict]]
    ) -> None:
        caption = get_field(entry, "ground_truth", str, where, path)
        extra = _non_default(entry, {"question": _CAPTION_PROMPT, "dataset": _DATASET, "type": "caption"})
        if "question" in entry:
            check_type(entry["question"], str, f"{where}.question", path)
            if entry["question"] != _CAPTION_PROMPT:
                extra["question"] = entry["question"]
        if "question_id" in entry:
            qid = get_field(entry, "question_id", (int, str), where, path)
            if qid != k:
                extra["question_id"] = qid
        else:
            extra["question_id"] = None
        sample.captions.append(caption)
        cap_extra.setdefault(str(sample.image_id), []).append(extra)

    def _referring(
        self, sample: Sample, entry: dict[str, Any], k: int, where: str, path: Path, cap_extra: dict[str, list[dict]]
    ) -> None:
        sentence = get_field(entry, "question", str, where, path)
        text = get_field(entry, "ground_truth", str, where, path)
        size = (sample.width, sample.height) if sample.width is not None else self.image_size
        try:
            boxes = self._codec.decode(text, size)
        except InputError as exc:
            raise DatasetError(f"{where}.ground_truth: {exc.message}", path) from None
        if len(boxes) != 1:
            raise DatasetError(
                f"{where}.ground_truth: expected one box '{{<x1><y1><x2><y2>}}', found {len(boxes)} in {text!r:.60}",
                path,
            )
        bbox = tuple(float(v) for v in boxes[0].box)
        attrs = _non_default(entry, {"dataset": _DATASET, "type": "ref"})
        if self._codec.encode([("", bbox)], size) != text:
            attrs["ground_truth"] = text
        ref_id = get_field(entry, "question_id", (int, str), where, path) if "question_id" in entry else None
        sample.refs.append(Referring(sentences=[sentence], bbox=bbox, id=ref_id, attrs=attrs))  # type: ignore[arg-type]

    @staticmethod
    def _question(
        sample: Sample, entry: dict[str, Any], k: int, where: str, path: Path, cap_extra: dict[str, list[dict]]
    ) -> None:
        question = get_field(entry, "question", str, where, path)
        if "ground_truth" not in entry or entry["ground_truth"] is None:
            raise DatasetError(f"{where}: question {question!r:.60} has no answer ('ground_truth')", path)
        answer = check_type(entry["ground_truth"], str, f"{where}.ground_truth", path)
        if not answer.strip():
            raise DatasetError(f"{where}.ground_truth: empty answer to {question!r:.60}", path)
        qtype = get_field(entry, "type", str, where, path) if "type" in entry else None
        qid = get_field(entry, "question_id", (int, str), where, path) if "question_id" in entry else None
        attrs = {k2: v for k2, v in _non_default(entry, {"dataset": _DATASET}).items() if k2 != "type"}
        sample.qas.append(QA(question=question, answer=answer, type=qtype, id=qid, attrs=attrs))

    # ------------------------------------------------------------------------- writing

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        root = Path(root)
        samples = list(samples)
        prefix = self.image_dir.rstrip("/") + "/"
        captions: list[dict[str, Any]] = []
        refs: list[dict[str, Any]] = []
        questions: list[dict[str, Any]] = []
        ref_ids = assign_ids([r.id for s in samples for r in s.refs], "Referring.id")
        qa_ids = assign_ids([q.id for s in samples for q in s.qas], "QA.id")
        ref_iter, qa_iter = iter(ref_ids), iter(qa_ids)
        for s_idx, sample in enumerate(samples):
            if not sample.image.startswith(prefix) or len(sample.image) == len(prefix):
                raise InputError(f"sample {s_idx}: image {sample.image!r} must lie in {self.image_dir}/")
            image_id = sample.image[len(prefix) :]
            sized = sample.width is not None and sample.height is not None
            size_key = {"image_size": [int(sample.width), int(sample.height)]} if sized else {}  # type: ignore[arg-type]
            size = (sample.width, sample.height) if sized else self.image_size
            cap_extra = sample.meta.get("vrsbench_captions")
            if cap_extra is None:
                cap_extra = [{} for _ in sample.captions]
            if not isinstance(cap_extra, list) or len(cap_extra) != len(sample.captions):
                raise InputError(f"sample {s_idx}: meta['vrsbench_captions'] must hold one dict per caption")
            for caption, extra in zip(sample.captions, cap_extra, strict=True):
                extra = as_dict(extra, "meta['vrsbench_captions'] items")
                qid = extra.pop("question_id", len(captions))
                entry = {
                    "image_id": image_id,
                    "ground_truth": caption,
                    "question": extra.pop("question", _CAPTION_PROMPT),
                    "dataset": extra.pop("dataset", _DATASET),
                }
                if qid is not None:
                    entry["question_id"] = qid
                entry["type"] = extra.pop("type", "caption")
                entry.update(size_key)
                captions.append(_merge(entry, extra))
            for r_idx, ref in enumerate(sample.refs):
                where = f"sample {s_idx} ref {r_idx}"
                if len(ref.sentences) != 1:
                    raise InputError(f"{where}: a VRSBench expression is one sentence, got {len(ref.sentences)}")
                text = self._ref_text(ref, size, where)
                attrs = dict(ref.attrs)
                attrs.pop("ground_truth", None)
                entry = {
                    "image_id": image_id,
                    "question": ref.sentences[0],
                    "ground_truth": text,
                    "dataset": attrs.pop("dataset", _DATASET),
                    "question_id": next(ref_iter),
                    "type": attrs.pop("type", "ref"),
                    **size_key,
                }
                refs.append(_merge(entry, attrs))
            for qa in sample.qas:
                attrs = dict(qa.attrs)
                entry = {
                    "image_id": image_id,
                    "question": qa.question,
                    "ground_truth": qa.answer,
                    "dataset": attrs.pop("dataset", _DATASET),
                    "question_id": next(qa_iter),
                }
                if qa.type is not None:
                    entry["type"] = qa.type
                entry.update(size_key)
                attrs.pop("type", None)
                questions.append(_merge(entry, attrs))
        texts = {}
        for name, entries in ((CAPTION_FILE, captions), (REFERRING_FILE, refs), (VQA_FILE, questions)):
            try:
                texts[name] = json.dumps(entries, indent=4, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InputError(f"cannot write {name}: a value is not plain JSON ({exc})") from None
        (root / self.image_dir).mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            write_text(root / name, text + "\n")

    def _ref_text(self, ref: Referring, size: tuple[Any, Any], where: str) -> str:
        """The file's original box text when it still decodes to ``ref.bbox``, else a fresh encoding."""
        if ref.bbox is None:
            raise InputError(f"{where}: a VRSBench expression needs Referring.bbox")
        original = ref.attrs.get("ground_truth")
        if isinstance(original, str):
            try:
                boxes = self._codec.decode(original, size)
            except InputError:
                boxes = []
            if len(boxes) == 1 and tuple(float(v) for v in boxes[0].box) == tuple(float(v) for v in ref.bbox):
                return original
        try:
            return self._codec.encode([("", ref.bbox)], size)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}") from None


def _merge(entry: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Add ``extra`` keys to ``entry`` without letting them replace what the writer set."""
    for key, value in extra.items():
        if key in entry or key in _BASE_KEYS:
            log.warning("attribute %r clashes with a VRSBench key and is not written", key)
            continue
        entry[key] = value
    return entry

"""LRS-VQA: visual questions about large remote-sensing images (one JSON object per line).

Layout (the authors' ``eval_lrs_vqa.sh``: ``QUESTION_FILE=$DATA_DIR/LRS_VQA/LRS_VQA_merged.jsonl``,
``--image-folder $DATA_DIR``; ``root`` is that ``DATA_DIR``)::

    root/
      LRS_VQA/LRS_VQA_merged.jsonl   {"question_id", "image": "LRS_VQA/image/...", "text": question,
                                      "ground_truth": answer, "category": type, ["hbox"], ["rbox"]}
      LRS_VQA/image/...              the images (FAIR1M, GLH-Bridge, STAR; up to 27,328 px a side)

``image`` is relative to the root (the official scripts join it to ``--image-folder``); a
``LRS_VQA_merged.jsonl`` placed directly in the root is accepted too. Blank lines are skipped.

Lines are grouped by ``image`` into :class:`Sample` (order of first appearance), each question a
:class:`QA`: ``question`` = ``text``, ``answer`` = ``ground_truth``, ``type`` = ``category`` (the
benchmark's 8 question types, kept verbatim — scoring per type must not assume a fixed list),
``id`` = ``question_id``; every other key (``hbox``, ``rbox``...) goes to ``QA.attrs`` and is
written back. Writing groups the lines by sample, so a file whose lines interleave images is
rewritten grouped (same questions, other line order). Missing ``question_id`` are assigned on
writing (next free integer).
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
    check_type,
    read_text_lines,
    register_format,
    resolve_inside,
)
from rsvl.datasets.sample import QA, Category, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.utils.atomic import write_text

log = logging.getLogger(__name__)

__all__ = ["QUESTION_FILE", "LRSVQAFormat", "parse_json_line"]

QUESTION_FILE = "LRS_VQA/LRS_VQA_merged.jsonl"
_KEYS = ("question_id", "image", "text", "ground_truth", "category")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_line(text: str, path: Path, line: int) -> Any:
    """One JSON value from one line of a JSON Lines file; any failure is a ``path:line`` DatasetError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON: {exc.msg} (column {exc.colno})", path, line) from None
    except RecursionError:
        raise DatasetError("invalid JSON: nested too deeply", path, line) from None
    except ValueError as exc:
        raise DatasetError(f"invalid JSON: {exc}", path, line) from None


@register_format
class LRSVQAFormat(DatasetFormat):
    """LRS-VQA question file (JSON Lines) + images; see the module docstring."""

    name = "lrsvqa"
    tasks = ("vqa",)
    layout = "LRS_VQA/LRS_VQA_merged.jsonl + LRS_VQA/image/ (image paths relative to the root)"
    image_dir = "LRS_VQA/image"

    def _question_file(self, root: Path) -> Path:
        for candidate in (root / QUESTION_FILE, root / Path(QUESTION_FILE).name):
            if candidate.is_file():
                return candidate
        raise DatasetError(f"not an {self.name} dataset: {QUESTION_FILE} is missing", root)

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        path = self._question_file(root)

        def samples(report: ReadReport) -> Iterator[Sample]:
            by_image: dict[str, Sample] = {}
            seen_ids: set[Any] = set()
            for line, text in read_text_lines(path):
                if not text.strip():
                    continue
                try:
                    image, qa = self._line(root, text, path, line)
                    if qa.id is not None and qa.id in seen_ids:
                        raise DatasetError(f"question_id {qa.id!r} appears twice", path, line)
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(exc)
                    continue
                seen_ids.add(qa.id)
                sample = by_image.get(image)
                if sample is None:
                    sample = by_image[image] = Sample(image=image)
                sample.qas.append(qa)
            yield from by_image.values()

        return Dataset(root, self.name, samples)

    @staticmethod
    def _line(root: Path, text: str, path: Path, line: int) -> tuple[str, QA]:
        entry = parse_json_line(text, path, line)
        if not isinstance(entry, dict):
            raise DatasetError(f"expected a JSON object, got {type(entry).__name__}", path, line)

        def get(key: str, kind: type | tuple[type, ...]) -> Any:
            if key not in entry:
                raise DatasetError(f"missing key {key!r}", path, line)
            try:
                return check_type(entry[key], kind, key, path)
            except DatasetError as exc:
                raise DatasetError(exc.message, path, line) from None

        image = get("image", str)
        resolve_inside(root, image, path, line)
        question = get("text", str)
        if entry.get("ground_truth") is None:
            raise DatasetError(f"question {question!r:.60} has no answer ('ground_truth')", path, line)
        answer = get("ground_truth", str)
        if not answer.strip():
            raise DatasetError(f"empty answer ('ground_truth') to {question!r:.60}", path, line)
        qtype = get("category", str) if "category" in entry else None
        qid = get("question_id", (int, str)) if "question_id" in entry else None
        attrs = {k: v for k, v in entry.items() if k not in _KEYS}
        return image, QA(question=question, answer=answer, type=qtype, id=qid, attrs=attrs)

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
        given = [qa.id for s in samples for qa in s.qas]
        used = [g for g in given if g is not None]
        if any(not isinstance(g, (int, str)) or isinstance(g, bool) for g in used) or len(set(used)) != len(used):
            raise InputError("QA.id values must be unique ints or strings")
        next_id = max((g for g in used if isinstance(g, int)), default=-1) + 1
        lines: list[str] = []
        for s_idx, sample in enumerate(samples):
            for qa in sample.qas:
                qid = qa.id
                if qid is None:
                    qid, next_id = next_id, next_id + 1
                entry: dict[str, Any] = {"question_id": qid, "image": sample.image, "text": qa.question}
                entry["ground_truth"] = qa.answer
                if qa.type is not None:
                    entry["category"] = qa.type
                for key, value in qa.attrs.items():
                    if key in _KEYS:
                        log.warning(
                            "sample %d: attribute %r clashes with an LRS-VQA key and is not written", s_idx, key
                        )
                        continue
                    entry[key] = value
                try:
                    lines.append(json.dumps(entry, allow_nan=False))
                except (TypeError, ValueError) as exc:
                    raise InputError(
                        f"sample {s_idx}: a question holds a value that is not plain JSON ({exc})"
                    ) from None
        (root / self.image_dir).mkdir(parents=True, exist_ok=True)
        write_text(root / QUESTION_FILE, "".join(line + "\n" for line in lines))

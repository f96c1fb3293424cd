"""RSVQA (Lobry et al. 2020): LR (Sentinel-2), HR (USGS) and RSVQAxBEN question/answer/image json.

Layout (as the authors' ``VQALoader`` and torchrs read it)::

    root/
      LR_split_train_questions.json    {"questions": [{"id", "img_id", "type", "question", "answers_ids",
                                                       "active", "date_added", "people_id"}, ...]}
      LR_split_train_answers.json      {"answers": [{"id", "question_id", "answer", "active", ...}, ...]}
      LR_split_train_images.json       {"images": [{"id", "questions_ids", "active", "original_name",
                                                    "sensor", "res-x", ...}, ...]}
      ... the same for val / test (HR: test and test_phili)
      Images_LR/<id>.tif               (HR: Data/<id>.tif, RSVQAxBEN: Images/<id>.tif)

The prefix (``LR``, ``USGS``, ``RSVQAxBEN``) and the splits are discovered from the file names
(or fixed with the ``prefix`` option); the image folder follows the prefix. Question types are
kept as the files spell them (LR: ``presence``, ``comp``, ``count``, ``rural_urban``; HR:
``presence``, ``comp``, ``count``, ``area``).

Each *active* image of a split becomes a :class:`Sample` (``image_id`` = ``id``, ``split``, ``image``
= ``<image folder>/<id>.tif``) with one :class:`QA` per id in its ``questions_ids``: ``type``,
``id`` = question id, ``answer`` = the answer of ``answers_ids[0]`` (further answers go to
``QA.attrs["other_answers"]``). Entries are looked up by their ``id`` field, never by position.

Inactive entries (``"active": false``) are skipped — they belong to other splits or were removed
by the authors — and counted: ``Dataset.meta["inactive"][split]`` holds the numbers of inactive
images, questions and answers once iteration ends, and ``meta["unreferenced"][split]`` the
active questions no active image lists; both are also logged. A question listed by an active
image that is inactive is skipped the same way. An active question whose answer is missing or
inactive is an error ("a question without answer").

The official loaders index these lists by position (``questions[qid]``), so the writer makes
every list positional: entry ``k`` has ``id == k``, gaps are filled with ``{"id": k, "active":
false}`` placeholders (read back as inactive). Extra fields survive a round trip in
``Sample.meta["rsvqa_image"]``, ``QA.attrs`` (question keys) and ``QA.attrs["answer_fields"]``
(answer keys). Image ids must be integers (``<id>.tif``); missing question ids are assigned.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    as_dict,
    check_type,
    get_field,
    load_json,
    register_format,
    resolve_inside,
)
from rsvl.datasets.sample import QA, Category, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.utils.atomic import write_text

log = logging.getLogger(__name__)

__all__ = ["IMAGE_DIRS", "MAX_POSITIONAL", "RSVQAFormat"]

IMAGE_DIRS = {"LR": "Images_LR", "USGS": "Data", "RSVQAxBEN": "Images"}
"""Image folder of each RSVQA variant, by file prefix."""

MAX_POSITIONAL = 20_000_000
"""Largest id the writer accepts: lists are positional, so an id ``k`` means ``k + 1`` entries
(RSVQAxBEN, the largest release, has about 15 million questions)."""

_FILE = re.compile(r"^(?P<prefix>.+)_split_(?P<split>.+)_questions\.json$")
_SPLIT_ORDER = ("train", "val", "test", "test_phili")
_IMAGE_KEYS = ("id", "questions_ids", "active")
_QUESTION_KEYS = ("id", "img_id", "type", "question", "answers_ids", "active")
_ANSWER_KEYS = ("id", "answer", "active")


def _int_list(entry: dict[str, Any], key: str, where: str, path: Path) -> list[int]:
    values = get_field(entry, key, list, where, path)
    for j, v in enumerate(values):
        check_type(v, int, f"{where}.{key}[{j}]", path)
    return values


def _active(entry: dict[str, Any], where: str, path: Path) -> bool:
    if "active" not in entry:
        return True
    return bool(check_type(entry["active"], bool, f"{where}.active", path))


def _entries(path: Path, key: str) -> list[Any]:
    data = load_json(path)
    check_type(data, dict, "top level", path)
    return get_field(data, key, list, "top level", path)


def _split_key(split: str) -> tuple[int, str]:
    return (_SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER), split)


@register_format
class RSVQAFormat(DatasetFormat):
    """RSVQA LR / HR / xBEN split json + ``<id>.tif`` images; see the module docstring.

    Args:
        prefix: file prefix (``LR``, ``USGS``, ``RSVQAxBEN``); ``None`` discovers it when reading
            and writes ``LR`` (or ``meta["prefix"]``).
        image_dir: image folder; default from the prefix (:data:`IMAGE_DIRS`, else ``Images``).
    """

    name = "rsvqa"
    tasks = ("vqa",)
    layout = "<prefix>_split_<split>_{questions,answers,images}.json + Images_LR/<id>.tif (HR: Data/)"
    image_dir = "Images_LR"

    def __init__(self, prefix: str | None = None, image_dir: str | None = None):
        self.prefix = prefix
        self._image_dir = image_dir
        self.image_dir = image_dir or IMAGE_DIRS.get(prefix or "LR", "Images")

    def _dir_for(self, prefix: str) -> str:
        return self._image_dir or IMAGE_DIRS.get(prefix, "Images")

    # ------------------------------------------------------------------------- reading

    def _discover(self, root: Path) -> tuple[str, list[str]]:
        found: dict[str, set[str]] = {}
        if root.is_dir():
            for child in root.iterdir():
                m = _FILE.match(child.name)
                if m and child.is_file():
                    found.setdefault(m["prefix"], set()).add(m["split"])
        if self.prefix is not None:
            found = {self.prefix: found.get(self.prefix, set())} if self.prefix in found else {}
        if not found:
            what = f"{self.prefix}_split_<split>" if self.prefix else "<prefix>_split_<split>"
            raise DatasetError(f"not an {self.name} dataset: no {what}_questions.json in the root", root)
        if len(found) > 1:
            raise DatasetError(
                f"several RSVQA variants in one folder ({', '.join(sorted(found))}); choose one with prefix=", root
            )
        prefix, splits = found.popitem()
        for split in splits:
            for kind in ("answers", "images"):
                if not (root / f"{prefix}_split_{split}_{kind}.json").is_file():
                    raise DatasetError(f"{prefix}_split_{split}_{kind}.json is missing", root)
        return prefix, sorted(splits, key=_split_key)

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        prefix, splits = self._discover(root)
        image_dir = self._dir_for(prefix)

        def samples(report: ReadReport) -> Iterator[Sample]:
            dataset.meta["inactive"], dataset.meta["unreferenced"] = {}, {}
            for split in splits:
                yield from self._split(root, prefix, split, image_dir, dataset.meta, report, strict)

        dataset = Dataset(root, self.name, samples, meta={"prefix": prefix, "inactive": {}, "unreferenced": {}})
        return dataset

    def _split(
        self,
        root: Path,
        prefix: str,
        split: str,
        image_dir: str,
        meta: dict[str, Any],
        report: ReadReport,
        strict: bool,
    ) -> Iterator[Sample]:
        def fail(error: DatasetError) -> None:
            if strict:
                raise error
            report.skip(error)

        base = root / f"{prefix}_split_{split}"
        q_path, a_path, i_path = (Path(f"{base}_{kind}.json") for kind in ("questions", "answers", "images"))
        inactive = {"images": 0, "questions": 0, "answers": 0}
        inactive_ids: dict[str, set[int]] = {"questions": set(), "answers": set()}

        answers: dict[int, dict[str, Any]] = {}
        for k, entry in enumerate(_entries(a_path, "answers")):
            try:
                where = f"answers[{k}]"
                check_type(entry, dict, where, a_path)
                aid = get_field(entry, "id", int, where, a_path)
                if not _active(entry, where, a_path):
                    inactive["answers"] += 1
                    inactive_ids["answers"].add(aid)
                    continue
                get_field(entry, "answer", str, where, a_path)
                if aid in answers:
                    raise DatasetError(f"{where}.id: answer id {aid} appears twice", a_path)
                answers[aid] = entry
            except DatasetError as exc:
                fail(exc)

        questions: dict[int, tuple[str, dict[str, Any]]] = {}
        for k, entry in enumerate(_entries(q_path, "questions")):
            try:
                where = f"questions[{k}]"
                check_type(entry, dict, where, q_path)
                qid = get_field(entry, "id", int, where, q_path)
                if not _active(entry, where, q_path):
                    inactive["questions"] += 1
                    inactive_ids["questions"].add(qid)
                    continue
                get_field(entry, "img_id", int, where, q_path)
                get_field(entry, "type", str, where, q_path)
                get_field(entry, "question", str, where, q_path)
                if not _int_list(entry, "answers_ids", where, q_path):
                    raise DatasetError(f"{where}: question {qid} has no answer (empty answers_ids)", q_path)
                if qid in questions:
                    raise DatasetError(f"{where}.id: question id {qid} appears twice", q_path)
                questions[qid] = (where, entry)
            except DatasetError as exc:
                fail(exc)

        referenced: set[int] = set()
        seen_images: set[int] = set()
        for k, entry in enumerate(_entries(i_path, "images")):
            where = f"images[{k}]"
            try:
                check_type(entry, dict, where, i_path)
                image_id = get_field(entry, "id", int, where, i_path)
                if not _active(entry, where, i_path):
                    inactive["images"] += 1
                    continue
                if image_id in seen_images:
                    raise DatasetError(f"{where}.id: image id {image_id} appears twice", i_path)
                seen_images.add(image_id)
                qids = _int_list(entry, "questions_ids", where, i_path)
                rel = f"{image_dir}/{image_id}.tif"
                resolve_inside(root, rel, i_path)
                extra = {key: v for key, v in entry.items() if key not in _IMAGE_KEYS}
                sample = Sample(image=rel, image_id=image_id, split=split, meta={"rsvqa_image": extra} if extra else {})
            except DatasetError as exc:
                fail(exc)
                continue
            for j, qid in enumerate(qids):
                try:
                    qa = self._qa(
                        qid,
                        image_id,
                        f"{where}.questions_ids[{j}]",
                        i_path,
                        questions,
                        answers,
                        inactive_ids,
                        q_path,
                        a_path,
                    )
                except DatasetError as exc:
                    fail(exc)
                    continue
                if qa is not None:
                    referenced.add(qid)
                    sample.qas.append(qa)
            yield sample

        unreferenced = len(set(questions) - referenced)
        meta["inactive"][split] = inactive
        meta["unreferenced"][split] = unreferenced
        if any(inactive.values()) or unreferenced:
            log.info(
                "%s: skipped inactive entries (%d images, %d questions, %d answers); %d active questions "
                "listed by no active image",
                base.name,
                inactive["images"],
                inactive["questions"],
                inactive["answers"],
                unreferenced,
            )

    @staticmethod
    def _qa(
        qid: int,
        image_id: int,
        where: str,
        i_path: Path,
        questions: dict[int, tuple[str, dict[str, Any]]],
        answers: dict[int, dict[str, Any]],
        inactive_ids: dict[str, set[int]],
        q_path: Path,
        a_path: Path,
    ) -> QA | None:
        if qid not in questions:
            if qid in inactive_ids["questions"]:
                return None  # an inactive question listed by an active image: skipped, already counted
            raise DatasetError(f"{where}: image {image_id} lists unknown question id {qid}", i_path)
        q_where, q = questions[qid]
        if q["img_id"] != image_id:
            raise DatasetError(
                f"{q_where}.img_id: question {qid} belongs to image {q['img_id']}, not {image_id}", q_path
            )
        texts: list[str] = []
        answer_fields: dict[str, Any] = {}
        for n, aid in enumerate(q["answers_ids"]):
            if aid not in answers:
                state = "inactive" if aid in inactive_ids["answers"] else "missing"
                raise DatasetError(
                    f"{q_where}.answers_ids[{n}]: question {qid} ({q['question']!r:.60}) has no answer: "
                    f"answer {aid} is {state} in {a_path.name}",
                    q_path,
                )
            a = answers[aid]
            texts.append(a["answer"])
            if n == 0:
                answer_fields = {key: v for key, v in a.items() if key not in _ANSWER_KEYS}
                if answer_fields.get("question_id") == qid:
                    del answer_fields["question_id"]
        attrs = {key: v for key, v in q.items() if key not in _QUESTION_KEYS}
        if answer_fields:
            attrs["answer_fields"] = answer_fields
        if len(texts) > 1:
            attrs["other_answers"] = texts[1:]
        return QA(question=q["question"], answer=texts[0], type=q["type"], id=qid, attrs=attrs)

    # ------------------------------------------------------------------------- writing

    def image_relpath(self, stem: str, suffix: str = ".tif", label: str | None = None) -> str:
        """``<image folder>/<id>.tif``: RSVQA names images by integer id and always as TIFF."""
        if not stem.isdigit():
            raise InputError(f"RSVQA names images by integer id (<id>.tif); cannot place an image called {stem!r}")
        return f"{self.image_dir}/{int(stem)}.tif"

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
        prefix = self.prefix or (meta or {}).get("prefix") or "LR"
        image_dir = self._dir_for(prefix)
        pattern = re.compile(re.escape(image_dir) + r"/(\d+)\.tif")
        image_ids: list[int] = []
        for s_idx, sample in enumerate(samples):
            m = pattern.fullmatch(sample.image)
            if m is None:
                raise InputError(f"sample {s_idx}: image {sample.image!r} must be {image_dir}/<integer id>.tif")
            image_id = int(m[1])
            if sample.image_id is not None and sample.image_id != image_id:
                raise InputError(f"sample {s_idx}: image_id {sample.image_id!r} differs from its file {sample.image!r}")
            if sample.split is None:
                raise InputError(f"sample {s_idx}: RSVQA files are per split; Sample.split must be set")
            image_ids.append(image_id)
        if len(set(image_ids)) != len(image_ids):
            raise InputError("two samples have the same RSVQA image id")
        given = [qa.id for s in samples for qa in s.qas]
        used = [g for g in given if g is not None]
        if any(not isinstance(g, int) or isinstance(g, bool) or g < 0 for g in used) or len(set(used)) != len(used):
            raise InputError("QA.id values must be unique non-negative integers in RSVQA")
        next_qid = max(used, default=-1) + 1
        qids: list[int] = []
        for g in given:
            if g is None:
                g, next_qid = next_qid, next_qid + 1
            qids.append(g)
        next_aid = max(qids, default=-1) + 1  # extra answers go after every question id
        per_split: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
        qid_iter = iter(qids)
        for s_idx, (sample, image_id) in enumerate(zip(samples, image_ids, strict=True)):
            tables = per_split.setdefault(sample.split, {"images": {}, "questions": {}, "answers": {}})  # type: ignore[arg-type]
            my_qids: list[int] = []
            for qa in sample.qas:
                qid = next(qid_iter)
                my_qids.append(qid)
                attrs = dict(qa.attrs)
                fields = as_dict(attrs.pop("answer_fields", None), "attrs['answer_fields']")
                others = attrs.pop("other_answers", None) or []
                if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
                    raise InputError(f"sample {s_idx}: attrs['other_answers'] must be a list of strings")
                if qa.type is None:
                    raise InputError(f"sample {s_idx}: RSVQA questions need QA.type (presence, comp, count...)")
                aids = [qid]
                for _ in others:
                    aids.append(next_aid)
                    next_aid += 1
                question = {"id": qid, "img_id": image_id, "type": qa.type, "question": qa.question}
                question.update({k: v for k, v in attrs.items() if k not in _QUESTION_KEYS})
                question.update(answers_ids=aids, active=True)
                tables["questions"][qid] = question
                for aid, text in zip(aids, [qa.answer, *others], strict=True):
                    answer = {"id": aid, **{k: v for k, v in fields.items() if k not in _ANSWER_KEYS}}
                    answer.setdefault("question_id", qid)
                    answer.update(answer=text, active=True)
                    tables["answers"][aid] = answer
            image = {
                "id": image_id,
                **{
                    k: v
                    for k, v in as_dict(sample.meta.get("rsvqa_image"), "meta['rsvqa_image']").items()
                    if k not in _IMAGE_KEYS
                },
            }
            image.update(questions_ids=my_qids, active=True)
            tables["images"][image_id] = image
        texts: dict[str, str] = {}
        for split, tables in per_split.items():
            for kind, table in tables.items():
                size = max(table, default=-1) + 1
                if size > MAX_POSITIONAL:
                    raise InputError(
                        f"{kind} id {size - 1} needs a {size}-entry positional list (limit {MAX_POSITIONAL}); "
                        "renumber the ids"
                    )
                listing = [table.get(k, {"id": k, "active": False}) for k in range(size)]
                try:
                    texts[f"{prefix}_split_{split}_{kind}.json"] = json.dumps({kind: listing}, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise InputError(f"cannot write split {split}: a value is not plain JSON ({exc})") from None
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            write_text(root / name, text + "\n")

"""MF-RSVLM training data: dataset samples -> task conversations -> padded, masked tensor batches.

Three tasks, each a single-turn conversation about one image (the image placeholder is put in
front of the user message by :func:`~rsvl.methods.mfrsvlm.prompts.build_training_example`):

* ``caption`` -- :func:`~rsvl.methods.mfrsvlm.prompts.caption_prompt` -> one reference caption of
  the image, picked at random per epoch (a seeded draw, so epoch ``e`` of a source always pairs an
  image with the same caption and different epochs see different references).
* ``vqa`` -- :func:`~rsvl.methods.mfrsvlm.prompts.vqa_prompt` -> the answer; one item per
  question. Closed questions (types in :data:`CLOSED_VQA_TYPES`, or untyped questions whose answer
  is yes/no) name the choices ``yes``/``no``, rural/urban questions ``rural``/``urban``
  (:func:`vqa_choices`); the rest get LLaVA-1.5's single word/phrase suffix.
* ``classification`` -- :func:`~rsvl.methods.mfrsvlm.prompts.classification_prompt` over the
  source's class list (the dataset's declared categories, else its sorted labels) -> the label name.

:class:`TaskMix` mixes several :class:`Source` (format, root, task, weight) datasets. Draws are a
pure function of ``(seed, draw index)``: the source of each draw comes from a seeded weighted
choice (blocks of :data:`PLAN_BLOCK` draws, one generator per block) and each source walks through
seeded per-epoch permutations of its items. Batch ``i`` of size ``b`` is draws ``i*b .. i*b+b-1``,
so a resumed training run sees exactly the examples an uninterrupted one would.

:class:`Collator` turns examples into the tensors :meth:`~rsvl.methods.mfrsvlm.model.MFRSVLM.forward`
takes: images read with the project's raster reader (:class:`~rsvl.io.RasterSource`, display RGB
for any dtype or band count), resized to :func:`model_image_size` and CLIP-normalised, and
``input_ids``/``labels``/``attention_mask`` from ``build_training_example`` (the model's template
and system text, so training and :meth:`~rsvl.methods.mfrsvlm.model.MFRSVLM.generate` see the
same prompt) padded on the right.

Image size: :meth:`MFRSVLM.encode` takes any ``(B, 3, H, W)`` batch and resizes it itself -- to the
global view (``features.global_size``) and, for the detail variants, to the canvas
(``features.canvas_size``, twice the global view). Feeding the canvas size gives the sliding
windows real detail (the authors upsample the 336 px processor output instead; see
:mod:`~rsvl.methods.mfrsvlm.features`); the baseline only ever needs the global size. Images are
resized without keeping the aspect ratio (remote-sensing tiles are square; the authors letterbox).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from rsvl.datasets import Sample, get_format
from rsvl.errors import DatasetError, InputError
from rsvl.methods.mfrsvlm.prompts import (
    build_training_example,
    caption_prompt,
    classification_prompt,
    pad_batch,
    vqa_prompt,
)
from rsvl.models.llava import CLIP_MEAN, CLIP_STD
from rsvl.utils.config import CheckedModel

__all__ = [
    "CLOSED_VQA_TYPES",
    "PLAN_BLOCK",
    "TASKS",
    "Collator",
    "Example",
    "Item",
    "Source",
    "TaskMix",
    "as_source",
    "model_image_size",
    "read_image",
    "vqa_choices",
]

logger = logging.getLogger(__name__)

Task = Literal["caption", "vqa", "classification"]
TASKS: tuple[str, ...] = ("caption", "vqa", "classification")
#: Question types answered yes/no (RSVQA's presence/comparison and common aliases).
CLOSED_VQA_TYPES = frozenset({"presence", "comp", "comparison", "yes/no", "yes_no", "yesno", "existence"})
#: Draws planned per seeded generator (the source choice of draw ``k`` uses block ``k // PLAN_BLOCK``).
PLAN_BLOCK = 4096
_YES_NO = ("yes", "no")
_RURAL_URBAN_TYPES = frozenset({"rural_urban", "rural/urban", "rural or urban"})


class Source(CheckedModel):
    """One dataset serving one task.

    Attributes:
        format: a registered dataset format (``captions``, ``rsvqa``, ``classification``, ``vrsbench``...).
        root: the dataset root.
        task: ``caption``, ``vqa`` or ``classification``.
        weight: relative share of the draws (> 0).
        split: keep only samples of this split (None: all).
        strict: a sample lacking the task's field (no captions / questions / label) raises
            :class:`~rsvl.errors.DatasetError`; False skips it (counted in the log).
        instruction: captioning instruction (default :func:`caption_prompt`'s).
    """

    format: str
    root: Path
    task: Task
    weight: float = Field(default=1.0, gt=0)
    split: str | None = None
    strict: bool = True
    instruction: str | None = None

    label: ClassVar[str] = "MF-RSVLM data source"


def as_source(spec: Source | Mapping[str, Any] | Sequence[Any]) -> Source:
    """A :class:`Source` from itself, a dict of its fields, or a ``(format, root, task[, weight])`` tuple."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, Mapping):
        return Source(**dict(spec))
    if isinstance(spec, (list, tuple)) and 3 <= len(spec) <= 4:
        names = ("format", "root", "task", "weight")
        return Source(**dict(zip(names, spec, strict=False)))
    raise InputError(f"a data source is a Source, a dict or a (format, root, task[, weight]) tuple, got {spec!r:.80}")


@dataclass(frozen=True)
class Item:
    """One training/evaluation unit of a source: an image, the user prompt and the reference answer(s).

    ``answers`` holds every reference caption (``caption``), the answer (``vqa``) or the label
    (``classification``); ``key`` is unique within the mix (``"<source>:<id>"``) and used by metrics.
    """

    source: int
    task: str
    key: str
    image_path: Path
    prompt: str
    answers: tuple[str, ...]
    qtype: str | None = None
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Example:
    """One conversation to train on: the item it comes from and the chosen answer."""

    item: Item
    answer: str

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.item.prompt}, {"role": "assistant", "content": self.answer}]


def vqa_choices(qa_type: str | None, answer: str) -> list[str] | None:
    """The choices a closed question names (yes/no; rural/urban for RSVQA's rural_urban), None if open."""
    kind = qa_type.strip().lower() if qa_type is not None else None
    if kind in CLOSED_VQA_TYPES or (kind is None and answer.strip().lower() in _YES_NO):
        return list(_YES_NO)
    if kind in _RURAL_URBAN_TYPES:
        return ["rural", "urban"]
    return None


def _where(sample: Sample) -> Path | str:
    return sample.image_path if sample.root is not None else sample.image


def _sample_id(sample: Sample) -> str:
    return str(sample.image_id if sample.image_id is not None else sample.image)


def _source_items(index: int, src: Source) -> list[Item]:
    """Read one source and turn its samples into items (DatasetError for a sample lacking the field)."""
    dataset = get_format(src.format).open(src.root)
    samples = [s for s in dataset if src.split is None or s.split == src.split]
    if not samples:
        what = f" of split {src.split!r}" if src.split else ""
        raise InputError(f"the {src.format} dataset has no samples{what}", src.root)
    classes: tuple[str, ...] | None = None
    cap_prompt = caption_prompt(src.instruction) if src.instruction is not None else caption_prompt()
    if src.task == "classification":
        declared = dataset.category_names()
        labels = sorted({s.label for s in samples if s.label is not None})
        classes = tuple(declared or labels)
        if not classes:
            raise DatasetError("classification source: no sample has a scene label", src.root)
        prompt = classification_prompt(classes)
    items: list[Item] = []
    skipped = 0
    for sample in samples:
        sid = _sample_id(sample)
        if src.task == "caption":
            caps = tuple(c.strip() for c in sample.captions if isinstance(c, str) and c.strip())
            if not caps:
                if src.strict:
                    raise DatasetError(f"sample {sample.image!r} has no caption (task caption)", _where(sample))
                skipped += 1
                continue
            items.append(Item(index, "caption", f"{index}:{sid}", sample.image_path, cap_prompt, caps))
        elif src.task == "vqa":
            usable = [(i, qa) for i, qa in enumerate(sample.qas) if qa.question.strip() and qa.answer.strip()]
            if not usable:
                if src.strict:
                    raise DatasetError(
                        f"sample {sample.image!r} has no question with an answer (task vqa)", _where(sample)
                    )
                skipped += 1
                continue
            for i, qa in usable:
                qid = str(qa.id) if qa.id is not None else f"{sample.image}#{i}"
                prompt_q = vqa_prompt(qa.question, vqa_choices(qa.type, qa.answer))
                items.append(
                    Item(index, "vqa", f"{index}:{qid}", sample.image_path, prompt_q, (qa.answer.strip(),), qa.type)
                )
        else:
            assert classes is not None
            if sample.label is None:
                if src.strict:
                    raise DatasetError(
                        f"sample {sample.image!r} has no scene label (task classification)", _where(sample)
                    )
                skipped += 1
                continue
            if sample.label not in classes:
                raise DatasetError(f"label {sample.label!r} is not among the classes {list(classes)}", _where(sample))
            items.append(
                Item(
                    index, "classification", f"{index}:{sid}", sample.image_path, prompt, (sample.label,), None, classes
                )
            )
    if skipped:
        logger.warning(
            "%s (%s): skipped %d sample(s) without what task %s needs", src.root, src.format, skipped, src.task
        )
    if not items:
        raise InputError(f"no usable {src.task} sample in the {src.format} dataset", src.root)
    counts = Counter(it.key for it in items)
    dup = next((k for k, c in counts.items() if c > 1), None)
    if dup is not None:
        raise DatasetError(f"two {src.task} items share the id {dup.split(':', 1)[1]!r}", src.root)
    return items


class TaskMix:
    """Weighted mixture of task sources with a deterministic draw order (see the module docstring).

    Args:
        sources: :class:`Source` objects (or what :func:`as_source` accepts); read once, here.
        seed: fixes the source choices, the per-epoch permutations and the caption picks.

    Raises:
        InputError: no sources, an unknown format or task, an empty dataset.
        DatasetError: a sample lacking the task's field (``strict`` sources), naming the image file.
    """

    def __init__(self, sources: Iterable[Source | Mapping[str, Any] | Sequence[Any]], seed: int = 0) -> None:
        if isinstance(sources, (Source, Mapping, str)):
            sources = [sources]  # type: ignore[list-item]
        self.sources: list[Source] = [as_source(s) for s in sources]
        if not self.sources:
            raise InputError("no data sources given")
        self.seed = int(seed)
        self.items: list[list[Item]] = [_source_items(i, s) for i, s in enumerate(self.sources)]
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self._p = weights / weights.sum()
        self._plan_sources = np.zeros(0, dtype=np.int64)  # source of each planned draw
        self._plan_ranks = np.zeros(0, dtype=np.int64)  # index of the draw within its source
        self._counts = np.zeros(len(self.sources), dtype=np.int64)
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        for src, items in zip(self.sources, self.items, strict=True):
            logger.info("%s %s (%s): %d items, weight %g", src.task, src.root, src.format, len(items), src.weight)

    def __len__(self) -> int:
        """Items over all sources (one pass over every image / question)."""
        return sum(len(items) for items in self.items)

    @property
    def tasks(self) -> list[str]:
        """The tasks present, in :data:`TASKS` order."""
        present = {s.task for s in self.sources}
        return [t for t in TASKS if t in present]

    def task_items(self, task: str) -> list[Item]:
        """Every item of the sources serving ``task`` (source order, then dataset order)."""
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        return [it for items in self.items for it in items if it.task == task]

    # ------------------------------------------------------------------ draws

    def _extend_plan(self, upto: int) -> None:
        while len(self._plan_sources) < upto:
            block = len(self._plan_sources) // PLAN_BLOCK
            rng = np.random.default_rng([self.seed, 0x4D46, block])
            chosen = rng.choice(len(self.sources), size=PLAN_BLOCK, p=self._p)
            ranks = np.empty(PLAN_BLOCK, dtype=np.int64)
            for s in range(len(self.sources)):
                where = np.flatnonzero(chosen == s)
                ranks[where] = self._counts[s] + np.arange(len(where))
                self._counts[s] += len(where)
            self._plan_sources = np.concatenate([self._plan_sources, chosen.astype(np.int64)])
            self._plan_ranks = np.concatenate([self._plan_ranks, ranks])

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) > 64:
                self._perms.clear()
            perm = np.random.default_rng([self.seed, 0x5045, source, epoch]).permutation(len(self.items[source]))
            self._perms[key] = perm
        return perm

    def draw(self, index: int) -> Example:
        """Draw number ``index`` (>= 0) of the training stream."""
        if index < 0:
            raise InputError(f"draw index must be >= 0, got {index}")
        self._extend_plan(index + 1)
        source, rank = int(self._plan_sources[index]), int(self._plan_ranks[index])
        items = self.items[source]
        epoch, position = divmod(rank, len(items))
        item_index = int(self._permutation(source, epoch)[position])
        item = items[item_index]
        answer = item.answers[0]
        if len(item.answers) > 1:  # caption: one reference per (epoch, image)
            pick = np.random.default_rng([self.seed, 0x4341, source, epoch, item_index]).integers(len(item.answers))
            answer = item.answers[int(pick)]
        return Example(item, answer)

    def batch(self, index: int, batch_size: int) -> list[Example]:
        """Batch number ``index``: draws ``index * batch_size`` .. ``index * batch_size + batch_size - 1``."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        start = index * batch_size
        return [self.draw(k) for k in range(start, start + batch_size)]

    def describe(self) -> list[dict[str, Any]]:
        """The sources as plain data (recorded with checkpoints: a resumed run must read the same data)."""
        return [
            {**s.model_dump(mode="json"), "items": len(items)}
            for s, items in zip(self.sources, self.items, strict=True)
        ]


# --------------------------------------------------------------------------- tensors


def model_image_size(model: Any) -> int:
    """Side the images are fed at: the canvas for detail variants, the global view for the baseline."""
    features = model.features
    return int(features.global_size if model.variant == "baseline" else features.canvas_size)


def read_image(
    path: str | Path,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """An image file as a normalised ``(3, size, size)`` float32 tensor.

    Read as display RGB by :class:`~rsvl.io.RasterSource` (any dtype and band count), resampled
    (bilinear) to ``size x size`` in the same read, scaled to [0, 1] and normalised with ``mean``/``std``.

    Raises:
        RasterError: a missing or unreadable image (an :class:`InputError` naming the file).
    """
    from rsvl.io import RasterSource

    with RasterSource(path) as src:
        rgb, _valid = src.read_display(src.full_window, out_shape=(int(size), int(size)), resampling="bilinear")
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(torch.float32) / 255.0
    m = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
    s = torch.tensor(list(std), dtype=torch.float32)[:, None, None]
    return (pixels - m) / s


class Collator:
    """Examples -> ``{"images", "input_ids", "labels", "attention_mask"}`` for :meth:`MFRSVLM.forward`.

    Args:
        model: the :class:`~rsvl.methods.mfrsvlm.model.MFRSVLM` (tokenizer, template, system text,
            image size and the image processor's mean/std).
        max_length: truncate token sequences (right) to this length (None: no limit).
        image_size: override :func:`model_image_size`.
    """

    def __init__(self, model: Any, max_length: int | None = None, image_size: int | None = None) -> None:
        self.tokenizer = model.tokenizer
        self.template = model.template
        self.system = model.system
        self.max_length = max_length
        self.image_size = int(image_size) if image_size is not None else model_image_size(model)
        processor = getattr(model.bundle, "image_processor", None)
        self.mean = tuple(getattr(processor, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(getattr(processor, "image_std", None) or CLIP_STD)
        self.pad_id = model.bundle.pad_token_id

    def images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images."""
        return torch.stack([read_image(p, self.image_size, self.mean, self.std) for p in paths])

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        if not examples:
            raise InputError("cannot collate an empty batch")
        ids, labels = [], []
        for ex in examples:
            built = build_training_example(
                self.tokenizer, ex.messages, template=self.template, system=self.system, max_length=self.max_length
            )
            ids.append(built.input_ids)
            labels.append(built.labels)
        batch = pad_batch(ids, self.pad_id, labels, side="right")
        batch["images"] = self.images([ex.item.image_path for ex in examples])
        return batch

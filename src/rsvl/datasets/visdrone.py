"""VisDrone2019-DET annotations and result files.

Layout: ``images/`` + ``annotations/`` with one ``<stem>.txt`` per image (images are ``.jpg``).
Each line is one box::

    <bbox_left>,<bbox_top>,<bbox_width>,<bbox_height>,<score>,<object_category>,<truncation>,<occlusion>

Some real files end lines with a trailing comma; it is tolerated (and not written back).

* ``bbox`` = ``(left, top, left + width, top + height)`` (pixel edges, rsvl's ``xyxy``); zero or
  negative width/height is an error (``strict``) or a counted skip. When ``x2 - x1`` would not give
  the file's width back exactly, the file's ``[left, top, width, height]`` is kept in
  ``attrs["bbox_xywh"]`` (see :mod:`rsvl.datasets.coco`), so rewriting never changes a number.
* categories are the official ones (:data:`VISDRONE_CATEGORIES`): id 0 is "ignored regions" and
  becomes ``Instance(category="ignored regions", ignore=True)``.
* the score column goes to ``attrs["visdrone_score"]`` (:data:`SCORE_ATTR`; not ``"score"``, which
  is a COCO annotation field), ``truncation`` and ``occlusion`` to ``attrs`` as the file has them.
  In ground truth the score column is 1 for boxes the evaluation considers and 0 for ignored ones:
  the official toolkit treats a score-0 object as *ignore* ground truth (detections on it are
  neither true nor false positives), so such objects are read with ``ignore=True`` as well (rsvl's
  crowd / ignore flag, COCO's ``iscrowd``). The writer derives the column from ``ignore`` when
  ``attrs`` lacks it (0 for ignored objects and regions, else 1) and refuses a ``visdrone_score``
  that contradicts ``ignore``.

Result files (:func:`read_visdrone_results`, :func:`write_visdrone_results`) use the same line
format with the detection confidence in the score column and ``-1`` for truncation and occlusion;
the score goes to ``Instance.score``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    format_number,
    parse_float,
    parse_int,
    read_text_lines,
    register_format,
)
from rsvl.datasets.coco import BBOX_XYWH, xywh_for_write, xyxy_from_xywh
from rsvl.datasets.dota import index_images
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError, GeometryError, InputError
from rsvl.geometry.boxes import poly_to_hbb
from rsvl.utils.atomic import write_text

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORED_REGIONS",
    "SCORE_ATTR",
    "VISDRONE_CATEGORIES",
    "VisDroneFormat",
    "read_visdrone_results",
    "write_visdrone_results",
]

IGNORED_REGIONS = "ignored regions"

SCORE_ATTR = "visdrone_score"
"""``Instance.attrs`` key of an annotation file's score column (the ground-truth evaluation flag)."""

VISDRONE_CATEGORIES: tuple[Category, ...] = tuple(
    Category(i, name)
    for i, name in enumerate(
        (
            IGNORED_REGIONS,
            "pedestrian",
            "people",
            "bicycle",
            "car",
            "van",
            "truck",
            "tricycle",
            "awning-tricycle",
            "bus",
            "motor",
            "others",
        )
    )
)
"""The official VisDrone-DET categories, ``Category.id`` = the id in the files."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_FIELDS = "bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion"


def _number(token: str, what: str, path: Path, line: int) -> int | float:
    """An integer when the token is one (``1``, exactly, however long), else a float (``0.87``)."""
    text = token.strip()
    if re.fullmatch(r"[+-]?[0-9]{1,30}", text):
        return int(text)
    return parse_float(token, what, path, line)


def _parse_line(raw: str, path: Path, line: int, names: Mapping[int, str]) -> tuple[Instance, int | float]:
    """One annotation line -> (instance with attrs, score column)."""
    tokens = [t.strip() for t in raw.split(",")]
    if len(tokens) == 9 and tokens[-1] == "":
        tokens.pop()  # trailing comma, as some official files have
    if len(tokens) != 8:
        raise DatasetError(f"expected 8 comma-separated fields ({_FIELDS}), got {len(tokens)}", path, line)
    left, top, width, height = (
        parse_float(t, n, path, line) for t, n in zip(tokens[:4], _FIELDS.split(",")[:4], strict=True)
    )
    if width <= 0 or height <= 0:
        raise DatasetError(f"bbox_width and bbox_height must be > 0, got {tokens[2]} x {tokens[3]}", path, line)
    score = _number(tokens[4], "score", path, line)
    cid = parse_int(tokens[5], "object_category", path, line)
    if cid not in names:
        raise DatasetError(f"object_category: expected one of {sorted(names)}, got {tokens[5]!r}", path, line)
    truncation = parse_int(tokens[6], "truncation", path, line)
    occlusion = parse_int(tokens[7], "occlusion", path, line)
    try:
        bbox, raw_xywh = xyxy_from_xywh(left, top, width, height)
    except GeometryError as exc:
        raise DatasetError(exc.message, path, line) from None
    inst = Instance(category=names[cid], bbox=bbox, ignore=cid == 0)
    inst.attrs = {"truncation": truncation, "occlusion": occlusion}
    if raw_xywh is not None:
        inst.attrs[BBOX_XYWH] = raw_xywh
    return inst, score


def _line(inst: Instance, cid: int, score: float, truncation: int, occlusion: int) -> str:
    bbox = inst.bbox
    if bbox is None and inst.polygon is not None:
        bbox = tuple(float(v) for v in poly_to_hbb(np.asarray(inst.polygon, dtype=np.float64)))
    if bbox is None:
        raise InputError(f"VisDrone needs a box for every object ({inst.category!r} has none)")
    xywh = xywh_for_write(bbox, inst.attrs.get(BBOX_XYWH))
    if not all(math.isfinite(v) for v in xywh):
        raise InputError(f"VisDrone boxes must be finite, got {bbox}")
    if xywh[2] <= 0 or xywh[3] <= 0:
        raise InputError(f"VisDrone boxes need width and height > 0, got {bbox}")
    try:
        score_text = format_number(score)
        flags = [str(int(truncation)), str(int(occlusion))]
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"VisDrone score/truncation/occlusion must be numbers, got {score!r}, {truncation!r}, {occlusion!r}"
        ) from None
    if not math.isfinite(float(score_text)):
        raise InputError(f"VisDrone score must be finite, got {score!r}")
    return ",".join([*(format_number(v) for v in xywh), score_text, str(cid), *flags])


_OFFICIAL_IDS = {c.name: c.id for c in VISDRONE_CATEGORIES}


def _ids(categories: Sequence[Category] | None) -> dict[str, int]:
    """Name -> id, always the official table: a reader maps ids back to the official names, so any
    other numbering (say, a COCO file's ids passed as ``categories``) would relabel objects."""
    return dict(_OFFICIAL_IDS)


def _category_id(inst: Instance, ids: Mapping[str, int], where: str) -> int:
    cid = ids.get(inst.category)
    if cid is None:
        raise InputError(f"{where}: category {inst.category!r} is not a VisDrone category ({', '.join(ids)})")
    return cid


def _gt_score(inst: Instance, cid: int, where: str) -> Any:
    """The annotation score column: ``attrs["visdrone_score"]`` when present, else 0 for ignored
    objects (and regions), 1 otherwise. A stored flag that says the opposite of ``ignore`` on an
    object (not a region) raises: written as is, it would read back with the other ``ignore``."""
    if SCORE_ATTR not in inst.attrs:
        return 0 if inst.ignore or cid == 0 else 1
    score = inst.attrs[SCORE_ATTR]
    if cid != 0 and isinstance(score, (int, float)) and not isinstance(score, bool):
        if inst.ignore and score != 0:
            raise InputError(
                f"{where}: ignored object with attrs[{SCORE_ATTR!r}] = {score!r}; VisDrone marks ignored "
                f"objects with score 0 (drop the attribute or set it to 0)"
            )
        if not inst.ignore and score == 0:
            raise InputError(
                f"{where}: attrs[{SCORE_ATTR!r}] = 0 marks an ignored object in VisDrone, but ignore is False "
                f"(drop the attribute or set ignore=True)"
            )
    return score


@register_format
class VisDroneFormat(DatasetFormat):
    """VisDrone2019-DET ``images/`` + ``annotations/`` (also the VisDrone2018 DET layout)."""

    name = "visdrone"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)
    layout = "images/ + annotations/<stem>.txt ('left,top,width,height,score,category,truncation,occlusion')"
    image_dir = "images"
    ann_dir: ClassVar[str] = "annotations"

    def image_relpath(self, stem: str, suffix: str = ".jpg", label: str | None = None) -> str:
        return f"{self.image_dir}/{stem}{suffix}"

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        """List ``annotations/*.txt`` and ``images/``; files are parsed while iterating. Samples whose
        image is missing are still yielded (``images/<stem>.jpg``) for ``rsvl data check`` to flag."""
        root = Path(root)
        ann_dir = root / self.ann_dir
        if not ann_dir.is_dir():
            raise DatasetError(f"no {self.ann_dir}/ folder (expected the VisDrone layout: {self.layout})", root)
        ann_files = sorted(p for p in ann_dir.iterdir() if p.suffix == ".txt" and p.is_file())
        images = index_images(root / self.image_dir, _IMAGE_SUFFIXES)
        names = {c.id: c.name for c in VISDRONE_CATEGORIES}

        def samples(report: ReadReport) -> Iterator[Sample]:
            for ann_file in ann_files:
                instances: list[Instance] = []
                try:
                    for number, raw in read_text_lines(ann_file):
                        if not raw.strip():
                            continue
                        try:
                            inst, score = _parse_line(raw, ann_file, number, names)
                        except DatasetError as exc:
                            if strict:
                                raise
                            report.skip(exc)
                            continue
                        inst.ignore = inst.ignore or score == 0  # the toolkit's ignore ground truth
                        inst.attrs = {SCORE_ATTR: score, **inst.attrs}
                        instances.append(inst)
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(DatasetError(f"file skipped: {exc.message}", exc.path, exc.line))
                    continue
                stem = ann_file.stem
                name = images.get(stem, f"{stem}.jpg")
                yield Sample(image=f"{self.image_dir}/{name}", image_id=stem, instances=instances)

        return Dataset(root, self.name, samples, VISDRONE_CATEGORIES)

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write ``annotations/<stem>.txt`` per sample (atomically, after checking every sample).

        Category names map to the official ids whatever ``categories`` says (VisDrone's ids are
        fixed; other names raise). Ignored objects (``ignore``, e.g. COCO crowds) get score 0, the
        toolkit's ignore flag. Polygon-only instances are written as their enclosing box. Not written,
        with a warning counting them: ``Instance.score`` (the score column of annotation files is the
        evaluation flag, ``attrs["visdrone_score"]``) and ``difficult`` flags (VisDrone has none).
        """
        root = Path(root)
        ids = _ids(categories)
        outputs: dict[str, str] = {}
        scores = difficult = 0
        for sample in samples:
            folder, _, name = sample.image.rpartition("/")
            if folder != self.image_dir or not name:
                raise InputError(f"image {sample.image!r} is not directly inside {self.image_dir}/ (VisDrone layout)")
            stem = Path(name).stem
            if stem in outputs:
                raise InputError(f"two samples share the image stem {stem!r}; VisDrone keeps one file per stem")
            lines = []
            for n, inst in enumerate(sample.instances):
                where = f"{sample.image} instance {n}"
                cid = _category_id(inst, ids, where)
                score = _gt_score(inst, cid, where)
                lines.append(_line(inst, cid, score, inst.attrs.get("truncation", 0), inst.attrs.get("occlusion", 0)))
                scores += inst.score is not None
                difficult += inst.difficult
            outputs[stem] = "".join(f"{line}\n" for line in lines)
        if scores:
            logger.warning(
                "%d prediction scores not written: the annotation score column is the evaluation flag "
                "(write predictions with write_visdrone_results)",
                scores,
            )
        if difficult:
            logger.warning("%d difficult flags not written: VisDrone annotations have no difficult field", difficult)
        (root / self.ann_dir).mkdir(parents=True, exist_ok=True)  # the layout exists even with no samples
        for stem, text in outputs.items():
            write_text(root / self.ann_dir / f"{stem}.txt", text)


def read_visdrone_results(folder: str | PathLike[str]) -> dict[str, list[Instance]]:
    """Read VisDrone-DET result files (``<stem>.txt`` per image) into ``{stem: [Instance with score]}``.

    Truncation/occlusion other than the ``-1`` placeholders are kept in ``attrs``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError("no such folder (expected VisDrone result files <stem>.txt)", folder)
    names = {c.id: c.name for c in VISDRONE_CATEGORIES}
    out: dict[str, list[Instance]] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file()):
        instances = out.setdefault(path.stem, [])
        for number, raw in read_text_lines(path):
            if not raw.strip():
                continue
            inst, score = _parse_line(raw, path, number, names)
            inst.score = float(score)
            inst.attrs = {k: v for k, v in inst.attrs.items() if v != -1}
            instances.append(inst)
    return out


def write_visdrone_results(
    folder: str | PathLike[str],
    predictions: Mapping[str, Iterable[Instance]],
    categories: Sequence[Category] | None = None,
) -> list[Path]:
    """Write ``{stem: [Instance with score]}`` as VisDrone-DET result files; returns the paths."""
    ids = _ids(categories)
    paths = []
    for stem, instances in predictions.items():
        lines = []
        for n, inst in enumerate(instances):
            where = f"image {stem} prediction {n}"
            if inst.score is None:
                raise InputError(f"{where}: expected a score")
            cid = _category_id(inst, ids, where)
            if inst.ignore and cid != 0:
                raise InputError(f"{where}: a result file cannot mark a detection ignored (only category 0 is)")
            lines.append(
                _line(inst, cid, inst.score, inst.attrs.get("truncation", -1), inst.attrs.get("occlusion", -1))
            )
        path = Path(folder) / f"{stem}.txt"
        write_text(path, "".join(f"{line}\n" for line in lines))
        paths.append(path)
    return paths

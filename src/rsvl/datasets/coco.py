"""COCO-style detection JSON: COCO, AI-TOD and LVIS, plus COCO *results* files.

Layout: ``images/`` + ``annotations.json`` (``open(root, ann_file=...)`` picks another JSON; ``root``
may also be the JSON file itself, whose folder is then the root).

What goes where (so that ``write(read(file))`` reproduces the file's content):

* ``images[i]`` -> :class:`Sample`: ``file_name`` -> ``image`` (``images/<file_name>``), ``id`` ->
  ``image_id``, ``width``/``height``; every other key (``license``, ``coco_url``, ``flickr_url``,
  ``date_captured``, LVIS ``not_exhaustive_category_ids``/``neg_category_ids`` as ids...) ->
  ``Sample.meta``.
* ``annotations[j]`` -> :class:`Instance`: ``bbox`` ``[x, y, w, h]`` -> ``bbox`` ``xyxy``;
  ``segmentation`` -> ``mask`` as stored (polygons or RLE); ``iscrowd`` -> ``ignore``; ``id``;
  ``score`` (pseudo-label files) -> ``score``; ``difficult`` (DOTA/DIOR conversions) ->
  ``difficult``; ``area`` and any other key -> ``attrs``. An annotation needs a ``bbox`` or a
  non-empty ``segmentation``: one with neither has nothing to evaluate and is an error (a counted
  skip with ``strict=False``); the writer likewise refuses an instance with no box, polygon or mask.
* ``categories`` -> ``Dataset.categories`` (ids preserved; ``supercategory``, LVIS ``frequency``,
  ``synonyms``, ``image_count``, ``instance_count``, ``def``, ``synset``... -> ``Category.attrs``).
* every other top-level key (``info``, ``licenses``...) -> ``Dataset.meta``.

Exact numbers: ``x + w`` is not always exactly invertible in floating point (``0.1 + 0.2 - 0.1 !=
0.2``). When ``x2 - x1`` would not give back the file's ``w`` (or ``h``), the reader keeps the file's
``[x, y, w, h]`` in ``attrs["bbox_xywh"]``; the writer uses it whenever it still describes
``Instance.bbox`` exactly, so a read/write cycle never changes a number.

Flavours: ``coco``; ``aitod`` (AI-TOD / AI-TOD-v2: COCO JSON of tiny objects, mean size ~12.8 px,
evaluated with maxDets 1500 and the very-tiny/tiny/small/medium area ranges — the file format is
plain COCO); ``lvis`` (LVIS v0.5/v1: no ``iscrowd``, image paths derived from ``coco_url`` when
``file_name`` is absent as in LVIS v1, ``neg_category_ids``/``not_exhaustive_category_ids`` written
as ``[]`` when a sample lacks them because the LVIS API requires them).

Results files (:func:`read_coco_results`, :func:`write_coco_results`): a JSON list of
``{image_id, category_id, bbox: [x, y, w, h], score}`` (optionally ``segmentation``), as
pycocotools' ``loadRes`` and the LVIS API read them.

Errors name the file and a JSON location: ``annotations.json: annotations[17].bbox: expected 4
finite numbers with w, h >= 0``. Annotation ids of 0 are legal JSON but pycocotools' matcher treats
ground-truth id 0 as "unmatched"; the writer assigns fresh ids from 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    check_type,
    derive_categories,
    load_json,
    register_format,
    resolve_inside,
)
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError, GeometryError, InputError, UnsafeDataError
from rsvl.utils.atomic import write_json

logger = logging.getLogger(__name__)

__all__ = [
    "AitodFormat",
    "CocoFormat",
    "LvisFormat",
    "read_coco_results",
    "write_coco_results",
    "xywh_for_write",
    "xyxy_from_xywh",
]

ANN_FILE = "annotations.json"
BBOX_XYWH = "bbox_xywh"
"""``Instance.attrs`` key holding the file's ``[x, y, w, h]`` when ``xyxy`` cannot give it back exactly."""

_IMAGE_FIELDS = ("id", "file_name", "width", "height")
_ANN_FIELDS = ("id", "image_id", "category_id", "bbox", "segmentation", "iscrowd", "score", "difficult")
_TOP_FIELDS = ("images", "annotations", "categories")
_LVIS_ID_LISTS = ("neg_category_ids", "not_exhaustive_category_ids")


# --------------------------------------------------------------------------- xywh <-> xyxy, exactly


def xyxy_from_xywh(x: float, y: float, w: float, h: float) -> tuple[tuple[float, float, float, float], list | None]:
    """``[x, y, w, h]`` -> ``(xyxy, raw)``; ``raw`` is ``[x, y, w, h]`` when ``x2 - x1`` would not give
    ``w`` back exactly (keep it in ``attrs["bbox_xywh"]``), else None.

    Raises:
        GeometryError: if ``x + w`` or ``y + h`` overflows to infinity.
    """
    bbox = (x, y, x + w, y + h)
    if not (math.isfinite(bbox[2]) and math.isfinite(bbox[3])):
        raise GeometryError(f"box [{x!r}, {y!r}, {w!r}, {h!r}] overflows: x + w or y + h is not finite")
    exact = bbox[2] - x == w and bbox[3] - y == h
    return bbox, None if exact else [x, y, w, h]


def xywh_for_write(bbox: Sequence[float], raw: Any = None) -> list[float]:
    """``xyxy`` -> ``[x, y, w, h]`` for a file: ``raw`` (the numbers read from the file) when it
    still describes ``bbox`` exactly, else ``[x1, y1, x2 - x1, y2 - y1]``."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    if isinstance(raw, (list, tuple)) and len(raw) == 4 and all(_is_number(v) for v in raw):
        x, y, w, h = (float(v) for v in raw)
        if (x, y, x + w, y + h) == (x1, y1, x2, y2):
            return [x, y, w, h]
    return [x1, y1, x2 - x1, y2 - y1]


def _is_number(value: Any) -> bool:
    """A JSON number usable as a float: not a bool, not NaN/inf, not an integer too large for a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


def _finite(value: Any, what: str, path: Path) -> float:
    """Like :func:`rsvl.datasets.base.finite_number`, also refusing integers beyond float range."""
    if not _is_number(value):
        check_type(value, (int, float), what, path)
        raise DatasetError(f"{what}: expected a finite number, got {value!r:.60}", path)
    return float(value)


def _json_number(value: float) -> int | float:
    """Integral floats as ints (``12`` not ``12.0``), like most COCO files store pixel counts."""
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


# --------------------------------------------------------------------------- validation helpers


def _int_id(value: Any, what: str, path: Path) -> int:
    check_type(value, int, what, path)
    return value


def _bbox(value: Any, what: str, path: Path) -> tuple[tuple[float, float, float, float], list | None]:
    expected = "expected 4 finite numbers with w, h >= 0"
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise DatasetError(f"{what}: {expected}, got {value!r:.80}", path)
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        raise DatasetError(f"{what}: {expected}, got {value!r:.80}", path)
    try:
        return xyxy_from_xywh(x, y, w, h)
    except GeometryError as exc:
        raise DatasetError(f"{what}: {exc.message}", path) from None


def _segmentation(value: Any, what: str, path: Path) -> Any:
    """Check a COCO segmentation's shape (not its pixels): polygons or RLE, as stored."""
    if isinstance(value, list):
        for k, poly in enumerate(value):
            if not (isinstance(poly, list) and poly and len(poly) % 2 == 0 and all(_is_number(v) for v in poly)):
                raise DatasetError(
                    f"{what}[{k}]: expected a polygon: a non-empty list of an even number of finite numbers", path
                )
        return value
    if isinstance(value, dict):
        size = value.get("size")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
        ):
            raise DatasetError(f"{what}.size: expected [height, width] non-negative integers, got {size!r:.60}", path)
        counts = value.get("counts")
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
                raise DatasetError(f"{what}.counts: expected non-negative integers (uncompressed RLE)", path)
        elif not isinstance(counts, str):
            raise DatasetError(f"{what}.counts: expected an RLE string or a list of run lengths", path)
        return value
    raise DatasetError(f"{what}: expected a list of polygons or an RLE dict, got {type(value).__name__}", path)


def _check_finite(value: Any, where: str, path: Path) -> Any:
    """Refuse NaN/inf anywhere inside a pass-through value (``1e400`` parses to inf in JSON and would
    be written back as the invalid literal ``Infinity``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DatasetError(f"{where}: expected a finite number, got {value!r}", path)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}", path)
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _check_finite(item, f"{where}[{k}]", path)
    return value


def _dump(path: str | PathLike[str], doc: Any) -> Path:
    """Write JSON atomically, refusing NaN/inf (they are not JSON) with an :class:`InputError`."""
    try:
        return write_json(path, doc, indent=None, allow_nan=False)
    except ValueError as exc:
        raise InputError(f"{path}: cannot write a NaN or infinite number as JSON ({exc})") from None


def _load_document(path: Path) -> Any:
    try:
        return load_json(path)
    except RecursionError:
        raise DatasetError("invalid JSON: nested too deeply", path) from None


def _parse_categories(data: dict, path: Path) -> list[Category]:
    raw = data.get("categories", [])
    check_type(raw, list, "categories", path)
    categories: list[Category] = []
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    for i, cat in enumerate(raw):
        where = f"categories[{i}]"
        check_type(cat, dict, where, path)
        cid = _int_id(cat.get("id"), f"{where}.id", path)
        name = check_type(cat.get("name"), str, f"{where}.name", path)
        if not name:
            raise DatasetError(f"{where}.name: expected a non-empty name", path)
        if cid in seen_ids:
            raise DatasetError(f"{where}.id: category id {cid} is declared twice", path)
        if name in seen_names:
            raise DatasetError(f"{where}.name: category name {name!r} is declared twice", path)
        seen_ids.add(cid)
        seen_names.add(name)
        attrs = {k: v for k, v in cat.items() if k not in ("id", "name")}
        categories.append(Category(cid, name, _check_finite(attrs, where, path)))
    return categories


def _lvis_relpath(coco_url: Any) -> str | None:
    """``http://images.cocodataset.org/train2017/000000391895.jpg`` -> ``train2017/000000391895.jpg``
    (the folder/name layout the LVIS API and detectron2 use)."""
    if not isinstance(coco_url, str) or "/" not in coco_url:
        return None
    parts = coco_url.rstrip("/").split("/")
    if len(parts) < 2 or not parts[-1] or not parts[-2]:
        return None
    return f"{parts[-2]}/{parts[-1]}"


def _join(image_dir: str, name: str) -> str:
    return f"{image_dir}/{name}" if image_dir else name


# --------------------------------------------------------------------------- the reader


class _CocoReader:
    """Parses one COCO-style document lazily: images and their annotations one at a time."""

    def __init__(self, root: Path, ann_path: Path, image_dir: str, flavour: str, data: dict, strict: bool):
        self.root = root
        self.path = ann_path
        self.image_dir = image_dir
        self.flavour = flavour
        self.data = data
        self.strict = strict
        self.categories = _parse_categories(data, ann_path)
        self.cat_by_id = {c.id: c for c in self.categories}

    def _fail(self, error: DatasetError, report: ReadReport) -> None:
        """Raise in strict mode (always for unsafe data); otherwise count the skip."""
        if self.strict or isinstance(error, UnsafeDataError):
            raise error
        report.skip(error)

    def samples(self, report: ReadReport) -> Iterator[Sample]:
        images = self.data["images"]
        anns = self.data.get("annotations", [])

        image_ids: dict[int, int] = {}  # image id -> index in images
        for i, img in enumerate(images):
            try:
                check_type(img, dict, f"images[{i}]", self.path)
                iid = _int_id(img.get("id"), f"images[{i}].id", self.path)
                if iid in image_ids:
                    raise DatasetError(f"images[{i}].id: image id {iid} is used twice", self.path)
                image_ids[iid] = i
            except DatasetError as exc:
                self._fail(exc, report)

        by_image: dict[int, list[int]] = {}
        for j, ann in enumerate(anns):
            try:
                check_type(ann, dict, f"annotations[{j}]", self.path)
                iid = _int_id(ann.get("image_id"), f"annotations[{j}].image_id", self.path)
                if iid not in image_ids:
                    raise DatasetError(f"annotations[{j}].image_id: no image has id {iid}", self.path)
                by_image.setdefault(iid, []).append(j)
            except DatasetError as exc:
                self._fail(exc, report)

        seen_ann_ids: set[int] = set()
        for iid, i in image_ids.items():
            try:
                sample = self._image(images[i], i)
            except DatasetError as exc:
                self._fail(exc, report)
                for j in by_image.get(iid, []):
                    report.skip(DatasetError(f"annotations[{j}]: skipped with its image images[{i}]", self.path))
                continue
            for j in by_image.get(iid, []):
                try:
                    sample.instances.append(self._annotation(anns[j], j, seen_ann_ids))
                except DatasetError as exc:
                    self._fail(exc, report)
            yield sample

    def _image(self, img: dict, i: int) -> Sample:
        where = f"images[{i}]"
        file_name = img.get("file_name")
        if file_name is None and self.flavour == "lvis":
            file_name = _lvis_relpath(img.get("coco_url"))
            if file_name is None:
                raise DatasetError(f"{where}: expected a file_name or a coco_url ending in <folder>/<name>", self.path)
        check_type(file_name, str, f"{where}.file_name", self.path)
        if not file_name:
            raise DatasetError(f"{where}.file_name: expected a non-empty relative path", self.path)
        resolve_inside(self.root / self.image_dir, file_name, self.path)
        size = {}
        for key in ("width", "height"):
            value = img.get(key)
            if value is not None:
                check_type(value, int, f"{where}.{key}", self.path)
                if value <= 0:
                    raise DatasetError(f"{where}.{key}: expected a positive integer, got {value}", self.path)
            size[key] = value
        meta = _check_finite({k: v for k, v in img.items() if k not in _IMAGE_FIELDS}, where, self.path)
        for key in _LVIS_ID_LISTS:
            if key in meta:
                ids = check_type(meta[key], list, f"{where}.{key}", self.path)
                for k, cid in enumerate(ids):
                    _int_id(cid, f"{where}.{key}[{k}]", self.path)
                    if cid not in self.cat_by_id:
                        raise DatasetError(f"{where}.{key}[{k}]: category id {cid} is not declared", self.path)
        return Sample(
            image=_join(self.image_dir, file_name),
            image_id=img["id"],
            width=size["width"],
            height=size["height"],
            meta=meta,
        )

    def _annotation(self, ann: dict, j: int, seen_ids: set[int]) -> Instance:
        where = f"annotations[{j}]"
        path = self.path
        ann_id = ann.get("id")
        if ann_id is not None:
            _int_id(ann_id, f"{where}.id", path)
            if ann_id in seen_ids:
                raise DatasetError(f"{where}.id: annotation id {ann_id} is used twice", path)
        cid = _int_id(ann.get("category_id"), f"{where}.category_id", path)
        category = self.cat_by_id.get(cid)
        if category is None:
            raise DatasetError(f"{where}.category_id: category id {cid} is not declared in categories", path)
        attrs = _check_finite({k: v for k, v in ann.items() if k not in _ANN_FIELDS}, where, path)
        bbox = None
        if "bbox" in ann:
            bbox, raw = _bbox(ann["bbox"], f"{where}.bbox", path)
            if raw is not None:
                attrs[BBOX_XYWH] = raw
        mask = _segmentation(ann["segmentation"], f"{where}.segmentation", path) if "segmentation" in ann else None
        if bbox is None and not mask:  # no box and no (or an empty) polygon list: nothing to evaluate
            raise DatasetError(
                f"{where}: expected a bbox or a non-empty segmentation, the annotation has neither "
                f"(keys: {', '.join(map(str, ann)) or 'none'})"[:300],
                path,
            )
        if "area" in attrs:
            area = _finite(attrs["area"], f"{where}.area", path)
            if area < 0:
                raise DatasetError(f"{where}.area: expected a number >= 0, got {attrs['area']!r}", path)
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, (bool, float)):
            raise DatasetError(f"{where}.iscrowd: expected 0 or 1, got {iscrowd!r:.40}", path)
        score = None
        if "score" in ann:
            score = _finite(ann["score"], f"{where}.score", path)
        difficult = ann.get("difficult", 0)
        if difficult not in (0, 1) or isinstance(difficult, float):
            raise DatasetError(f"{where}.difficult: expected 0 or 1, got {difficult!r:.40}", path)
        if ann_id is not None:
            seen_ids.add(ann_id)
        return Instance(
            category=category.name,
            bbox=bbox,
            mask=mask,
            score=score,
            difficult=bool(difficult),
            ignore=bool(iscrowd),
            id=ann_id,
            attrs=attrs,
        )


# --------------------------------------------------------------------------- the writer


def _category_ids(categories: Sequence[Category]) -> dict[str, int]:
    ids: dict[str, int] = {}
    seen: set[int] = set()
    for cat in categories:
        if cat.name in ids or cat.id in seen:
            raise InputError(f"category {cat.name!r} (id {cat.id}) is declared twice")
        if not isinstance(cat.id, int) or isinstance(cat.id, bool):
            raise InputError(f"category {cat.name!r}: COCO category ids are integers, got {cat.id!r}")
        ids[cat.name] = cat.id
        seen.add(cat.id)
    return ids


def _fresh_ids(taken: Iterable[Any]) -> Iterator[int]:
    """1, 2, 3... skipping ids already in use."""
    used = {v for v in taken if isinstance(v, int) and not isinstance(v, bool)}
    candidate = 1
    while True:
        if candidate not in used:
            yield candidate
        candidate += 1


def _area(inst: Instance, sample: Sample) -> int | float:
    """``attrs["area"]`` (a number, or numeric text from a CSV), else the mask's or the box's area."""
    if "area" in inst.attrs:
        value = inst.attrs["area"]
        if _is_number(value):
            return value
        try:
            area = float(value)
        except (TypeError, ValueError):
            area = math.nan
        if not math.isfinite(area) or area < 0:
            raise InputError(f"{sample.image}: instance attribute area must be a number >= 0, got {value!r}")
        return _json_number(area)
    if inst.mask:
        from rsvl.geometry import masks

        size = inst.mask.get("size") if isinstance(inst.mask, dict) else None
        h, w = (size[0], size[1]) if size else (sample.height, sample.width)
        if h is not None and w is not None:
            try:
                return masks.area(inst.mask, h, w)
            except GeometryError as exc:
                raise InputError(f"{sample.image}: instance mask: {exc.message}") from None
    if inst.bbox is not None:
        x1, y1, x2, y2 = inst.bbox
        return _json_number((x2 - x1) * (y2 - y1))
    return 0


class _CocoWriter:
    def __init__(self, flavour: str, image_dir: str, categories: Sequence[Category]):
        self.flavour = flavour
        self.image_dir = image_dir
        self.categories = list(categories)
        self.cat_ids = _category_ids(self.categories)

    def document(self, samples: Sequence[Sample], meta: Mapping[str, Any]) -> dict[str, Any]:
        clash = [k for k in _TOP_FIELDS if k in meta]
        if clash:
            raise InputError(f"dataset meta must not hold {clash}: the writer builds them from the samples")
        image_ids = self._image_ids(samples)
        fresh_ann = _fresh_ids(inst.id for s in samples for inst in s.instances)
        seen_ann: set[int] = set()
        images, annotations = [], []
        for sample, iid in zip(samples, image_ids, strict=True):
            images.append(self._image(sample, iid))
            for inst in sample.instances:
                ann_id = inst.id
                if ann_id is None:
                    ann_id = next(fresh_ann)
                elif not isinstance(ann_id, int) or isinstance(ann_id, bool) or ann_id in seen_ann:
                    raise InputError(f"{sample.image}: annotation id {ann_id!r} is not a unique integer")
                seen_ann.add(ann_id)
                annotations.append(self._annotation(inst, sample, iid, ann_id))
        cats = [{"id": c.id, "name": c.name, **c.attrs} for c in self.categories]
        return {**meta, "images": images, "annotations": annotations, "categories": cats}

    def _image_ids(self, samples: Sequence[Sample]) -> list[int]:
        fresh = _fresh_ids(s.image_id for s in samples)
        seen: set[int] = set()
        ids = []
        for s in samples:
            iid = s.image_id
            if not isinstance(iid, int) or isinstance(iid, bool):
                iid = next(fresh)
                logger.debug("image %s: non-integer image_id %r replaced by %d", s.image, s.image_id, iid)
            if iid in seen:
                raise InputError(f"{s.image}: image id {iid} is used by two samples")
            seen.add(iid)
            ids.append(iid)
        return ids

    def _file_name(self, sample: Sample) -> str:
        prefix = f"{self.image_dir}/" if self.image_dir else ""
        if not sample.image.startswith(prefix) or len(sample.image) == len(prefix):
            raise InputError(f"image {sample.image!r} is not inside the COCO image folder {self.image_dir!r}/")
        return sample.image[len(prefix) :]

    def _image(self, sample: Sample, iid: int) -> dict[str, Any]:
        clash = [k for k in _IMAGE_FIELDS if k in sample.meta]
        if clash:
            raise InputError(f"{sample.image}: sample meta must not hold {clash}: they are Sample fields")
        file_name = self._file_name(sample)
        out: dict[str, Any] = {"id": iid}
        if not (self.flavour == "lvis" and _lvis_relpath(sample.meta.get("coco_url")) == file_name):
            out["file_name"] = file_name
        if sample.width is not None:
            out["width"] = sample.width
        if sample.height is not None:
            out["height"] = sample.height
        out.update(sample.meta)
        if self.flavour == "lvis":
            for key in _LVIS_ID_LISTS:
                out.setdefault(key, [])
        return out

    def _annotation(self, inst: Instance, sample: Sample, iid: int, ann_id: int) -> dict[str, Any]:
        cid = self.cat_ids.get(inst.category)
        if cid is None:
            raise InputError(f"{sample.image}: category {inst.category!r} is not among the dataset's categories")
        out: dict[str, Any] = {"id": ann_id, "image_id": iid, "category_id": cid}
        if inst.bbox is not None:
            out["bbox"] = [_json_number(v) for v in xywh_for_write(inst.bbox, inst.attrs.get(BBOX_XYWH))]
        mask = inst.mask
        if mask is None and inst.polygon is not None:
            mask = [[_json_number(v) for v in inst.polygon]]
        if mask is not None:
            out["segmentation"] = mask
        if "bbox" not in out and not mask:  # the reader refuses such an annotation: do not write one
            raise InputError(f"{sample.image}: a {inst.category!r} instance has neither a box, a polygon nor a mask")
        out["area"] = _area(inst, sample)
        if self.flavour != "lvis" or inst.ignore:
            out["iscrowd"] = int(inst.ignore)
        if inst.score is not None:
            out["score"] = float(inst.score)
        if inst.difficult:
            out["difficult"] = 1
        for key, value in inst.attrs.items():
            if key == BBOX_XYWH or key == "area":
                continue
            if key in out or key in _ANN_FIELDS:
                raise InputError(f"{sample.image}: instance attribute {key!r} collides with the COCO field {key!r}")
            out[key] = value
        return out


# --------------------------------------------------------------------------- the formats


def _locate(root: str | PathLike[str], ann_file: str | PathLike[str] | None) -> tuple[Path, Path]:
    """(dataset root, annotation JSON) from a folder, a JSON path, or a folder plus ``ann_file``."""
    root = Path(root)
    if ann_file is None and root.suffix.lower() == ".json" and not root.is_dir():
        return root.parent, root
    ann = Path(ann_file) if ann_file is not None else Path(ANN_FILE)
    return root, ann if ann.is_absolute() else root / ann


class _CocoFlavour(DatasetFormat):
    """Shared reader/writer; subclasses only set ``name`` and ``flavour``."""

    flavour: ClassVar[str] = "coco"
    tasks: ClassVar[tuple[str, ...]] = ("detection", "segmentation")
    layout: ClassVar[str] = "images/ + annotations.json (COCO: images, annotations with xywh bbox, categories)"
    image_dir: ClassVar[str] = "images"

    def open(
        self,
        root: str | PathLike[str],
        *,
        strict: bool = True,
        ann_file: str | PathLike[str] | None = None,
        image_dir: str | None = None,
    ) -> Dataset:
        """Load the JSON, check its categories, and return a dataset that parses images lazily.

        Args:
            root: dataset folder, or the annotation JSON itself.
            strict: raise at the first bad entry (else skip it and count it in ``report``).
            ann_file: annotation JSON relative to ``root`` (default ``annotations.json``).
            image_dir: folder of the images relative to ``root`` (default ``images``).
        """
        root_path, ann_path = _locate(root, ann_file)
        if not ann_path.is_file():
            raise DatasetError(
                f"no annotation file {ann_path.name} (expected the {self.name} layout: {self.layout})", ann_path
            )
        data = _load_document(ann_path)
        check_type(data, dict, "top level", ann_path)
        check_type(data.get("images"), list, "images", ann_path)
        check_type(data.get("annotations", []), list, "annotations", ann_path)
        folder = self.image_dir if image_dir is None else image_dir.strip("/")
        reader = _CocoReader(root_path, ann_path, folder, self.flavour, data, strict)
        meta = {k: _check_finite(v, k, ann_path) for k, v in data.items() if k not in _TOP_FIELDS}
        return Dataset(root_path, self.name, reader.samples, reader.categories, meta)

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
        ann_file: str | PathLike[str] | None = None,
        image_dir: str | None = None,
    ) -> None:
        """Write ``annotations.json`` (atomically). ``meta`` supplies ``info``, ``licenses`` and any
        other top-level key; ``categories`` fixes ids (default: sorted names, ids from 1)."""
        samples = list(samples)
        cats = list(categories) if categories is not None else derive_categories(samples)
        folder = self.image_dir if image_dir is None else image_dir.strip("/")
        doc = _CocoWriter(self.flavour, folder, cats).document(samples, dict(meta or {}))
        _, ann_path = _locate(root, ann_file)
        _dump(ann_path, doc)


@register_format
class CocoFormat(_CocoFlavour):
    """MS-COCO instances JSON (``instances_*.json``)."""

    name = "coco"
    flavour = "coco"


@register_format
class AitodFormat(_CocoFlavour):
    """AI-TOD / AI-TOD-v2: COCO JSON whose objects are tiny (most under 16 px); same file format."""

    name = "aitod"
    flavour = "aitod"
    layout = "images/ + annotations.json (COCO JSON of tiny objects: AI-TOD, AI-TOD-v2)"


@register_format
class LvisFormat(_CocoFlavour):
    """LVIS v0.5 / v1 JSON: COCO layout plus federated labels (neg/not-exhaustive category ids)."""

    name = "lvis"
    flavour = "lvis"
    layout = "images/ + annotations.json (LVIS: images by coco_url, neg/not_exhaustive ids, r/c/f categories)"


# --------------------------------------------------------------------------- results files


def _categories_of(gt: Dataset | Sequence[Category]) -> list[Category]:
    return list(gt.categories) if isinstance(gt, Dataset) else list(gt)


def read_coco_results(
    path: str | PathLike[str],
    gt: Dataset | Sequence[Category],
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[int, list[Instance]]:
    """Read a COCO results file into ``{image_id: [Instance with score]}``.

    Args:
        path: JSON list of ``{image_id, category_id, bbox: [x, y, w, h], score}`` (``segmentation``
            optional; ``bbox`` may be absent when a segmentation is given).
        gt: the ground-truth dataset (its categories and, iterated, its image ids) or its categories.
        image_ids: the valid image ids when ``gt`` is a list of categories (None: any id).

    Raises:
        DatasetError: naming the JSON location (``[17].bbox``) of a NaN, a negative size, an
            undeclared category id, an unknown image id or a missing score.
    """
    path = Path(path)
    cats = {c.id: c for c in _categories_of(gt)}
    known: set[Any] | None = None
    if isinstance(gt, Dataset):
        known = {s.image_id for s in gt}
    elif image_ids is not None:
        known = set(image_ids)
    data = _load_document(path)
    check_type(data, list, "top level (a list of detections)", path)
    out: dict[int, list[Instance]] = {}
    for k, det in enumerate(data):
        where = f"[{k}]"
        check_type(det, dict, where, path)
        iid = _int_id(det.get("image_id"), f"{where}.image_id", path)
        if known is not None and iid not in known:
            raise DatasetError(f"{where}.image_id: no ground-truth image has id {iid}", path)
        cid = _int_id(det.get("category_id"), f"{where}.category_id", path)
        if cid not in cats:
            raise DatasetError(f"{where}.category_id: category id {cid} is not declared in the ground truth", path)
        if "score" not in det:
            raise DatasetError(f"{where}.score: missing (every detection needs a confidence)", path)
        score = _finite(det["score"], f"{where}.score", path)
        extras = {k: v for k, v in det.items() if k not in ("image_id", "category_id", "bbox", "score", "segmentation")}
        attrs = _check_finite(extras, where, path)
        bbox = None
        if "bbox" in det:
            bbox, raw = _bbox(det["bbox"], f"{where}.bbox", path)
            if raw is not None:
                attrs[BBOX_XYWH] = raw
        mask = _segmentation(det["segmentation"], f"{where}.segmentation", path) if "segmentation" in det else None
        if bbox is None and mask is None:
            raise DatasetError(f"{where}: expected a bbox or a segmentation", path)
        out.setdefault(iid, []).append(
            Instance(category=cats[cid].name, bbox=bbox, mask=mask, score=score, attrs=attrs)
        )
    return out


def write_coco_results(
    path: str | PathLike[str],
    predictions: Mapping[int, Iterable[Instance]],
    categories: Dataset | Sequence[Category],
) -> Path:
    """Write ``{image_id: [Instance]}`` as a COCO results JSON list (atomically); returns the path.

    Every instance needs a finite ``score`` and a category named in ``categories``; masks are written
    as ``segmentation`` (RLE as stored).
    """
    ids = _category_ids(_categories_of(categories))
    out: list[dict[str, Any]] = []
    for iid, instances in predictions.items():
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise InputError(f"COCO results need integer image ids, got {iid!r}")
        for n, inst in enumerate(instances):
            where = f"image {iid} prediction {n}"
            if inst.category not in ids:
                raise InputError(f"{where}: category {inst.category!r} is not among the ground-truth categories")
            if inst.score is None or not math.isfinite(float(inst.score)):
                raise InputError(f"{where}: expected a finite score, got {inst.score!r}")
            det: dict[str, Any] = {"image_id": iid, "category_id": ids[inst.category]}
            if inst.bbox is not None:
                xywh = xywh_for_write(inst.bbox, inst.attrs.get(BBOX_XYWH))
                if not all(math.isfinite(v) for v in xywh) or xywh[2] < 0 or xywh[3] < 0:
                    raise InputError(f"{where}: expected a finite box with x2 >= x1 and y2 >= y1, got {inst.bbox}")
                det["bbox"] = [_json_number(v) for v in xywh]
            if inst.mask is not None:
                det["segmentation"] = inst.mask
            if "bbox" not in det and "segmentation" not in det:
                raise InputError(f"{where}: has neither a bbox nor a mask")
            det["score"] = float(inst.score)
            for key, value in inst.attrs.items():
                if key != BBOX_XYWH and key not in det:
                    det[key] = value
            out.append(det)
    return _dump(path, out)

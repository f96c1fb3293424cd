"""RRSIS-D / RefCOCO referring segmentation in the REFER layout (``refs(unc).p`` + ``instances.json``).

Layout (the REFER API's, as RMSIN and every RRSIS-D loader use it; ``root`` is REFER's
``data_root``)::

    root/
      rrsisd/refs(unc).p          pickled list of refs (see below), protocol 2
      rrsisd/instances.json       COCO: images, annotations (bbox xywh, segmentation), categories
      images/rrsisd/JPEGImages/   the images (RRSIS-D: 800 x 800 JPEGs), named by ``file_name``

The dataset folder name (``rrsisd``), the split scheme (``unc``) and the image folder are
constructor options, so RefCOCO (``dataset="refcoco"``, ``image_dir="images/mscoco/images/train2014"``)
reads the same way. Annotation files found directly in ``root`` are accepted too.

A ref (RefCOCO keys) is ``{"ref_id", "ann_id", "image_id", "category_id", "split", "file_name",
"sent_ids", "sentences": [{"sent", "raw", "tokens", "sent_id"}]}``. The refs file is read with
:func:`rsvl.datasets.safe_pickle.safe_load_pickle` (no code runs) and written with pickle protocol
2 holding only builtins, so Python 2 and 3 REFER code both load it.

Each :class:`Sample` is one image of ``instances.json`` (file order) with its annotations as
:class:`Instance` (``bbox`` xyxy; ``mask`` the COCO segmentation — RRSIS-D wraps each RLE in a
one-element list, which is unwrapped on reading and restored on writing; ``ignore`` =
``iscrowd``) and its refs as :class:`Referring`: ``sentences`` are the ``sent`` strings,
``target`` indexes the referred annotation in ``instances``, ``id`` is ``ref_id``. What the
writer cannot regenerate is kept so that writing reproduces the files:

* ``Referring.attrs``: ``raw`` / ``tokens`` (lists aligned with ``sentences``; only when some
  ``raw`` differs from ``sent`` / some ``tokens`` from ``sent.split()``), ``sent_ids`` (only
  when they differ from the running count 0, 1, 2... over the refs read), ``ref_sent_ids`` (the ref's
  ``sent_ids`` when it differs from the sentences' ids), ``split`` (when the image's refs
  disagree; otherwise it is ``Sample.split``), ``category_id`` / ``file_name`` (when they differ
  from the annotation's / image's), ``sentence_extra`` and ``extra`` (unknown keys).
* ``Instance.attrs``: ``area`` (when it differs from the default: an RLE's pixel count, the
  polygons' enclosed (shoelace) area, or ``w * h`` without a mask) and unknown annotation keys
  (``difficult`` and ``score``, not COCO keys, map to those fields);
  ``Sample.meta["coco_image"]``: unknown image keys; ``Dataset.meta``: the other top-level keys
  of ``instances.json`` (``info``, ``licenses``...).

A ref whose ``image_id`` or ``ann_id`` is unknown, or whose annotation belongs to another image,
is an error naming the ref. The split of an image with no refs is not stored (the format keeps
splits on refs only).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
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
    derive_categories,
    finite_number,
    get_field,
    load_json,
    register_format,
    resolve_inside,
)
from rsvl.datasets.safe_pickle import safe_load_pickle
from rsvl.datasets.sample import Category, Instance, Referring, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.utils.atomic import write_bytes, write_text

log = logging.getLogger(__name__)

__all__ = ["RRSISDFormat"]

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox", "segmentation", "iscrowd", "area", "difficult", "score")
_REF_KEYS = ("sent_ids", "file_name", "ann_id", "ref_id", "image_id", "split", "sentences", "category_id")
_SENT_KEYS = ("tokens", "raw", "sent_id", "sent")
_MAX_PIXELS = 2**31
"""RLE masks are limited to what pycocotools' 32-bit counts can hold."""


# ----------------------------------------------------------------------------- small checked readers


def _rle_runs(counts: str) -> list[int] | None:
    """Run lengths of a pycocotools compressed RLE string; None if the string is malformed.

    Mirrors ``rleFrString`` (6-bit groups from ``chr(48)``, continuation bit 0x20, sign bit 0x10,
    runs after the second stored as differences) but checks every character, so a corrupt string
    is refused here instead of being read past its end by the C code.
    """
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n or k > 12:
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _rle_area(rle: dict[str, Any], where: str, path: Path, size: tuple[int, int] | None) -> int:
    """Validate an RLE dict and return its pixel count."""
    dims = get_field(rle, "size", list, where, path)
    if len(dims) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in dims):
        raise DatasetError(f"{where}.size: expected [height, width] non-negative integers, got {dims!r:.60}", path)
    if dims[0] * dims[1] >= _MAX_PIXELS:
        raise DatasetError(f"{where}.size: {dims} is larger than any image ({_MAX_PIXELS} pixels)", path)
    if size is not None and tuple(dims) != size:
        raise DatasetError(f"{where}.size: {dims} does not match the image size [{size[0]}, {size[1]}]", path)
    counts = get_field(rle, "counts", (str, list), where, path)
    if isinstance(counts, str):
        runs = _rle_runs(counts)
        if runs is None:
            raise DatasetError(f"{where}.counts: not a valid compressed RLE string", path)
    else:
        runs = counts
        for j, v in enumerate(runs):
            if not isinstance(v, int) or isinstance(v, bool):
                raise DatasetError(f"{where}.counts[{j}]: expected int, got {v!r:.40}", path)
    if any(v < 0 for v in runs) or sum(runs) != dims[0] * dims[1]:
        raise DatasetError(f"{where}.counts: runs must be non-negative and sum to height * width", path)
    return int(sum(runs[1::2]))


def _polygon_area(polys: list[list[float]]) -> float:
    """Area enclosed by the polygons (shoelace formula, summed): the writer's default ``area``."""
    total = 0.0
    for poly in polys:
        xs, ys = poly[0::2], poly[1::2]
        n = len(xs)
        total += abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2
    return total


def _segmentation(seg: Any, where: str, path: Path, size: tuple[int, int] | None) -> tuple[Any, float | None]:
    """Normalise a COCO/RRSIS-D segmentation to ``Instance.mask`` and return its area (if computable)."""
    if isinstance(seg, dict):
        return dict(seg), _rle_area(seg, where, path, size)
    check_type(seg, list, where, path)
    if not seg:
        return None, None
    if all(isinstance(part, dict) for part in seg):
        areas = [_rle_area(part, f"{where}[{j}]", path, size) for j, part in enumerate(seg)]
        if len(seg) == 1:
            return dict(seg[0]), areas[0]
        sizes = {tuple(part["size"]) for part in seg}
        if len(sizes) != 1:
            raise DatasetError(f"{where}: RLE parts have different sizes {sorted(sizes)}", path)
        from pycocotools import mask as coco_mask

        h, w = sizes.pop()
        parts = [
            {"size": [h, w], "counts": p["counts"].encode("ascii")}
            if isinstance(p["counts"], str)
            else coco_mask.frPyObjects({"size": [h, w], "counts": p["counts"]}, h, w)
            for p in seg
        ]
        merged = coco_mask.merge(parts)
        log.warning("%s: %s holds %d RLE parts; they are merged into one mask", path, where, len(seg))
        rle = {"size": [h, w], "counts": merged["counts"].decode("ascii")}
        return rle, _rle_area(rle, where, path, size)
    polys: list[list[float]] = []
    for j, poly in enumerate(seg):
        check_type(poly, list, f"{where}[{j}]", path)
        if len(poly) < 6 or len(poly) % 2:
            raise DatasetError(f"{where}[{j}]: a polygon needs an even number (>= 6) of coordinates", path)
        polys.append([finite_number(v, f"{where}[{j}][{i}]", path) for i, v in enumerate(poly)])
    return [list(p) for p in seg], _polygon_area(polys)


def _default_area(bbox: tuple[float, float, float, float], mask_area: float | None) -> float:
    return float(mask_area) if mask_area is not None else (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])


# ----------------------------------------------------------------------------- the format


@register_format
class RRSISDFormat(DatasetFormat):
    """RRSIS-D (and RefCOCO-family) referring expressions in the REFER layout; see the module docstring.

    Args:
        dataset: REFER dataset folder name under the root (``rrsisd``, ``refcoco``...).
        split_by: split scheme in the refs file name, ``refs(<split_by>).p``.
        image_dir: image folder relative to the root; default ``images/<dataset>/JPEGImages``.
    """

    name = "rrsisd"
    tasks = ("referring", "detection")
    layout = "rrsisd/refs(unc).p + rrsisd/instances.json (COCO) + images/rrsisd/JPEGImages/"
    image_dir = "images/rrsisd/JPEGImages"

    def __init__(self, dataset: str = "rrsisd", split_by: str = "unc", image_dir: str | None = None):
        self.dataset = dataset
        self.split_by = split_by
        self.image_dir = image_dir or f"images/{dataset}/JPEGImages"

    @property
    def refs_name(self) -> str:
        return f"refs({self.split_by}).p"

    def _annotation_dir(self, root: Path) -> Path:
        for candidate in (root / self.dataset, root):
            if (candidate / self.refs_name).is_file() and (candidate / "instances.json").is_file():
                return candidate
        raise DatasetError(
            f"not an {self.name} dataset: expected {self.dataset}/{self.refs_name} and "
            f"{self.dataset}/instances.json under the root",
            root,
        )

    # ------------------------------------------------------------------------- reading

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        ann_dir = self._annotation_dir(root)
        inst_path, refs_path = ann_dir / "instances.json", ann_dir / self.refs_name
        data = load_json(inst_path)
        check_type(data, dict, "top level", inst_path)
        for key in ("images", "annotations", "categories"):
            get_field(data, key, list, "top level", inst_path)
        categories = self._categories(data["categories"], inst_path)
        meta = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}

        def samples(report: ReadReport) -> Iterator[Sample]:
            yield from self._samples(root, data, categories, inst_path, refs_path, report, strict)

        return Dataset(root, self.name, samples, categories, meta)

    @staticmethod
    def _categories(entries: list[Any], path: Path) -> list[Category]:
        out: list[Category] = []
        ids: set[int] = set()
        for k, cat in enumerate(entries):
            where = f"categories[{k}]"
            check_type(cat, dict, where, path)
            cid = get_field(cat, "id", int, where, path)
            name = get_field(cat, "name", str, where, path)
            if cid in ids:
                raise DatasetError(f"{where}.id: category id {cid} declared twice", path)
            ids.add(cid)
            out.append(Category(cid, name, {k2: v for k2, v in cat.items() if k2 not in ("id", "name")}))
        return out

    def _samples(
        self,
        root: Path,
        data: dict[str, Any],
        categories: list[Category],
        inst_path: Path,
        refs_path: Path,
        report: ReadReport,
        strict: bool,
    ) -> Iterator[Sample]:
        def fail(error: DatasetError) -> None:
            if strict:
                raise error
            report.skip(error)

        cat_names = {c.id: c.name for c in categories}
        images: dict[Any, Sample] = {}
        for k, entry in enumerate(data["images"]):
            try:
                sample = self._image(root, entry, f"images[{k}]", inst_path)
                if sample.image_id in images:
                    raise DatasetError(f"images[{k}].id: image id {sample.image_id!r} appears twice", inst_path)
                images[sample.image_id] = sample
            except DatasetError as exc:
                fail(exc)
        # ann id -> (image id, index in that image's instances, category id)
        anns: dict[int, tuple[Any, int, int]] = {}
        for k, entry in enumerate(data["annotations"]):
            try:
                image_id, cat_id, inst = self._annotation(entry, f"annotations[{k}]", inst_path, images, cat_names)
                if inst.id in anns:
                    raise DatasetError(f"annotations[{k}].id: annotation id {inst.id} appears twice", inst_path)
                anns[inst.id] = (image_id, len(images[image_id].instances), cat_id)  # type: ignore[index]
                images[image_id].instances.append(inst)
            except DatasetError as exc:
                fail(exc)
        refs = safe_load_pickle(refs_path)
        check_type(refs, list, "top level", refs_path)
        ref_splits: dict[Any, list[tuple[Referring, Any]]] = {}
        sent_counter = 0
        seen_refs: set[Any] = set()
        for k, ref in enumerate(refs):
            try:
                image_id, referring, split, n_sent = self._ref(
                    ref, self.image_dir, k, refs_path, images, anns, sent_counter
                )
                if referring.id in seen_refs:
                    raise DatasetError(f"refs[{k}].ref_id: ref id {referring.id!r} appears twice", refs_path)
                seen_refs.add(referring.id)
            except DatasetError as exc:
                fail(exc)
                continue
            sent_counter += n_sent
            images[image_id].refs.append(referring)
            ref_splits.setdefault(image_id, []).append((referring, split))
        for image_id, sample in images.items():
            pairs = ref_splits.get(image_id, [])
            splits = {split for _, split in pairs}
            if len(splits) == 1:
                sample.split = splits.pop()
            else:
                for referring, split in pairs:
                    referring.attrs["split"] = split
            yield sample

    def _image(self, root: Path, entry: Any, where: str, path: Path) -> Sample:
        check_type(entry, dict, where, path)
        image_id = get_field(entry, "id", (int, str), where, path)
        file_name = get_field(entry, "file_name", str, where, path)
        rel = f"{self.image_dir}/{file_name}"
        resolve_inside(root, rel, path)
        width = height = None
        if "width" in entry or "height" in entry:
            width = get_field(entry, "width", int, where, path)
            height = get_field(entry, "height", int, where, path)
            if width <= 0 or height <= 0:
                raise DatasetError(f"{where}: image size must be positive, got {width} x {height}", path)
        extra = {k: v for k, v in entry.items() if k not in _IMAGE_KEYS}
        return Sample(
            image=rel,
            image_id=image_id,
            width=width,
            height=height,
            meta={"coco_image": extra} if extra else {},
        )

    @staticmethod
    def _annotation(
        entry: Any, where: str, path: Path, images: dict[Any, Sample], cat_names: dict[int, str]
    ) -> tuple[Any, int, Instance]:
        check_type(entry, dict, where, path)
        ann_id = get_field(entry, "id", int, where, path)
        image_id = get_field(entry, "image_id", (int, str), where, path)
        if image_id not in images:
            raise DatasetError(f"{where}.image_id: annotation {ann_id} refers to unknown image {image_id!r}", path)
        cat_key = "category_id" if "category_id" in entry or "categories_id" not in entry else "categories_id"
        cat_id = get_field(entry, cat_key, int, where, path)
        if cat_id not in cat_names:
            raise DatasetError(f"{where}.{cat_key}: unknown category id {cat_id}", path)
        raw_box = get_field(entry, "bbox", list, where, path)
        if len(raw_box) != 4:
            raise DatasetError(f"{where}.bbox: expected [x, y, w, h], got {len(raw_box)} numbers", path)
        x, y, w, h = (finite_number(v, f"{where}.bbox[{j}]", path) for j, v in enumerate(raw_box))
        if w < 0 or h < 0:
            raise DatasetError(f"{where}.bbox: width and height must be >= 0, got {w} x {h}", path)
        bbox = (x, y, x + w, y + h)
        if not (math.isfinite(bbox[2]) and math.isfinite(bbox[3])):
            raise DatasetError(f"{where}.bbox: x + w and y + h must be finite numbers", path)
        sample = images[image_id]
        size = (sample.height, sample.width) if sample.height is not None and sample.width is not None else None
        mask, mask_area = _segmentation(entry.get("segmentation", []), f"{where}.segmentation", path, size)
        crowd = entry.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            raise DatasetError(f"{where}.iscrowd: expected 0 or 1, got {crowd!r:.40}", path)
        attrs: dict[str, Any] = {}
        if "area" in entry:
            area = finite_number(entry["area"], f"{where}.area", path)
            if area != _default_area(bbox, mask_area):
                attrs["area"] = entry["area"]
        if cat_key == "categories_id":
            attrs["category_key"] = cat_key
        difficult = entry.get("difficult", 0)
        if difficult not in (0, 1) or isinstance(difficult, float):
            raise DatasetError(f"{where}.difficult: expected 0 or 1, got {difficult!r:.40}", path)
        score = None
        if "score" in entry:
            score = finite_number(entry["score"], f"{where}.score", path)
        attrs.update({k: v for k, v in entry.items() if k not in _ANN_KEYS and k != cat_key})
        inst = Instance(
            category=cat_names[cat_id],
            bbox=bbox,
            mask=mask,
            score=score,
            difficult=bool(difficult),
            ignore=bool(crowd),
            id=ann_id,
            attrs=attrs,
        )
        return image_id, cat_id, inst

    @staticmethod
    def _ref(
        ref: Any,
        image_dir: str,
        k: int,
        path: Path,
        images: dict[Any, Sample],
        anns: dict[int, tuple[Any, int, int]],
        sent_counter: int,
    ) -> tuple[Any, Referring, Any, int]:
        where = f"refs[{k}]"
        check_type(ref, dict, where, path)
        ref_id = get_field(ref, "ref_id", (int, str), where, path)
        where = f"refs[{k}] (ref_id {ref_id!r})"
        image_id = get_field(ref, "image_id", (int, str), where, path)
        ann_id = get_field(ref, "ann_id", int, where, path)
        if image_id not in images:
            raise DatasetError(f"{where}.image_id: unknown image id {image_id!r}", path)
        if ann_id not in anns:
            raise DatasetError(f"{where}.ann_id: unknown annotation id {ann_id}", path)
        ann_image, target, ann_cat = anns[ann_id]
        if ann_image != image_id:
            raise DatasetError(
                f"{where}.ann_id: annotation {ann_id} belongs to image {ann_image!r}, not {image_id!r}", path
            )
        sample = images[image_id]
        sentences = get_field(ref, "sentences", list, where, path)
        if not sentences:
            raise DatasetError(f"{where}.sentences: a ref needs at least one sentence", path)
        sents: list[str] = []
        raws: list[str] = []
        tokens: list[list[str]] = []
        sent_ids: list[Any] = []
        sentence_extra: list[dict[str, Any]] = []
        for j, sent in enumerate(sentences):
            sw = f"{where}.sentences[{j}]"
            check_type(sent, dict, sw, path)
            text = get_field(sent, "sent", str, sw, path)
            sents.append(text)
            raws.append(get_field(sent, "raw", str, sw, path) if "raw" in sent else text)
            if "tokens" in sent:
                toks = get_field(sent, "tokens", list, sw, path)
                for t, tok in enumerate(toks):
                    check_type(tok, str, f"{sw}.tokens[{t}]", path)
                tokens.append(list(toks))
            else:
                tokens.append(text.split())
            sent_ids.append(get_field(sent, "sent_id", (int, str), sw, path) if "sent_id" in sent else sent_counter + j)
            sentence_extra.append({key: v for key, v in sent.items() if key not in _SENT_KEYS})
        attrs: dict[str, Any] = {}
        if raws != sents:
            attrs["raw"] = raws
        if tokens != [s.split() for s in sents]:
            attrs["tokens"] = tokens
        if sent_ids != list(range(sent_counter, sent_counter + len(sents))):
            attrs["sent_ids"] = sent_ids
        if "sent_ids" in ref:
            ref_sent_ids = get_field(ref, "sent_ids", list, where, path)
            if ref_sent_ids != sent_ids:
                attrs["ref_sent_ids"] = ref_sent_ids
        if "category_id" in ref:
            cat = get_field(ref, "category_id", int, where, path)
            if cat != ann_cat:
                attrs["category_id"] = cat
        if "file_name" in ref:
            fname = get_field(ref, "file_name", str, where, path)
            if sample.image != f"{image_dir}/{fname}":
                attrs["file_name"] = fname
        if any(sentence_extra):
            attrs["sentence_extra"] = sentence_extra
        extra = {key: v for key, v in ref.items() if key not in _REF_KEYS}
        if extra:
            attrs["extra"] = extra
        split = ref.get("split")
        if split is not None:
            check_type(split, str, f"{where}.split", path)
        referring = Referring(sentences=sents, target=target, id=ref_id, attrs=attrs)
        return image_id, referring, split, len(sents)

    # ------------------------------------------------------------------------- writing

    def image_relpath(self, stem: str, suffix: str = ".jpg", label: str | None = None) -> str:
        return f"{self.image_dir}/{stem}{suffix}"

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
        cats = _writer_categories(samples, categories)
        cat_ids = {c.name: c.id for c in cats}
        image_ids = assign_ids([s.image_id for s in samples], "Sample.image_id")
        ann_ids = assign_ids([i.id for s in samples for i in s.instances], "Instance.id")
        ref_ids = assign_ids([r.id for s in samples for r in s.refs], "Referring.id")
        images_out: list[dict[str, Any]] = []
        anns_out: list[dict[str, Any]] = []
        refs_out: list[dict[str, Any]] = []
        ann_iter, ref_iter = iter(ann_ids), iter(ref_ids)
        sent_counter = 0
        prefix = self.image_dir.rstrip("/") + "/"
        for s_idx, sample in enumerate(samples):
            if not sample.image.startswith(prefix) or len(sample.image) == len(prefix):
                raise InputError(
                    f"sample {s_idx}: image {sample.image!r} must lie in {self.image_dir}/ "
                    f"(use image_relpath to place images)"
                )
            file_name = sample.image[len(prefix) :]
            image_id = image_ids[s_idx]
            entry: dict[str, Any] = {"id": image_id, "file_name": file_name}
            if sample.width is not None and sample.height is not None:
                entry.update(width=int(sample.width), height=int(sample.height))
            for key, value in as_dict(sample.meta.get("coco_image"), "meta['coco_image']").items():
                if key not in _IMAGE_KEYS:
                    entry[key] = value
            images_out.append(entry)
            my_ann_ids: list[tuple[int, int]] = []
            for inst in sample.instances:
                ann_id = next(ann_iter)
                anns_out.append(self._write_annotation(inst, ann_id, image_id, cat_ids, sample, s_idx))
                my_ann_ids.append((ann_id, cat_ids[inst.category]))
            for r_idx, ref in enumerate(sample.refs):
                ref_id = next(ref_iter)
                refs_out.append(
                    self._write_ref(ref, ref_id, image_id, file_name, my_ann_ids, sample, s_idx, r_idx, sent_counter)
                )
                sent_counter += len(ref.sentences)
        instances: dict[str, Any] = {}
        for key, value in (meta or {}).items():
            if key not in ("images", "annotations", "categories"):
                instances[key] = value
        instances["images"] = images_out
        instances["annotations"] = anns_out
        instances["categories"] = [{"id": c.id, "name": c.name, **c.attrs} for c in cats]
        _check_plain(refs_out, "refs")
        try:
            refs_bytes = pickle.dumps(refs_out, protocol=2)
            text = json.dumps(instances, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"cannot write {self.name}: a value is not plain JSON/pickle data ({exc})") from None
        ann_dir = root / self.dataset
        (root / self.image_dir).mkdir(parents=True, exist_ok=True)
        write_text(ann_dir / "instances.json", text + "\n")
        write_bytes(ann_dir / self.refs_name, refs_bytes)

    @staticmethod
    def _write_annotation(
        inst: Instance, ann_id: int, image_id: Any, cat_ids: dict[str, int], sample: Sample, s_idx: int
    ) -> dict[str, Any]:
        if inst.category not in cat_ids:
            raise InputError(f"sample {s_idx}: category {inst.category!r} is not among the categories given")
        seg: Any = []
        if inst.mask is not None:
            seg = [inst.mask] if isinstance(inst.mask, dict) else inst.mask
        elif inst.polygon is not None:
            seg = [list(inst.polygon)]
        size = (sample.height, sample.width) if sample.height and sample.width else None
        bbox = inst.bbox
        if bbox is None:
            if inst.polygon is not None:
                xs, ys = inst.polygon[0::2], inst.polygon[1::2]
                bbox = (min(xs), min(ys), max(xs), max(ys))
            elif inst.mask is not None and size is not None:
                from rsvl.geometry.masks import to_bbox

                bbox = to_bbox(inst.mask, size[0], size[1])
            else:
                raise InputError(f"sample {s_idx}: an instance needs a bbox, polygon or mask (with image size)")
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise InputError(f"sample {s_idx}: instance bbox {bbox} is not finite")
        ann: dict[str, Any] = {"id": ann_id, "image_id": image_id}
        cat_key = inst.attrs.get("category_key", "category_id")
        ann[cat_key if cat_key in ("category_id", "categories_id") else "category_id"] = cat_ids[inst.category]
        ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
        ann["segmentation"] = seg
        if "area" in inst.attrs:
            ann["area"] = inst.attrs["area"]
        else:
            mask_area = None
            if seg:
                where = f"sample {s_idx} instance {ann_id} mask"
                try:
                    _, mask_area = _segmentation(seg, where, Path("<write>"), size)
                except DatasetError as exc:
                    raise InputError(exc.message) from None
            ann["area"] = _default_area((x1, y1, x2, y2), mask_area)
        ann["iscrowd"] = int(inst.ignore)
        if inst.difficult:
            ann["difficult"] = 1
        if inst.score is not None:
            ann["score"] = float(inst.score)
        for key, value in inst.attrs.items():
            if key not in _ANN_KEYS and key not in ("category_key", "categories_id"):
                ann[key] = value
        return ann

    @staticmethod
    def _write_ref(
        ref: Referring,
        ref_id: Any,
        image_id: Any,
        file_name: str,
        my_ann_ids: list[tuple[int, int]],
        sample: Sample,
        s_idx: int,
        r_idx: int,
        sent_counter: int,
    ) -> dict[str, Any]:
        where = f"sample {s_idx} ref {r_idx}"
        if ref.target is None or not 0 <= ref.target < len(my_ann_ids):
            raise InputError(f"{where}: target {ref.target!r} must index the sample's instances")
        if not ref.sentences:
            raise InputError(f"{where}: a ref needs at least one sentence")
        attrs = ref.attrs
        n = len(ref.sentences)

        def aligned(key: str, default: list[Any]) -> list[Any]:
            value = attrs.get(key, default)
            if not isinstance(value, list) or len(value) != n:
                raise InputError(f"{where}: attrs[{key!r}] must be a list of {n} items")
            return value

        raws = aligned("raw", list(ref.sentences))
        tokens = aligned("tokens", [s.split() for s in ref.sentences])
        sent_ids = aligned("sent_ids", list(range(sent_counter, sent_counter + n)))
        extras = aligned("sentence_extra", [{} for _ in range(n)])
        ann_id, category_id = my_ann_ids[ref.target]
        sentences = [
            {
                "tokens": list(tok),
                "raw": raw,
                "sent_id": sid,
                "sent": sent,
                **as_dict(extra, "attrs['sentence_extra'] items"),
            }
            for tok, raw, sid, sent, extra in zip(tokens, raws, sent_ids, ref.sentences, extras, strict=True)
        ]
        out: dict[str, Any] = {
            "sent_ids": list(attrs.get("ref_sent_ids", sent_ids)),
            "file_name": attrs.get("file_name", file_name),
            "ann_id": ann_id,
            "ref_id": ref_id,
            "image_id": image_id,
            "split": attrs.get("split", sample.split),
            "sentences": sentences,
            "category_id": attrs.get("category_id", category_id),
        }
        for key, value in as_dict(attrs.get("extra"), "attrs['extra']").items():
            if key not in out:
                out[key] = value
        return out


def _writer_categories(samples: list[Sample], categories: Sequence[Category] | None) -> list[Category]:
    if categories:
        cats = list(categories)
        if len({c.id for c in cats}) != len(cats) or len({c.name for c in cats}) != len(cats):
            raise InputError("categories must have unique ids and names")
        return cats
    return derive_categories(samples)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything but builtin data in what goes into the refs pickle (no globals may be written)."""
    stack = [(obj, where)]
    while stack:
        value, at = stack.pop()
        if value is None or isinstance(value, (bool, int, float, str)):
            if type(value) not in (type(None), bool, int, float, str):
                raise InputError(f"{at}: {type(value).__name__} is a subclass of a builtin; write a plain value")
            continue
        if type(value) in (list, tuple):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(value))
        elif type(value) is dict:
            for key, v in value.items():
                stack.append((key, f"{at} key"))
                stack.append((v, f"{at}[{key!r}]"))
        else:
            raise InputError(
                f"{at}: {type(value).__name__} cannot go into a refs pickle; use plain lists/dicts/str/int"
            )

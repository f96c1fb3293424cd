"""Ground truth and predictions for the detection metrics: COCO dicts/files or rsvl Samples in,
validated flat arrays out.

Accepted forms (any ground-truth form with any prediction form):

* COCO: the annotation file (path or dict with ``images``, ``annotations``, ``categories``) and
  the results list (path or list of ``{"image_id", "category_id", "bbox", "score"}``), as
  pycocotools' ``COCO`` / ``loadRes`` take them. LVIS files add ``neg_category_ids`` /
  ``not_exhaustive_category_ids`` per image and ``frequency`` per category.
* rsvl: a sequence (or :class:`~rsvl.datasets.Dataset`) of :class:`~rsvl.datasets.Sample`; GT
  instances carry ``bbox`` (xyxy) or ``polygon``, ``ignore`` (crowd / ignored), ``difficult``;
  predicted instances carry a ``score``. Images are keyed by ``image_id`` (or ``image`` when it
  is None); categories by name.

Bad input raises :class:`~rsvl.errors.DatasetError` naming the file (when there is one) and the
JSON location (``annotations[17].bbox``) or sample (``samples[3].instances[2]``). Predictions on
images or categories the ground truth does not have are errors unless ``strict=False``, which drops
and counts them in the warnings instead.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rsvl.datasets.base import load_json
from rsvl.datasets.sample import Category, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.geometry.boxes import hbb_to_obb, hbb_to_poly, obb_corners, poly_area, poly_to_hbb, poly_to_obb

GeometryKind = Literal["hbb", "obb", "poly"]
GtLike = str | PathLike[str] | dict[str, Any] | Iterable[Sample]
PredLike = str | PathLike[str] | Sequence[dict[str, Any]] | Iterable[Sample]


@dataclass
class ImageInfo:
    """One image of the ground truth: its id, size when known, and LVIS per-image category sets
    (category indices)."""

    id: Hashable
    width: float | None = None
    height: float | None = None
    file_name: str | None = None
    neg: set[int] | None = None
    not_exhaustive: set[int] | None = None


@dataclass
class ObjectTable:
    """Objects of one side as parallel arrays in input order.

    ``xywh`` is always filled (HBB as COCO stores it); ``geometry`` is the box used for IoU
    (``xywh`` again for HBB, le90 ``(N, 5)`` for OBB, ``(N, 8)`` quadrilaterals for polygons).
    """

    image: np.ndarray
    category: np.ndarray
    xywh: np.ndarray
    geometry: np.ndarray
    area: np.ndarray
    score: np.ndarray | None = None
    crowd: np.ndarray | None = None
    ignore: np.ndarray | None = None
    difficult: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def subset(self, keep: np.ndarray) -> ObjectTable:
        """The rows selected by a boolean mask or index array (input order kept)."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return ObjectTable(
            image=self.image[idx],
            category=self.category[idx],
            xywh=self.xywh[idx],
            geometry=self.geometry[idx],
            area=self.area[idx],
            score=pick(self.score),
            crowd=pick(self.crowd),
            ignore=pick(self.ignore),
            difficult=pick(self.difficult),
        )


@dataclass
class DetectionData:
    """Validated ground truth and predictions, indexed by image and category position.

    ``images`` are sorted by id (pycocotools evaluates ``sorted(imgIds)``); ``categories`` are
    sorted by id for COCO input and in the given (or sorted-name) order for Samples.
    """

    images: list[ImageInfo]
    categories: list[Category]
    gt: ObjectTable
    dt: ObjectTable
    geometry: GeometryKind
    warnings: list[str] = field(default_factory=list)

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]


# --------------------------------------------------------------------------- entry point


def load_detection_data(
    gt: GtLike,
    predictions: PredLike,
    geometry: GeometryKind = "hbb",
    *,
    categories: Sequence[str | Category] | None = None,
    strict: bool = True,
    lvis: bool = False,
) -> DetectionData:
    """Read and validate ground truth and predictions into :class:`DetectionData`.

    Args:
        gt: COCO annotation file (path or dict) or Samples.
        predictions: COCO results (path or list of dicts) or Samples.
        geometry: the box each object is evaluated with: ``hbb``, ``obb`` (le90 rotated
            rectangles; polygons become their minimum-area rectangle) or ``poly`` (quadrilaterals).
        categories: for Sample ground truth, the category names (or Categories) and their order;
            default: the sorted names found in the ground truth.
        strict: False drops predictions on unknown images/categories and warns with counts.
        lvis: read the LVIS per-image ``neg_category_ids`` / ``not_exhaustive_category_ids`` and
            the per-category ``frequency`` (required then).
    """
    warnings: list[str] = []
    gt_side = _load_gt(gt, geometry, categories, lvis, warnings)
    images, cats, gt_table, lookups = gt_side
    dt_table = _load_predictions(predictions, geometry, lookups, strict, warnings)
    if len(dt_table) == 0:
        warnings.append("no predictions: every AP/AR is 0 where ground truth exists")
    return DetectionData(images=images, categories=cats, gt=gt_table, dt=dt_table, geometry=geometry, warnings=warnings)


@dataclass
class _Lookups:
    image_index: dict[Any, int]
    file_index: dict[str, int]
    category_by_id: dict[int, int] | None
    category_by_name: dict[str, int]


def _is_samples(obj: Any) -> bool:
    return not isinstance(obj, (str, PathLike, dict)) and not (
        isinstance(obj, Sequence) and len(obj) and isinstance(obj[0], dict)
    )


def _read_json(obj: Any) -> tuple[Any, str | None]:
    if isinstance(obj, (str, PathLike)):
        path = Path(obj)
        return load_json(path), str(path)
    return obj, None


# --------------------------------------------------------------------------- checks


def _err(where: str, message: str, path: str | None) -> DatasetError:
    return DatasetError(f"{where}: {message}", path)


def _number(value: Any, where: str, path: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _err(where, f"expected a number, got {type(value).__name__} {value!r:.60}", path)
    value = float(value)
    if not math.isfinite(value):
        raise _err(where, f"expected a finite number, got {value!r}", path)
    return value


def _numbers(value: Any, n: int | tuple[int, ...], where: str, path: str | None) -> list[float]:
    sizes = (n,) if isinstance(n, int) else n
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise _err(where, f"expected a list of {want} numbers, got {value!r:.80}", path)
    return [_number(v, f"{where}[{i}]", path) for i, v in enumerate(value)]


def _check_box(xywh: list[float], where: str, path: str | None) -> None:
    if xywh[2] < 0 or xywh[3] < 0:
        raise _err(where, f"negative width or height in {xywh}", path)


def _fast_array(values: list[Any], width: int) -> np.ndarray | None:
    """``values`` as a float64 (N, width) array when every entry is a plain list of numbers;
    None when anything is off (the caller then finds and reports the first bad entry)."""
    try:
        arr = np.array(values)
    except (ValueError, TypeError):
        return None
    if arr.dtype.kind not in "iuf":
        return None
    arr = arr.astype(np.float64).reshape(len(values), -1) if len(values) else np.zeros((0, width))
    if arr.shape[1] != width or not np.isfinite(arr).all():
        return None
    return arr


# --------------------------------------------------------------------------- ground truth


def _load_gt(
    gt: GtLike,
    geometry: GeometryKind,
    categories: Sequence[str | Category] | None,
    lvis: bool,
    warnings: list[str],
) -> tuple[list[ImageInfo], list[Category], ObjectTable, _Lookups]:
    if _is_samples(gt):
        return _gt_from_samples(list(gt), geometry, categories, lvis, warnings)  # type: ignore[arg-type]
    if categories is not None:
        raise InputError("categories= applies to Sample ground truth; a COCO file declares its own 'categories'")
    data, path = _read_json(gt)
    return _gt_from_coco(data, path, geometry, lvis, warnings)


def _gt_from_coco(
    data: Any, path: str | None, geometry: GeometryKind, lvis: bool, warnings: list[str]
) -> tuple[list[ImageInfo], list[Category], ObjectTable, _Lookups]:
    if not isinstance(data, dict):
        raise _err("<root>", f"expected a COCO annotation object, got {type(data).__name__}", path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _err(key, "expected a list", path)

    cats: list[Category] = []
    seen_cat: set[int] = set()
    for i, c in enumerate(data["categories"]):
        where = f"categories[{i}]"
        if not isinstance(c, dict) or isinstance(c.get("id"), bool) or not isinstance(c.get("id"), int):
            raise _err(f"{where}.id", "expected an integer category id", path)
        if c["id"] in seen_cat:
            raise _err(f"{where}.id", f"duplicate category id {c['id']}", path)
        seen_cat.add(c["id"])
        name = c.get("name", str(c["id"]))
        attrs = {k: v for k, v in c.items() if k not in ("id", "name")}
        if lvis and attrs.get("frequency") not in ("r", "c", "f"):
            raise _err(
                f"{where}.frequency",
                f"LVIS categories need frequency 'r', 'c' or 'f', got {attrs.get('frequency')!r}",
                path,
            )
        cats.append(Category(int(c["id"]), str(name), attrs))
    cats.sort(key=lambda c: c.id)
    cat_by_id = {c.id: k for k, c in enumerate(cats)}

    raw_images = []
    seen_img: set[Any] = set()
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(im, dict) or "id" not in im:
            raise _err(where, "expected an object with an 'id'", path)
        iid = im["id"]
        if isinstance(iid, bool) or not isinstance(iid, (int, str)):
            raise _err(f"{where}.id", f"expected an integer or string image id, got {iid!r:.60}", path)
        if iid in seen_img:
            raise _err(f"{where}.id", f"duplicate image id {iid!r}", path)
        seen_img.add(iid)
        width = _number(im["width"], f"{where}.width", path) if im.get("width") is not None else None
        height = _number(im["height"], f"{where}.height", path) if im.get("height") is not None else None
        info = ImageInfo(iid, width, height, im.get("file_name") if isinstance(im.get("file_name"), str) else None)
        if lvis:
            info.neg = _category_set(im, "neg_category_ids", where, cat_by_id, path)
            info.not_exhaustive = _category_set(im, "not_exhaustive_category_ids", where, cat_by_id, path)
        raw_images.append(info)
    try:
        images = sorted(raw_images, key=lambda im: im.id)
    except TypeError:
        raise _err("images", "image ids mix integers and strings", path) from None
    image_index = {im.id: k for k, im in enumerate(images)}
    file_index = {im.file_name: k for k, im in enumerate(images) if im.file_name}

    anns = data["annotations"]
    zero_ids = sum(1 for a in anns if isinstance(a, dict) and a.get("id") == 0 and a.get("id") is not False)
    if zero_ids:
        warnings.append(
            "a ground-truth annotation has id 0: pycocotools and faster-coco-eval use annotation ids as match "
            "markers (0 = unmatched) and count detections matched to it as misses; rsvl counts them as matches "
            "(renumber ids from 1 to compare numbers)"
        )
    name_index = {c.name: k for k, c in enumerate(cats)}
    lookups = _Lookups(image_index, file_index, cat_by_id, name_index)
    fast = _gt_fast_path(anns, image_index, cat_by_id) if geometry == "hbb" else None
    if fast is not None:
        return images, cats, fast, lookups
    n = len(anns)
    img = np.empty(n, dtype=np.int64)
    cat = np.empty(n, dtype=np.int64)
    xywh = np.empty((n, 4))
    area = np.empty(n)
    crowd = np.zeros(n, dtype=bool)
    ignore = np.zeros(n, dtype=bool)
    difficult = np.zeros(n, dtype=bool)
    geoms: list[list[float]] = []
    seen_ann: set[Any] = set()
    missing_area = 0
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            raise _err(where, "expected an object", path)
        aid = a.get("id")
        if aid is not None and (isinstance(aid, bool) or not isinstance(aid, (int, str))):
            raise _err(f"{where}.id", f"expected an integer annotation id, got {aid!r:.60}", path)
        if aid is not None:
            if aid in seen_ann:
                raise _err(f"{where}.id", f"duplicate annotation id {aid!r}", path)
            seen_ann.add(aid)
        try:
            img[i] = image_index[a.get("image_id")]
        except (KeyError, TypeError):
            raise _err(f"{where}.image_id", f"image id {a.get('image_id')!r:.60} is not in 'images'", path) from None
        try:
            cat[i] = cat_by_id[a.get("category_id")]
        except (KeyError, TypeError):
            raise _err(
                f"{where}.category_id", f"category id {a.get('category_id')!r:.60} is not in 'categories'", path
            ) from None
        box, geom = _coco_geometry(a, geometry, where, path)
        xywh[i] = box
        geoms.append(geom)
        if a.get("area") is None:
            missing_area += 1
            area[i] = _geometry_area(geom, geometry)
        else:
            area[i] = _number(a["area"], f"{where}.area", path)
        crowd[i] = _flag(a.get("iscrowd", 0), f"{where}.iscrowd", path)
        ignore[i] = _flag(a.get("ignore", 0), f"{where}.ignore", path)
        difficult[i] = _flag(a.get("difficult", 0), f"{where}.difficult", path)
    if missing_area:
        warnings.append(f"{missing_area} ground-truth annotations have no 'area'; used the box area instead")
    table = ObjectTable(
        image=img,
        category=cat,
        xywh=xywh,
        geometry=_geometry_array(geoms, geometry, xywh),
        area=area,
        crowd=crowd,
        ignore=ignore,
        difficult=difficult,
    )
    return images, cats, table, lookups


def _gt_fast_path(anns: list[Any], image_index: dict[Any, int], cat_by_id: dict[int, int]) -> ObjectTable | None:
    """Vectorised reading of well-formed HBB annotations (every field present and valid); None
    as soon as anything is off, so that the item-by-item reader can name the bad entry."""
    try:
        img = np.array([image_index[a["image_id"]] for a in anns], dtype=np.int64)
        cat = np.array([cat_by_id[a["category_id"]] for a in anns], dtype=np.int64)
        boxes = _fast_array([a["bbox"] for a in anns], 4)
        area = _fast_array([a["area"] for a in anns], 1)
        flags = [np.array([a.get(key, 0) for a in anns]) for key in ("iscrowd", "ignore", "difficult")]
        ids = [a.get("id") for a in anns]
        present = [i for i in ids if i is not None]
        if len(set(present)) != len(present):
            return None
    except (KeyError, TypeError):
        return None
    if boxes is None or area is None or (boxes[:, 2:] < 0).any():
        return None
    if any(f.dtype.kind not in "biu" or ((f != 0) & (f != 1)).any() for f in flags if f.size):
        return None
    n = len(anns)
    crowd, ignore, difficult = (f.astype(bool).reshape(n) if f.size else np.zeros(n, dtype=bool) for f in flags)
    return ObjectTable(
        image=img,
        category=cat,
        xywh=boxes,
        geometry=boxes,
        area=area.reshape(n),
        crowd=crowd,
        ignore=ignore,
        difficult=difficult,
    )


def _category_set(im: dict[str, Any], key: str, where: str, cat_by_id: dict[int, int], path: str | None) -> set[int]:
    ids = im.get(key)
    if not isinstance(ids, list):
        raise _err(f"{where}.{key}", "LVIS images need this list of category ids", path)
    out = set()
    for j, cid in enumerate(ids):
        if cid not in cat_by_id:
            raise _err(f"{where}.{key}[{j}]", f"category id {cid!r:.60} is not in 'categories'", path)
        out.add(cat_by_id[cid])
    return out


def _flag(value: Any, where: str, path: str | None) -> bool:
    if value in (0, 1) or isinstance(value, bool):
        return bool(value)
    raise _err(where, f"expected 0/1 or a boolean, got {value!r:.60}", path)


def _coco_geometry(
    obj: dict[str, Any], geometry: GeometryKind, where: str, path: str | None
) -> tuple[list[float], list[float]]:
    """(xywh, geometry) of one COCO annotation/result. OBBs come from ``obb`` (le90) or a single
    8-number ``segmentation`` polygon; polygons from ``segmentation`` or the box."""
    if geometry == "hbb":
        if "bbox" not in obj:
            raise _err(where, "missing 'bbox' ([x, y, w, h])", path)
        box = _numbers(obj["bbox"], 4, f"{where}.bbox", path)
        _check_box(box, f"{where}.bbox", path)
        return box, box
    poly = None
    if geometry == "obb" and obj.get("obb") is not None:
        obb = _numbers(obj["obb"], 5, f"{where}.obb", path)
        if obb[2] < 0 or obb[3] < 0:
            raise _err(f"{where}.obb", f"negative width or height in {obb}", path)
        x1, y1, x2, y2 = poly_to_hbb(_obb_poly(obb)).tolist()
        return [x1, y1, x2 - x1, y2 - y1], obb
    seg = obj.get("segmentation")
    if isinstance(seg, list) and len(seg) == 1 and isinstance(seg[0], list) and len(seg[0]) == 8:
        poly = _numbers(seg[0], 8, f"{where}.segmentation[0]", path)
    elif isinstance(seg, list) and len(seg) == 8 and not isinstance(seg[0], list):
        poly = _numbers(seg, 8, f"{where}.segmentation", path)
    if poly is None:
        if "bbox" not in obj:
            raise _err(where, f"{geometry} evaluation needs 'obb', an 8-number 'segmentation' polygon or 'bbox'", path)
        box = _numbers(obj["bbox"], 4, f"{where}.bbox", path)
        _check_box(box, f"{where}.bbox", path)
        xyxy = np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]])
        geom = hbb_to_obb(xyxy) if geometry == "obb" else hbb_to_poly(xyxy)
        return box, geom.tolist()
    x1, y1, x2, y2 = poly_to_hbb(np.array(poly)).tolist()
    box = [x1, y1, x2 - x1, y2 - y1]
    if "bbox" in obj:
        box = _numbers(obj["bbox"], 4, f"{where}.bbox", path)
        _check_box(box, f"{where}.bbox", path)
    geom = poly_to_obb(np.array(poly)).tolist() if geometry == "obb" else poly
    return box, geom


def _obb_poly(obb: list[float]) -> np.ndarray:
    return obb_corners(np.array(obb)).reshape(8)


def _geometry_area(geom: list[float], geometry: GeometryKind) -> float:
    """Box area: ``w * h`` for xywh and le90 boxes, the shoelace area for polygons."""
    if geometry in ("hbb", "obb"):
        return geom[2] * geom[3]
    return abs(float(poly_area(np.array(geom))))


def _geometry_array(geoms: list[list[float]], geometry: GeometryKind, xywh: np.ndarray) -> np.ndarray:
    if geometry == "hbb":
        return xywh
    width = 5 if geometry == "obb" else 8
    return np.array(geoms, dtype=np.float64).reshape(-1, width)


# --------------------------------------------------------------------------- Samples


def _sample_key(sample: Sample) -> Any:
    return sample.image_id if sample.image_id is not None else sample.image


def _instance_geometry(inst: Any, geometry: GeometryKind, where: str) -> tuple[list[float], list[float]]:
    """(xywh, geometry) of a Sample instance; bbox is xyxy, polygon is a flat vertex tuple."""
    poly = None
    if inst.polygon is not None:
        poly = _numbers(list(inst.polygon), tuple(range(6, 2 * 64 + 1, 2)), f"{where}.polygon", None)
    if inst.bbox is not None:
        x1, y1, x2, y2 = _numbers(list(inst.bbox), 4, f"{where}.bbox", None)
        box = [x1, y1, x2 - x1, y2 - y1]
        _check_box(box, f"{where}.bbox", None)
    elif poly is not None:
        x1, y1, x2, y2 = poly_to_hbb(np.array(poly)).tolist()
        box = [x1, y1, x2 - x1, y2 - y1]
    else:
        raise _err(where, "instance has neither bbox nor polygon", None)
    if geometry == "hbb":
        return box, box
    if poly is not None:
        if len(poly) != 8:
            raise _err(f"{where}.polygon", f"{geometry} evaluation needs 4-vertex polygons, got {len(poly) // 2}", None)
        return box, (poly_to_obb(np.array(poly)).tolist() if geometry == "obb" else poly)
    xyxy = np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]])
    return box, (hbb_to_obb(xyxy) if geometry == "obb" else hbb_to_poly(xyxy)).tolist()


def _gt_from_samples(
    samples: list[Sample],
    geometry: GeometryKind,
    categories: Sequence[str | Category] | None,
    lvis: bool,
    warnings: list[str],
) -> tuple[list[ImageInfo], list[Category], ObjectTable, _Lookups]:
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise InputError(f"ground truth[{i}]: expected an rsvl Sample, got {type(s).__name__}")
    if categories is not None:
        cats = [c if isinstance(c, Category) else Category(k + 1, str(c)) for k, c in enumerate(categories)]
    else:
        names = sorted({inst.category for s in samples for inst in s.instances})
        cats = [Category(k + 1, name) for k, name in enumerate(names)]
    name_index = {c.name: k for k, c in enumerate(cats)}
    if len(name_index) != len(cats):
        raise InputError("categories: duplicate category names")
    if lvis:
        for c in cats:
            if c.attrs.get("frequency") not in ("r", "c", "f"):
                raise InputError(f"categories: LVIS category {c.name!r} needs attrs['frequency'] in 'r'/'c'/'f'")

    infos: list[ImageInfo] = []
    seen: set[Any] = set()
    for i, s in enumerate(samples):
        key = _sample_key(s)
        if key in seen:
            raise InputError(f"ground truth samples[{i}]: duplicate image {key!r}")
        seen.add(key)
        info = ImageInfo(key, s.width, s.height, s.image)
        if lvis:
            info.neg = _name_set(s, "neg_categories", name_index, i)
            info.not_exhaustive = _name_set(s, "not_exhaustive_categories", name_index, i)
        infos.append(info)
    try:
        order = sorted(range(len(samples)), key=lambda i: infos[i].id)
    except TypeError:
        raise InputError("ground truth samples: image ids mix integers and strings") from None
    images = [infos[i] for i in order]
    image_index = {im.id: k for k, im in enumerate(images)}
    file_index = {im.file_name: k for k, im in enumerate(images) if im.file_name}

    rows: list[tuple[int, int, list[float], list[float], float, bool, bool]] = []
    missing_area = 0
    for k, i in enumerate(order):
        s = samples[i]
        for j, inst in enumerate(s.instances):
            where = f"ground truth samples[{i}].instances[{j}]"
            if inst.category not in name_index:
                raise InputError(f"{where}: category {inst.category!r} is not among the declared categories")
            box, geom = _instance_geometry(inst, geometry, where)
            a = inst.attrs.get("area") if isinstance(inst.attrs, dict) else None
            if isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a):
                area = float(a)  # a COCO reader keeps the annotation's area here
            else:
                area = _geometry_area(geom, geometry)
                missing_area += a is not None
            rows.append((k, name_index[inst.category], box, geom, area, bool(inst.ignore), bool(inst.difficult)))
    if missing_area:
        warnings.append(f"{missing_area} ground-truth instances have a non-numeric attrs['area']; used the box area")
    xywh = np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 4)
    table = ObjectTable(
        image=np.array([r[0] for r in rows], dtype=np.int64),
        category=np.array([r[1] for r in rows], dtype=np.int64),
        xywh=xywh,
        geometry=_geometry_array([r[3] for r in rows], geometry, xywh),
        area=np.array([r[4] for r in rows], dtype=np.float64),
        crowd=np.array([r[5] for r in rows], dtype=bool),
        ignore=np.array([r[5] for r in rows], dtype=bool),
        difficult=np.array([r[6] for r in rows], dtype=bool),
    )
    by_id = {c.id: k for k, c in enumerate(cats)}
    return images, cats, table, _Lookups(image_index, file_index, by_id, name_index)


def _name_set(s: Sample, key: str, name_index: dict[str, int], i: int) -> set[int]:
    names = s.meta.get(key)
    if not isinstance(names, (list, tuple, set)):
        raise InputError(f"ground truth samples[{i}].meta[{key!r}]: LVIS evaluation needs a list of category names")
    out = set()
    for name in names:
        if name not in name_index:
            raise InputError(f"ground truth samples[{i}].meta[{key!r}]: unknown category {name!r}")
        out.add(name_index[name])
    return out


# --------------------------------------------------------------------------- predictions


def _load_predictions(
    predictions: PredLike, geometry: GeometryKind, lk: _Lookups, strict: bool, warnings: list[str]
) -> ObjectTable:
    if _is_samples(predictions):
        return _preds_from_samples(list(predictions), geometry, lk, strict, warnings)  # type: ignore[arg-type]
    data, path = _read_json(predictions)
    if not isinstance(data, list):
        raise _err("<root>", f"expected a list of results, got {type(data).__name__}", path)
    return _preds_from_coco(data, path, geometry, lk, strict, warnings)


def _preds_from_coco(
    data: list[Any], path: str | None, geometry: GeometryKind, lk: _Lookups, strict: bool, warnings: list[str]
) -> ObjectTable:
    n = len(data)
    if lk.category_by_id is None:
        raise InputError("COCO-style predictions need category ids; give Sample ground truth its categories")
    for i, d in enumerate(data):
        if not isinstance(d, dict):
            raise _err(f"[{i}]", "expected a result object", path)
    try:
        img = np.array([lk.image_index.get(d.get("image_id"), -1) for d in data], dtype=np.int64)
        cat = np.array([lk.category_by_id.get(d.get("category_id"), -1) for d in data], dtype=np.int64)
    except TypeError:  # an unhashable id: look ids up one by one
        img = np.array([lk.image_index.get(_hashable(d.get("image_id")), -1) for d in data], dtype=np.int64)
        cat = np.array([lk.category_by_id.get(_hashable(d.get("category_id")), -1) for d in data], dtype=np.int64)
    scores = _fast_array([d.get("score") for d in data], 1)
    if scores is None:
        for i, d in enumerate(data):
            _number(d.get("score"), f"[{i}].score", path)
    scores = scores.reshape(-1) if scores is not None else np.zeros(0)
    boxes = _fast_array([d.get("bbox") for d in data], 4) if geometry == "hbb" else None
    if boxes is not None and n and (boxes[:, 2:] < 0).any():
        i = int(np.flatnonzero((boxes[:, 2:] < 0).any(axis=1))[0])
        raise _err(f"[{i}].bbox", f"negative width or height in {data[i]['bbox']}", path)
    if boxes is not None:
        geoms: np.ndarray = boxes
        xywh = boxes
    else:
        pairs = [_coco_geometry(d, geometry, f"[{i}]", path) for i, d in enumerate(data)]
        xywh = np.array([p[0] for p in pairs], dtype=np.float64).reshape(-1, 4)
        geoms = _geometry_array([p[1] for p in pairs], geometry, xywh)
    area = (
        xywh[:, 2] * xywh[:, 3]
        if geometry == "hbb"
        else np.array([_geometry_area(g, geometry) for g in geoms.tolist()], dtype=np.float64)
    )
    table = ObjectTable(image=img, category=cat, xywh=xywh, geometry=geoms, area=area, score=scores)
    return _drop_unknown(
        table,
        lambda i: (f"[{i}].image_id", data[i].get("image_id")),
        lambda i: (f"[{i}].category_id", data[i].get("category_id")),
        path,
        strict,
        warnings,
    )


def _hashable(v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        return None
    return None if isinstance(v, bool) else v


def _drop_unknown(
    table: ObjectTable, img_where, cat_where, path: str | None, strict: bool, warnings: list[str]
) -> ObjectTable:
    bad_img = table.image < 0
    bad_cat = table.category < 0
    if strict and bad_img.any():
        i = int(np.flatnonzero(bad_img)[0])
        where, value = img_where(i)
        raise _err(
            where,
            f"prediction on image {value!r:.60}, which is not in the ground truth "
            f"({int(bad_img.sum())} such predictions; strict=False drops them)",
            path,
        )
    if strict and bad_cat.any():
        i = int(np.flatnonzero(bad_cat)[0])
        where, value = cat_where(i)
        raise _err(
            where,
            f"category {value!r:.60} is not a ground-truth category "
            f"({int(bad_cat.sum())} such predictions; strict=False drops them)",
            path,
        )
    if bad_img.any():
        warnings.append(f"dropped {int(bad_img.sum())} predictions on images absent from the ground truth")
    if (bad_cat & ~bad_img).any():
        warnings.append(
            f"dropped {int((bad_cat & ~bad_img).sum())} predictions of categories absent from the ground truth"
        )
    bad = bad_img | bad_cat
    return table.subset(~bad) if bad.any() else table


def _preds_from_samples(
    samples: list[Sample], geometry: GeometryKind, lk: _Lookups, strict: bool, warnings: list[str]
) -> ObjectTable:
    rows = []
    wheres: list[tuple[str, Any, Any]] = []
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise InputError(f"predictions[{i}]: expected an rsvl Sample, got {type(s).__name__}")
        key = _sample_key(s)
        k = lk.image_index.get(key, -1)
        if k < 0 and s.image in lk.file_index:
            k = lk.file_index[s.image]
        for j, inst in enumerate(s.instances):
            where = f"predictions samples[{i}].instances[{j}]"
            if inst.score is None:
                raise InputError(f"{where}: prediction has no score")
            score = _number(inst.score, f"{where}.score", None)
            box, geom = _instance_geometry(inst, geometry, where)
            rows.append((k, lk.category_by_name.get(inst.category, -1), box, geom, score))
            wheres.append((where, key, inst.category))
    xywh = np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 4)
    geoms = _geometry_array([r[3] for r in rows], geometry, xywh)
    area = (
        xywh[:, 2] * xywh[:, 3]
        if geometry == "hbb"
        else np.array([_geometry_area(g, geometry) for g in geoms.tolist()], dtype=np.float64)
    )
    table = ObjectTable(
        image=np.array([r[0] for r in rows], dtype=np.int64),
        category=np.array([r[1] for r in rows], dtype=np.int64),
        xywh=xywh,
        geometry=geoms,
        area=area,
        score=np.array([r[4] for r in rows], dtype=np.float64),
    )
    return _drop_unknown(
        table, lambda i: (wheres[i][0], wheres[i][1]), lambda i: (wheres[i][0], wheres[i][2]), None, strict, warnings
    )

"""Referring grounding and referring segmentation metrics: Pr@X, mean IoU, overall (cumulative) IoU.

One prediction per ground-truth item (a referring expression). Items are boxes or masks:

* HBB ``(x1, y1, x2, y2)``;
* OBB ``(cx, cy, w, h, angle)`` le90 radians (IoU from :func:`rsvl.geometry.rotated.rotated_iou`);
* masks: ``(H, W)`` bool arrays or COCO RLE dicts (``{"size": [h, w], "counts": ...}``).

Per item the intersection ``I``, union ``U`` and ``IoU = I / U`` are computed (``IoU = 0`` when
``U = 0``, as RMSIN/LAVT do). Then

* ``Pr@t`` = fraction of items with ``IoU >= t`` (``> t`` with ``strict=True``), t in 0.5..0.9;
* ``mIoU`` = mean of the per-item IoU;
* ``oIoU`` = sum(I) / sum(U) over all items (LAVT's "overall IoU", VRSBench's "cumIoU").

A ground-truth item without prediction counts as an empty prediction: IoU 0, ``I = 0`` and ``U``
= the ground truth's area (so it lowers oIoU too), with a warning. VRSBench's notebook instead
leaves unparseable answers out of cumI/cumU (still in Acc and mIoU); rsvl keeps one rule for
every preset. A prediction for an unknown id raises.

Presets (``protocol["source"]`` names the file each rule comes from):

* ``rrsisd`` — RRSIS-D as scored by RMSIN (``Lsan2401/RMSIN``, ``test.py``: ``this_iou >=
  eval_seg_iou`` for 0.5..0.9, ``overall IoU = cum_I / cum_U``, ``mean IoU``; ``U == 0`` -> 0).
* ``zeroov`` — the same with strict ``IoU > t``, the rule the RSVG-ZeroOV paper states for Pr@0.5.
* ``vrsbench`` — VRSBench grounding (``lx709/VRSBench``, ``eval_fianl/eval_utils.py``
  ``computeIoU`` and ``compute_metrics.ipynb``): the "+1 pixel" convention (widths, heights and
  intersections are ``x2 - x1 + 1``) and ``IoU >= t``; the paper's Acc@0.5 / Acc@0.7 are
  ``Pr@0.5`` / ``Pr@0.7`` here. VRSBench scores integer boxes on its 0-100 grid (the
  ``{<x1><y1><x2><y2>}`` text); :func:`load_vrsbench_referring` parses them the way the notebook does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from rsvl.datasets.sample import Sample
from rsvl.errors import DatasetError, GeometryError, InputError
from rsvl.metrics.records import (
    check_missing_policy,
    id_key,
    keyed,
    load_id_mapping,
    missing_message,
    read_json_records,
    split_ids,
)
from rsvl.metrics.report import EvalReport, reference

__all__ = [
    "GROUNDING_PRESETS",
    "GroundingProtocol",
    "evaluate_grounding",
    "grounding_from_samples",
    "load_grounding_json",
    "load_vrsbench_referring",
]

Id = int | str
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class GroundingProtocol:
    """The settings that change grounding numbers.

    Attributes:
        thresholds: IoU thresholds of the ``Pr@t`` metrics.
        strict: ``IoU > t`` when True, ``IoU >= t`` when False.
        plus_one: HBB widths/heights/intersections ``x2 - x1 + 1`` (integer-pixel convention).
        source: where the rule comes from (repository and file).
        paper_names: how the paper names some of the metrics.
    """

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    strict: bool = False
    plus_one: bool = False
    source: str = ""
    reference: str = ""
    paper_names: tuple[tuple[str, str], ...] = ()


GROUNDING_PRESETS: dict[str, GroundingProtocol] = {
    "rrsisd": GroundingProtocol(
        reference="Lsan2401/RMSIN test.py",
        source="Lsan2401/RMSIN test.py evaluate(): precision@X uses this_iou >= X; overall IoU = cum_I / cum_U",
        paper_names=(("oIoU", "overall IoU"), ("mIoU", "mean IoU")),
    ),
    "zeroov": GroundingProtocol(
        strict=True,
        reference="RSVG-ZeroOV paper (Pr@0.5 strict), RMSIN-style mIoU/oIoU",
        source="RSVG-ZeroOV paper: Pr@0.5 counts IoU > 0.5 (strict); mIoU; oIoU = cumulative I / cumulative U",
    ),
    "vrsbench": GroundingProtocol(
        plus_one=True,
        reference="lx709/VRSBench eval_fianl/eval_utils.py + compute_metrics.ipynb",
        source="lx709/VRSBench eval_fianl/eval_utils.py computeIoU (+1 convention) and "
        "eval_fianl/compute_metrics.ipynb (iou_score >= thres, meanIoU, cumIoU)",
        paper_names=(("Pr@0.5", "Acc@0.5"), ("Pr@0.7", "Acc@0.7"), ("oIoU", "cumIoU"), ("mIoU", "meanIoU")),
    ),
}


# --------------------------------------------------------------------------- input parsing


def _kind_of(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return "mask"
    if isinstance(value, dict) and "counts" in value and "size" in value:
        return "mask"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.shape[0] in (4, 5):
        return "hbb" if arr.shape[0] == 4 else "obb"
    raise GeometryError(
        "expected an HBB (x1, y1, x2, y2), an OBB (cx, cy, w, h, angle), a 2-D bool mask or a COCO RLE dict; "
        f"got {type(value).__name__} {value!r:.80}"
    )


def _box(value: Any, width: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"{what}: expected {width} numbers, got {value!r:.80}") from None
    if arr.shape != (width,):
        raise GeometryError(f"{what}: expected {width} numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise GeometryError(f"{what}: contains NaN or inf")
    if width == 4 and (arr[2] < arr[0] or arr[3] < arr[1]):
        raise GeometryError(f"{what}: x2 < x1 or y2 < y1 in {arr.tolist()} (boxes are xyxy)")
    if width == 5 and (arr[2] < 0 or arr[3] < 0):
        raise GeometryError(f"{what}: negative OBB width or height in {arr.tolist()}")
    return arr


def _mask(value: Any, what: str) -> np.ndarray:
    if isinstance(value, dict):
        from rsvl.geometry import masks

        size = value.get("size")
        if not (isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise GeometryError(f"{what}: RLE 'size' must be [h, w] integers, got {size!r}")
        try:
            return masks.decode(value, int(size[0]), int(size[1]))
        except GeometryError as exc:
            raise GeometryError(f"{what}: {exc.message}") from None
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise GeometryError(f"{what}: masks must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise GeometryError(f"{what}: mask values must be 0/1 or bool")
        arr = arr.astype(bool)
    return arr


# --------------------------------------------------------------------------- I and U per kind


def _hbb_iu(g: np.ndarray, p: np.ndarray, plus_one: bool) -> tuple[np.ndarray, np.ndarray]:
    e = 1.0 if plus_one else 0.0
    iw = np.maximum(0.0, np.minimum(g[:, 2], p[:, 2]) - np.maximum(g[:, 0], p[:, 0]) + e)
    ih = np.maximum(0.0, np.minimum(g[:, 3], p[:, 3]) - np.maximum(g[:, 1], p[:, 1]) + e)
    inter = iw * ih
    area_g = (g[:, 2] - g[:, 0] + e) * (g[:, 3] - g[:, 1] + e)
    area_p = (p[:, 2] - p[:, 0] + e) * (p[:, 3] - p[:, 1] + e)
    return inter, area_g + area_p - inter


def _obb_iu(g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from rsvl.geometry.rotated import rotated_iou

    iou = np.asarray(rotated_iou(g, p, aligned=True), dtype=np.float64)
    total = g[:, 2] * g[:, 3] + p[:, 2] * p[:, 3]
    # IoU = I / (A + B - I)  =>  I = IoU (A + B) / (1 + IoU)
    inter = iou * total / (1.0 + iou)
    return inter, total - inter


def _hbb_area(g: np.ndarray, plus_one: bool) -> np.ndarray:
    e = 1.0 if plus_one else 0.0
    return (g[:, 2] - g[:, 0] + e) * (g[:, 3] - g[:, 1] + e)


def _intersections_unions(
    kind: str, ids: list[str], gt: dict[str, Any], pred: dict[str, Any], plus_one: bool
) -> tuple[np.ndarray, np.ndarray]:
    n = len(ids)
    inter = np.zeros(n, dtype=np.float64)
    union = np.zeros(n, dtype=np.float64)
    have = np.array([k in pred for k in ids], dtype=bool)
    if kind in ("hbb", "obb"):
        width = 4 if kind == "hbb" else 5
        g = np.stack([_box(gt[k], width, f"ground truth {k!r}") for k in ids]) if n else np.zeros((0, width))
        if kind == "hbb":
            union[:] = _hbb_area(g, plus_one)
        else:
            union[:] = g[:, 2] * g[:, 3]
        if have.any():
            sel = np.flatnonzero(have)
            p = np.stack([_box(pred[ids[i]], width, f"prediction {ids[i]!r}") for i in sel])
            i_, u_ = _hbb_iu(g[sel], p, plus_one) if kind == "hbb" else _obb_iu(g[sel], p)
            inter[sel], union[sel] = i_, u_
        return inter, union
    for i, k in enumerate(ids):
        gm = _mask(gt[k], f"ground truth {k!r}")
        if k not in pred:
            union[i] = float(gm.sum())
            continue
        pm = _mask(pred[k], f"prediction {k!r}")
        if pm.shape != gm.shape:
            raise GeometryError(f"prediction {k!r}: mask shape {pm.shape} differs from the ground truth's {gm.shape}")
        inter[i] = float(np.logical_and(gm, pm).sum())
        union[i] = float(np.logical_or(gm, pm).sum())
    return inter, union


# --------------------------------------------------------------------------- evaluation


def _threshold_key(t: float) -> str:
    return f"Pr@{t:g}"


def evaluate_grounding(
    gt: Mapping[Id, Any],
    pred: Mapping[Id, Any],
    preset: str = "rrsisd",
    *,
    thresholds: Sequence[float] | None = None,
    strict: bool | None = None,
    plus_one: bool | None = None,
    missing: str = "wrong",
    per_item: bool = False,
) -> EvalReport:
    """Pr@X, mIoU and oIoU of one predicted box or mask per ground-truth item.

    Args:
        gt: ``id -> HBB | OBB | mask`` (all items of one kind; see the module docstring).
        pred: ``id -> value`` of the same kind.
        preset: ``rrsisd``, ``zeroov`` or ``vrsbench`` (:data:`GROUNDING_PRESETS`).
        thresholds, strict, plus_one: override the preset (recorded in the protocol).
        missing: ``"wrong"`` (default: IoU 0 plus a warning) or ``"error"``.
        per_item: include every item's IoU in ``details["iou"]``.

    Returns:
        metrics ``Pr@0.5`` ... ``Pr@0.9``, ``mIoU``, ``oIoU`` (fractions; ``oIoU`` is -1 when every
        union is empty).
    """
    if preset not in GROUNDING_PRESETS:
        raise InputError(f"unknown grounding preset {preset!r}; known: {', '.join(GROUNDING_PRESETS)}")
    check_missing_policy(missing)
    proto = GROUNDING_PRESETS[preset]
    overrides = {}
    if thresholds is not None:
        ts = tuple(float(t) for t in thresholds)
        if not ts or any(not 0.0 <= t <= 1.0 for t in ts):
            raise InputError(f"thresholds must be a non-empty list of numbers in [0, 1], got {thresholds!r}")
        overrides["thresholds"] = ts
    if strict is not None:
        overrides["strict"] = bool(strict)
    if plus_one is not None:
        overrides["plus_one"] = bool(plus_one)
    proto = replace(proto, **overrides)

    g = keyed(gt, "ground truth")
    p = keyed(pred, "predictions")
    if not g:
        raise InputError("ground truth is empty")
    missing_ids = split_ids(g, p, "grounding")
    ids = sorted(g)
    kinds = {_kind_of(g[k]) for k in ids}
    if len(kinds) != 1:
        raise GeometryError(f"ground-truth items mix kinds {sorted(kinds)}; evaluate boxes and masks separately")
    kind = kinds.pop()
    pred_kinds = {_kind_of(v) for v in p.values()}
    if pred_kinds - {kind}:
        raise GeometryError(f"predictions of kind {sorted(pred_kinds - {kind})} for {kind} ground truth")
    if proto.plus_one and kind != "hbb":
        raise InputError(f"plus_one applies to horizontal boxes only, not to {kind}")

    warnings: list[str] = []
    if missing_ids:
        if missing == "error":
            raise InputError(missing_message(missing_ids, len(g), "pass missing='wrong' to score them as IoU 0"))
        warnings.append(missing_message(missing_ids, len(g), "scored as empty predictions (IoU 0)"))

    inter, union = _intersections_unions(kind, ids, g, p, proto.plus_one)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    metrics: dict[str, float] = {}
    for t in proto.thresholds:
        hit = iou > t if proto.strict else iou >= t
        metrics[_threshold_key(t)] = float(hit.mean())
    metrics["mIoU"] = float(iou.mean())
    metrics["oIoU"] = float(inter.sum() / union.sum()) if union.sum() > 0 else -1.0

    details: dict[str, Any] = {
        "n_items": len(ids),
        "n_missing": len(missing_ids),
        "kind": kind,
        "cum_I": float(inter.sum()),
        "cum_U": float(union.sum()),
    }
    if per_item:
        details["iou"] = {k: float(v) for k, v in zip(ids, iou, strict=True)}
    protocol = {
        "thresholds": list(proto.thresholds),
        "comparison": "IoU > t" if proto.strict else "IoU >= t",
        "plus_one": proto.plus_one,
        "iou": {"hbb": "axis-aligned box IoU", "obb": "exact rotated IoU (rsvl.geometry.rotated)", "mask": "pixel IoU"}[
            kind
        ],
        "zero_union": "IoU 0",
        "mIoU": "mean of per-item IoU",
        "oIoU": "sum of intersections / sum of unions",
        "missing_predictions": "error" if missing == "error" else "IoU 0; union += ground-truth area",
        "source": proto.source,
        "overrides": sorted(overrides),
        "reference": reference(proto.reference, None),
    }
    if proto.paper_names:
        protocol["paper_names"] = dict(proto.paper_names)
    return EvalReport("grounding", preset, metrics, protocol, details, warnings)


# --------------------------------------------------------------------------- adapters


def grounding_from_samples(samples: Iterable[Sample], kind: str = "box") -> dict[str, Any]:
    """``id -> target`` for every referring expression of dataset samples.

    The id is ``Referring.id`` when set, else ``"<image>#<index>"``. ``kind``: ``"box"`` (the
    expression's ``bbox``, else its target instance's), ``"obb"`` (the target's polygon as a
    minimum-area le90 box) or ``"mask"`` (the target's COCO segmentation decoded to a bool mask;
    polygons need ``Sample.width``/``height``).
    """
    if kind not in ("box", "obb", "mask"):
        raise InputError(f"kind must be 'box', 'obb' or 'mask', got {kind!r}")
    out: dict[str, Any] = {}
    for sample in samples:
        for i, ref in enumerate(sample.refs):
            key = id_key(ref.id, "Referring.id") if ref.id is not None else f"{sample.image}#{i}"
            if key in out:
                raise InputError(f"two referring expressions share the id {key!r}")
            target = sample.instances[ref.target] if ref.target is not None else None
            where = f"{sample.image}: referring expression {key!r}"
            if kind == "box":
                box = ref.bbox if ref.bbox is not None else (target.bbox if target is not None else None)
                if box is None:
                    raise InputError(f"{where} has no box")
                out[key] = tuple(float(v) for v in box)
            elif kind == "obb":
                if target is None or target.polygon is None or len(target.polygon) != 8:
                    raise InputError(f"{where}: its target has no 8-point polygon")
                from rsvl.geometry.boxes import poly_to_obb

                out[key] = tuple(float(v) for v in np.asarray(poly_to_obb(np.asarray(target.polygon, float))))
            else:
                if target is None or target.mask is None:
                    raise InputError(f"{where}: its target has no mask")
                out[key] = _sample_mask(target.mask, sample, where)
    return out


def _sample_mask(segmentation: Any, sample: Sample, where: str) -> np.ndarray:
    from rsvl.geometry import masks

    if isinstance(segmentation, dict) and isinstance(segmentation.get("size"), list | tuple):
        h, w = (int(v) for v in segmentation["size"])
    elif sample.height is not None and sample.width is not None:
        h, w = sample.height, sample.width
    else:
        raise InputError(f"{where}: polygon masks need the sample's width and height")
    return masks.decode(segmentation, h, w)


def load_grounding_json(path: str | PathLike[str]) -> dict[str, Any]:
    """``id -> box or RLE`` from JSON / JSON Lines.

    Shapes: ``{id: [x1, y1, x2, y2]}`` (or 5 numbers, or an RLE dict), or a list / ``.jsonl`` of
    records ``{"id" | "question_id" | "image_id": ..., "bbox" | "segmentation": ...}``.
    """
    return load_id_mapping(path, ("bbox", "segmentation"))


_INT = re.compile(r"\d+")


def load_vrsbench_referring(path: str | PathLike[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Ground truth and predictions from a VRSBench referring output file (JSON Lines).

    Each line holds ``ground_truth`` and ``answer`` texts such as ``{<12><30><45><67>}``; like
    VRSBench's ``compute_metrics.ipynb`` the first four integers of each (``re.findall(r"\\d+")``)
    are the box on the 0-100 grid. The id is ``question_id`` when present, else the line number.
    An answer with fewer than four integers (or with x2 < x1 or y2 < y1) is left out of the
    predictions: the notebook counts such answers as "invalid output" in its denominators, i.e.
    IoU 0, and :func:`evaluate_grounding` scores a missing prediction the same, with a warning.
    """
    p = Path(path)
    data, is_lines = read_json_records(p)
    if not is_lines:
        raise DatasetError("VRSBench referring outputs are JSON Lines (.jsonl)", p)
    gt: dict[str, tuple[int, ...]] = {}
    pred: dict[str, tuple[int, ...]] = {}
    for line, record in data:
        if not isinstance(record, dict) or "ground_truth" not in record or "answer" not in record:
            raise DatasetError("expected an object with 'ground_truth' and 'answer'", p, line)
        key = id_key(record["question_id"], "question_id") if "question_id" in record else str(line)
        if key in gt:
            raise DatasetError(f"duplicate id {key!r}", p, line)
        g = [int(v) for v in _INT.findall(str(record["ground_truth"]))]
        if len(g) < 4:
            raise DatasetError(f"ground_truth {record['ground_truth']!r:.60} holds fewer than 4 integers", p, line)
        gt[key] = tuple(g[:4])
        a = [int(v) for v in _INT.findall(str(record["answer"]))]
        # Fewer than 4 integers, or a reversed box: the notebook's "invalid output" (IoU 0).
        if len(a) >= 4 and a[2] >= a[0] and a[3] >= a[1]:
            pred[key] = tuple(a[:4])
    return gt, pred

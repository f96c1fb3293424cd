"""Detection metrics with named protocols: ``coco``, ``aitod``, ``visdrone``, ``lvis`` and ``dota``.

One call, one :class:`~rsvl.metrics.report.EvalReport`::

    report = evaluate_detection("instances_val.json", "results.json", preset="coco")
    report.metrics["AP"], report.protocol["reference"]

``gt`` / ``predictions`` are COCO dicts or files, or rsvl Samples (see
:mod:`rsvl.metrics.detection_data`). Every preset is validated against its official
implementation (named in ``protocol["reference"]``):

* ``coco`` — pycocotools ``COCOeval`` (and faster-coco-eval): AP over IoU .50:.05:.95, 101-point
  interpolated precision, maxDets 1/10/100 per image *and category*, areas all/small/medium/large
  from the annotation ``area`` field, ``iscrowd`` GT matched by ``inter / area(det)`` and ignored.
* ``aitod`` — the AI-TOD cocoapi fork (jwwangchn/cocoapi-aitod): maxDets 1/100/1500, areas
  all [0, 1e10], verytiny [0, 8²], tiny [8², 16²], small [16², 32²], medium [32², 1e10] and the
  fork's 19 stats, including AP25 (-1 unless 0.25 is among the IoU thresholds, as in the fork)
  and optimal LRP at IoU 0.5.
* ``visdrone`` — the official VisDrone2018-DET MATLAB toolkit (see :mod:`rsvl.metrics.visdrone_eval`).
* ``lvis`` — the ``lvis`` package's ``LVISEval`` plus Fixed AP (see :mod:`rsvl.metrics.lvis_eval`).
* ``dota`` — DOTA_devkit's ``dota_evaluation_task1.py`` (see :mod:`rsvl.metrics.dota`).

``box_type="obb"`` evaluates the COCO-family presets on rotated rectangles (le90; polygons become
their minimum-area rectangle) with exact rotated IoU; everything else is unchanged.

One deliberate difference from pycocotools: it records matches by annotation id with 0 meaning
"unmatched", so a detection matched to a ground-truth annotation whose id is 0 counts as a miss
there. rsvl counts it as the match it is and says so in ``warnings``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rsvl.datasets.sample import Category
from rsvl.errors import InputError
from rsvl.metrics import coco_eval as ce
from rsvl.metrics.detection_data import DetectionData, GtLike, PredLike, load_detection_data
from rsvl.metrics.report import EvalReport, reference

logger = logging.getLogger(__name__)

PRESETS = ("coco", "aitod", "visdrone", "lvis", "dota")
_BIG = 1e5**2


@dataclass(frozen=True)
class SummaryEntry:
    """One reported number: AP or AR at one IoU (None = all), area label and maxDets position
    (-1: the largest; None: one number per maxDets value, ``{m}`` in the key is that value)."""

    key: str
    ap: bool
    iou: float | None = None
    area: str = "all"
    max_det_pos: int | None = -1


@dataclass(frozen=True)
class CocoFamilyPreset:
    """A pycocotools-style protocol: thresholds, caps, area ranges and the numbers it reports."""

    name: str
    max_dets: tuple[int, ...]
    area_ranges: tuple[tuple[str, float, float], ...]
    summary: tuple[SummaryEntry, ...]
    reference: tuple[str, str | None]
    with_lrp: bool = False


#: AR at every maxDets value: AR1, AR10, AR100 for COCO.
_AR_EACH = SummaryEntry("AR{m}", False, max_det_pos=None)


COCO = CocoFamilyPreset(
    name="coco",
    max_dets=(1, 10, 100),
    area_ranges=(("all", 0, _BIG), ("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, _BIG)),
    summary=(
        SummaryEntry("AP", True),
        SummaryEntry("AP50", True, 0.5),
        SummaryEntry("AP75", True, 0.75),
        SummaryEntry("APs", True, area="small"),
        SummaryEntry("APm", True, area="medium"),
        SummaryEntry("APl", True, area="large"),
        _AR_EACH,
        SummaryEntry("ARs", False, area="small"),
        SummaryEntry("ARm", False, area="medium"),
        SummaryEntry("ARl", False, area="large"),
    ),
    reference=("pycocotools COCOeval (bbox)", "pycocotools"),
)

AITOD = CocoFamilyPreset(
    name="aitod",
    max_dets=(1, 100, 1500),
    area_ranges=(
        ("all", 0, _BIG),
        ("verytiny", 0, 8**2),
        ("tiny", 8**2, 16**2),
        ("small", 16**2, 32**2),
        ("medium", 32**2, _BIG),
    ),
    summary=(
        SummaryEntry("AP", True),
        SummaryEntry("AP25", True, 0.25),
        SummaryEntry("AP50", True, 0.5),
        SummaryEntry("AP75", True, 0.75),
        SummaryEntry("APvt", True, area="verytiny"),
        SummaryEntry("APt", True, area="tiny"),
        SummaryEntry("APs", True, area="small"),
        SummaryEntry("APm", True, area="medium"),
        _AR_EACH,
        SummaryEntry("ARvt", False, area="verytiny"),
        SummaryEntry("ARt", False, area="tiny"),
        SummaryEntry("ARs", False, area="small"),
        SummaryEntry("ARm", False, area="medium"),
    ),
    reference=("AI-TOD cocoapi fork (jwwangchn/cocoapi-aitod) aitodpycocotools COCOeval", None),
    with_lrp=True,
)

_COCO_FAMILY = {"coco": COCO, "aitod": AITOD}
_LRP_KEYS = (("oLRP", "olrp"), ("oLRP_loc", "olrp_loc"), ("oLRP_fp", "olrp_fp"), ("oLRP_fn", "olrp_fn"))


def evaluate_detection(
    gt: GtLike,
    predictions: PredLike,
    preset: str = "coco",
    box_type: Literal["hbb", "obb"] = "hbb",
    *,
    categories: Sequence[str | Category] | None = None,
    strict: bool = True,
    iou_thrs: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    area_ranges: dict[str, Sequence[float]] | None = None,
    **options: Any,
) -> EvalReport:
    """Score detections against ground truth with a named protocol.

    Args:
        gt: COCO annotation file/dict or rsvl Samples.
        predictions: COCO results file/list or rsvl Samples with scored instances.
        preset: ``coco``, ``aitod``, ``visdrone``, ``lvis`` or ``dota``.
        box_type: ``hbb`` or ``obb`` (COCO-family presets; DOTA always uses polygons).
        categories: for Sample ground truth, the category names (or Categories) in order.
        strict: False drops predictions on unknown images/categories, counted in ``warnings``.
        iou_thrs, max_dets, area_ranges: override the preset's values (``area_ranges`` maps a
            label to ``[lo, hi]``); reported in ``protocol``. AP numbers use the largest maxDets.
        options: preset-specific settings — lvis: ``fixed_ap`` (True), ``dets_per_cat`` (10000);
            visdrone: ``classes``, ``ignored_region_category``; dota: ``ap_method``
            (``voc07``/``voc12``), ``iou_threshold``, ``classes``.

    Returns:
        An :class:`EvalReport` with fractions (-1 where undefined), the protocol and per-category AP.

    Raises:
        InputError / DatasetError: malformed input, unknown images or categories (strict), or an
            unknown preset/option.
    """
    preset = preset.lower()
    if preset not in PRESETS:
        raise InputError(f"unknown detection preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if box_type not in ("hbb", "obb"):
        raise InputError(f"box_type must be 'hbb' or 'obb', got {box_type!r}")
    if preset == "dota":
        from rsvl.metrics.dota import evaluate_dota

        _no_overrides(preset, iou_thrs=iou_thrs, max_dets=max_dets, area_ranges=area_ranges)
        return evaluate_dota(gt, predictions, categories=categories, strict=strict, **options)
    if preset in ("visdrone", "lvis") and box_type != "hbb":
        raise InputError(f"the {preset} protocol is defined on horizontal boxes; box_type must be 'hbb'")
    if preset == "visdrone":
        from rsvl.metrics.visdrone_eval import evaluate_visdrone

        _no_overrides(preset, area_ranges=area_ranges)
        return evaluate_visdrone(
            gt, predictions, categories=categories, strict=strict, iou_thrs=iou_thrs, max_dets=max_dets, **options
        )
    if preset == "lvis":
        from rsvl.metrics.lvis_eval import evaluate_lvis

        return evaluate_lvis(
            gt,
            predictions,
            categories=categories,
            strict=strict,
            iou_thrs=iou_thrs,
            max_dets=max_dets,
            area_ranges=area_ranges,
            **options,
        )
    if options:
        raise InputError(f"unknown option(s) for preset {preset!r}: {', '.join(sorted(options))}")
    data = load_detection_data(gt, predictions, box_type, categories=categories, strict=strict)
    return coco_family_report(data, _COCO_FAMILY[preset], box_type, iou_thrs, max_dets, area_ranges)


def _no_overrides(preset: str, **given: Any) -> None:
    bad = [k for k, v in given.items() if v is not None]
    if bad:
        raise InputError(f"preset {preset!r} does not take {', '.join(bad)}")


def engine_params(
    preset: CocoFamilyPreset,
    iou_thrs: Sequence[float] | None,
    max_dets: Sequence[int] | None,
    area_ranges: dict[str, Sequence[float]] | None,
    cap: ce.CapScope = "image_category",
) -> ce.EngineParams:
    """The engine parameters of a preset with the caller's overrides, checked."""
    thr = ce.coco_iou_thresholds() if iou_thrs is None else np.asarray(list(iou_thrs), dtype=np.float64)
    if thr.ndim != 1 or not thr.size or not np.isfinite(thr).all() or (thr < 0).any() or (thr > 1).any():
        raise InputError(f"iou_thrs must be numbers in [0, 1], got {iou_thrs!r}")
    md = preset.max_dets if max_dets is None else tuple(max_dets)
    if not md or any(isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 for m in md):
        raise InputError(f"max_dets must be positive integers, got {max_dets!r}")
    if area_ranges is None:
        labels = tuple(a[0] for a in preset.area_ranges)
        rngs = [[a[1], a[2]] for a in preset.area_ranges]
    else:
        labels = tuple(area_ranges)
        rngs = [list(v) for v in area_ranges.values()]
        if not labels or any(len(r) != 2 or not r[0] <= r[1] for r in rngs):
            raise InputError(f"area_ranges must map labels to [lo, hi] with lo <= hi, got {area_ranges!r}")
    return ce.EngineParams(thr, ce.coco_recall_thresholds(), tuple(int(m) for m in md), rngs, labels, cap)


def summary_metrics(acc: ce.Accumulated, entries: Sequence[SummaryEntry]) -> dict[str, float]:
    """The preset's summary numbers from accumulated precision/recall."""
    p = acc.params
    out: dict[str, float] = {}
    for e in entries:
        values = p.max_dets if e.max_det_pos is None else (p.max_dets[e.max_det_pos],)
        for m in values:
            out[e.key.format(m=m)] = ce.summarize(acc, e.ap, iou=e.iou, area=e.area, max_det=m)
    return out


def engine_tables(data: DetectionData) -> tuple[ce.GroundTruth, ce.Detections]:
    """Engine inputs from validated data (COCO rules: ``iscrowd`` is both crowd and ignore)."""
    g, d = data.gt, data.dt
    gt = ce.GroundTruth(g.image, g.category, g.geometry, g.area, g.crowd, g.crowd)
    dt = ce.Detections(d.image, d.category, d.geometry, d.score, d.area)
    return gt, dt


def coco_family_report(
    data: DetectionData,
    preset: CocoFamilyPreset,
    box_type: str,
    iou_thrs: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    area_ranges: dict[str, Sequence[float]] | None = None,
) -> EvalReport:
    """Run the engine with a COCO-family preset and wrap the numbers in an :class:`EvalReport`."""
    params = engine_params(preset, iou_thrs, max_dets, area_ranges)
    gt, dt = engine_tables(data)
    result = ce.match(gt, dt, params, len(data.categories), box_type=box_type)  # type: ignore[arg-type]
    acc = ce.accumulate(result, with_lrp=preset.with_lrp)
    metrics = summary_metrics(acc, preset.summary)
    if preset.with_lrp:
        for key, name in _LRP_KEYS:
            metrics[key] = ce.summarize_lrp(acc, name)
    per_cat = ce.per_category_ap(acc)
    protocol = coco_protocol(params, box_type, preset.name)
    name, package = preset.reference
    if box_type == "obb":  # the reference's matching and accumulation, with rotated IoU in place of bbIou
        name = f"{name} with rotated-box IoU (validated against it with shapely polygon IoU)"
    protocol["reference"] = reference(name, package)
    if preset.name == "coco" and box_type == "hbb":
        protocol["also_equal_to"] = reference("faster-coco-eval COCOeval_faster", "faster-coco-eval")
    if preset.with_lrp:
        protocol["lrp"] = "optimal LRP (Oksuz et al.) at the first IoU threshold, area 'all', largest maxDets"
    details = {
        "per_category_AP": {c.name: float(v) for c, v in zip(data.categories, per_cat, strict=True)},
        "counts": counts(data),
    }
    warnings = list(data.warnings)
    unused = int((data.gt.ignore & ~data.gt.crowd).sum())
    if unused:
        warnings.append(
            f"{unused} ground-truth objects have ignore=1 without iscrowd; pycocotools (and this "
            "preset) honour only iscrowd, so they count as normal objects"
        )
    difficult = int(data.gt.difficult.sum())
    if difficult:
        warnings.append(
            f"{difficult} ground-truth objects are marked difficult; the {preset.name} protocol has no "
            "difficult rule, so they count as normal objects"
        )
    logger.info(
        "%s evaluation: %d images, %d GT, %d predictions", preset.name, len(data.images), len(data.gt), len(data.dt)
    )
    return EvalReport(
        task="det", preset=preset.name, metrics=metrics, protocol=protocol, details=details, warnings=warnings
    )


def counts(data: DetectionData) -> dict[str, int]:
    return {
        "images": len(data.images),
        "categories": len(data.categories),
        "ground_truth": len(data.gt),
        "predictions": len(data.dt),
    }


def coco_protocol(params: ce.EngineParams, box_type: str, name: str) -> dict[str, Any]:
    """The ``protocol`` block shared by the COCO-family presets."""
    scope = "per image and category" if params.cap == "image_category" else "per image, all categories together"
    return {
        "name": name,
        "box_type": box_type,
        "iou": "pycocotools bbIou on xywh (crowd: inter / area(det))"
        if box_type == "hbb"
        else "exact rotated-rectangle IoU, le90 (crowd: inter / area(det)); polygons -> minimum-area rectangle",
        "iou_thresholds": [float(t) for t in params.iou_thrs],
        "recall_thresholds": [float(r) for r in params.rec_thrs],
        "interpolation": "precision made monotone from the right, looked up at each recall point "
        "(searchsorted side='left'); 0 beyond the last recall reached",
        "max_dets": [int(m) for m in params.max_dets],
        "max_dets_scope": scope,
        "area_ranges": {
            label: [float(lo), float(hi)] for label, (lo, hi) in zip(params.area_labels, params.area_rngs, strict=True)
        },
        "area_source": "ground truth: the annotation 'area' field (box area when absent); predictions: box area",
        "ignore_rules": "iscrowd ground truth is ignored and may match any number of detections; ground truth "
        "outside an area range is ignored there; unmatched detections outside it are ignored",
        "score_ties": "stable sort: equal scores keep input order (pycocotools' mergesort)",
        "undefined": "-1 where a category/area has no non-ignored ground truth; means over defined entries",
        "ap_max_dets": int(params.max_dets[-1]),
    }

"""LVIS federated detection AP (equal to the ``lvis`` package's ``LVISEval``) and Fixed AP.

The federated rules, as ``LVISEval`` applies them:

1. Each image keeps its 300 highest-scored detections over all categories (``LVISResults``
   ``limit_dets_per_image``; ties keep input order) — *before* anything else is dropped.
2. A detection is evaluated only if its category is verified in that image: present in the
   image's ground truth or listed in its ``neg_category_ids``. Others are dropped.
3. An unmatched detection of a category listed in the image's ``not_exhaustive_category_ids`` is
   ignored (not a false positive).
4. Ground truth with ``ignore`` set is ignored; there is no crowd rule (``iscrowd`` is not read).
5. AP is averaged over categories, and over the frequency groups ``r``/``c``/``f`` (category
   ``frequency``) for APr/APc/APf; AR is at maxDets 300.

Fixed AP (Dave et al., "Evaluating Large-Vocabulary Object Detectors: The Devil is in the
Details", 2021; ``scripts/evaluate_ap_fixed.py`` of achalddave/large-vocab-devil) replaces rule 1 by
a cap per *category* over the whole dataset — its 10,000 highest-scored detections — with no
per-image limit, then evaluates exactly as above. ``AP_fixed`` and friends report it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rsvl.datasets.sample import Category
from rsvl.errors import InputError
from rsvl.metrics import coco_eval as ce
from rsvl.metrics.detection_data import DetectionData, GtLike, PredLike, load_detection_data
from rsvl.metrics.report import EvalReport, reference

#: Detections per image in standard LVIS AP.
LVIS_MAX_DETS = 300
#: Detections per category over the dataset in Fixed AP.
FIXED_AP_DETS_PER_CAT = 10_000

_AREAS = {"all": [0.0, 1e5**2], "small": [0.0, 32.0**2], "medium": [32.0**2, 96.0**2], "large": [96.0**2, 1e5**2]}
_AP_KEYS = (
    ("AP", None, "all"),
    ("AP50", 0.5, "all"),
    ("AP75", 0.75, "all"),
    ("APs", None, "small"),
    ("APm", None, "medium"),
    ("APl", None, "large"),
)


def evaluate_lvis(
    gt: GtLike,
    predictions: PredLike,
    *,
    categories: Sequence[str | Category] | None = None,
    strict: bool = True,
    iou_thrs: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    area_ranges: dict[str, Sequence[float]] | None = None,
    fixed_ap: bool = True,
    dets_per_cat: int = FIXED_AP_DETS_PER_CAT,
) -> EvalReport:
    """LVIS AP/AR (federated) and, when ``fixed_ap``, Fixed AP; see the module docstring.

    ``max_dets`` takes one value (LVIS has a single per-image cap, default 300).
    """
    if max_dets is not None and len(list(max_dets)) != 1:
        raise InputError(f"LVIS takes a single max_dets value, got {max_dets!r}")
    max_det = LVIS_MAX_DETS if max_dets is None else int(next(iter(max_dets)))
    if max_det < 1 or isinstance(dets_per_cat, bool) or int(dets_per_cat) < 1:
        raise InputError("max_dets and dets_per_cat must be positive")
    data = load_detection_data(gt, predictions, "hbb", categories=categories, strict=strict, lvis=True)
    thr = ce.coco_iou_thresholds() if iou_thrs is None else np.asarray(list(iou_thrs), dtype=np.float64)
    areas = _AREAS if area_ranges is None else {k: list(v) for k, v in area_ranges.items()}
    labels = tuple(areas)
    rngs = [areas[k] for k in labels]
    groups = _frequency_groups(data)

    # standard LVIS: per-image cap first, then the federated filter
    ranks = ce.cap_ranks(data.dt.image, data.dt.category, data.dt.score, "image")
    std_params = ce.EngineParams(thr, ce.coco_recall_thresholds(), (max_det,), rngs, labels, cap="image")
    acc = _run(data, ranks < max_det, std_params)
    metrics = _summary(acc, groups, "")
    suffix = f"@{max_det}"
    metrics[f"AR{suffix}"] = ce.summarize(acc, False)
    for label, short in (("small", "s"), ("medium", "m"), ("large", "l")):
        metrics[f"AR{short}{suffix}"] = ce.summarize(acc, False, area=label)

    details: dict[str, Any] = {
        "per_category_AP": {c.name: float(v) for c, v in zip(data.categories, ce.per_category_ap(acc), strict=True)},
        "counts": {
            "images": len(data.images),
            "categories": len(data.categories),
            "ground_truth": len(data.gt),
            "predictions": len(data.dt),
        },
    }
    if fixed_ap:
        keep = _category_topk(data, int(dets_per_cat))
        fixed_params = ce.EngineParams(thr, ce.coco_recall_thresholds(), (ce.NO_LIMIT,), rngs, labels, cap="image")
        acc_fixed = _run(data, keep, fixed_params)
        metrics.update(_summary(acc_fixed, groups, "_fixed"))
        details["per_category_AP_fixed"] = {
            c.name: float(v) for c, v in zip(data.categories, ce.per_category_ap(acc_fixed), strict=True)
        }
        per_cat_dets = np.bincount(data.dt.category, minlength=len(data.categories))
        details["fixed_ap_categories_below_cap"] = int((per_cat_dets < dets_per_cat).sum())

    protocol = {
        "name": "lvis",
        "box_type": "hbb",
        "iou": "pycocotools bbIou on xywh, no crowd rule",
        "iou_thresholds": [float(t) for t in thr],
        "recall_thresholds": [float(r) for r in ce.coco_recall_thresholds()],
        "max_dets": [max_det],
        "max_dets_scope": "per image, all categories together, applied before the federated filter",
        "area_ranges": {k: [float(v[0]), float(v[1])] for k, v in areas.items()},
        "area_source": "ground truth: the annotation 'area' field; predictions: box area",
        "ignore_rules": "federated: detections of categories neither present nor in neg_category_ids of the image "
        "are dropped; unmatched detections of not_exhaustive_category_ids are ignored; GT with ignore=1 is "
        "ignored (matched at most once, no crowd rule)",
        "frequency_groups": {g: len(v) for g, v in zip("rcf", groups, strict=True)},
        "score_ties": "stable sort: equal scores keep input order",
        "undefined": "-1 where a category has no non-ignored ground truth",
        "reference": reference("lvis LVISEval (bbox)", "lvis"),
    }
    if fixed_ap:
        protocol["fixed_ap"] = {
            "dets_per_category": int(dets_per_cat),
            "max_dets_per_image": None,
            "reference": "Dave et al. 2021, achalddave/large-vocab-devil scripts/evaluate_ap_fixed.py "
            "(top-k per category, then LVISEval with max_dets=-1)",
        }
    return EvalReport(
        task="det", preset="lvis", metrics=metrics, protocol=protocol, details=details, warnings=list(data.warnings)
    )


def _frequency_groups(data: DetectionData) -> list[list[int]]:
    groups: list[list[int]] = [[], [], []]
    for k, c in enumerate(data.categories):
        groups["rcf".index(c.attrs["frequency"])].append(k)
    return groups


def _category_topk(data: DetectionData, k: int) -> np.ndarray:
    """Mask of each category's ``k`` highest-scored detections over the dataset (ties: input order)."""
    d = data.dt
    n = len(d)
    order = np.lexsort((np.arange(n), -d.score, d.category))
    keys = d.category[order]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = ce._group_rank(keys)
    return rank < k


def _run(data: DetectionData, keep: np.ndarray, params: ce.EngineParams) -> ce.Accumulated:
    """Federated filter on the kept detections, then match and accumulate."""
    g, d = data.gt, data.dt
    K = len(data.categories)
    present = set((g.image * K + g.category).tolist())
    neg = {i * K + c for i, im in enumerate(data.images) for c in (im.neg or ())}
    key = d.image * K + d.category
    verified = np.fromiter((int(x) in present or int(x) in neg for x in key.tolist()), dtype=bool, count=len(d))
    sel = np.flatnonzero(keep & verified)
    not_exh = {i * K + c for i, im in enumerate(data.images) for c in (im.not_exhaustive or ())}
    nel = np.fromiter((int(x) in not_exh for x in key[sel].tolist()), dtype=bool, count=sel.shape[0])
    gt = ce.GroundTruth(g.image, g.category, g.xywh, g.area, np.zeros(len(g), dtype=bool), g.ignore)
    dt = ce.Detections(d.image[sel], d.category[sel], d.xywh[sel], d.score[sel], d.area[sel], ignore_unmatched=nel)
    result = ce.match(gt, dt, params, K, box_type="hbb")
    return ce.accumulate(result)


def _summary(acc: ce.Accumulated, groups: list[list[int]], suffix: str) -> dict[str, float]:
    out = {}
    for key, iou, area in _AP_KEYS:
        out[f"{key}{suffix}"] = ce.summarize(acc, True, iou=iou, area=area)
    for g, cats in zip("rcf", groups, strict=True):
        out[f"AP{g}{suffix}"] = ce.summarize(acc, True, categories=cats)
    return out

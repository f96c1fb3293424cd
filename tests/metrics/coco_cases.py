"""Random COCO-style detection cases and reference runners (pycocotools, faster-coco-eval) shared
by the detection metric tests.

The generator aims at the places where evaluators disagree: score ties, crowd ground truth, images
without ground truth or without detections, categories without ground truth, areas exactly on the
range borders (32², 96²), the annotation ``area`` differing from the box area, zero-size boxes,
and more detections per image and category than maxDets.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

EDGE_AREAS = (0.0, 8.0**2, 16.0**2, 32.0**2, 96.0**2)


def random_coco_case(
    rng: np.random.Generator,
    n_images: int,
    n_cats: int,
    *,
    max_gt: int = 12,
    crowd_p: float = 0.1,
    score_decimals: int | None = 1,
    str_ids: bool = False,
    crowded_image: bool = False,
    box_scale: float = 1.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ground-truth dict and a results list (see the module docstring)."""
    images = [
        {"id": f"img{i:03d}" if str_ids else int(i * 3 + 1), "width": 640, "height": 480, "file_name": f"{i}.png"}
        for i in range(n_images)
    ]
    cats = [{"id": int(c * 2 + 5), "name": f"c{c}"} for c in range(n_cats + 1)]  # the last one never has GT
    used = cats[:n_cats]
    anns: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def score() -> float:
        s = float(rng.random())
        return round(s, score_decimals) if score_decimals is not None else s

    def cat_id() -> int:
        return int(used[rng.integers(n_cats)]["id"])

    for k, im in enumerate(images):
        n_gt = 0 if rng.random() < 0.15 else int(rng.integers(0, max_gt + 1))
        with_dets = rng.random() > 0.1
        for _ in range(n_gt):
            x, y = rng.uniform(0, 600, 2)
            if rng.random() < 0.1:
                side = float(np.sqrt(EDGE_AREAS[rng.integers(1, len(EDGE_AREAS))]))
                w = h = side
            else:
                w, h = (rng.uniform(1, 30, 2) if rng.random() < 0.5 else rng.uniform(20, 150, 2)) * box_scale
            if rng.random() < 0.03:
                w = 0.0
            c = cat_id()
            r = rng.random()
            area = (
                float(w * h)
                if r < 0.6
                else float(w * h * rng.uniform(0.5, 1.0))
                if r < 0.9
                else float(EDGE_AREAS[rng.integers(len(EDGE_AREAS))])
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": c,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": area,
                    "iscrowd": int(rng.random() < crowd_p),
                }
            )
            if not with_dets:
                continue
            for _ in range(int(rng.integers(0, 4))):
                sigma = float(rng.choice([0.5, 3.0, 12.0]))
                j = rng.normal(0, sigma, 4)
                results.append(
                    {
                        "image_id": im["id"],
                        "category_id": c if rng.random() < 0.85 else cat_id(),
                        "bbox": [
                            float(x + j[0]),
                            float(y + j[1]),
                            float(max(w + j[2], 0.5)),
                            float(max(h + j[3], 0.5)),
                        ],
                        "score": score(),
                    }
                )
        if with_dets:
            for _ in range(int(rng.integers(0, 5))):
                x, y = rng.uniform(0, 600, 2)
                w, h = rng.uniform(1, 100, 2)
                results.append(
                    {
                        "image_id": im["id"],
                        "category_id": cat_id(),
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "score": score(),
                    }
                )
        if crowded_image and k == 0:
            c = int(used[0]["id"])
            for _ in range(130):
                x, y = rng.uniform(0, 100, 2)
                results.append(
                    {"image_id": im["id"], "category_id": c, "bbox": [float(x), float(y), 40.0, 40.0], "score": score()}
                )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": c,
                    "bbox": [50.0, 50.0, 40.0, 40.0],
                    "area": 1600.0,
                    "iscrowd": 0,
                }
            )
    rng.shuffle(results)
    return {"images": images, "annotations": anns, "categories": cats}, results


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def pycocotools_eval(gt: dict[str, Any], results: list[dict[str, Any]], evaluator_cls=None, **params: Any):
    """Run pycocotools (or a subclass) on copies of the inputs; returns the evaluator after
    evaluate/accumulate/summarize. ``params`` override ``E.params`` attributes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cls = evaluator_cls or COCOeval
    with _quiet():
        G = COCO()
        G.dataset = copy.deepcopy(gt)
        G.createIndex()
        if results:
            D = G.loadRes(copy.deepcopy(results))
        else:  # loadRes cannot take an empty list (it reads anns[0])
            D = COCO()
            D.dataset = {
                "images": list(G.dataset["images"]),
                "categories": copy.deepcopy(gt["categories"]),
                "annotations": [],
            }
            D.createIndex()
        E = cls(G, D, "bbox")
        for k, v in params.items():
            setattr(E.params, k, v)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def faster_coco_eval_stats(gt: dict[str, Any], results: list[dict[str, Any]]) -> np.ndarray:
    """The 12 COCO stats from faster-coco-eval's C++ ``COCOeval_faster``."""
    from faster_coco_eval import COCO, COCOeval_faster

    with _quiet():
        G = COCO(copy.deepcopy(gt))
        D = G.loadRes(copy.deepcopy(results))
        E = COCOeval_faster(G, D, "bbox", print_function=lambda *a, **k: None)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return np.asarray(E.stats[:12], dtype=float)


def coco_stats_from_report(metrics: dict[str, float]) -> np.ndarray:
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    return np.array([metrics[k] for k in keys])

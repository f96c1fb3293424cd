"""Scene classification metrics: overall accuracy, per-class accuracy, their mean, confusion matrix.

Ground truth and predictions are mappings ``id -> label``. Ids are compared as strings (``7``
and ``"7"`` are the same image: JSON object keys are always strings). A class list may be given;
otherwise it is the sorted set of ground-truth labels.

Rules (recorded in the report's ``protocol`` block):

* a prediction whose label is not in the class list is counted wrong, tallied in the confusion
  matrix column ``(unknown)`` and reported in a warning with the labels seen;
* an image without a prediction is counted wrong (column ``(missing)``, with a warning), or
  raises when ``missing="error"``; a prediction for an id absent from the ground truth raises;
* ``OA`` = correct / images; ``acc/<class>`` = correct / ground-truth images of that class (the
  class's recall); ``AA`` = mean of ``acc/<class>`` over classes with at least one image. A class
  of the given list with no ground-truth image gets -1 (undefined) and stays out of ``AA``.

"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from rsvl.datasets.sample import Sample
from rsvl.errors import InputError
from rsvl.metrics.records import check_missing_policy, id_key, keyed, missing_message, split_ids
from rsvl.metrics.report import EvalReport, reference

__all__ = ["evaluate_classification", "labels_from_samples"]

Id = int | str
V = TypeVar("V")

UNKNOWN_COLUMN = "(unknown)"
MISSING_COLUMN = "(missing)"


# --------------------------------------------------------------------------- classification


def labels_from_samples(samples: Iterable[Sample]) -> dict[str, str]:
    """``image id -> scene label`` from dataset samples (``Sample.image_id``, else ``Sample.image``)."""
    out: dict[str, str] = {}
    for sample in samples:
        key = id_key(sample.image_id if sample.image_id is not None else sample.image, "sample id")
        if sample.label is None:
            raise InputError(f"sample {sample.image!r} has no scene label")
        if key in out:
            raise InputError(f"two samples share the id {key!r}")
        out[key] = sample.label
    return out


def _label(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what}: expected a label string, got {type(value).__name__} {value!r:.60}")
    return value


def evaluate_classification(
    gt: Mapping[Id, str],
    pred: Mapping[Id, str],
    *,
    classes: Sequence[str] | None = None,
    ignore_case: bool = False,
    missing: str = "wrong",
) -> EvalReport:
    """Top-1 accuracy metrics of scene-label predictions.

    Args:
        gt: ``id -> true label``.
        pred: ``id -> predicted label``.
        classes: the class list (order of the confusion matrix); default: sorted ground-truth labels.
            Ground-truth labels outside a given list raise.
        ignore_case: compare labels case-insensitively (free-text VLM answers); labels are
            reported in the case of the class list.
        missing: ``"wrong"`` (default: an image without prediction counts as an error, with a
            warning) or ``"error"`` (raise).

    Returns:
        metrics ``OA``, ``AA``, ``acc/<class>``; details ``confusion_matrix`` (rows: true class,
        columns: predicted class, then ``(unknown)`` and ``(missing)``), ``support``,
        ``unknown_labels``.
    """
    check_missing_policy(missing)
    g = {k: _label(v, f"ground truth {k!r}") for k, v in keyed(gt, "ground truth").items()}
    p = {k: _label(v, f"prediction {k!r}") for k, v in keyed(pred, "predictions").items()}
    if not g:
        raise InputError("ground truth is empty")
    missing_ids = split_ids(g, p, "classification")

    fold = str.casefold if ignore_case else (lambda s: s)
    if classes is None:
        class_list = sorted(set(g.values()), key=lambda s: (fold(s), s))
        seen: dict[str, str] = {}
        for name in class_list:
            seen.setdefault(fold(name), name)
        class_list = list(seen.values())
    else:
        class_list = [_label(c, "classes") for c in classes]
        if len({fold(c) for c in class_list}) != len(class_list):
            raise InputError("classes: the class list has duplicates")
    index = {fold(c): i for i, c in enumerate(class_list)}
    bad = sorted({v for v in g.values() if fold(v) not in index})
    if bad:
        raise InputError(f"ground-truth labels missing from the class list: {bad[:10]}")

    n = len(class_list)
    matrix = np.zeros((n, n + 2), dtype=np.int64)
    unknown: Counter[str] = Counter()
    warnings: list[str] = []
    if missing_ids:
        if missing == "error":
            raise InputError(missing_message(missing_ids, len(g), "pass missing='wrong' to count them as errors"))
        warnings.append(missing_message(missing_ids, len(g), "counted as wrong"))
    for k, true in g.items():
        row = index[fold(true)]
        if k not in p:
            matrix[row, n + 1] += 1
            continue
        col = index.get(fold(p[k]))
        if col is None:
            unknown[p[k]] += 1
            matrix[row, n] += 1
        else:
            matrix[row, col] += 1
    if unknown:
        shown = ", ".join(f"{label!r} x{count}" for label, count in unknown.most_common(5))
        warnings.append(
            f"{sum(unknown.values())} prediction(s) with labels outside the class list ({shown}); counted as wrong"
        )

    support = matrix.sum(axis=1)
    correct = np.diag(matrix[:, :n])
    metrics: dict[str, float] = {"OA": float(correct.sum() / support.sum())}
    per_class = {}
    for i, name in enumerate(class_list):
        per_class[name] = float(correct[i] / support[i]) if support[i] else -1.0
    defined = [v for v in per_class.values() if v >= 0]
    metrics["AA"] = float(np.mean(defined))
    metrics.update({f"acc/{name}": value for name, value in per_class.items()})
    empty = [name for name, s in zip(class_list, support, strict=True) if s == 0]
    if empty:
        warnings.append(
            f"{len(empty)} class(es) of the class list have no ground-truth image ({empty[:5]}); -1, not in AA"
        )

    columns = [*class_list, UNKNOWN_COLUMN, MISSING_COLUMN]
    details = {
        "confusion_matrix": {"rows": list(class_list), "columns": columns, "matrix": matrix.tolist()},
        "support": {name: int(s) for name, s in zip(class_list, support, strict=True)},
        "unknown_labels": dict(unknown),
        "n_images": len(g),
        "n_missing": len(missing_ids),
    }
    protocol = {
        "metric": "top-1 accuracy",
        "OA": "correct / images",
        "AA": "mean over classes with images of correct / images of that class (per-class recall)",
        "label_match": "case-insensitive" if ignore_case else "exact string",
        "classes": "given" if classes is not None else "sorted ground-truth labels",
        "unknown_predictions": "counted wrong (confusion column '(unknown)')",
        "missing_predictions": "error" if missing == "error" else "counted wrong (confusion column '(missing)')",
        "reference": reference("rsvl: standard top-1 accuracy definitions (hand-checked)", None),
    }
    return EvalReport("classification", "accuracy", metrics, protocol, details, warnings)

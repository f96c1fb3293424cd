"""What a distributed worker needs to rebuild a detector: a small picklable spec, built once per worker.

A :class:`PredictorSpec` travels to every worker (a path and a few options, never weights);
:meth:`PredictorSpec.build` loads the model there, once, through the method's own loader, and
returns a :class:`BuiltPredictor`: the tile predictor plus the merge rule and class names the
in-process engine uses for that method, so the distributed output is the same file:

* ``vlm4rsdet``: :func:`rsvl.methods.vlm4rsdet.infer.load_detector` + ``predict_image``; tiles
  merge with per-class NMS at the detector's own ``nms_thresh``; features are named from the
  detector's class list.
* ``opendet``: :func:`rsvl.methods.opendet.infer.load_opendet` + ``predict_image`` (with
  ``score_threshold`` when given); class-agnostic NMS at the model's ``nms_threshold``; each box
  carries its generated name.

``factory`` plugs in any other predictor (a top-level, picklable callable returning a
:class:`BuiltPredictor`), e.g. a stand-in model in tests or benchmarks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.io.merge import MergeConfig

__all__ = ["METHODS", "BuiltPredictor", "PredictorSpec"]

METHODS = ("vlm4rsdet", "opendet")


@dataclass
class BuiltPredictor:
    """A loaded tile predictor and how its tiles merge into one image's detections."""

    predict: Callable[[np.ndarray], Detections | None]
    merge: MergeConfig
    class_names: list[str] | None  # closed-set names indexed by label; None: boxes carry their own


@dataclass(frozen=True)
class PredictorSpec:
    """Picklable recipe of a tile predictor.

    Args:
        method: ``"vlm4rsdet"`` (``detector.pt``) or ``"opendet"`` (``opendet.pt``).
        model_path: the exported model file.
        device: torch device each worker loads the model on (``"cuda"`` asks Ray for one GPU per worker).
        score_threshold: opendet only: keep boxes with objectness at least this (None: the model's default).
        names_path: opendet only: the FlanT5 folder, if it moved since training.
        factory: instead of a method, a top-level callable returning a :class:`BuiltPredictor`.
    """

    method: Literal["vlm4rsdet", "opendet"] = "vlm4rsdet"
    model_path: str | os.PathLike[str] | None = None
    device: str = "cpu"
    score_threshold: float | None = None
    names_path: str | os.PathLike[str] | None = None
    factory: Callable[[], BuiltPredictor] | None = None

    def __post_init__(self) -> None:
        if self.factory is not None:
            return
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose {' or '.join(METHODS)}")
        if self.model_path is None:
            raise InputError(f"method {self.method} needs a model file (--model-path)")
        if not Path(self.model_path).is_file():
            raise InputError("model file not found", self.model_path)
        if self.score_threshold is not None and not 0 <= self.score_threshold <= 1:
            raise InputError(f"score threshold must lie in [0, 1], got {self.score_threshold}")

    @property
    def uses_gpu(self) -> bool:
        return self.factory is None and self.device.startswith("cuda")

    def build(self, device: str | None = None) -> BuiltPredictor:
        """Load the model (on ``device``, default the spec's) and return its tile predictor."""
        if self.factory is not None:
            return self.factory()
        device = device or self.device
        if self.method == "vlm4rsdet":
            from rsvl.methods.vlm4rsdet.infer import load_detector
            from rsvl.methods.vlm4rsdet.infer import predict_image as predict_vlm4rsdet

            detector = load_detector(self.model_path, device=device)  # type: ignore[arg-type]
            merge = MergeConfig(threshold=detector.config.nms_thresh)
            return BuiltPredictor(functools.partial(predict_vlm4rsdet, detector), merge, list(detector.classes))
        from rsvl.methods.opendet.infer import load_opendet
        from rsvl.methods.opendet.infer import predict_image as predict_opendet

        loaded = load_opendet(self.model_path, device=device, names_path=self.names_path)  # type: ignore[arg-type]
        if self.score_threshold is not None:
            loaded.score_threshold = self.score_threshold
        merge = MergeConfig(threshold=loaded.nms_threshold, class_agnostic=True)
        return BuiltPredictor(functools.partial(predict_opendet, loaded), merge, None)

    def describe(self) -> tuple[MergeConfig, list[str] | None]:
        """The merge rule and class names, for the driver: built once on the CPU, model dropped.

        Loading on the driver also checks the model file before any worker starts.
        """
        built = self.build(device="cpu")
        return built.merge, built.class_names

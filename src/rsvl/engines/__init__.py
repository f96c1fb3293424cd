"""Distributed inference engines: the same outputs as the in-process engine, over a pool of workers.

* :mod:`rsvl.engines.tile_jobs`: plan tiles of many images, predict one tile with retries, reassemble
  and write each image (pure Python, no Ray).
* :mod:`rsvl.engines.predictors`: :class:`PredictorSpec`, the picklable recipe a worker builds its
  model from.
* :mod:`rsvl.engines.ray_detect`: :func:`detect_archive` on Ray Data (needs ``rsvl[scale]``; Ray is
  imported only when it runs).
"""

from __future__ import annotations

from rsvl.engines.predictors import BuiltPredictor, PredictorSpec

__all__ = ["ArchiveResult", "BuiltPredictor", "PredictorSpec", "detect_archive"]


def __getattr__(name: str):  # lazy: importing rsvl.engines must not need Ray
    if name in ("ArchiveResult", "detect_archive"):
        from rsvl.engines import ray_detect

        return getattr(ray_detect, name)
    raise AttributeError(f"module 'rsvl.engines' has no attribute {name!r}")

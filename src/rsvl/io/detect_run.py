"""Resumable detection over image files: finished images and tiles kept as JSON lines.

``rsvl detect`` (the in-process engine, both methods) keeps, in its output folder:

* ``run.json``: the method, model file and tiling the predictions are made with; a rerun with
  anything else is refused (:func:`rsvl.utils.resume.check_run`), so two runs never mix;
* ``predictions.jsonl``: one line per finished image (its merged detections and size), appended
  and fsynced as the image completes; a rerun takes those images from here instead of predicting;
* ``partial/<stem>.<hash>.jsonl``: the finished tiles of a large image still in progress
  (:func:`rsvl.io.sliced.sliced_predict`'s ``state``), so a rerun continues inside that image;
  removed once the image's line is in ``predictions.jsonl``.

Detections go through JSON exactly (floats are written with ``repr``), so a resumed run writes the
same output files, byte for byte, as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

from rsvl.io.detections import Detections
from rsvl.io.raster import RasterSource
from rsvl.utils.resume import RUN_FILE, append_record, check_run, read_done

__all__ = ["PARTIAL", "PREDICTIONS", "DetectRun", "DoneImage", "file_fingerprint"]

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
PARTIAL = "partial"


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A model file as ``run.json`` records it: where it is, its size and when it was last written."""
    file = Path(path).resolve()
    stat = file.stat()
    return {"path": str(file), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


class DoneImage(NamedTuple):
    """An image finished by this run or an earlier one: its merged detections and size."""

    detections: Detections
    width: int
    height: int


class DetectRun:
    """The resumable state of a detection run in ``out`` (use as a context manager).

    Args:
        out: the output folder (exists).
        run: what decides every prediction (method, model fingerprint, tiling, thresholds).
        resume: keep an earlier run's finished images and tiles; False deletes them first.
    """

    def __init__(self, out: Path, run: dict[str, Any], resume: bool = True) -> None:
        self.out = out
        self.jsonl = out / PREDICTIONS
        self.partial = out / PARTIAL
        if not resume:
            self.jsonl.unlink(missing_ok=True)
            (out / RUN_FILE).unlink(missing_ok=True)
            shutil.rmtree(self.partial, ignore_errors=True)
        started = self.jsonl.exists() or (self.partial.is_dir() and any(self.partial.iterdir()))
        check_run(out, run, started)
        self.done = read_done(self.jsonl)
        if self.done:
            logger.info("%s: %d image(s) done by an earlier run are kept", self.jsonl, len(self.done))
        self._fh: IO[str] | None = None

    def __enter__(self) -> DetectRun:
        self._fh = open(self.jsonl, "a", encoding="utf-8")  # closed in __exit__
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(OSError):  # only while empty: no image is left half done
            self.partial.rmdir()

    @staticmethod
    def key(path: Path) -> str:
        """An image's id in ``predictions.jsonl``: its absolute path."""
        return str(path.resolve())

    def finished(self, path: Path) -> DoneImage | None:
        """The recorded result of ``path``, or None when it still has to be predicted."""
        record = self.done.get(self.key(path))
        if record is None:
            return None
        return DoneImage(Detections.from_record(record["detections"]), record["width"], record["height"])

    def image(
        self, path: Path, predict: Callable[[Path], tuple[Detections, int, int, Any]], georef: bool
    ) -> tuple[tuple[Detections, int, int, Any], bool]:
        """``path``'s detections, size and georeferencing, and whether they are new.

        An image an earlier run finished is read back from ``predictions.jsonl`` (its
        georeferencing from the file's header, only when ``georef`` asks for it: a GeoJSON to
        write again); any other is predicted by ``predict(tile_state)``, which resumes inside the
        image. Record a new one with :meth:`add` once its output files are written.
        """
        earlier = self.finished(path)
        if earlier is None:
            return predict(self.tile_state(path)), True
        ref = None
        if georef:
            with RasterSource(path) as src:
                ref = src.georef if src.is_georeferenced else None
        return (earlier.detections, earlier.width, earlier.height, ref), False

    def tile_state(self, path: Path) -> Path:
        """Where the finished tiles of ``path`` are kept while the image is in progress."""
        digest = hashlib.sha1(self.key(path).encode("utf-8")).hexdigest()[:10]
        return self.partial / f"{path.stem}.{digest}.jsonl"

    def add(self, path: Path, dets: Detections, width: int, height: int) -> None:
        """Record a finished image (durably), then drop its tile state."""
        if self._fh is None:
            raise RuntimeError("DetectRun.add outside its `with` block")
        record = {"id": self.key(path), "width": width, "height": height, "detections": dets.to_record()}
        append_record(self._fh, record)
        self.done[record["id"]] = record
        self.tile_state(path).unlink(missing_ok=True)

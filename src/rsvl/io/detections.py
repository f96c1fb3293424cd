"""``Detections``: the small, validated container that predictors return and writers consume.

Boxes follow the project convention (see :mod:`rsvl.geometry.boxes`): HBB ``xyxy`` float pixels
on pixel edges ``(N, 4)``, or OBB le90 ``(cx, cy, w, h, angle)`` ``(N, 5)``; always numpy
float64 here, so tile outputs from any framework (torch tensors included) are normalised once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rsvl.errors import GeometryError

__all__ = ["BoxKind", "Detections"]

BoxKind = Literal["hbb", "obb"]
_WIDTH = {"hbb": 4, "obb": 5}


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of arrays, lists and (CPU or GPU) torch tensors."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True, eq=False)
class Detections:
    """N detections of one image: boxes, scores, integer labels and optional per-box names.

    Args:
        boxes: ``(N, 4)`` HBB ``xyxy`` or ``(N, 5)`` le90 OBB, pixels; stored as float64.
        scores: ``(N,)`` confidences; stored as float64.
        labels: ``(N,)`` integer class ids; stored as int64.
        names: optional ``N`` class names, one per box (open-vocabulary detectors name each box;
            closed-set ones can use :meth:`with_class_names`).

    Raises:
        GeometryError: wrong shapes, lengths that disagree, or NaN/inf in boxes or scores.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        boxes = _to_numpy(self.boxes).astype(np.float64, copy=False)
        if boxes.ndim == 1 and boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
            raise GeometryError(f"detection boxes must have shape (N, 4) or (N, 5); got {boxes.shape}")
        n = boxes.shape[0]
        scores = _to_numpy(self.scores).astype(np.float64, copy=False).reshape(-1)
        labels_raw = _to_numpy(self.labels).reshape(-1)
        if labels_raw.size and not np.all(np.equal(np.mod(labels_raw, 1), 0)):
            raise GeometryError("detection labels must be integers")
        labels = labels_raw.astype(np.int64, copy=False)
        if scores.shape[0] != n or labels.shape[0] != n:
            raise GeometryError(f"{n} boxes but {scores.shape[0]} scores and {labels.shape[0]} labels")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise GeometryError("detection boxes or scores contain NaN or inf")
        names = None if self.names is None else tuple(str(s) for s in self.names)
        if names is not None and len(names) != n:
            raise GeometryError(f"{n} boxes but {len(names)} names")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "names", names)

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, kind: BoxKind = "hbb", with_names: bool = False) -> Detections:
        """No detections, with boxes of the given kind."""
        return cls(np.zeros((0, _WIDTH[kind])), np.zeros(0), np.zeros(0, np.int64), () if with_names else None)

    @classmethod
    def concat(cls, parts: Sequence[Detections], kind: BoxKind | None = None) -> Detections:
        """Stack several ``Detections``; empty parts of another box kind are ignored.

        Names survive only if every non-empty part has them. ``kind`` fixes the result's kind
        when every part is empty (default: the first part's, else ``"hbb"``).
        """
        full = [p for p in parts if len(p)]
        if not full:
            return cls.empty(kind or (parts[0].kind if parts else "hbb"))
        kinds = {p.kind for p in full}
        if len(kinds) > 1:
            raise GeometryError("cannot concatenate HBB and OBB detections")
        names = None
        if all(p.names is not None for p in full):
            names = tuple(n for p in full for n in p.names)  # type: ignore[union-attr]
        return cls(
            np.concatenate([p.boxes for p in full]),
            np.concatenate([p.scores for p in full]),
            np.concatenate([p.labels for p in full]),
            names,
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Detections:
        """The detections :meth:`to_record` wrote (resumable runs read them back exactly)."""
        kind: BoxKind = record["kind"]
        boxes = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, _WIDTH[kind])
        names = record.get("names")
        return cls(boxes, np.asarray(record["scores"]), np.asarray(record["labels"], np.int64), names)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict of plain lists; JSON writes floats with ``repr``, so they round-trip exactly."""
        record: dict[str, Any] = {
            "kind": self.kind,
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "labels": self.labels.tolist(),
        }
        if self.names is not None:
            record["names"] = list(self.names)
        return record

    # ------------------------------------------------------------------ views
    @property
    def kind(self) -> BoxKind:
        """``"hbb"`` for ``(N, 4)`` boxes, ``"obb"`` for ``(N, 5)``."""
        return "obb" if self.boxes.shape[1] == 5 else "hbb"

    @property
    def is_obb(self) -> bool:
        return self.kind == "obb"

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, kind={self.kind!r}, names={'yes' if self.names is not None else 'no'})"

    def select(self, index: np.ndarray | Sequence[int] | slice) -> Detections:
        """Subset by integer indices, a boolean mask or a slice (order follows ``index``)."""
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        names = None if self.names is None else tuple(self.names[i] for i in idx)
        return Detections(self.boxes[idx], self.scores[idx], self.labels[idx], names)

    def translate(self, dx: float, dy: float) -> Detections:
        """Shift boxes by ``(dx, dy)`` pixels: tile-local -> global coordinates."""
        boxes = self.boxes.copy()
        if self.kind == "hbb":
            boxes[:, [0, 2]] += dx
            boxes[:, [1, 3]] += dy
        else:
            boxes[:, 0] += dx
            boxes[:, 1] += dy
        return Detections(boxes, self.scores, self.labels, self.names)

    def scale(self, sx: float, sy: float | None = None) -> Detections:
        """Scale coordinates (e.g. from a decimated pyramid level back to native pixels).

        OBBs need ``sx == sy`` (a non-uniform scale does not keep a rotated rectangle one).
        """
        sy = sx if sy is None else sy
        boxes = self.boxes.copy()
        if self.kind == "hbb":
            boxes[:, [0, 2]] *= sx
            boxes[:, [1, 3]] *= sy
        else:
            if not np.isclose(sx, sy):
                raise GeometryError(f"OBBs can only be scaled uniformly, got sx={sx}, sy={sy}")
            boxes[:, :4] *= sx
        return Detections(boxes, self.scores, self.labels, self.names)

    def clip(self, width: float, height: float) -> Detections:
        """Keep detections inside a ``width`` x ``height`` image.

        HBBs are clipped to the image and dropped when nothing is left; OBBs (which cannot be
        clipped and stay rectangles) are kept when their centre lies inside the image.
        """
        if self.kind == "hbb":
            boxes = self.boxes.copy()
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            clipped = Detections(boxes, self.scores, self.labels, self.names)
            return clipped if keep.all() else clipped.select(keep)
        cx, cy = self.boxes[:, 0], self.boxes[:, 1]
        keep = (cx >= 0) & (cx <= width) & (cy >= 0) & (cy <= height)
        return self if keep.all() else self.select(keep)

    def class_names(self, class_names: Sequence[str] | None = None) -> list[str | None]:
        """One name per box: the stored names, else ``class_names[label]``, else ``None``."""
        if self.names is not None:
            return list(self.names)
        if class_names is None:
            return [None] * len(self)
        return [class_names[i] if 0 <= i < len(class_names) else None for i in self.labels.tolist()]

    def with_class_names(self, class_names: Sequence[str]) -> Detections:
        """Copy with ``names`` filled from a closed-set class list indexed by label."""
        bad = [int(i) for i in self.labels if not 0 <= i < len(class_names)]
        if bad:
            raise GeometryError(f"labels {sorted(set(bad))} have no entry in {len(class_names)} class names")
        return Detections(self.boxes, self.scores, self.labels, tuple(class_names[i] for i in self.labels))

"""The report every metric returns: numbers plus the protocol that produced them.

Results from remote-sensing papers are hard to compare because every repository scores a little
differently. An :class:`EvalReport` therefore always carries a ``protocol`` block — IoU thresholds,
maxDets, area ranges, ignore rules, text normalisation, and the reference implementation (with
version) the metric was validated against — next to ``metrics``. ``rsvl eval`` writes it as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import metadata
from os import PathLike
from typing import Any

from rsvl.utils.atomic import write_json


@dataclass
class EvalReport:
    """Numbers and the exact protocol behind them.

    Attributes:
        task: ``det``, ``grounding``, ``vqa``, ``caption`` or ``classification``.
        preset: the named protocol (``coco``, ``aitod``, ``dota``, ``rrsisd``...).
        metrics: flat ``name -> value``; fractions in [0, 1]; -1 where undefined (pycocotools' rule).
        protocol: every setting that changes the numbers, plus ``reference`` (what it equals).
        details: larger tables (per-class AP, confusion matrix, per-type accuracy).
        warnings: documented, counted oddities of the input (e.g. "12 predictions on unknown images").
    """

    task: str
    preset: str
    metrics: dict[str, float]
    protocol: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "preset": self.preset,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "protocol": self.protocol,
            "details": self.details,
            "warnings": self.warnings,
            "rsvl_version": _version("rsvl"),
        }

    def write(self, path: str | PathLike[str]) -> None:
        """Write the report as JSON, atomically."""
        write_json(path, self.to_dict())


def _json_number(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric value {value!r} is not finite; undefined metrics are reported as -1")
    return value


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def reference(name: str, package: str | None = None) -> dict[str, Any]:
    """A ``protocol["reference"]`` entry: the implementation validated against, with its version
    as installed here (None when the package is absent)."""
    return {"implementation": name, "package": package, "version": _version(package) if package else None}


def protocol_summary(protocol: Any, *, max_length: int = 100) -> dict[str, str]:
    """A protocol block as short readable strings (long lists shortened, nested tables named).

    For reports meant for people (model cards, HTML); ``eval.json`` keeps the full block.
    """
    if not isinstance(protocol, dict):
        return {"protocol": str(protocol)}
    out: dict[str, str] = {}
    for key, value in protocol.items():
        if isinstance(value, list) and len(value) > 4 and all(isinstance(v, (int, float)) for v in value):
            text = f"{value[0]:g} .. {value[-1]:g} ({len(value)} values)"
        elif isinstance(value, dict):
            text = str(value.get("implementation") or ", ".join(map(str, value)))
        else:
            text = str(value)
        out[str(key)] = text if len(text) <= max_length else text[: max_length - 3] + "..."
    return out

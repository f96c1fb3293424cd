"""YAML recipe files validated by pydantic: unknown keys and wrong types fail with the file named.

Every training recipe in ``configs/`` is a pydantic model with ``extra="forbid"``: a misspelt key
is an error, not a silently ignored setting. :func:`load_config` reads YAML safely (no Python
objects), applies ``key.sub=value`` overrides from the command line, and validates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rsvl.errors import InputError

__all__ = ["CheckedModel", "StrictModel", "apply_overrides", "load_config", "to_yaml"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CheckedModel(StrictModel):
    """A settings section also built directly in code: bad values raise :class:`InputError`.

    Constructing it with a wrong value names each bad key (``invalid <label>: key: message``)
    instead of raising pydantic's ``ValidationError``. Inside a recipe read by :func:`load_config`
    the recipe's own errors apply.
    """

    label: ClassVar[str] = "settings"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InputError(f"invalid {self.label}: {_describe(exc)}") from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (value parsed as YAML: numbers, booleans, lists) in a nested dict."""
    out = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise InputError(f"override {item!r}: cannot parse the value: {exc}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def load_config(
    cls: type[M], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), **defaults: Any
) -> M:
    """Read a YAML recipe (or none), apply overrides and validate it as ``cls``.

    Raises:
        InputError: missing or unparsable file, a top level that is not a mapping, unknown keys or
            wrong values (each named by its dotted key), with the file named.
    """
    data: dict[str, Any] = dict(defaults)
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise InputError("config file not found", file)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot parse YAML: {exc}", file) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"a config must be a mapping of keys, got {type(loaded).__name__}", file)
        data.update(loaded)
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"invalid config: {_describe(exc)}", path) from None


def to_yaml(model: BaseModel) -> str:
    """The recipe as YAML (what a run records next to its checkpoints)."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
